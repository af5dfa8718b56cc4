"""The ``intermodal`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from functools import partial

import polars as pl
import pyarrow as pa

from intermodal.schemas.config import ConfigError
from intermodal.schemas.validation import InputSchemaError

SUITES = ("intershap", "pid", "pid_batch", "lsmi")
# rows per generated data set unless --samples says otherwise
DEFAULT_SAMPLES = {"intershap": 20_000, "pid": 100_000, "pid_batch": 20_000, "lsmi": 20_000}


def _print_table(title: str, table: pl.DataFrame) -> None:
    with pl.Config(
        tbl_hide_dataframe_shape=True,
        tbl_rows=100,
        tbl_cols=20,
        fmt_str_lengths=60,
        tbl_width_chars=160,
        float_precision=3,
    ):
        print(f"\n{title}\n{table}")


def _demo(args: argparse.Namespace) -> None:
    from intermodal.pipelines.demo import run_demo

    started = time.perf_counter()
    table = run_demo(args.out, n_samples=args.samples)
    _print_table(f"HD-XOR (M = 2): InterSHAP and exact PID, runs under {args.out}", table)
    print("pid_*: R/U1/U2/S in bits of (m0, m1) with the labels and with the model's predictions")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


def _score(args: argparse.Namespace) -> None:
    from intermodal.pipelines.aggregate import run_aggregate
    from intermodal.pipelines.score import run_score
    from intermodal.schemas.config import load_config

    config = load_config(args.config)
    run_score(config)
    if not args.no_aggregate:
        _print_global(run_aggregate(config.output))


def _aggregate(args: argparse.Namespace) -> None:
    from intermodal.pipelines.aggregate import run_aggregate

    _print_global(run_aggregate(args.run_dir))


def _print_global(table: pa.Table) -> None:
    frame = pl.DataFrame(pl.from_arrow(table))
    overall = frame.filter(pl.col("group_by") == "").select(
        "measure", "term", "value", "n", "stderr"
    )
    _print_table("global statistics (whole dataset; per-group rows are in global/)", overall)


def _validate(args: argparse.Namespace) -> None:
    from intermodal.pipelines.validate import run_intershap_suite
    from intermodal.pipelines.validate_lsmi import run_lsmi_suite
    from intermodal.pipelines.validate_pid import run_pid_suite

    suites = {
        "intershap": run_intershap_suite,
        "pid": run_pid_suite,
        "pid_batch": partial(run_pid_suite, estimator="pid_batch"),
        "lsmi": run_lsmi_suite,
    }
    run_suite = suites[args.suite]
    n_samples = args.samples or DEFAULT_SAMPLES[args.suite]
    table = run_suite(args.out, experiments=args.experiment or None, n_samples=n_samples)
    units = {"intershap": "%", "pid": "bits", "pid_batch": "bits", "lsmi": "nats"}[args.suite]
    _print_table(
        f"validation: {args.suite} ({units}, written to {args.out}/validation.parquet)", table
    )


def _fit(args: argparse.Namespace) -> None:
    from intermodal.pipelines.fit import run_fit
    from intermodal.schemas.config import load_config

    run_fit(load_config(args.config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intermodal",
        description="Per-sample and dataset-level multimodal interaction scores on Ray Data.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="synthetic HD-XOR data, an XOR function and a trained FCNN, scored on local Ray",
        description="Generate HD-XOR synergy and uniqueness data (M = 2), train an "
        "early-fusion FCNN, score it and the exact XOR function, print InterSHAP per run.",
    )
    demo.add_argument(
        "--out", default="runs/demo", help="directory for data and run dirs (default: %(default)s)"
    )
    demo.add_argument(
        "--samples", type=int, default=20_000, help="rows per data set (default: %(default)s)"
    )
    demo.set_defaults(handler=_demo)

    score = commands.add_parser(
        "score",
        help="score a dataset as a job config says",
        description="Validate the input, score every valid row, write "
        "scores/, rejects/ and manifest.json, then aggregate.",
    )
    score.add_argument("config", help="job config YAML (path or fsspec URI)")
    score.add_argument("--no-aggregate", action="store_true", help="skip writing global/")
    score.set_defaults(handler=_score)

    fit = commands.add_parser(
        "fit",
        help="learn the PID codebooks of a job into its run directory",
        description="Fit one codebook per modality (k-means, or a histogram for scalars) on a "
        "uniform sample of pid.fit_rows valid rows; write OUTPUT/artifacts/codebooks/. "
        "score fits them itself when they are missing or stale.",
    )
    fit.add_argument("config", help="job config YAML (path or fsspec URI)")
    fit.set_defaults(handler=_fit)

    aggregate = commands.add_parser(
        "aggregate",
        help="merge a run's scores into global/",
        description="Merge per-block statistics of RUN_DIR/scores "
        "into RUN_DIR/global/ and print the whole-dataset rows.",
    )
    aggregate.add_argument("run_dir", help="run directory written by score")
    aggregate.set_defaults(handler=_aggregate)

    validate = commands.add_parser(
        "validate",
        help="reproduce the papers' ground truth",
        description="Run a suite's ground-truth experiments through "
        "the full pipeline; write OUT/validation.parquet.",
    )
    validate.add_argument("suite", choices=SUITES)
    validate.add_argument("--out", required=True, help="output directory")
    validate.add_argument(
        "--experiment", action="append", help="run only this experiment (repeatable)"
    )
    validate.add_argument(
        "--samples",
        type=int,
        help="rows per data set (default: 100000 for pid, 20000 for the others)",
    )
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ConfigError, InputSchemaError, FileNotFoundError, ValueError) as error:
        print(f"intermodal {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``intermodal`` command line."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import NoReturn

import polars as pl
import pyarrow as pa

from intermodal.cluster import RayStartError
from intermodal.cluster.resources import NodesDidNotArrive
from intermodal.schemas.config import ConfigError, JobConfig
from intermodal.schemas.validation import InputSchemaError
from intermodal.validation.suites import SUITES


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
    from intermodal.validation.demo import demo_report, run_demo

    started = time.perf_counter()
    result = run_demo(args.out, n_samples=args.samples)
    _print_table(f"HD-XOR (M = 2): InterSHAP and exact PID, runs under {args.out}", result.table)
    print("pid_*: R/U1/U2/S in bits of (m0, m1) with the labels and with the model's predictions")
    print(f"\nreport of every run: {demo_report(args.out, result.chapters)}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


def _score(args: argparse.Namespace) -> int:
    from intermodal.cluster import beside_ray_start
    from intermodal.pipelines import WORKER_MODULES

    config = beside_ray_start(partial(_imported_config, args.config), warm=WORKER_MODULES)
    from intermodal.pipelines.aggregate import run_aggregate
    from intermodal.pipelines.score import run_score, too_few_scored

    manifest = run_score(config, restart=args.restart)
    if not args.no_aggregate:
        _print_global(run_aggregate(config.output))
    failure = too_few_scored(config, manifest)
    if failure is not None:
        print(f"intermodal score: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _imported_config(uri: str) -> JobConfig:
    """The job config at ``uri``, read after importing the pipeline (torch and Ray Data take
    seconds: ``beside_ray_start`` pays them while Ray starts)."""
    import intermodal.pipelines.aggregate
    import intermodal.pipelines.score  # noqa: F401
    from intermodal.measures import load_config

    return load_config(uri)


def _submit(args: argparse.Namespace) -> int:
    from intermodal.cluster.submit import JobEnvironment, submit
    from intermodal.measures import load_config

    config = load_config(args.config)  # a bad config fails here, before the cluster sees it
    environment = JobEnvironment.from_file(
        args.runtime_env,
        working_dir=args.working_dir,
        py_modules=args.py_modules,
        pip=args.pip,
        env_vars=dict(_key_value(pair) for pair in args.env),
    )
    _, status = submit(
        config,
        args.address,
        wait=not args.no_wait,
        aggregate=not args.no_aggregate,
        environment=environment,
    )
    return 1 if status in {"FAILED", "STOPPED"} else 0


def _key_value(pair: str) -> tuple[str, str]:
    key, equals, value = pair.partition("=")
    if not equals or not key:
        raise ValueError(f"--env {pair}: expected KEY=VALUE")
    return key, value


def _aggregate(args: argparse.Namespace) -> None:
    from intermodal.pipelines.aggregate import run_aggregate

    _print_global(run_aggregate(args.run_dir))


def _print_global(table: pa.Table) -> None:
    frame = pl.DataFrame(pl.from_arrow(table))
    overall = frame.filter(pl.col("group_by") == "").select(
        "measure",
        "target",
        "statistic",
        "term",
        pl.col("modalities").list.join(","),
        "column",
        "value",
        "n",
        "stderr",
    )
    _print_table("global statistics (whole dataset; per-group rows are in global/)", overall)


def _validate(args: argparse.Namespace) -> None:
    suite = SUITES[args.suite]
    n_samples = args.samples or suite.default_samples
    table = suite.run(args.out, experiments=args.experiment or None, n_samples=n_samples)
    _print_table(
        f"validation: {args.suite} ({suite.units}, written to {args.out}/validation.parquet)",
        table,
    )


def _fit(args: argparse.Namespace) -> None:
    from intermodal.measures import load_config
    from intermodal.pipelines.fit import run_fit

    run_fit(load_config(args.config))


def _report(args: argparse.Namespace) -> None:
    from intermodal.report import write_report

    print(f"report: {write_report(args.run_dir)}")


def _pair(text: str) -> tuple[str, str]:
    names = tuple(text.split(","))
    if len(names) != 2:
        raise argparse.ArgumentTypeError(f"expected two modality names as a,b, got {text!r}")
    return names  # type: ignore[return-value]


def _partition(args: argparse.Namespace) -> None:
    from intermodal.pipelines.partition import Rule, run_partition

    rule = Rule(
        by=args.by,
        quantiles=tuple(args.quantiles or ()),
        thresholds=tuple(args.threshold or ()),
        pair=args.pair,
    )
    started = time.perf_counter()
    summary = run_partition(args.run_dir, args.out, rule, with_input=args.with_input)
    _print_table(f"partitions of {args.run_dir} by {args.by} → {args.out}", summary)
    print(f"\npartition finished in {time.perf_counter() - started:.0f} s")


def _export(args: argparse.Namespace) -> None:
    from intermodal.export import run_export, summary_uri

    reads = [tuple(part.split(",")) for part in args.reads or ()]
    summary = run_export(args.name, args.run_dirs, args.out, reads=reads)
    runs = ", ".join(args.run_dirs)
    _print_table(f"{args.name} of {runs} (mean per column) → {args.out}", summary)
    print(f"\nsummary: {summary_uri(args.out, args.name)}")


def _print_pid(title: str, terms: dict[str, float]) -> None:
    print(f"{title}: " + "  ".join(f"{term} {value:.3f}" for term, value in terms.items()))


def _select(args: argparse.Namespace) -> None:
    from intermodal.selection.select import run_select

    chosen, uri = run_select(args.run_dir, args.library, args.out, args.pair)
    pair = ",".join(chosen["pair"])
    _print_pid(f"PID of the labels of {pair} ({chosen['estimator']}, bits)", chosen["pid"])
    _print_pid("normalised PID", chosen["normalised_pid"])
    if chosen["model_alpha"] is not None:
        print(f"agreement alpha of the run's model: {chosen['model_alpha']:.3f}")
    if chosen["library"] is None:
        print("\nno --library: paper 003's rules of thumb (largest interaction first)")
        for term in sorted(chosen["rules"], key=lambda t: -chosen["normalised_pid"][t]):
            marker = "*" if term == chosen["largest"] else " "
            print(f" {marker} {term} {chosen['normalised_pid'][term]:.2f}: {chosen['rules'][term]}")
    else:
        _print_table(
            f"distance to each dataset of {chosen['library']} (sum of |normalised PID| "
            "differences over R, U1, U2, S)",
            pl.DataFrame(chosen["distances"]),
        )
        print(f"\nclosest: {chosen['closest']}")
        _print_table(
            f"top {len(chosen['recommended'])} families on {chosen['closest']} "
            "(held-out accuracy, agreement alpha)",
            pl.DataFrame(chosen["recommended"]),
        )
    print(f"\nselection: {uri}")


def _print_library(library_uri: str) -> None:
    from intermodal.selection.library import (
        alpha_accuracy_correlation,
        leave_one_out_table,
        read_library,
    )

    library = read_library(library_uri)
    accuracy = pl.DataFrame(
        {"dataset": library.datasets}
        | {f: library.accuracy[:, i] for i, f in enumerate(library.families)}
    )
    _print_table(f"held-out accuracy per family ({library_uri})", accuracy)
    table = leave_one_out_table(library)
    _print_table("leave-one-out: each dataset treated as new", table)
    reached = int((table["ratio"] >= SELECTION_TARGET).sum())
    print(
        f"\nrecommended family within {SELECTION_TARGET:.0%} of the best: "
        f"{reached} of {table.height} datasets"
    )
    pearson, spearman = alpha_accuracy_correlation(library)
    print(
        f"alpha vs accuracy over {library.accuracy.size} (dataset, family) pairs: "
        f"Pearson {pearson:.3f}, Spearman {spearman:.3f}"
    )


def _library(args: argparse.Namespace) -> None:
    if args.action == "build":
        from intermodal.selection.library import build_library
        from intermodal.selection.recipe import BuildSizes

        sizes = BuildSizes(
            n_train=args.train_rows,
            n_heldout=args.heldout_rows,
            epochs=args.epochs,
            families=tuple(args.family or BuildSizes().families),
        )
        started = time.perf_counter()
        print(f"library: {build_library(args.library, sizes, args.dataset)}")
        print(f"library built in {time.perf_counter() - started:.0f} s")
    _print_library(args.library)


SELECTION_TARGET = 0.95  # paper 003 Table 5: the chosen families reach 95-100 % of the best

Commands = argparse._SubParsersAction  # what add_subparsers returns


def _demo_command(commands: Commands) -> None:
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


def _score_command(commands: Commands) -> None:
    score = commands.add_parser(
        "score",
        help="score a dataset as a job config says",
        description="Validate the input, score every valid row, write "
        "scores/, rejects/ and manifest.json, then aggregate.",
    )
    score.add_argument("config", help="job config YAML (path or fsspec URI)")
    score.add_argument("--no-aggregate", action="store_true", help="skip writing global/")
    score.add_argument(
        "--restart",
        action="store_true",
        help="score every shard again (default: a stopped run of the same config resumes)",
    )
    score.set_defaults(handler=_score)


def _submit_command(commands: Commands) -> None:
    submit = commands.add_parser(
        "submit",
        help="run score on a Ray cluster (Ray Job Submission)",
        description="Validate CONFIG here, then submit 'intermodal score' to the cluster at "
        "--address with this package and the config shipped in the job's runtime_env; "
        "echo the job's log until it ends. Input and output must be reachable from the "
        "cluster (shared filesystem or object store URIs); local relative paths are made "
        "absolute first.",
    )
    submit.add_argument("config", help="job config YAML (path or fsspec URI)")
    submit.add_argument(
        "--address",
        required=True,
        help="the cluster's dashboard address, e.g. http://127.0.0.1:8265",
    )
    submit.add_argument(
        "--working-dir",
        help="a local directory shipped with the job and its working directory on the "
        "cluster (the model's module found there)",
    )
    submit.add_argument(
        "--py-modules",
        action="append",
        default=[],
        metavar="PATH",
        help="a package directory, .whl or remote .zip URI to ship (repeatable)",
    )
    submit.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="a pip requirement installed for the job (repeatable)",
    )
    submit.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable of the job (repeatable)",
    )
    submit.add_argument(
        "--runtime-env",
        metavar="FILE",
        help="a Ray runtime environment (YAML or JSON) the options above add to",
    )
    submit.add_argument("--no-wait", action="store_true", help="return once submitted")
    submit.add_argument("--no-aggregate", action="store_true", help="skip writing global/")
    submit.set_defaults(handler=_submit)


def _fit_command(commands: Commands) -> None:
    fit = commands.add_parser(
        "fit",
        help="learn what a job's measures need into its run directory",
        description="Fit what the configured measures need on a uniform sample of valid rows "
        "(PID codebooks, LSMI entropy models and classifiers, PID BATCH encoders, I2MoE and "
        "InTense models) into OUTPUT/artifacts/. score fits them itself when they are missing "
        "or stale.",
    )
    fit.add_argument("config", help="job config YAML (path or fsspec URI)")
    fit.set_defaults(handler=_fit)


def _aggregate_command(commands: Commands) -> None:
    aggregate = commands.add_parser(
        "aggregate",
        help="merge a run's scores into global/",
        description="Merge per-block statistics of RUN_DIR/scores "
        "into RUN_DIR/global/ and print the whole-dataset rows.",
    )
    aggregate.add_argument("run_dir", help="run directory written by score")
    aggregate.set_defaults(handler=_aggregate)


def _validate_command(commands: Commands) -> None:
    validate = commands.add_parser(
        "validate",
        help="reproduce the papers' ground truth",
        description="Run a suite's ground-truth experiments through "
        "the full pipeline; write OUT/validation.parquet.",
    )
    validate.add_argument("suite", choices=list(SUITES))
    validate.add_argument("--out", required=True, help="output directory")
    validate.add_argument(
        "--experiment", action="append", help="run only this experiment (repeatable)"
    )
    validate.add_argument(
        "--samples",
        type=int,
        help="rows per data set (default: "
        + ", ".join(f"{s.default_samples} for {name}" for name, s in SUITES.items())
        + ")",
    )
    validate.set_defaults(handler=_validate)


def _report_command(commands: Commands) -> None:
    report = commands.add_parser(
        "report",
        help="write a run's HTML report",
        description="Write RUN_DIR/report/index.html: one self-contained page (figures "
        "embedded, nothing loaded from the network) with the run's facts, global tables and "
        "figures of every measure it scored.",
    )
    report.add_argument("run_dir", help="run directory written by score")
    report.set_defaults(handler=_report)


def _partition_command(commands: Commands) -> None:
    partition = commands.add_parser(
        "partition",
        help="split a run's samples by a score column, the dominant LSMI term or the leading "
        "I2MoE expert",
        description="Write OUT/partition=<name>/*.parquet (sample_id and the --by column) and "
        "OUT/partitions.json. Quantile cuts are exact: rows are ordered by (value, sample_id) "
        "and the lowest floor(q * n) rows fall below the cut q; rows with a null value go to "
        "partition=null. --by dominant puts each row in the partition of its largest adjusted "
        "LSMI term (redundancy, uniqueness_<a>, uniqueness_<b>, synergy); --by i2moe in the "
        "partition of its I2MoE expert with the largest weight (uni_<m>, syn, red).",
    )
    partition.add_argument("run_dir", help="run directory written by score")
    partition.add_argument(
        "--by",
        required=True,
        help="a numeric score column, 'dominant' (needs lsmi) or 'i2moe' (needs i2moe)",
    )
    cuts = partition.add_mutually_exclusive_group()
    cuts.add_argument(
        "--quantiles", type=float, nargs="+", metavar="Q", help="cut at these quantiles in (0, 1)"
    )
    cuts.add_argument(
        "--threshold", type=float, nargs="+", metavar="T", help="cut at these values (v < T below)"
    )
    partition.add_argument(
        "--pair", type=_pair, help="with --by dominant and several LSMI pairs: the pair a,b"
    )
    partition.add_argument(
        "--with-input", action="store_true", help="write the input rows' columns as well"
    )
    partition.add_argument("--out", required=True, help="output directory (replaced on rerun)")
    partition.set_defaults(handler=_partition)


def _export_command(commands: Commands) -> None:
    export = commands.add_parser(
        "export",
        help="per-sample tables for later jobs, offered by the measures",
        description="Write OUT/*.parquet (sample_id and the export's columns) from a run's "
        "scores, and OUT.<name>.json beside OUT (the run, the export's facts, the mean of every "
        "column). distill-weights (lsmi): w_<term>_<a>__<b> for R, U1, U2, S of every LSMI "
        "pair, the adjusted terms clipped at 0 and divided by their sum (1/4 each when all are "
        "0, null without a label; paper 001 §4.3.2). ensemble (lsmi, two or more runs of the "
        "same input scored with lsmi.classifiers: model): per sample each model's weight from "
        "the interactions it can use (u1 + r/2, u2 + r/2, s; paper 001 §4.3.3), the ensemble's "
        "class probabilities and class; the summary compares it on held-out rows with each "
        "model, the plain average and global weights. docs/schema.md lists every export.",
    )
    export.add_argument("name", metavar="NAME", help="the export, e.g. distill-weights")
    export.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, scored and aggregated"
    )
    export.add_argument(
        "--reads",
        action="append",
        metavar="A[,B]",
        help="the modalities each run's model reads, once per run in run order (ensemble; "
        "default: every modality)",
    )
    export.add_argument("--out", required=True, help="output directory (replaced on rerun)")
    export.set_defaults(handler=_export)


def _select_command(commands: Commands) -> None:
    select = commands.add_parser(
        "select",
        help="recommend model families for a scored dataset by its PID",
        description="Read the PID of the labels of RUN_DIR (pid_cvx, or pid_batch without a "
        "library) and normalise it to shares. With --library: the distance to every library "
        "dataset (sum over R, U1, U2, S of the absolute share differences, paper 003 §4.4), "
        "the closest one and its three most accurate families. Without: the paper's rules "
        "of thumb, largest interaction first. Writes selection.json (docs/schema.md).",
    )
    select.add_argument("run_dir", help="run directory scored with PID of its labels")
    select.add_argument("--library", help="a model library (intermodal library build)")
    select.add_argument("--pair", type=_pair, help="the pair a,b when the run has several")
    select.add_argument("--out", help="where selection.json goes (default: RUN_DIR/selection.json)")
    select.set_defaults(handler=_select)


def _library_command(commands: Commands) -> None:
    from intermodal.selection.recipe import RECIPE, BuildSizes

    defaults = BuildSizes()
    library = commands.add_parser(
        "library",
        help="build or show a model library for select",
        description="build: generate the ten latent data sets of paper 003 Table 2, score the "
        "PID of each one's labels on its held-out rows, train early, intermediate and late "
        "FCNN, I2MoE and InTense on its training rows and record their held-out accuracy and "
        "PID agreement alpha (LIBRARY/library.json, docs/schema.md). show: the accuracies, "
        "the leave-one-out selection and the correlation of alpha with accuracy. build "
        "prints the same at its end.",
    )
    library.add_argument("action", choices=["build", "show"])
    library.add_argument("library", metavar="LIBRARY", help="library directory")
    library.add_argument(
        "--dataset",
        action="append",
        choices=[d.name for d in RECIPE],
        help="build only this dataset (repeatable; default: all ten)",
    )
    library.add_argument(
        "--family",
        action="append",
        choices=list(defaults.families),
        help="train only this family (repeatable; default: all five)",
    )
    library.add_argument(
        "--train-rows", type=int, default=defaults.n_train, help="default: %(default)s"
    )
    library.add_argument(
        "--heldout-rows", type=int, default=defaults.n_heldout, help="default: %(default)s"
    )
    library.add_argument("--epochs", type=int, default=defaults.epochs, help="default: %(default)s")
    library.set_defaults(handler=_library)


# every subcommand, in the order --help lists them
COMMANDS = (
    _demo_command,
    _score_command,
    _submit_command,
    _fit_command,
    _aggregate_command,
    _validate_command,
    _report_command,
    _partition_command,
    _export_command,
    _select_command,
    _library_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intermodal",
        description="Per-sample and dataset-level multimodal interaction scores on Ray Data.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (
        ConfigError,
        InputSchemaError,
        FileNotFoundError,
        ValueError,
        RayStartError,
        NodesDidNotArrive,
    ) as error:
        print(f"intermodal {args.command}: error: {error}", file=sys.stderr)
        return 2


def console() -> NoReturn:
    """The ``intermodal`` command: ``main``, then an exit without the interpreter's last
    garbage collections over every object that torch, Ray, Arrow and matplotlib made (2.3 s
    after the demo, 2 cores). One collection frees what the job left in reference cycles
    (0.2 s; datasketches' bindings report every sketch still alive at exit as a leak, 600
    lines), then the rest is frozen and left to the process's end: Python promises no
    finalizer of an object alive at exit, and every file the command wrote is closed."""
    code = main()
    gc.collect()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()

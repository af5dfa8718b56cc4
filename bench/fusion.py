"""I2MoE and InTense at pipeline scale: fit and scoring time, memory, and what the models say.

Per input size N (HD-XOR with two 100-d modalities; ``measures: [i2moe, intense]`` with the
default settings: 100k fit rows, 10 epochs), each step in a fresh child process on local Ray:

* fit: ``run_fit`` (both models trained on the sample of ``fit_rows`` rows);
* score: ``run_score`` reusing the fits (read, validate, both operators, Parquet);
  samples/s = N / seconds of the whole step, Ray start-up excluded;
* aggregate: ``run_aggregate`` (weight histograms and moments merged on the driver).

Then, from the written files: rows scored, the largest |Σ_e w_e − 1| over all rows, the mean
I2MoE weight per expert and the InTense relevance per term. On ``synergy`` data the synergy
expert and the ``m0xm1`` block should lead; on ``uniqueness`` data ``uni_m0`` and ``m0``.

Memory: peak RSS of the step's process and the largest Ray worker private RSS
(``bench/measure.py``). Shards of 65,536 rows repeat one generated block with fresh ids.

    python bench/fusion.py                               # N = 100k, synergy
    python bench/fusion.py --setting uniqueness --sizes 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from measure import measured_step, run_child  # bench/measure.py
from shards import repeating, write_shards  # bench/shards.py
from tables import show  # bench/tables.py, beside this script

from intermodal.measures import parse_config
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import HDXORSpec, generate
from intermodal.validation.experiments import overall_terms

DESCRIPTION = "I2MoE and InTense: fit and scoring time, memory and interpretations against N."
SHARD_ROWS = 65_536
DIMS = [100, 100]
MODALITIES = ["m0", "m1"]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_input(uri: Path, n_rows: int, setting: str) -> int:
    spec = HDXORSpec(setting=setting, n_samples=SHARD_ROWS, dims=DIMS, seed=0)
    block = generate(spec).select(["label", *MODALITIES])
    return write_shards(uri, n_rows, SHARD_ROWS, repeating(block))


def job_config(root: Path, n_rows: int, setting: str) -> JobConfig:
    name = f"{setting}-{n_rows}"
    return parse_config(
        {
            "dataset": f"fusion-bench-{name}",
            "input": str(root / f"input-{name}"),
            "output": str(root / f"run-{name}"),
            "num_classes": 2,
            "modalities": [
                {"name": m, "shape": [d]} for m, d in zip(MODALITIES, DIMS, strict=True)
            ],
            "measures": ["i2moe", "intense"],
        }
    )


def child(step: str, root: Path, n_rows: int, setting: str) -> None:
    """One step in this (fresh) process; prints its measurements as JSON on stdout."""
    print(json.dumps(measured_step(step, job_config(root, n_rows, setting), log)))


def run_step(step: str, root: Path, n_rows: int, setting: str) -> dict[str, float]:
    arguments = ["--child", step, "--out", str(root), "--sizes", str(n_rows)]
    return run_child(__file__, [*arguments, "--setting", setting])


def what_the_models_say(run_dir: Path) -> dict[str, float]:
    """Rows scored, the largest |Σ w − 1|, mean weights and relevance from the run's files."""
    scores = pl.scan_parquet(run_dir / "scores" / "*.parquet")
    weight_sum = pl.sum_horizontal(pl.col("^i2moe_w_.*$"))
    checked = scores.select(
        pl.len().alias("rows"), (weight_sum - 1).abs().max().alias("max |Σw − 1|")
    ).collect()
    table = pq.read_table(run_dir / "global" / "i2moe.parquet")
    weights = overall_terms(table, "i2moe", "mean")  # the weight columns' means, per expert
    table = pq.read_table(run_dir / "global" / "intense.parquet")
    relevance = overall_terms(table, "intense", "relevance")
    rows, largest_error = checked.row(0)
    return {
        "rows": rows,
        "max |Σw − 1|": f"{largest_error:.1e}",
        **{f"w[{e}]": w for e, w in weights.items()},
        **{f"β[{t}]": b for t, b in relevance.items()},
    }


def bench_table(sizes: Sequence[int], root: Path, setting: str) -> pl.DataFrame:
    rows = []
    for n_rows in sizes:
        config = job_config(root, n_rows, setting)
        shards = write_input(Path(config.input), n_rows, setting)
        log(f"[bench] N = {n_rows}: {shards} shards written")
        fit = run_step("fit", root, n_rows, setting)
        score = run_step("score", root, n_rows, setting)
        aggregate = run_step("aggregate", root, n_rows, setting)
        rows.append(
            {
                "N": n_rows,
                "fit s": fit["seconds"],
                "score s": score["seconds"],
                "samples/s": n_rows / score["seconds"],
                "score worker MiB": score["worker_mib"],
                "aggregate s": aggregate["seconds"],
                "aggregate driver MiB": aggregate["driver_mib"],
                **what_the_models_say(Path(config.output)),
            }
        )
        log(f"[bench] N = {n_rows} done")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--setting", choices=["synergy", "uniqueness"], default="synergy")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fusion"))
    parser.add_argument("--child", choices=["fit", "score", "aggregate"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.out, args.sizes[0], args.setting)
        return
    started = time.perf_counter()
    table = bench_table(args.sizes, args.out, args.setting)
    numbers = [c for c in table.columns if not c.startswith(("w[", "β["))]  # time, memory, checks
    interpretations = ["N", *(c for c in table.columns if c.startswith(("w[", "β[")))]
    notes = [
        "fit: run_fit, both models on fit_rows = min(N, 100k) sampled rows, 10 epochs each; "
        "score: run_score reusing the fits; samples/s = N / score s",
        "worker MiB: largest Ray worker private RSS (RssAnon) sampled every 0.1 s; driver MiB: "
        "peak RSS of the step's process",
    ]
    show(f"I2MoE + InTense (defaults) on HD-XOR {args.setting}, 2 × 100-d", table[numbers], notes)
    show(
        "What they say: mean I2MoE weight w[expert], InTense relevance β[term]",
        table[interpretations],
        [],
        float_precision=3,
    )
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

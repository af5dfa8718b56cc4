"""LSMI at growing N: fit time, scoring throughput and memory against the number of rows.

Per input size N (circuit-logic OR data, two 16-d modalities; ``measures: [lsmi]`` with the
default settings: 100k fit rows, 5 folds, KNIFE K = 5, 30 epochs), each step in a fresh child
process on local Ray:

* fit: ``run_fit`` (the sample of ``lsmi.fit_rows`` rows, KNIFE per modality, the three fold
  classifiers) — its cost is set by ``fit_rows``, not by N;
* score: ``run_score`` reusing the fitted models (read, validate, LSMI operator, Parquet);
  samples/s = N / seconds of the whole step, Ray start-up excluded;
* aggregate: ``run_aggregate`` (per-file moments merged on the driver).

Memory: peak RSS of the step's process and the largest Ray worker private RSS
(``bench/measure.py``).
Shards of 65,536 rows repeat one generated block with fresh ids, so generation stays cheap; the
fit sample draws across all of them.

    python bench/lsmi.py                       # N = 100k and 1M
    python bench/lsmi.py --sizes 20000         # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from measure import measured_step, run_child  # bench/measure.py
from shards import repeating, write_shards  # bench/shards.py
from tables import show  # bench/tables.py, beside this script

from intermodal.measures import parse_config
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

DESCRIPTION = "LSMI: fit time, scoring samples/s and memory against N."
SHARD_ROWS = 65_536
DIMS = 16


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_input(uri: Path, n_rows: int) -> int:
    block = generate_circuit(CircuitSpec(op="or", n_samples=SHARD_ROWS, dims=DIMS, seed=0))
    return write_shards(uri, n_rows, SHARD_ROWS, repeating(block.select(["label", "x1", "x2"])))


def job_config(root: Path, n_rows: int) -> JobConfig:
    return parse_config(
        {
            "dataset": f"lsmi-bench-{n_rows}",
            "input": str(root / f"input-{n_rows}"),
            "output": str(root / f"run-{n_rows}"),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [DIMS]} for m in ("x1", "x2")],
            "measures": ["lsmi"],
        }
    )


def child(step: str, root: Path, n_rows: int) -> None:
    """One step in this (fresh) process; prints its measurements as JSON on stdout."""
    print(json.dumps(measured_step(step, job_config(root, n_rows), log)))


def run_step(step: str, root: Path, n_rows: int) -> dict[str, float]:
    return run_child(__file__, ["--child", step, "--out", str(root), "--sizes", str(n_rows)])


def bench_table(sizes: Sequence[int], root: Path) -> pl.DataFrame:
    rows = []
    for n_rows in sizes:
        shards = write_input(root / f"input-{n_rows}", n_rows)
        log(f"[bench] N = {n_rows}: {shards} shards written")
        fit = run_step("fit", root, n_rows)
        score = run_step("score", root, n_rows)
        aggregate = run_step("aggregate", root, n_rows)
        rows.append(
            {
                "N": n_rows,
                "fit s": fit["seconds"],
                "fit driver MiB": fit["driver_mib"],
                "score s": score["seconds"],
                "samples/s": n_rows / score["seconds"],
                "score driver MiB": score["driver_mib"],
                "score worker MiB": score["worker_mib"],
                "aggregate s": aggregate["seconds"],
                "aggregate driver MiB": aggregate["driver_mib"],
                "aggregate worker MiB": aggregate["worker_mib"],
            }
        )
        log(f"[bench] N = {n_rows} done")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-lsmi"))
    parser.add_argument("--child", choices=["fit", "score", "aggregate"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.out, args.sizes[0])
        return
    started = time.perf_counter()
    table = bench_table(args.sizes, args.out)
    first, last = table.row(0, named=True), table.row(-1, named=True)
    show(
        f"LSMI (measures: [lsmi], defaults) on OR circuits, two {DIMS}-d modalities",
        table,
        [
            "fit: run_fit on lsmi.fit_rows = 100k sampled rows; score: run_score reusing the "
            "fit (read + validate + LSMI operator + Parquet); samples/s = N / score s",
            "driver MiB: peak RSS of the step's process (Ray client included); worker MiB: "
            "largest Ray worker private RSS (RssAnon) sampled every 0.1 s",
            f"N × {last['N'] / first['N']:g}: score worker peak × "
            f"{last['score worker MiB'] / first['score worker MiB']:.2f}, score driver peak × "
            f"{last['score driver MiB'] / first['score driver MiB']:.2f}, aggregate driver "
            f"peak × {last['aggregate driver MiB'] / first['aggregate driver MiB']:.2f}",
        ],
    )
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

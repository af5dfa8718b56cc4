"""PID through the pipeline at growing N: memory must not grow with the number of rows.

Per input size N (M = 3 modalities, so 3 pairs; 16-d x1, x2 carrying the XOR bits, 8-d noise
x3; labels y = x1 XOR x2; a ``site`` group with 4 values), in fresh child processes:

* score: ``run_score`` with ``measures: [<--measure>]``, fitting first on ``--fit-rows``
  sampled rows (pid_cvx: codebooks; pid_batch: classifiers and encoders), then the score
  actors (codes, or BATCH estimates per block of 256 rows) and the Parquet writer;
* aggregate: ``run_aggregate`` (per-file partial statistics on Ray Data tasks, merged on the
  driver as they stream in: count tensors then one exact solve per pair and group for
  pid_cvx, block moments for pid_batch).

Memory is the peak resident set of the driver process (``ru_maxrss``) and the largest private
resident set seen in any Ray worker (``/proc/<pid>/status`` RssAnon, every 0.1 s). Inputs are
generated and written one shard at a time, so the parent never holds N rows either.

    python bench/pid_streaming.py                                # pid_cvx, N = 100k and 1M
    python bench/pid_streaming.py --measure pid_batch --fit-rows 20000
    python bench/pid_streaming.py --sizes 20000                  # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from measure import RSS_SAMPLE_SECONDS, measured_step, run_child  # bench/measure.py
from shards import row_ids, write_shards  # bench/shards.py
from tables import show  # bench/tables.py, beside this script

from intermodal.measures import parse_config
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.pid_data import BitwiseSpec, generate_bitwise

DESCRIPTION = "PID through the pipeline: driver and worker memory against N."
SHARD_ROWS = 65_536
BIT_DIMS = 16
NOISE_DIMS = 8
SITES = np.array(["a", "b", "c", "d"])


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def xor_shard(index: int, start: int, stop: int) -> pa.Table:
    """XOR rows in the input schema; each shard generated on its own."""
    n = stop - start
    spec = BitwiseSpec(op="xor", n_samples=n, dims=BIT_DIMS, noise=0.1, seed=index)
    bits = generate_bitwise(spec)
    rng = np.random.default_rng(10_000 + index)
    noise = rng.standard_normal(n * NOISE_DIMS, dtype=np.float32)
    return pa.table(
        {
            "sample_id": row_ids(start, stop),
            "label": bits.column("label"),
            "site": pa.array(SITES[rng.integers(0, len(SITES), n)]),
            "x1": bits.column("x1"),
            "x2": bits.column("x2"),
            "x3": pa.FixedSizeListArray.from_arrays(pa.array(noise), NOISE_DIMS),
        }
    )


def write_input(uri: Path, n_rows: int) -> int:
    return write_shards(uri, n_rows, SHARD_ROWS, xor_shard)


def job_config(root: Path, n_rows: int, measure: str, fit_rows: int) -> JobConfig:
    dims = {"x1": BIT_DIMS, "x2": BIT_DIMS, "x3": NOISE_DIMS}
    return parse_config(
        {
            "dataset": f"pid-bench-{n_rows}",
            "input": str(root / f"input-{n_rows}"),
            "output": str(root / f"run-{measure}-{n_rows}"),
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": m, "shape": [d]} for m, d in dims.items()],
            "measures": [measure],
            "pid_cvx": {"n_clusters": 20, "fit_rows": fit_rows},
            "pid_batch": {"fit_rows": fit_rows},
        }
    )


def child(step: str, root: Path, n_rows: int, measure: str, fit_rows: int) -> None:
    """One step in this (fresh) process; prints its measurements as JSON on stdout."""
    config = job_config(root, n_rows, measure, fit_rows)
    result = measured_step(step, config, log)
    if step == "aggregate":
        table = pq.read_table(Path(config.output) / "global" / f"{measure}.parquet")
        result["global_rows"] = table.num_rows
    print(json.dumps(result))


def run_step(step: str, root: Path, n_rows: int, measure: str, fit_rows: int) -> dict[str, float]:
    arguments = ["--child", step, "--out", str(root), "--sizes", str(n_rows)]
    return run_child(__file__, [*arguments, "--measure", measure, "--fit-rows", str(fit_rows)])


def bench_table(sizes: Sequence[int], root: Path, measure: str, fit_rows: int) -> pl.DataFrame:
    rows = []
    for n_rows in sizes:
        shards = write_input(root / f"input-{n_rows}", n_rows)
        log(f"[bench] N = {n_rows}: {shards} shards written")
        # the score step includes the fit: a fit left by an earlier run must not be reused
        shutil.rmtree(job_config(root, n_rows, measure, fit_rows).output, ignore_errors=True)
        score = run_step("score", root, n_rows, measure, fit_rows)
        aggregate = run_step("aggregate", root, n_rows, measure, fit_rows)
        rows.append(
            {
                "N": n_rows,
                "shards": shards,
                "score s": score["seconds"],
                "score driver MiB": score["driver_mib"],
                "score worker MiB": score["worker_mib"],
                "aggregate s": aggregate["seconds"],
                "aggregate driver MiB": aggregate["driver_mib"],
                "aggregate worker MiB": aggregate["worker_mib"],
                "global rows": int(aggregate["global_rows"]),
            }
        )
        log(f"[bench] N = {n_rows} done")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pid-streaming"))
    parser.add_argument("--measure", choices=["pid_cvx", "pid_batch"], default="pid_cvx")
    parser.add_argument(
        "--fit-rows", type=int, default=100_000, help="rows the codebooks / BATCH models fit on"
    )
    parser.add_argument("--child", choices=["score", "aggregate"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.out, args.sizes[0], args.measure, args.fit_rows)
        return
    started = time.perf_counter()
    table = bench_table(args.sizes, args.out, args.measure, args.fit_rows)
    first, last = table.row(0, named=True), table.row(-1, named=True)
    show(
        f"PID ({args.measure}, labels) through score + aggregate: M = 3 (3 pairs), groups "
        f"overall + {len(SITES)} sites (pid_cvx), fit on {args.fit_rows} rows",
        table,
        [
            "driver MiB: peak RSS of the step's process (Ray client included); worker MiB: "
            f"largest Ray worker private RSS (RssAnon) sampled every {RSS_SAMPLE_SECONDS} s",
            f"N × {last['N'] / first['N']:g}: aggregate driver peak × "
            f"{last['aggregate driver MiB'] / first['aggregate driver MiB']:.2f}, worker peak × "
            f"{last['aggregate worker MiB'] / max(first['aggregate worker MiB'], 1e-9):.2f}; "
            f"score driver peak × {last['score driver MiB'] / first['score driver MiB']:.2f}",
        ],
    )
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

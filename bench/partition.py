"""Partition a 1M-row run by exact quantiles: sizes against the request, every sample once.

Writes a synthetic run directory directly with pyarrow (no model): ``scores/`` in ``--files``
files with ``sample_id`` (int64, shuffled), a continuous column ``lsmi_R_a__b`` (normal, 1 %
null) and a heavily tied one ``tied`` (20 distinct values, so every cut falls inside a run of
~50,000 equal values). For each column it runs ``intermodal partition --quantiles`` through
``run_partition`` on local Ray, then reads the output back and checks:

* rows per partition == ⌊q_hi·n⌋ − ⌊q_lo·n⌋ for n non-null rows, the null rows in ``null``;
* every input sample_id in exactly one partition (no duplicates, none missing);
* order: the largest (value, sample_id) of each partition is below the smallest of the next.

    python bench/partition.py                         # 1,000,000 rows, quantiles 0.1 0.5 0.9
    python bench/partition.py --rows 100000 --quantiles 0.25 0.75
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tables import show  # bench/tables.py, beside this script

from intermodal.cluster import ensure_ray
from intermodal.pipelines.partition import NULL_PARTITION, Rule, cut_rank, run_partition

COLUMNS = ("lsmi_R_a__b", "tied")


def write_scores(run: Path, rows: int, files: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows).astype(np.int64)
    (run / "scores").mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        continuous = rng.normal(size=len(part))
        table = pa.table(
            {
                "sample_id": ids[part],
                "lsmi_R_a__b": pa.array(continuous, mask=rng.random(len(part)) < 0.01),
                "tied": rng.integers(0, 20, len(part)).astype(np.float64) / 10,
            }
        )
        pq.write_table(table, run / "scores" / f"part-{i:05d}.parquet")


def check(out: Path, by: str, quantiles: list[float], scores: pl.DataFrame) -> pl.DataFrame:
    written = pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)
    ids = written["sample_id"]
    assert ids.n_unique() == written.height == scores.height, "a sample is missing or repeated"
    assert ids.sort().equals(scores["sample_id"].sort()), "partition ids differ from scores ids"
    n = scores[by].drop_nulls().len()
    edges = [0, *(cut_rank(q, n) for q in quantiles), n]
    names = ["low", "high"] if len(quantiles) == 1 else [f"p{i}" for i in range(len(edges) - 1)]
    bounds = [0.0, *quantiles, 1.0]
    rows = []
    previous_top = None
    for i, name in enumerate(names):
        part = written.filter(pl.col("partition") == name).sort([by, "sample_id"])
        if previous_top is not None and part.height:
            assert previous_top < part.select(by, "sample_id").row(0), f"{name} overlaps"
        if part.height:
            previous_top = part.select(by, "sample_id").row(-1)
        rows.append(
            {
                "column": by,
                "partition": name,
                "quantiles": f"[{bounds[i]}, {bounds[i + 1]})",
                "requested": edges[i + 1] - edges[i],
                "written": part.height,
                "difference": part.height - (edges[i + 1] - edges[i]),
            }
        )
    nulls = written.filter(pl.col("partition") == NULL_PARTITION).height
    expected_nulls = scores.height - n
    rows.append(
        {
            "column": by,
            "partition": NULL_PARTITION,
            "quantiles": "null",
            "requested": expected_nulls,
            "written": nulls,
            "difference": nulls - expected_nulls,
        }
    )
    return pl.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--work", default="runs/bench-partition", help="scratch directory")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    run = work / "run"
    started = time.perf_counter()
    write_scores(run, args.rows, args.files)
    elapsed = time.perf_counter() - started
    print(f"wrote {args.rows:,} score rows in {args.files} files: {elapsed:.1f} s")
    ensure_ray()
    scores = pl.read_parquet(run / "scores")
    tables, timings = [], []
    for by in COLUMNS:
        out = work / f"by_{by}"
        started = time.perf_counter()
        run_partition(str(run), str(out), Rule(by, tuple(args.quantiles)))
        seconds = time.perf_counter() - started
        tables.append(check(out, by, args.quantiles, scores))
        timings.append({"column": by, "partition s": round(seconds, 1)})
    result = pl.concat(tables)
    assert (result["difference"] == 0).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    show(
        f"partition of {args.rows:,} rows by exact quantiles {args.quantiles}",
        result,
        [
            "every sample_id in exactly one partition (checked: no duplicates, none missing);",
            "partitions ordered by (value, sample_id) with no overlap (checked)",
            *(f"{t['column']}: {t['partition s']} s end to end" for t in timings),
            f"driver peak RSS {peak:.0f} MiB (includes this script's own read-back check)",
        ],
    )


if __name__ == "__main__":
    main()

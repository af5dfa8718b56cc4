"""Fit time of a wide job: 6 modalities of different widths, 10 classes, ``lsmi`` + ``pid_batch``.

The data (made here, with known structure): a label ``y`` uniform over 10 classes, and per
modality a code vector embedded by a fixed random map into its width plus N(0, 0.5²) noise:

====== ===== =====================================================
name   width carries
====== ===== =====================================================
m0     4     y mod 2 (one bit of the label)
m1     8     y // 5 (another bit)
m2     16    y one-hot (all of it)
m3     32    y one-hot (redundant with m2)
m4     64    a fair bit b
m5     128   b XOR (y mod 2) (synergy with m4)
====== ===== =====================================================

15 pairs: LSMI fits 6 KNIFEs and 21 cross-fitted classifiers, PID BATCH 21 classifiers and 15
encoder pairs. Timed side by side in one run, default settings, Ray started beforehand,
``--repeats`` rounds interleaved:

* ``intermodal fit`` as shipped (each measure's fit a Ray task, its parts Ray tasks of one CPU,
  side by side on this machine's cores; the classifiers both measures need fitted once);
* the same without sharing the classifiers (``fit_measures(share_parts=False)``: 42 trained);
* the same fits in this process, their parts one after another, one torch thread (``--inline``).

    python bench/fit_six_modalities.py             # 2,000 rows
    python bench/fit_six_modalities.py --inline    # also the in-process fit
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from tables import show  # bench/tables.py

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.measures import job_measures, parse_config
from intermodal.measures.base import InlineWorkers
from intermodal.pipelines.artifacts import fit_measures
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards

WIDTHS = {"m0": 4, "m1": 8, "m2": 16, "m3": 32, "m4": 64, "m5": 128}
CLASSES = 10
NOISE = 0.5


def six_modalities(n_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n_rows)
    b = rng.integers(0, 2, n_rows)
    one_hot = np.eye(CLASSES)[y]
    codes = {
        "m0": (y % 2)[:, None],
        "m1": (y // 5)[:, None],
        "m2": one_hot,
        "m3": one_hot,
        "m4": b[:, None],
        "m5": (b ^ (y % 2))[:, None],
    }
    columns = {"sample_id": np.arange(n_rows), "label": y}
    for name, width in WIDTHS.items():
        code = 2.0 * codes[name] - 1.0
        embedding = rng.standard_normal((code.shape[1], width)) / np.sqrt(code.shape[1])
        values = code @ embedding + rng.normal(0.0, NOISE, (n_rows, width))
        columns[name] = pa.FixedSizeListArray.from_arrays(
            pa.array(values.astype(np.float32).ravel()), width
        )
    return pa.table(columns)


def six_job(data: str, out: str, n_rows: int) -> JobConfig:
    return parse_config(
        {
            "dataset": "six_modalities",
            "input": data,
            "output": out,
            "num_classes": CLASSES,
            "modalities": [{"name": m, "shape": [w]} for m, w in WIDTHS.items()],
            "measures": ["lsmi", "pid_batch"],
            "lsmi": {"fit_rows": n_rows},
            "pid_batch": {"fit_rows": n_rows},
        }
    )


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--inline", action="store_true", help="also fit in this process")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="six_")
    table = six_modalities(args.rows)
    data = storage.join(root, "data")
    write_table_shards(table, data, 4)
    ensure_ray()
    load_before = os.getloadavg()[0]
    rows = []
    config = six_job(data, storage.join(root, "ray"), args.rows)
    shards = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    for round_ in range(args.repeats):
        for shared, name in ((True, "shared classifiers"), (False, "each its own")):
            start = time.perf_counter()
            fit_measures(config, job_measures(config), shards, duplicates, log, shared)
            seconds = time.perf_counter() - start
            rows.append({"fit": f"Ray tasks, {name}", "round": round_ + 1, "seconds": seconds})
    if args.inline:
        torch.set_num_threads(1)
        config = six_job(data, storage.join(root, "inline"), args.rows)
        start = time.perf_counter()
        for measure in job_measures(config):
            measure.fit(config, table, log, InlineWorkers(log))
        seconds = time.perf_counter() - start
        rows.append({"fit": "in-process, 1 thread", "round": 1, "seconds": seconds})
    show(
        f"Fit of lsmi + pid_batch, 6 modalities (widths {list(WIDTHS.values())}), {CLASSES} "
        f"classes, {args.rows} rows",
        pl.DataFrame(rows),
        ["default settings; Ray started before timing"],
    )
    print(
        f"\n1-min load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end "
        f"({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()

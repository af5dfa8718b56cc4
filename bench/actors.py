"""Scoring throughput with 1, 2 and 4 score actors on this machine, side by side in one run.

One job, ``intershap`` + ``lsmi`` on noisy XOR (2 modalities of ``--dims`` features, an
early-fusion FCNN with saved weights, K = 32 background rows), fitted once; then ``score
--restart`` with each pool size in turn, interleaved over ``--repeats`` rounds, Ray started
beforehand. Every actor has ``cpus_per_actor: 0.25`` and one torch thread, so four of them
still leave a CPU to the read and write tasks of a 2-core machine. Wall time of the whole
``run_score`` (actor start-up included), median over the rounds.

    python bench/actors.py                 # 200,000 rows
    python bench/actors.py --rows 50000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import polars as pl
import torch
from tables import print_finished, show  # bench/tables.py

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.measures import parse_config
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

POOLS = (1, 2, 4)
SHARDS = 16


def job(data: str, out: str, dims: int, weights: str, actors: int) -> JobConfig:
    return parse_config(
        {
            "dataset": "xor_actors_bench",
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [dims]} for m in ("x1", "x2")],
            "measures": ["intershap", "lsmi"],
            "model": {
                "name": "fcnn",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": {"modalities": ["x1", "x2"], "dims": [dims, dims], "fusion": "early"},
                "weights": weights,
            },
            "intershap": {"background_size": 32},
            "lsmi": {"fit_rows": 5000},
            "compute": {
                "actors": actors,
                "cpus_per_actor": 0.25,
                "torch_threads": 1,
                "batch_size": 2048,
            },
        }
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    root = tempfile.mkdtemp(prefix="actors_bench_")
    spec = CircuitSpec(op="xor", n_samples=args.rows, dims=args.dims, noise=0.1, seed=0)
    data = storage.join(root, "data")
    write_table_shards(
        generate_circuit(spec).select(["sample_id", "label", "x1", "x2"]), data, SHARDS
    )
    weights = storage.join(root, "fcnn.pt")
    model = build_fcnn(["x1", "x2"], [args.dims, args.dims], fusion="early")
    torch.save(model.state_dict(), weights)
    ensure_ray()
    out = storage.join(root, "run")
    run_score(job(data, out, args.dims, weights, 1), progress=lambda _: None)  # fits, warms up
    seconds: dict[int, list[float]] = {actors: [] for actors in POOLS}
    for round_ in range(args.repeats):
        for actors in POOLS:
            start = time.perf_counter()
            run_score(job(data, out, args.dims, weights, actors), lambda _: None, restart=True)
            seconds[actors].append(time.perf_counter() - start)
            print(f"[bench] round {round_ + 1}: {actors} actors", file=sys.stderr, flush=True)
    medians = {actors: statistics.median(times) for actors, times in seconds.items()}
    rows = [
        {
            "actors": actors,
            "seconds (median)": medians[actors],
            "rows/s": args.rows / medians[actors],
            "vs 1 actor": medians[1] / medians[actors],
            "all runs s": ", ".join(f"{t:.1f}" for t in seconds[actors]),
        }
        for actors in POOLS
    ]
    show(
        f"score throughput by pool size: intershap + lsmi, {args.rows:,} rows of 2 × {args.dims} "
        f"features in {SHARDS} shards",
        pl.DataFrame(rows),
        [
            "each actor: cpus_per_actor 0.25, 1 torch thread; batch 2,048; K = 32",
            "wall time of run_score --restart (actor start-up included), artifacts reused",
        ],
    )
    print_finished(started, load_before)


if __name__ == "__main__":
    main()

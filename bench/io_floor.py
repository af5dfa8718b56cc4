"""The CPU side of scoring, this tree against another checkout, side by side in one run.

Per source tree (``--baseline-src``: the ``src/`` of another checkout, e.g. a git worktree of
an older commit; this tree's ``src/`` is the other), interleaved ``--repeats`` times, each in a
fresh process with that tree first on ``PYTHONPATH`` (Ray's local workers inherit it):

* **I/O floor**: ``run_score`` of ``coalition_throughput``'s input (M = 3 modalities of
  128 float32, 65,536-row shards) with a measure that does one sum per row and no model:
  read, validate, hand the batch to the actor, write. Ray is started before the timed call.
* **InterSHAP pipeline**: the same input scored with InterSHAP (background masking, K = 8) of
  the bench's intermediate-fusion FCNN, the pipeline of ``coalition_throughput`` part 1.

* **The CPU side in-process** (what the floor implies for a GPU): rates on one core of read +
  validate (``read_shard``) and of the operator's work around the model (``ScoreOperator``
  with the floor's measure on validated batches), and from them how many CPU cores one actor
  needs to keep a model of ``--model-rate`` samples per second busy.

    python bench/io_floor.py --baseline-src /tmp/base/src              # 1M rows
    python bench/io_floor.py --baseline-src /tmp/base/src --rows 100000 --repeats 1
    python bench/io_floor.py --baseline-src /tmp/base/src --this-cpus 1   # score tasks of 1 CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import torch
from coalition_throughput import (  # bench/coalition_throughput.py
    IOFloor,
    Settings,
    floor_config,
    job_config,
    save_weights,
    write_input,
)
from tables import print_finished, show  # bench/tables.py

from intermodal.cluster import ensure_ray
from intermodal.measures import register
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, read_shard
from intermodal.pipelines.score import run_score
from intermodal.pipelines.score_stage import ScoreOperator

HERE = Path(__file__).resolve().parent
THIS_SRC = HERE.parent / "src"
SETTINGS = Settings(
    dims=128,
    fusion="intermediate",
    background_size=8,
    batch_size=1024,
    actors=os.cpu_count() or 1,
    cpus_per_actor=0.5,
    torch_threads=1,
)
RUNS = ("floor", "intershap")  # through run_score
RATES = "rates"  # the in-process CPU side


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def quiet(_: str) -> None:
    """Progress of the timed runs: not printed."""


def one_run(root: Path, rows: int, run: str, attempt: str, cpus: float) -> float:
    """Seconds of one ``run_score`` in this process (Ray started before the clock), with
    ``cpus`` per score actor or task."""
    config = job_config(
        root, rows, SETTINGS, save_weights(root / "weights.pt", SETTINGS), root / "weights.pt"
    )
    if run == "floor":
        register(IOFloor())
        config = floor_config(config)
    compute = config.compute.model_copy(update={"cpus_per_actor": cpus})
    config = config.model_copy(
        update={"output": f"{config.output}-{run}-{attempt}", "compute": compute}
    )
    ensure_ray()
    started = time.perf_counter()
    run_score(config, progress=quiet, restart=True)  # a finished run of the name would resume
    return time.perf_counter() - started


def in_process_rates(root: Path, rows: int) -> dict[str, float]:
    """Rows per second on one core of this process: read + validate, and the floor's operator
    (batching, Arrow → arrays, output table) on validated batches."""
    torch.set_num_threads(1)
    weights = root / "weights.pt"
    register(IOFloor())
    config = floor_config(
        job_config(root, rows, SETTINGS, save_weights(weights, SETTINGS), weights)
    )
    shards = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    read = operate = 0.0
    operator = ScoreOperator(config)
    n = 0
    for shard in shards:
        started = time.perf_counter()
        valid = list(read_shard(shard, config, duplicates, str(root / "stage-rejects")))
        read += time.perf_counter() - started
        batches = [
            pa.Table.from_batches([batch])
            for table in valid
            for batch in table.to_batches(max_chunksize=SETTINGS.batch_size)
        ]
        started = time.perf_counter()
        for batch in batches:
            operator(batch)
        operate += time.perf_counter() - started
        n += sum(table.num_rows for table in valid)
    return {"read+validate/s": n / read, "operator/s": n / operate}


def child(args: argparse.Namespace) -> None:
    if args.run == RATES:
        print(json.dumps(in_process_rates(args.out, args.rows)))
    else:
        seconds = one_run(args.out, args.rows, args.run, args.attempt, args.cpus)
        print(json.dumps({"seconds": seconds}))


def measured_in(
    src: Path, args: argparse.Namespace, run: str, attempt: str, cpus: float
) -> dict[str, float]:
    """What the child prints for ``run``, in a fresh process with ``src`` first on the path."""
    environment = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--run", run]
    command += ["--rows", str(args.rows), "--out", str(args.out), "--attempt", attempt]
    command += ["--cpus", str(cpus)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{src} {run}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ (required)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/io_floor"))
    parser.add_argument(
        "--model-rate",
        type=float,
        nargs="+",
        default=[100_000.0, 1_000_000.0],
        help="samples per second a GPU model would take",
    )
    parser.add_argument(
        "--this-cpus",
        type=float,
        help="CPUs per score actor or task of this tree (default: the baseline's "
        f"{SETTINGS.cpus_per_actor}; score tasks, one per CPU: 1)",
    )
    parser.add_argument("--cpus", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=[*RUNS, RATES], help=argparse.SUPPRESS)
    parser.add_argument("--attempt", default="0", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if args.baseline_src is None:
        raise SystemExit("--baseline-src is required: the src/ of the checkout to compare with")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    shards = write_input(args.out / f"input-{args.rows}", args.rows, SETTINGS.dims, seed=args.rows)
    log(f"[bench] wrote {args.rows} rows in {shards} shards")
    trees = {"baseline": args.baseline_src.resolve(), "this tree": THIS_SRC}
    cpus = {"baseline": SETTINGS.cpus_per_actor, "this tree": args.this_cpus}
    cpus["this tree"] = cpus["this tree"] or SETTINGS.cpus_per_actor
    seconds: dict[tuple[str, str], list[float]] = {}
    rates: dict[str, list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for name, src in trees.items():
            rates.setdefault(name, []).append(
                measured_in(src, args, RATES, str(repeat), cpus[name])
            )
        for run in RUNS:
            for name, src in trees.items():
                attempt = f"{name.replace(' ', '_')}-{repeat}"
                value = measured_in(src, args, run, attempt, cpus[name])
                seconds.setdefault((name, run), []).append(value["seconds"])
                log(f"[bench] {name} {run}: {value['seconds']:.1f} s")
    rows = []
    for run in RUNS:
        base = statistics.median(seconds[("baseline", run)])
        this = statistics.median(seconds[("this tree", run)])
        rows.append(
            {
                "run": run,
                "baseline rows/s": args.rows / base,
                "this tree rows/s": args.rows / this,
                "this/baseline": base / this,
            }
        )
    show(
        f"1. run_score at {args.rows:,} rows, M = 3 × {SETTINGS.dims} float32, median of "
        f"{args.repeats}, trees interleaved",
        pl.DataFrame(rows),
        [
            f"baseline: {trees['baseline']}; this tree: {THIS_SRC}",
            f"compute: {SETTINGS.actors} actors of {SETTINGS.cpus_per_actor} CPU, 1 torch "
            f"thread (this tree: {cpus['this tree']:g} CPU per score actor or task); Ray "
            "started before each timed call (its start not included)",
        ],
    )
    table = []
    for name, measured in rates.items():
        read = statistics.median(r["read+validate/s"] for r in measured)
        operate = statistics.median(r["operator/s"] for r in measured)
        per_core = 1 / (1 / read + 1 / operate)
        row = {"tree": name, "read+validate/s": read, "operator/s": operate}
        row["floor/s per core"] = per_core
        for rate in args.model_rate:
            row[f"cores per actor at {rate:,.0f}/s"] = rate / per_core
        table.append(row)
    show(
        "2. Where a GPU would starve: the CPU side per core (in-process, 1 thread, median of "
        f"{args.repeats})",
        pl.DataFrame(table),
        [
            "read+validate/s: read_shard per shard (Parquet decode and row checks); operator/s: "
            "ScoreOperator with the floor's measure on validated batches (Arrow → arrays, the "
            "output table): the CPU work around a model; floor per core: both in turn",
            "cores per actor at R/s: CPU cores one actor needs to keep a model that takes R "
            "samples per second busy; fewer and the GPU waits for rows",
        ],
    )
    print_finished(started, load_before)


if __name__ == "__main__":
    main()

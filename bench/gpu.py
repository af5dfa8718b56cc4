"""Fitting and scoring on a GPU against the CPU, side by side in one run.

For each of InterSHAP, LSMI, PID BATCH, I2MoE and InTense on the same data (noisy XOR of two
modalities, ``--dims`` features each):

* **fit**: the measure's fit (``Measure.fit``, its parts one after another in one process) in a
  child process that sees the GPU and in one that does not (``CUDA_VISIBLE_DEVICES=""``), each
  with every core's torch threads; InterSHAP fits nothing;
* **score**: ``ScoreOperator`` (the score actor's object) with ``device`` set to the GPU and to
  the CPU (every core's torch threads), over the same batches of 4,096 rows after one warm-up
  batch: rows per second, and the largest difference between the two devices' score columns.

The models scored are those fitted on the GPU, so both devices score the same weights. With no
GPU visible it says so and does nothing. ``--device cpu`` puts the CPU on both sides: it checks
the script where there is no GPU, and its ratios are about 1.

    python bench/gpu.py                      # 20,000 rows of 2 × 256 features
    python bench/gpu.py --rows 5000 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tables import print_finished, show  # bench/tables.py

from intermodal import storage
from intermodal.measures import MEASURES, parse_config
from intermodal.measures.base import InlineWorkers
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, sample_table
from intermodal.pipelines.score import background_inputs, needs_background
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

MEASURE_NAMES = ["intershap", "lsmi", "pid_batch", "i2moe", "intense"]
SCORED_BATCHES = 10


def fcnn_kwargs(dims: int) -> dict:
    return {"modalities": ["x1", "x2"], "dims": [dims, dims], "num_classes": 2, "fusion": "early"}


def job(data: str, out: str, measure: str, dims: int, rows: int, weights: str) -> JobConfig:
    return parse_config(
        {
            "dataset": "xor_gpu_bench",
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [dims]} for m in ("x1", "x2")],
            "measures": [measure],
            # an untrained early-fusion FCNN (saved, so both devices score the same weights):
            # InterSHAP times the masked passes, not the model
            "model": {
                "name": "fcnn",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": fcnn_kwargs(dims),
                "weights": weights,
            },
            "lsmi": {"fit_rows": rows},
            "pid_batch": {"fit_rows": rows},
            "i2moe": {"fit_rows": rows},
            "intense": {"fit_rows": rows},
            "compute": {"batch_size": 4096, "torch_threads": os.cpu_count() or 1},
        }
    )


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fit_here(config_json: str) -> None:
    """The child: fit the job's measure in this process, print its seconds as JSON."""
    config = JobConfig.model_validate_json(config_json)
    measure = MEASURES[config.measures[0]]
    shards = inspect_shards(config)
    sample = sample_table(config, shards, 10**9, 0, duplicate_ids(config, shards))
    sample = sample.filter(pc.is_valid(sample.column("label")))
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    measure.fit(config, sample, log, InlineWorkers(log))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - start}))


def fit_in_child(config: JobConfig, gpu_visible: bool) -> float:
    environment = dict(os.environ)
    if not gpu_visible:
        environment["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run(
        [sys.executable, __file__, "--fit-child", config.model_dump_json()],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def score_rate(
    config: JobConfig, background: dict | None, batches: list[pa.Table], device: torch.device
) -> tuple[float, pa.Table]:
    """Rows per second of the job's score operator on ``device`` after a warm-up batch, and
    its output of every batch."""
    operator = ScoreOperator(config, None, background, device)
    operator(batches[0])
    outputs = []
    start = time.perf_counter()
    for batch in batches:
        outputs.append(operator(batch))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return sum(b.num_rows for b in batches) / seconds, pa.concat_tables(outputs)


def largest_difference(one: pa.Table, other: pa.Table) -> float:
    differences = [0.0]
    for name in one.column_names:
        if pa.types.is_floating(one.schema.field(name).type):
            a, b = (t.column(name).to_numpy(zero_copy_only=False) for t in (one, other))
            both = np.isfinite(a) & np.isfinite(b)
            differences.append(float(np.max(np.abs(a[both] - b[both]), initial=0.0)))
    return max(differences)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="the side against the CPU")
    parser.add_argument("--measures", nargs="+", default=MEASURE_NAMES)
    parser.add_argument("--fit-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit_child:
        fit_here(args.fit_child)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device is visible here (torch.cuda.is_available() is False)")
        print("  nothing was timed; run it on a machine with a GPU, or --device cpu to check it")
        return
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    root = tempfile.mkdtemp(prefix="gpu_bench_")
    spec = CircuitSpec(op="xor", n_samples=args.rows, dims=args.dims, noise=0.1, seed=0)
    table = generate_circuit(spec).select(["sample_id", "label", "x1", "x2"])
    data = storage.join(root, "data")
    write_table_shards(table, data, 4)
    weights = storage.join(root, "fcnn.pt")
    torch.save(build_fcnn(**fcnn_kwargs(args.dims)).state_dict(), weights)
    side = f"{device.type} (again)" if device.type == "cpu" else device.type
    rows = []
    for name in args.measures:
        fitted = job(data, storage.join(root, name, "device"), name, args.dims, args.rows, weights)
        fits = MEASURES[name].fit_sample(fitted) is not None
        fit_device = fit_in_child(fitted, gpu_visible=device.type == "cuda") if fits else None
        fit_cpu = None
        if fits:
            on_cpu = fitted.model_copy(update={"output": storage.join(root, name, "cpu")})
            fit_cpu = fit_in_child(on_cpu, gpu_visible=False)
        shards = inspect_shards(fitted)
        duplicates = duplicate_ids(fitted, shards)
        background = (
            background_inputs(fitted, shards, duplicates) if needs_background(fitted) else None
        )
        scored = sample_table(fitted, shards, SCORED_BATCHES * 4096, 1, duplicates)
        batches = [scored.slice(start, 4096) for start in range(0, scored.num_rows, 4096)]
        rate_device, out_device = score_rate(fitted, background, batches, device)
        rate_cpu, out_cpu = score_rate(fitted, background, batches, torch.device("cpu"))
        rows.append(
            {
                "measure": name,
                "fit cpu s": fit_cpu,
                f"fit {side} s": fit_device,
                "fit speed-up": fit_cpu / fit_device if fits else None,
                "score cpu rows/s": rate_cpu,
                f"score {side} rows/s": rate_device,
                "score speed-up": rate_device / rate_cpu,
                "largest |difference|": largest_difference(out_device, out_cpu),
            }
        )
        log(f"[bench] {name}: done")
    show(
        f"{device} against the CPU: {args.rows:,} rows of 2 × {args.dims} features, batches of "
        f"4,096 rows, {os.cpu_count()} CPU threads",
        pl.DataFrame(rows),
        [
            "fit: Measure.fit in a child process, its parts one after another",
            f"score: ScoreOperator over {SCORED_BATCHES} batches after one warm-up batch",
            "InterSHAP: 2 modalities, the job's default background size",
        ],
        float_precision=3,
    )
    print_finished(started, load_before)


if __name__ == "__main__":
    main()

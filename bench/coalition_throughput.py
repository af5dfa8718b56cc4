"""Coalition-value throughput: the score pipeline against a tight torch loop.

Part 1, per input size N (M = 3 modalities, background masking with K rows):

* pipeline: ``run_score`` on sharded Parquet (Ray Data: read + validate tasks, then the
  InterSHAP operator on an actor pool, then the Parquet writer), timed from the call to its
  return; Ray itself is started before the first run and its start-up is reported apart.
* limit: ``CoalitionValues`` (the code the operator runs for the 2**M masked batches) over the
  same rows as in-memory tensors, same model, K, batch size and torch threads.
* I/O floor: the same ``run_score`` with a measure that does almost nothing (one sum per row,
  no model) in place of InterSHAP: Ray Data's read, validate, actor hand-off and write alone,
  the most any measure's pipeline could reach on this machine;
* two in-process stages of the pipeline, timed in the driver after Ray is shut down, to show
  where the pipeline loses time: read + validate (``read_shard`` per shard) and the
  whole operator (``ScoreOperator`` with InterSHAP on Arrow batches: the limit plus Arrow → tensor
  conversion, Shapley values, interaction matrices and the output table).

Part 2: ``CoalitionValues`` (encoders cached, only ``fuse`` per coalition) against
``naive_coalition_values`` (whole model per coalition) on a late-fusion FCNN with M = 4.

Part 3: the block-split first layer (``CoalitionValues``' default for models that declare it)
against the general path (``split=False``) on early- and intermediate-fusion FCNNs at
M = 2, 3, 4, at the pipeline's K and batch and at a large K with as many masked rows.

    python bench/coalition_throughput.py                 # sizes 10k, 100k, 1M
    python bench/coalition_throughput.py --quick         # smoke run, seconds
    python bench/coalition_throughput.py --parts split   # part 3 only
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from shards import row_ids, write_shards  # bench/shards.py
from tables import show  # bench/tables.py, beside this script

from intermodal.cluster import ensure_ray, shutdown_ray
from intermodal.measures import parse_config, register
from intermodal.measures.base import BatchOperator, Measure
from intermodal.models.fcnn import Fusion, build_fcnn
from intermodal.operators.coalitions import CoalitionValues, naive_coalition_values
from intermodal.pipelines.inputs import Shard, duplicate_ids, inspect_shards, read_shard
from intermodal.pipelines.score import background_inputs, run_score
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values

N_MODALITIES = 3
NUM_CLASSES = 2
SHARD_ROWS = 65_536  # rows per generated shard (and per generated chunk): 1M rows → 16 shards
FCNN_FACTORY = "intermodal.models.fcnn:build_fcnn"
DESCRIPTION = "Coalition-value throughput: the score pipeline against a tight torch loop."


@dataclass(frozen=True)
class Settings:
    dims: int
    fusion: Fusion
    background_size: int
    batch_size: int
    actors: int
    cpus_per_actor: float
    torch_threads: int

    @property
    def names(self) -> list[str]:
        return [f"m{m}" for m in range(N_MODALITIES)]


@dataclass(frozen=True)
class Stages:
    """Seconds spent in each in-process stage over all rows of one input."""

    read_validate: float
    operator: float
    limit: float


class IOFloor(Measure):
    """A measure that does almost nothing: the pipeline around it is the I/O floor."""

    name = "io_floor"

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [pa.field("io_floor_sum", pa.float64())]

    def operator(self, job: JobConfig, shared: Any) -> BatchOperator:
        first = job.modalities[0]
        return lambda context: {"io_floor_sum": context.values[first.name].sum(axis=1)}


def floor_config(config: JobConfig) -> JobConfig:
    """``config`` with the I/O floor's measure in place of the model and its measures."""
    data = config.model_dump(mode="json")
    data.update(measures=[IOFloor.name], model=None, output=f"{config.output}-floor")
    return parse_config(data, source="bench")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_input(uri: Path, n_rows: int, dims: int, seed: int) -> int:
    """Random rows in the input schema, generated and written one shard at a time."""
    rng = np.random.default_rng(seed)

    def random_shard(_: int, start: int, stop: int) -> pa.Table:
        n = stop - start
        columns: dict[str, pa.Array] = {
            "sample_id": row_ids(start, stop),
            "label": pa.array(rng.integers(0, NUM_CLASSES, n, dtype=np.int64)),
        }
        for m in range(N_MODALITIES):
            flat = rng.standard_normal(n * dims, dtype=np.float32)
            columns[f"m{m}"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), dims)
        return pa.table(columns)

    return write_shards(uri, n_rows, SHARD_ROWS, random_shard)


def save_weights(uri: Path, settings: Settings) -> dict[str, Any]:
    """A seeded FCNN's state_dict at ``uri``; returns the factory kwargs that rebuild it."""
    kwargs: dict[str, Any] = {
        "modalities": settings.names,
        "dims": [settings.dims] * N_MODALITIES,
        "num_classes": NUM_CLASSES,
        "fusion": settings.fusion,
    }
    torch.manual_seed(0)
    torch.save(build_fcnn(**kwargs).state_dict(), uri)
    return kwargs


def job_config(
    root: Path, n_rows: int, settings: Settings, kwargs: dict[str, Any], weights: Path
) -> JobConfig:
    return parse_config(
        {
            "dataset": f"bench-{n_rows}",
            "input": str(root / f"input-{n_rows}"),
            "output": str(root / f"run-{n_rows}"),
            "num_classes": NUM_CLASSES,
            "modalities": [{"name": m, "shape": [settings.dims]} for m in settings.names],
            "model": {
                "name": "fcnn",
                "factory": FCNN_FACTORY,
                "kwargs": kwargs,
                "weights": str(weights),
            },
            "intershap": {"masking": "background", "background_size": settings.background_size},
            "compute": {
                "batch_size": settings.batch_size,
                "actors": settings.actors,
                "cpus_per_actor": settings.cpus_per_actor,
                "torch_threads": settings.torch_threads,
            },
        },
        source="bench",
    )


def stage_seconds(config: JobConfig, rejects: Path, limit_threads: int) -> Stages:
    """The pipeline's stages one after the other in this process, shard by shard (bounded
    memory), after one untimed warm-up batch through the operator and the limit."""
    shards: list[Shard] = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    background = background_inputs(config, shards, duplicates)
    operator = ScoreOperator(config, background=background)  # sets torch threads, builds model
    # The limit gets the whole machine, whatever the pipeline's actors were given.
    torch.set_num_threads(limit_threads)
    # The limit: the same CoalitionValues object the operator calls, on tensors in memory.
    coalitions = operator.shared.coalition_values
    assert coalitions is not None
    batch_size = config.compute.batch_size

    def tensors(table: pa.Table) -> dict[str, torch.Tensor]:
        return {
            m.name: torch.from_numpy(modality_values(table.column(m.name), m.size).copy())
            for m in config.modalities
        }

    def validated(shard: Shard) -> Iterator[pa.Table]:
        return read_shard(shard, config, duplicates, str(rejects))

    warm_up = next(validated(shards[0])).slice(0, batch_size)
    operator(warm_up)
    coalitions(tensors(warm_up))

    read_validate = operator_seconds = limit_seconds = 0.0
    for shard in shards:
        started = time.perf_counter()
        valid = pa.concat_tables(validated(shard)).combine_chunks()
        read_validate += time.perf_counter() - started
        batches = [
            pa.Table.from_batches([batch]) for batch in valid.to_batches(max_chunksize=batch_size)
        ]
        started = time.perf_counter()
        for batch in batches:
            operator(batch)
        operator_seconds += time.perf_counter() - started
        inputs = tensors(valid)
        started = time.perf_counter()
        for start in range(0, valid.num_rows, batch_size):
            coalitions({m: x[start : start + batch_size] for m, x in inputs.items()})
        limit_seconds += time.perf_counter() - started
    return Stages(read_validate, operator_seconds, limit_seconds)


def pipeline_table(
    sizes: Sequence[int], root: Path, settings: Settings, limit_threads: int
) -> pl.DataFrame:
    weights = root / "weights.pt"
    kwargs = save_weights(weights, settings)
    configs = {n: job_config(root, n, settings, kwargs, weights) for n in sizes}
    shards = {}
    for n, config in configs.items():
        started = time.perf_counter()
        shards[n] = write_input(Path(config.input), n, settings.dims, seed=n)
        log(f"[bench] wrote {n} rows in {shards[n]} shards ({time.perf_counter() - started:.1f} s)")

    started = time.perf_counter()
    ensure_ray()
    log(f"[bench] Ray started in {time.perf_counter() - started:.1f} s (not in pipeline times)")
    register(IOFloor())
    pipeline, floor, rss = {}, {}, {}
    for n, config in configs.items():
        started = time.perf_counter()
        run_score(config, progress=log)
        pipeline[n] = time.perf_counter() - started
        rss[n] = peak_rss_mib()
        log(f"[bench] pipeline {n} rows: {pipeline[n]:.1f} s")
        started = time.perf_counter()
        run_score(floor_config(config), progress=log)
        floor[n] = time.perf_counter() - started
        log(f"[bench] I/O floor {n} rows: {floor[n]:.1f} s")
    shutdown_ray()  # idle Ray processes must not share the cores with the in-process stages

    rows = []
    for n, config in configs.items():
        stages = stage_seconds(config, root / f"stage-rejects-{n}", limit_threads)
        rows.append(
            {
                "N": n,
                "shards": shards[n],
                "pipeline s": pipeline[n],
                "pipeline/s": n / pipeline[n],
                "limit/s": n / stages.limit,
                "pipe/limit": stages.limit / pipeline[n],
                "floor/s": n / floor[n],
                "pipe/floor": floor[n] / pipeline[n],
                "operator/s": n / stages.operator,
                "read+valid/s": n / stages.read_validate,
                "driver RSS MiB": rss[n],
            }
        )
        log(f"[bench] stages {n} rows: {stages}")
    return pl.DataFrame(rows)


@dataclass(frozen=True)
class CachedVsNaive:
    batch: int
    background: int
    dims: int
    repeats: int


def cached_vs_naive(spec: CachedVsNaive) -> pl.DataFrame:
    """Late-fusion FCNN, M = 4: median seconds of cached and naive coalition values."""
    names = [f"m{m}" for m in range(4)]
    torch.manual_seed(0)
    model = build_fcnn(names, [spec.dims] * 4, NUM_CLASSES, "late").eval()
    inputs = {m: torch.randn(spec.batch, spec.dims) for m in names}
    background = {m: torch.randn(spec.background, spec.dims) for m in names}
    cached_times, naive_times = [], []
    for _ in range(spec.repeats):
        started = time.perf_counter()
        cached = CoalitionValues(model, background)(inputs)  # includes encoding the background
        cached_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        naive = naive_coalition_values(model, inputs, background)
        naive_times.append(time.perf_counter() - started)
    cached_s, naive_s = statistics.median(cached_times), statistics.median(naive_times)
    return pl.DataFrame(
        {
            "cached s": [cached_s],
            "naive s": [naive_s],
            "naive/cached": [naive_s / cached_s],
            "max |diff|": [f"{float((cached - naive).abs().max()):.1e}"],
        }
    )


@dataclass(frozen=True)
class SplitVsUnsplit:
    dims: int
    shapes: list[tuple[int, int]]  # (batch, K) pairs
    repeats: int


def split_vs_unsplit(spec: SplitVsUnsplit, fusion: Fusion) -> pl.DataFrame:
    """Median seconds of one ``CoalitionValues`` call (construction apart) with and without
    the block split, interleaved, per M and (batch, K)."""
    rows = []
    for n_modalities in (2, 3, 4):
        names = [f"m{m}" for m in range(n_modalities)]
        torch.manual_seed(0)
        model = build_fcnn(names, [spec.dims] * n_modalities, NUM_CLASSES, fusion).eval()
        for batch, n_background in spec.shapes:
            inputs = {m: torch.randn(batch, spec.dims) for m in names}
            background = {m: torch.randn(n_background, spec.dims) for m in names}
            paths = {
                "split": CoalitionValues(model, background),
                "unsplit": CoalitionValues(model, background, split=False),
            }
            values = {name: path(inputs) for name, path in paths.items()}  # warm-up
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(spec.repeats):
                for name, path in paths.items():
                    started = time.perf_counter()
                    path(inputs)
                    times[name].append(time.perf_counter() - started)
            split_s, unsplit_s = (statistics.median(times[name]) for name in paths)
            difference = float((values["split"] - values["unsplit"]).abs().max())
            rows.append(
                {
                    "M": n_modalities,
                    "B": batch,
                    "K": n_background,
                    "split ms": split_s * 1000,
                    "unsplit ms": unsplit_s * 1000,
                    "unsplit/split": unsplit_s / split_s,
                    "max |diff|": f"{difference:.1e}",
                }
            )
            log(f"[bench] {fusion} split vs unsplit: {rows[-1]}")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("/tmp/coalition_throughput"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (2,000 rows)")
    parser.add_argument("--dims", type=int, default=128, help="features per modality (part 1)")
    parser.add_argument(
        "--fusion", choices=["early", "intermediate", "late"], default="intermediate"
    )
    parser.add_argument("--background-size", type=int, default=8, help="K (part 1)")
    parser.add_argument("--batch-size", type=int, default=1024)
    # One single-threaded actor per core; half a Ray CPU each leaves room for the writer
    # tasks (two 1-CPU actors on a 2-CPU machine can starve them, ray#44687).
    cores = os.cpu_count() or 1
    parser.add_argument("--actors", type=int, default=cores)
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--limit-threads", type=int, default=cores, help="torch threads of the limit loop"
    )
    parser.add_argument("--repeats", type=int, default=5, help="part 2 and 3 repeats (median)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["pipeline", "cached", "split"],
        default=["pipeline", "cached", "split"],
        help="1: pipeline vs limit, 2: cached vs naive, 3: split vs unsplit",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [2_000] if args.quick else args.sizes
    settings = Settings(
        dims=args.dims,
        fusion=args.fusion,
        background_size=args.background_size,
        batch_size=args.batch_size,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        torch_threads=args.torch_threads,
    )
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    repeats = 1 if args.quick else args.repeats
    if "pipeline" in args.parts:
        args.out.mkdir(parents=True, exist_ok=True)
        show(
            f"1. Score pipeline vs limit: M = {N_MODALITIES}, FCNN {settings.fusion} fusion, "
            f"{settings.dims} dims per modality, {NUM_CLASSES} classes, background masking "
            f"K = {settings.background_size}, batch {settings.batch_size}",
            pipeline_table(sizes, args.out, settings, args.limit_threads),
            [
                f"compute: actors {settings.actors}, cpus_per_actor {settings.cpus_per_actor}, "
                f"torch_threads {settings.torch_threads}; limit and in-process stages: "
                f"torch.set_num_threads({args.limit_threads}), the whole machine",
                "pipeline: run_score call to return (Ray already up; includes actor start, "
                "duplicate-id scan, background draw, Parquet write)",
                "limit: CoalitionValues.__call__ per batch on in-memory tensors, after an "
                "untimed warm-up batch; pipe/limit = throughput ratio",
                "floor: the same run_score with a one-sum-per-row measure, no model; "
                "pipe/floor = throughput ratio",
                "operator/s: ScoreOperator.__call__ (InterSHAP) on Arrow batches in-process; "
                "read+valid/s: read_shard per shard in-process (one thread of Python)",
                "driver RSS: running peak of this process after each run_score (Ray workers "
                "not included)",
            ],
        )
    torch.set_num_threads(args.limit_threads)
    if "cached" in args.parts:
        spec = CachedVsNaive(
            batch=256 if args.quick else 1024, background=16, dims=128, repeats=repeats
        )
        show(
            f"2. Cached vs naive coalition values: late-fusion FCNN, M = 4, {spec.dims} dims "
            f"per modality, B = {spec.batch}, K = {spec.background}, median of {spec.repeats}",
            cached_vs_naive(spec),
            [
                "cached: CoalitionValues(model, background)(inputs), construction included "
                "(block split: the late-fusion head is one Linear)"
            ],
        )
    if "split" in args.parts:
        # One thread, as the pipeline's actors (compute.torch_threads): on a shared machine
        # every extra thread waits at each op's barrier, and the split path runs more, smaller
        # ops. The pipeline's batch and K, then a large K over as many masked rows.
        torch.set_num_threads(args.torch_threads)
        shapes = [(args.batch_size, args.background_size), (32, 256)]
        split_spec = SplitVsUnsplit(dims=args.dims, shapes=shapes, repeats=repeats)
        for fusion in ("early", "intermediate"):
            show(
                f"3. Block-split first layer vs the general path: {fusion}-fusion FCNN, "
                f"{split_spec.dims} dims per modality, {NUM_CLASSES} classes, "
                f"torch.set_num_threads({args.torch_threads}), median of {split_spec.repeats}, "
                "interleaved",
                split_vs_unsplit(split_spec, fusion),
                [
                    "split ms / unsplit ms: one CoalitionValues call (B samples, all 2**M "
                    "coalitions) with the split (the default) and with split=False; "
                    "construction apart",
                ],
            )
    print(
        f"\nbench finished in {time.perf_counter() - started:.0f} s; driver peak RSS "
        f"{peak_rss_mib():.0f} MiB; 1-min load average {load_before:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()

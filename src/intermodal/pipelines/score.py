"""``score``: input shards → validated rows → InterSHAP operator on an actor pool → scores/."""

from __future__ import annotations

import platform
import time
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from intermodal import __version__, storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.discretize import Codebook
from intermodal.operators.score import ScoreOperator
from intermodal.pipelines.fit import fit_codebooks, load_codebooks
from intermodal.pipelines.fit_lsmi import fit_lsmi, lsmi_fitted
from intermodal.pipelines.fit_pid_batch import batch_fitted, fit_pid_batch
from intermodal.pipelines.inputs import (
    NoValidRows,
    Shard,
    duplicate_ids,
    fingerprint,
    inspect_shards,
    read_and_validate,
    sample_rows,
)
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig

# Rows of score output an actor buffers before handing them on as one block. Ray Data's
# default (target_max_block_size, 128 MiB) made a score actor hold most of a run's output: the
# shard list reaches the actor pool as one bundle, so one task scores every shard and its
# buffer flushed only at 128 MiB of logical row bytes (actor memory rose from 355 to 731 MiB
# for LSMI and 714 to 2,753 MiB for PID BATCH between 100k and 1M rows). Small blocks go to
# the writer as they fill, so actor memory is flat in N; the writer makes a file per block.
SCORE_BLOCK_BYTES = 8 << 20

def needs_background(config: JobConfig) -> bool:
    """Masked coalitions are computed: InterSHAP, or LSMI reading the model's coalitions."""
    lsmi_from_model = "lsmi" in config.measures and config.lsmi.classifiers == "model"
    return "intershap" in config.measures or lsmi_from_model


def background_inputs(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array
) -> dict[str, np.ndarray]:
    """The rows that stand in for masked modalities: K sampled rows, their mean, or zeros."""
    settings = config.intershap
    if settings.masking == "zeros":
        return {m.name: np.zeros((1, m.size), np.float32) for m in config.modalities}
    if settings.background_uri is not None:
        shards = inspect_shards(config, settings.background_uri)
        duplicates = pa.array([], duplicates.type)
    rows = sample_rows(config, shards, settings.background_size, settings.seed, duplicates)
    if settings.masking == "mean":
        return {name: x.mean(axis=0, keepdims=True) for name, x in rows.items()}
    return rows


def _count_rows(uri: str) -> int:
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        return 0
    return sum(storage.parquet_file(f).metadata.num_rows for f in storage.list_parquet(uri))


def package_versions() -> dict[str, str]:
    versions = {"intermodal": __version__, "python": platform.python_version()}
    for package in ("ray", "torch", "pyarrow", "numpy", "polars", "pydantic"):
        versions[package] = version(package)
    return versions


def _score_stage(
    rows: ray.data.Dataset,
    config: JobConfig,
    background: dict[str, np.ndarray] | None,
    codebooks: dict[str, Codebook] | None,
) -> ray.data.Dataset:
    """Validated rows → score rows on one actor pool (``operators.score.ScoreOperator``)."""
    compute = config.compute
    arrays = None if codebooks is None else {n: b.to_arrays() for n, b in codebooks.items()}
    return rows.map_batches(
        ScoreOperator,
        fn_constructor_kwargs={
            "config": config.model_dump(mode="json"),
            "background": background,
            "codebooks": arrays,
        },
        compute=ray.data.ActorPoolStrategy(size=compute.actors),
        num_cpus=compute.cpus_per_actor,
        num_gpus=compute.gpus_per_actor,
        batch_size=compute.batch_size,
        batch_format="pyarrow",
    )


def run_score(config: JobConfig, progress: Progress = print) -> dict:
    """Score every valid input row; returns the manifest written to the run directory."""
    started = time.time()
    paths = RunPaths(config.output)
    shards = inspect_shards(config)
    total_rows = sum(shard.num_rows for shard in shards)
    progress(
        f"[score] {config.dataset}: {len(shards)} shards, {total_rows} rows; "
        f"measures {', '.join(config.measures)}; model {config.model_name}"
    )
    duplicates = duplicate_ids(config, shards)
    background = codebooks = None
    try:
        if needs_background(config):
            background = background_inputs(config, shards, duplicates)
        if "pid_cvx" in config.measures:
            codebooks = load_codebooks(config, shards)
            if codebooks is None:
                codebooks = fit_codebooks(config, shards, duplicates, progress)
            else:
                progress("[score] PID codebooks fitted on this input and settings: reused")
        if "pid_batch" in config.measures:
            if batch_fitted(config, shards):
                progress("[score] PID BATCH models fitted on this input and settings: reused")
            else:
                fit_pid_batch(config, shards, duplicates, progress)
        if "lsmi" in config.measures:
            if lsmi_fitted(config, shards):
                progress("[score] LSMI models fitted on this input and settings: reused")
            else:
                fit_lsmi(config, shards, duplicates, progress)
        any_valid = True
    except NoValidRows:
        if config.intershap.background_uri is not None and needs_background(config):
            raise
        any_valid = False  # every input row is invalid: there are only rejects to write
    for stale in (paths.scores, paths.rejects, paths.global_):
        storage.remove(stale)

    ensure_ray()
    config_data = config.model_dump(mode="json")
    dataset = ray.data.from_items(
        [{"uri": shard.uri, "index": shard.index} for shard in shards],
        override_num_blocks=len(shards),
    )
    dataset.context.target_max_block_size = SCORE_BLOCK_BYTES  # this run's datasets only
    rows = dataset.map_batches(
        read_and_validate,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"config": config_data, "duplicates": duplicates, "rejects_uri": paths.rejects},
    )
    if any_valid:
        scores = _score_stage(rows, config, background, codebooks)
        fs, scores_path = storage.filesystem(paths.scores)
        scores.write_parquet(scores_path, filesystem=storage.arrow_filesystem(fs))
    else:
        rows.materialize()  # runs the read-and-validate stage, which writes rejects/

    n_scored, n_rejected = _count_rows(paths.scores), _count_rows(paths.rejects)
    manifest = {
        "dataset": config.dataset,
        "model": config.model_name,
        "config": config_data,
        "versions": package_versions(),
        "input": {
            "uri": config.input,
            "fingerprint": fingerprint(shards),
            "shards": [{"uri": s.uri, "rows": s.num_rows} for s in shards],
            "rows": total_rows,
        },
        "background_rows": 0 if background is None else len(next(iter(background.values()))),
        "codebooks": {}
        if codebooks is None
        else {name: {"kind": b.kind, "codes": b.n_codes} for name, b in codebooks.items()},
        "rows": {"scored": n_scored, "rejected": n_rejected},
        "seconds": {"score": round(time.time() - started, 3)},
    }
    storage.write_json(manifest, paths.manifest)
    progress(f"[score] {n_scored} rows scored, {n_rejected} rejected → {paths.root}")
    if n_scored + n_rejected != total_rows:
        raise RuntimeError(
            f"row accounting failed: {total_rows} input rows, {n_scored} scored, "
            f"{n_rejected} rejected"
        )
    return manifest

"""``score``: input shards → validated rows → every measure on an actor pool → scores/, resumable
by shard."""

from __future__ import annotations

import platform
import time
from functools import partial
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from intermodal import __version__, storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.discretize import Codebook
from intermodal.operators.score import ScoreOperator
from intermodal.pipelines.fit import fit_codebooks, load_codebooks
from intermodal.pipelines.fit_fusion import fit_fusion, fusion_fitted
from intermodal.pipelines.fit_lsmi import fit_lsmi, lsmi_fitted
from intermodal.pipelines.fit_pid_batch import batch_fitted, fit_pid_batch
from intermodal.pipelines.inputs import (
    NoValidRows,
    Shard,
    ShardSource,
    duplicate_ids,
    fingerprint,
    inspect_shards,
    sample_rows,
)
from intermodal.pipelines.resume import ScoreSink, resume_key, shard_progress
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig

# Rows of score output an actor buffers before handing them on as one block. Ray Data's
# default (target_max_block_size, 128 MiB of logical row bytes) let a score actor hold up to
# that much of its output (actor memory rose from 355 to 731 MiB for LSMI and from 714 to
# 2,753 MiB for PID BATCH between 100k and 1M rows). Small blocks go to the writer as they
# fill, so actor memory is flat in N; the writer makes a file per block.
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


def _prepare(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array, progress: Progress
) -> tuple[dict[str, np.ndarray] | None, dict[str, Codebook] | None, bool]:
    """Background rows and fitted artifacts the measures need: ``(background, codebooks,
    refitted)``, refitted when any artifact was fitted now rather than reused."""
    background = codebooks = None
    refitted = False
    if needs_background(config):
        background = background_inputs(config, shards, duplicates)
    if "pid_cvx" in config.measures:
        codebooks = load_codebooks(config, shards)
        if codebooks is None:
            codebooks, refitted = fit_codebooks(config, shards, duplicates, progress), True
        else:
            progress("[score] PID codebooks fitted on this input and settings: reused")
    fits = (
        ("pid_batch", "PID BATCH", batch_fitted, fit_pid_batch),
        ("lsmi", "LSMI", lsmi_fitted, fit_lsmi),
        (
            "i2moe",
            "I2MoE",
            partial(fusion_fitted, measure="i2moe"),
            partial(fit_fusion, measure="i2moe"),
        ),
        (
            "intense",
            "InTense",
            partial(fusion_fitted, measure="intense"),
            partial(fit_fusion, measure="intense"),
        ),
    )
    for measure, title, fitted, fit in fits:
        if measure not in config.measures:
            continue
        if fitted(config, shards):
            progress(f"[score] {title} models fitted on this input and settings: reused")
        else:
            fit(config, shards, duplicates, progress)
            refitted = True
    return background, codebooks, refitted


def _recorded_resume_key(paths: RunPaths) -> dict | None:
    fs, path = storage.filesystem(paths.manifest)
    return storage.read_json(paths.manifest).get("resume") if fs.exists(path) else None


def _manifest(
    config: JobConfig,
    shards: list[Shard],
    key: dict,
    finished: set[int],
    background: dict[str, np.ndarray] | None,
    codebooks: dict[str, Codebook] | None,
) -> dict:
    return {
        "dataset": config.dataset,
        "model": config.model_name,
        "status": "complete" if len(finished) == len(shards) else "running",
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
        "resume": key,
        "input": {
            "uri": config.input,
            "fingerprint": key["input"],
            "shards": [
                {"uri": s.uri, "rows": s.num_rows, "finished": s.index in finished} for s in shards
            ],
            "rows": sum(shard.num_rows for shard in shards),
        },
        "background_rows": 0 if background is None else len(next(iter(background.values()))),
        "codebooks": {}
        if codebooks is None
        else {name: {"kind": b.kind, "codes": b.n_codes} for name, b in codebooks.items()},
    }


def run_score(config: JobConfig, progress: Progress = print, restart: bool = False) -> dict:
    """Score every valid input row; returns the manifest written to the run directory.

    A run of the same config on the same input that was stopped part-way resumes: shards it
    finished are kept and only the others are scored (``pipelines.resume``); ``restart``
    scores everything again."""
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
        background, codebooks, refitted = _prepare(config, shards, duplicates, progress)
        any_valid = True
    except NoValidRows:
        if config.intershap.background_uri is not None and needs_background(config):
            raise
        any_valid, refitted = False, True  # every input row is invalid: only rejects to write
    config_data = config.model_dump(mode="json")
    key = resume_key(config_data, fingerprint(shards), __version__)
    storage.remove(paths.global_)
    if not restart and not refitted and _recorded_resume_key(paths) == key:
        pending = shard_progress(paths, shards).pending
        progress(f"[score] resuming: {len(shards) - len(pending)} of {len(shards)} shards done")
    else:
        storage.remove(paths.scores)
        storage.remove(paths.rejects)
        pending = shards
    done = {shard.index for shard in shards} - {shard.index for shard in pending}
    storage.write_json(_manifest(config, shards, key, done, background, codebooks), paths.manifest)

    if pending:
        ensure_ray()
        rows = ray.data.read_datasource(
            ShardSource(pending, config_data, duplicates, paths.rejects),
            # one block per read task: Ray would otherwise split each shard's rows into many
            # small blocks to reach its default parallelism (and so many small score files)
            override_num_blocks=len(pending),
        )
        rows.context.target_max_block_size = SCORE_BLOCK_BYTES  # this run's datasets only
        if any_valid:
            _score_stage(rows, config, background, codebooks).write_datasink(
                ScoreSink(paths.scores)
            )
        else:
            rows.materialize()  # runs the read stage, which writes rejects/

    n_scored, n_rejected = _count_rows(paths.scores), _count_rows(paths.rejects)
    if n_scored + n_rejected != total_rows:
        raise RuntimeError(
            f"row accounting failed: {total_rows} input rows, {n_scored} scored, "
            f"{n_rejected} rejected"
        )
    manifest = _manifest(config, shards, key, {s.index for s in shards}, background, codebooks)
    manifest["rows"] = {"scored": n_scored, "rejected": n_rejected}
    manifest["seconds"] = {"score": round(time.time() - started, 3)}
    storage.write_json(manifest, paths.manifest)
    progress(f"[score] {n_scored} rows scored, {n_rejected} rejected → {paths.root}")
    return manifest

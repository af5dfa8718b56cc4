"""``score``: input shards → validated rows → InterSHAP operator on an actor pool → scores/."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from intermodal import __version__, storage
from intermodal.cluster import ensure_ray
from intermodal.operators.intershap import InterSHAPOperator
from intermodal.pipelines.inputs import (
    NoValidRows,
    Shard,
    duplicate_ids,
    fingerprint,
    inspect_shards,
    read_and_validate,
    sample_rows,
)
from intermodal.schemas.config import JobConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def scores(self) -> str:
        return storage.join(self.root, "scores")

    @property
    def rejects(self) -> str:
        return storage.join(self.root, "rejects")

    @property
    def global_(self) -> str:
        return storage.join(self.root, "global")

    @property
    def artifacts(self) -> str:
        return storage.join(self.root, "artifacts")

    @property
    def manifest(self) -> str:
        return storage.join(self.root, "manifest.json")


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


def run_score(config: JobConfig, progress: Progress = print) -> dict:
    """Score every valid input row; returns the manifest written to the run directory."""
    started = time.time()
    paths = RunPaths(config.output)
    shards = inspect_shards(config)
    total_rows = sum(shard.num_rows for shard in shards)
    progress(
        f"[score] {config.dataset}: {len(shards)} shards, {total_rows} rows; "
        f"model {config.model.name}"
    )
    duplicates = duplicate_ids(config, shards)
    try:
        background = background_inputs(config, shards, duplicates)
    except NoValidRows:
        if config.intershap.background_uri is not None:
            raise
        background = None  # every input row is invalid: there are only rejects to write
    for stale in (paths.scores, paths.rejects, paths.global_):
        storage.remove(stale)

    ensure_ray()
    compute = config.compute
    config_data = config.model_dump(mode="json")
    dataset = ray.data.from_items(
        [{"uri": shard.uri, "index": shard.index} for shard in shards],
        override_num_blocks=len(shards),
    )
    rows = dataset.map_batches(
        read_and_validate,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"config": config_data, "duplicates": duplicates, "rejects_uri": paths.rejects},
    )
    if background is None:
        rows.materialize()  # runs the read-and-validate stage, which writes rejects/
    else:
        scores = rows.map_batches(
            InterSHAPOperator,
            fn_constructor_kwargs={"config": config_data, "background": background},
            compute=ray.data.ActorPoolStrategy(size=compute.actors),
            num_cpus=compute.cpus_per_actor,
            num_gpus=compute.gpus_per_actor,
            batch_size=compute.batch_size,
            batch_format="pyarrow",
        )
        fs, scores_path = storage.filesystem(paths.scores)
        scores.write_parquet(scores_path, filesystem=storage.arrow_filesystem(fs))

    n_scored, n_rejected = _count_rows(paths.scores), _count_rows(paths.rejects)
    manifest = {
        "dataset": config.dataset,
        "model": config.model.name,
        "config": config_data,
        "versions": package_versions(),
        "input": {
            "uri": config.input,
            "fingerprint": fingerprint(shards),
            "shards": [{"uri": s.uri, "rows": s.num_rows} for s in shards],
            "rows": total_rows,
        },
        "background_rows": 0 if background is None else len(next(iter(background.values()))),
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

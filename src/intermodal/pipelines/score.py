"""``score``: input shards → validated rows → every measure on an actor pool → scores/, resumable
by shard."""

from __future__ import annotations

import platform
import sys
import threading
import time
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from intermodal import __version__, storage
from intermodal.cluster import ensure_ray
from intermodal.cluster.resources import actor_pool, check_compute
from intermodal.measures import Measure, coalition_settings, job_measures
from intermodal.pipelines.artifacts import fit_measures, fitted
from intermodal.pipelines.inputs import (
    NoValidRows,
    Shard,
    ShardSource,
    duplicate_ids,
    fingerprint,
    inspect_shards,
    sample_rows,
    sample_table,
    shard_file_prefix,
)
from intermodal.pipelines.preflight import PREFLIGHT_ROWS, check_model, check_model_on_workers
from intermodal.pipelines.resume import ScoreSink, resume_key, scored_rows, shard_progress
from intermodal.pipelines.run import Progress, RunPaths, ship_measures
from intermodal.pipelines.score_stage import ScoreOperator, scores_schema
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import REJECT_SCHEMA

# Rows of score output an actor buffers before handing them on as one block. Ray Data's
# default (target_max_block_size, 128 MiB of logical row bytes) let a score actor hold up to
# that much of its output (actor memory rose from 355 to 731 MiB for LSMI and from 714 to
# 2,753 MiB for PID BATCH between 100k and 1M rows). Small blocks go to the writer as they
# fill, so actor memory is flat in N; the writer makes a file per block.
SCORE_BLOCK_BYTES = 8 << 20
LOG_SECONDS = 60.0  # without a terminal: the scoring heartbeat's interval


class ScoringHeartbeat:
    """Without a terminal (a job's log), one line every ``LOG_SECONDS`` with the rows scored so
    far and the rate, in place of Ray Data's progress blocks (which it silences); a terminal
    keeps Ray Data's bars."""

    def __init__(self, scores_uri: str, total_rows: int, progress: Progress) -> None:
        self.scores_uri, self.total_rows, self.progress = scores_uri, total_rows, progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> ScoringHeartbeat:
        if not sys.stdout.isatty():
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _beat(self) -> None:
        start, before = time.monotonic(), scored_rows(self.scores_uri)
        while not self.stop.wait(LOG_SECONDS):
            done = scored_rows(self.scores_uri)
            rate = (done - before) / (time.monotonic() - start)
            self.progress(
                f"[score] {done:,} of {self.total_rows:,} rows scored "
                f"({done / max(self.total_rows, 1):.0%}), {rate:,.0f} rows/s"
            )


def needs_background(config: JobConfig) -> bool:
    """Whether a measure of the job reads the model's masked coalition values."""
    return any(measure.needs(config).coalitions for measure in job_measures(config))


def background_inputs(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array
) -> dict[str, np.ndarray]:
    """The rows that stand in for masked modalities: K sampled rows, their mean, or zeros."""
    settings = coalition_settings(config)
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
    rows: ray.data.Dataset, config: JobConfig, measures: list[Measure], background: str | None
) -> ray.data.Dataset:
    """Validated rows → score rows on one actor pool (``pipelines.score_stage``); the actors
    read the ``background`` rows from the run directory, not from the object store, so an
    actor restarted after its node was lost rebuilds from the constructor's small arguments
    (ray#53727)."""
    compute = config.compute
    smallest, largest = actor_pool(compute)
    return rows.map_batches(
        ScoreOperator,
        fn_constructor_kwargs={"job": config, "measures": measures, "background": background},
        compute=ray.data.ActorPoolStrategy(min_size=smallest, max_size=largest),
        num_cpus=compute.cpus_per_actor,
        num_gpus=compute.gpus_per_actor,
        batch_size=compute.batch_size,
        batch_format="pyarrow",
    )


def _prepare(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array, progress: Progress
) -> tuple[dict[str, np.ndarray] | None, bool]:
    """Background rows and the fitted artifacts the measures need: ``(background,
    refitted)``, refitted when any artifact was fitted now rather than reused."""
    background = background_inputs(config, shards, duplicates) if needs_background(config) else None
    stale = []
    for measure in job_measures(config):
        if not fitted(config, measure, shards):
            stale.append(measure)
        elif measure.fit_sample(config) is not None:
            progress(f"[score] {measure.title} fitted on this input and settings: reused")
    refitted = bool(fit_measures(config, stale, shards, duplicates, progress))
    return background, refitted


def _recorded_resume_key(paths: RunPaths) -> dict | None:
    fs, path = storage.filesystem(paths.manifest)
    return storage.read_json(paths.manifest).get("resume") if fs.exists(path) else None


def _manifest(
    config: JobConfig,
    shards: list[Shard],
    key: dict,
    finished: set[int],
    background: dict[str, np.ndarray] | None,
    artifacts: dict[str, dict],
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
        "artifacts": artifacts,
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
    background = None
    measures = job_measures(config)
    try:
        if config.model is not None:  # a broken model fails here, not in an actor
            check_model(config, sample_table(config, shards, PREFLIGHT_ROWS, 0, duplicates))
        ensure_ray()
        check_compute(config.compute)  # a setting the cluster cannot satisfy: refuse, not wait
        check_model_on_workers(config)
        background, refitted = _prepare(config, shards, duplicates, progress)
        any_valid = True
    except NoValidRows:
        if coalition_settings(config).background_uri is not None and needs_background(config):
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
    artifacts = {m.name: m.describe_artifacts(config) for m in measures} if any_valid else {}
    artifacts = {name: facts for name, facts in artifacts.items() if facts}
    storage.write_json(_manifest(config, shards, key, done, background, artifacts), paths.manifest)

    if pending:
        ensure_ray()
        ship_measures(measures)  # before anything that pickles the job or its measures
        rows = ray.data.read_datasource(
            ShardSource(pending, config, duplicates, paths.rejects),
            # one block per read task: Ray would otherwise split each shard's rows into many
            # small blocks to reach its default parallelism (and so many small score files)
            override_num_blocks=len(pending),
        )
        rows.context.target_max_block_size = SCORE_BLOCK_BYTES  # this run's datasets only
        with ScoringHeartbeat(paths.scores, total_rows, progress):
            if any_valid:
                background_uri = None
                if background is not None:
                    storage.write_arrays(background, paths.background)
                    background_uri = paths.background
                scores = _score_stage(rows, config, measures, background_uri)
                scores.write_datasink(ScoreSink(paths.scores))
            else:
                rows.materialize()  # runs the read stage, which writes rejects/

    n_scored, n_rejected = _count_rows(paths.scores), _count_rows(paths.rejects)
    _write_empty_tables(config, measures, shards, paths, n_scored, n_rejected)
    if n_scored + n_rejected != total_rows:
        raise RuntimeError(
            f"row accounting failed: {total_rows} input rows, {n_scored} scored, "
            f"{n_rejected} rejected"
        )
    manifest = _manifest(config, shards, key, {s.index for s in shards}, background, artifacts)
    manifest["rows"] = {"scored": n_scored, "rejected": n_rejected}
    reasons = top_reject_reasons(paths.rejects)
    manifest["reject_reasons"] = reasons
    manifest["seconds"] = {"score": round(time.time() - started, 3)}
    storage.write_json(manifest, paths.manifest)
    top = "; ".join(f"{count}× {reason}" for reason, count in reasons.items())
    progress(
        f"[score] {n_scored} rows scored, {n_rejected} rejected"
        + (f" (top reasons: {top})" if top else "")
        + f" → {paths.root}"
    )
    return manifest


def _write_empty_tables(
    config: JobConfig,
    measures: list[Measure],
    shards: list[Shard],
    paths: RunPaths,
    n_scored: int,
    n_rejected: int,
) -> None:
    """An empty, schema-bearing file in ``scores/`` or ``rejects/`` when no row went there, so
    every reader (polars, duckdb, Ray) finds the table and its columns after every run."""
    input_schema = storage.parquet_file(shards[0].uri).schema_arrow
    name = f"{shard_file_prefix(shards[0].index)}empty.parquet"  # counted as 0 rows of a shard
    if n_scored == 0:
        schema = scores_schema(
            config,
            measures,
            input_schema.field(config.id_column).type,
            [input_schema.field(group) for group in config.group_columns],
        )
        storage.write_table(schema.empty_table(), storage.join(paths.scores, name))
    if n_rejected == 0:
        storage.write_table(REJECT_SCHEMA.empty_table(), storage.join(paths.rejects, name))


def top_reject_reasons(rejects_uri: str, most: int = 3) -> dict[str, int]:
    """The most frequent reasons in ``rejects/`` and their counts (reading that column only)."""
    files = storage.list_parquet(rejects_uri) if _count_rows(rejects_uri) else []
    if not files:
        return {}
    reasons = pa.concat_tables(storage.read_table(f, columns=["reason"]) for f in files)
    counts = reasons.column("reason").value_counts().to_pylist()
    ranked = sorted(counts, key=lambda item: (-item["counts"], item["values"]))[:most]
    return {item["values"]: item["counts"] for item in ranked}


def too_few_scored(config: JobConfig, manifest: dict) -> str | None:
    """Why the run failed its scored-rows threshold (every row rejected, or fewer than
    ``min_scored_fraction`` scored), or None when it passed."""
    rows = manifest["rows"]
    total = rows["scored"] + rows["rejected"]
    if total == 0:
        return None
    if rows["scored"] == 0:
        return f"every one of the {total} input rows was rejected (see rejects/)"
    if rows["scored"] / total < config.min_scored_fraction:
        return (
            f"only {rows['scored']} of {total} rows scored, below min_scored_fraction = "
            f"{config.min_scored_fraction} (see rejects/)"
        )
    return None

"""``score``: input shards → validated rows → every measure, on tasks or an actor pool → scores/,
resumable by shard."""

from __future__ import annotations

import platform
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from intermodal import __version__, storage
from intermodal.cluster import ensure_ray
from intermodal.cluster.resources import (
    ClusterReach,
    actor_pool,
    check_compute,
    release_request,
    request_pool,
    wait_for_pool,
)
from intermodal.measures import (
    Measure,
    coalition_settings,
    job_measures,
    load_config,
    parse_config,
)
from intermodal.operators.context import constant_arrays
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
from intermodal.pipelines.preflight import (
    PREFLIGHT_ROWS,
    check_model,
    check_model_on_workers,
    check_preprocess,
)
from intermodal.pipelines.resume import ScoreSink, resume_key, scored_rows, shard_progress
from intermodal.pipelines.run import ship_measures
from intermodal.pipelines.score_stage import ScoreOperator, score_shard_blocks, scores_schema
from intermodal.progress import Progress, print_progress
from intermodal.rundir import RunPaths
from intermodal.schemas.config import ComputeConfig, JobConfig
from intermodal.schemas.tables import REJECT_SCHEMA, mask_key

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
    if set(settings.baseline) == set(config.modality_names):  # one row: nothing to average
        return constant_arrays(config, settings.baseline)
    if settings.masking == "zeros":
        rows = constant_arrays(config, {})
    else:
        if settings.background_uri is not None:
            shards = inspect_shards(config, settings.background_uri)
            duplicates = pa.array([], duplicates.type)
        rows = sample_rows(config, shards, settings.background_size, settings.seed, duplicates)
        if settings.masking == "mean":
            rows = {name: x.mean(axis=0, keepdims=True) for name, x in rows.items()}
    if not settings.baseline:
        return rows
    # the modalities with a baseline hold it in every background row
    n_rows = len(rows[config.modalities[0].name])
    constant = constant_arrays(config, settings.baseline, n_rows)
    chosen = {
        key
        for m in config.modalities
        if m.name in settings.baseline
        for key in (m.name, mask_key(m.name))
    }
    return {key: constant[key] if key in chosen else x for key, x in rows.items()}


def _count_rows(uri: str) -> int:
    if not storage.exists(uri):
        return 0
    return sum(storage.parquet_file(f).metadata.num_rows for f in storage.list_parquet(uri))


def package_versions() -> dict[str, str]:
    versions = {"intermodal": __version__, "python": platform.python_version()}
    for package in ("ray", "torch", "pyarrow", "numpy", "polars", "pydantic"):
        versions[package] = version(package)
    return versions


def _task_cpus(compute: ComputeConfig) -> float | None:
    """The CPUs of each read and write task: with ``score_on`` tasks those of a score task,
    so that Ray Data fuses the three into one task per shard (equal resources, and no
    ``concurrency`` cap, which stops the read from fusing); else Ray Data's default."""
    return compute.cpus_per_actor if compute.scores_on_tasks else None


def _score_stage(
    rows: ray.data.Dataset,
    plan: ScorePlan,
    background: str | None,
    placements: str,
) -> ray.data.Dataset:
    """Validated rows → score rows (``pipelines.score_stage``), on tasks or on one actor
    pool. The operator reads the ``background`` rows from the run directory, not from the
    object store, so an actor restarted after its node was lost rebuilds from the
    constructor's small arguments (ray#53727). Each process that builds the operator writes
    where it started into the folder ``placements``."""
    config = plan.config
    compute = config.compute
    arguments = {
        "job": config,
        "measures": plan.measures,
        "background": background,
        "placements": placements,
    }
    if compute.scores_on_tasks:
        # whole read blocks (batch_size None, so the read fuses in): the function batches them
        return rows.map_batches(
            score_shard_blocks,
            fn_kwargs={"run": uuid.uuid4().hex, **arguments},
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=compute.cpus_per_actor,
        )
    pool = actor_pool(compute, plan.reach)
    return rows.map_batches(
        ScoreOperator,
        fn_constructor_kwargs=arguments,
        compute=ray.data.ActorPoolStrategy(
            min_size=pool.smallest, max_size=pool.largest, initial_size=pool.initial
        ),
        num_cpus=compute.cpus_per_actor,
        num_gpus=compute.gpus_per_actor,
        batch_size=compute.batch_size,
        batch_format="pyarrow",
    )


@dataclass
class ScorePlan:
    """What the driver decides before any row is scored: the shards, the fitted artifacts and
    background rows, and the run's resume key (``plan_score``)."""

    config: JobConfig
    measures: list[Measure]
    shards: list[Shard]
    duplicates: pa.Array  # ids seen more than once across the shards
    background: dict[str, np.ndarray] | None  # the rows masked modalities take, when needed
    refitted: bool  # an artifact was fitted now: earlier score files are stale
    any_valid: bool  # False when every input row is invalid (only rejects to write)
    key: dict  # what a stopped run must match to resume (``resume.resume_key``)
    reach: ClusterReach | None = None  # what the cluster can give (None: every row invalid)

    @property
    def total_rows(self) -> int:
        return sum(shard.num_rows for shard in self.shards)

    @property
    def artifacts(self) -> dict[str, dict]:
        """Facts about each measure's fitted artifacts, for the manifest."""
        if not self.any_valid:
            return {}
        facts = {m.name: m.describe_artifacts(self.config) for m in self.measures}
        return {name: fact for name, fact in facts.items() if fact}

    def manifest(self, finished: set[int]) -> dict:
        config, key = self.config, self.key
        return {
            "dataset": config.dataset,
            "model": config.model_name,
            "status": "complete" if len(finished) == len(self.shards) else "running",
            "config": config.model_dump(mode="json"),
            "versions": package_versions(),
            "resume": key,
            "input": {
                "uri": config.input,
                "fingerprint": key["input"],
                "shards": [
                    {"uri": s.uri, "rows": s.num_rows, "finished": s.index in finished}
                    for s in self.shards
                ],
                "rows": self.total_rows,
            },
            "background_rows": 0
            if self.background is None
            else len(next(iter(self.background.values()))),
            "artifacts": self.artifacts,
        }


def plan_score(config: JobConfig, progress: Progress) -> ScorePlan:
    """Inspect the input, check the model and the cluster, draw the background rows and fit
    what is missing or stale. A config the cluster cannot run fails here, before any work."""
    shards = inspect_shards(config)
    total_rows = sum(shard.num_rows for shard in shards)
    progress(
        f"[score] {config.dataset}: {len(shards)} shards, {total_rows} rows; "
        f"measures {', '.join(config.measures)}; model {config.model_name}"
    )
    duplicates = duplicate_ids(config, shards)
    compute = config.compute
    if compute.scores_on_tasks and compute.actors != "auto":
        actors = compute.actors
        size = actors if isinstance(actors, int) else f"{{min: {actors.min}, max: {actors.max}}}"
        progress(
            f"[score] compute.actors = {size} sizes score actors; this job scores on tasks, "
            "one per cpus_per_actor CPUs (compute.score_on: actors for a pool)"
        )
    measures = job_measures(config)
    background_needed = needs_background(config)
    background = None
    reach = None
    try:
        if config.model is not None:  # a broken model fails here, not in an actor
            check_preprocess(config, shards[0])
            check_model(config, sample_table(config, shards, PREFLIGHT_ROWS, 0, duplicates))
        ensure_ray()
        # a setting no node could ever satisfy: refuse, not wait
        reach = check_compute(config.compute)
        request_pool(config.compute, reach)  # nodes an autoscaler adds boot while fits run
        check_model_on_workers(config)
        if background_needed:
            background = background_inputs(config, shards, duplicates)
        stale = []
        for measure in measures:
            if not fitted(config, measure, shards):
                stale.append(measure)
            elif measure.fit_sample(config) is not None:
                progress(f"[score] {measure.title} fitted on this input and settings: reused")
        refitted = bool(fit_measures(config, stale, shards, duplicates, progress))
        any_valid = True
    except NoValidRows:
        if background_needed and coalition_settings(config).background_uri is not None:
            raise
        any_valid, refitted = False, True  # every input row is invalid: only rejects to write
    key = resume_key(config.model_dump(mode="json"), fingerprint(shards), __version__)
    return ScorePlan(
        config, measures, shards, duplicates, background, refitted, any_valid, key, reach
    )


def _recorded_resume_key(paths: RunPaths) -> dict | None:
    return (
        storage.read_json(paths.manifest).get("resume") if storage.exists(paths.manifest) else None
    )


def pending_shards(
    plan: ScorePlan, paths: RunPaths, restart: bool, progress: Progress
) -> list[Shard]:
    """The resume decision: a stopped run of the same plan keeps the shards it finished;
    otherwise (``restart``, artifacts refitted, another config or input) earlier scores and
    rejects are removed and every shard is pending. Global tables are always stale."""
    storage.remove(paths.global_)
    if not restart and not plan.refitted and _recorded_resume_key(paths) == plan.key:
        pending = shard_progress(paths, plan.shards).pending
        done = len(plan.shards) - len(pending)
        progress(f"[score] resuming: {done} of {len(plan.shards)} shards done")
        return pending
    storage.remove(paths.scores)
    storage.remove(paths.rejects)
    return plan.shards


def stream_scores(
    plan: ScorePlan, pending: list[Shard], paths: RunPaths, progress: Progress
) -> list[dict]:
    """Read, validate and score the pending shards on tasks or the actor pool, writing
    scores/ and rejects/ as blocks finish; returns where each process that built the
    operator started (its node and GPUs)."""
    config = plan.config
    cpus = _task_cpus(config.compute)
    ship_measures(plan.measures)  # before anything that pickles the job or its measures
    rows = ray.data.read_datasource(
        ShardSource(pending, config, plan.duplicates, paths.rejects),
        # one block per read task: Ray would otherwise split each shard's rows into many
        # small blocks to reach its default parallelism (and so many small score files)
        override_num_blocks=len(pending),
        num_cpus=cpus,
    )
    rows.context.target_max_block_size = SCORE_BLOCK_BYTES  # this run's datasets only
    with ScoringHeartbeat(paths.scores, plan.total_rows, progress):
        if not plan.any_valid:
            rows.materialize()  # runs the read stage, which writes rejects/
            return []
        background_uri = None
        if plan.background is not None:
            storage.write_arrays(plan.background, paths.background)
            background_uri = paths.background
        if plan.reach is not None:
            wait_for_pool(config.compute, plan.reach, progress)
        # an actor restarted after its node was lost writes its new start there too
        storage.remove(paths.actors)
        scores = _score_stage(rows, plan, background_uri, paths.actors)
        scores.write_datasink(
            ScoreSink(paths.scores), ray_remote_args=None if cpus is None else {"num_cpus": cpus}
        )
        return storage.read_json_files(paths.actors)


def account(
    plan: ScorePlan,
    paths: RunPaths,
    seconds: float,
    progress: Progress,
    placements: list[dict] | None = None,
) -> dict:
    """Count what was written: every input row is in scores/ or rejects/ exactly once, or the
    run fails. Writes and returns the finished manifest, with where the score actors started
    (``placements``, when this call scored)."""
    n_scored, n_rejected = _count_rows(paths.scores), _count_rows(paths.rejects)
    _write_empty_tables(plan, paths, n_scored, n_rejected)
    if n_scored + n_rejected != plan.total_rows:
        raise RuntimeError(
            f"row accounting failed: {plan.total_rows} input rows, {n_scored} scored, "
            f"{n_rejected} rejected"
        )
    manifest = plan.manifest({shard.index for shard in plan.shards})
    manifest["rows"] = {"scored": n_scored, "rejected": n_rejected}
    reasons = top_reject_reasons(paths.rejects) if n_rejected else {}
    manifest["reject_reasons"] = reasons
    manifest["seconds"] = {"score": round(seconds, 3)}
    if placements:
        manifest["actors"] = actor_summary(placements)
    storage.write_json(manifest, paths.manifest)
    top = "; ".join(f"{count}× {reason}" for reason, count in reasons.items())
    progress(
        f"[score] {n_scored} rows scored, {n_rejected} rejected"
        + (f" (top reasons: {top})" if top else "")
        + f" → {paths.root}"
    )
    return manifest


def run_score(
    config: JobConfig, progress: Progress = print_progress, restart: bool = False
) -> dict:
    """Score every valid input row; returns the manifest written to the run directory.

    Four phases: plan (inspect, preflight, fit), the resume decision, stream (score the
    pending shards) and account (every row scored or rejected exactly once). A run of the
    same config on the same input that was stopped part-way resumes: shards it finished are
    kept and only the others are scored (``pipelines.resume``); ``restart`` scores everything
    again."""
    started = time.time()
    paths = RunPaths(config.output)
    plan = plan_score(config, progress)
    try:
        pending = pending_shards(plan, paths, restart, progress)
        finished = {shard.index for shard in plan.shards} - {shard.index for shard in pending}
        storage.write_json(plan.manifest(finished), paths.manifest)
        placements = stream_scores(plan, pending, paths, progress) if pending else []
    finally:
        if plan.reach is not None:
            release_request(plan.reach)
    return account(plan, paths, time.time() - started, progress, placements)


def actor_summary(placements: list[dict]) -> dict:
    """The manifest's ``actors``: how many score actors started (one restarted after a lost
    node counts again), on which nodes, and how many held GPUs."""
    nodes: dict[str, int] = {}
    for placement in placements:
        nodes[placement["node"]] = nodes.get(placement["node"], 0) + 1
    return {
        "started": len(placements),
        "nodes": nodes,
        "with_gpus": sum(1 for placement in placements if placement["gpus"]),
    }


def score(
    config: JobConfig | Mapping | str,
    dataset: ray.data.Dataset | None = None,
    progress: Progress = print_progress,
    restart: bool = False,
) -> dict:
    """``intermodal.score``: score a job from Python, as ``intermodal score`` does. ``config``
    is a validated config, a mapping or a YAML path/URI; ``dataset`` a ``ray.data.Dataset`` to
    score instead of ``config.input`` (``score_dataset``). Returns the manifest."""
    if isinstance(config, Mapping):
        config = parse_config(config)
    elif not isinstance(config, JobConfig):
        config = load_config(config)
    if dataset is None:
        return run_score(config, progress, restart)
    return score_dataset(config, dataset, progress)


def score_dataset(
    config: JobConfig, dataset: ray.data.Dataset, progress: Progress = print_progress
) -> dict:
    """Score a ``ray.data.Dataset`` the caller already holds: its rows are written once to
    ``<output>/input/`` as Parquet (shards are the unit of validation, row accounting and
    resume), then scored as ``run_score`` scores that folder; ``config.input`` is not read.
    A lazy dataset cannot be fingerprinted without running it, so every call writes the copy
    anew and scores it from the start."""
    input_uri = storage.join(config.output, "input")
    storage.remove(input_uri)
    ensure_ray()
    progress(f"[score] writing the dataset to {input_uri}")
    fs, path = storage.filesystem(input_uri)
    dataset.write_parquet(path, filesystem=storage.arrow_filesystem(fs))
    copied = config.model_copy(update={"input": input_uri, "input_format": "parquet"})
    return run_score(copied, progress, restart=True)


def _write_empty_tables(plan: ScorePlan, paths: RunPaths, n_scored: int, n_rejected: int) -> None:
    """An empty, schema-bearing file in ``scores/`` or ``rejects/`` when no row went there, so
    every reader (polars, duckdb, Ray) finds the table and its columns after every run."""
    config, first = plan.config, plan.shards[0]
    name = f"{shard_file_prefix(first.index)}empty.parquet"  # counted as 0 rows of a shard
    if n_scored == 0:
        input_schema = first.reader.facts(first.uri).schema
        schema = scores_schema(
            config,
            plan.measures,
            input_schema.field(config.id_column).type,
            [input_schema.field(group) for group in config.group_columns],
        )
        storage.write_table(schema.empty_table(), storage.join(paths.scores, name))
    if n_rejected == 0:
        storage.write_table(REJECT_SCHEMA.empty_table(), storage.join(paths.rejects, name))


def top_reject_reasons(rejects_uri: str, most: int = 3) -> dict[str, int]:
    """The most frequent reasons in ``rejects/`` and their counts (reading that column only)."""
    files = storage.list_parquet(rejects_uri)
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

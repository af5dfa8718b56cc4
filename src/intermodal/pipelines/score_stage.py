"""The score stage: every measure of a job applied to a batch, on actors or on tasks.

``ScoreOperator`` builds the configured model once and shares it, and the model's coalition
values and predictions of a batch, between the measures (``operators.context``); each
measure's operator returns only its own columns. It runs in one of two forms
(``compute.score_on``):

* **actors** (GPU jobs): one actor pool for the whole job, fed by read tasks and feeding
  write tasks; an actor holds its GPU and its model for the run.
* **tasks** (CPU jobs): ``score_shard_blocks`` in the shard's read task, which then writes its
  rows, so a shard is read, validated, scored and written in one process with no hand-off.
  Ray reuses its task workers, so the worker processes that ran the fits (torch and the
  measures already imported) score too; each keeps the operator it built for the run's next
  shards (``_built``). An actor is a fresh process that imports everything again: seconds per
  actor on a small machine, the larger part of a small job's scoring.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from intermodal import storage
from intermodal.measures import Measure, job_measures
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.operators.device import keep_freed_memory, use_actor_threads
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, PRED, SAMPLE_ID, SOURCE_SHARD


def scores_schema(
    job: JobConfig, measures: list[Measure], id_type: pa.DataType, group_fields: list[pa.Field]
) -> pa.Schema:
    """The score table's columns in order: ``sample_id``, ``label``, group columns, ``pred``
    (with a model), then each measure's fields in registry order (without the facts
    ``score_field`` sets for the global tables: score files keep plain fields)."""
    fields = [pa.field(SAMPLE_ID, id_type, nullable=False)]
    if job.label_column is not None:
        fields.append(pa.field(LABEL, pa.int64()))
    fields += group_fields
    if job.model is not None:
        fields.append(pa.field(PRED, pa.int64(), nullable=False))
    for measure in measures:
        fields += [field.remove_metadata() for field in measure.fields(job)]
    return pa.schema(fields)


class ScoreOperator:
    """Loads what the job's measures need once per actor or task worker; ``__call__`` turns
    a normalised input batch into its score rows."""

    def __init__(
        self,
        job: JobConfig,
        measures: list[Measure] | None = None,
        background: Mapping[str, np.ndarray] | str | None = None,
        device: torch.device | None = None,
        placements: str | None = None,
    ) -> None:
        """``measures``: the job's measures (``job_measures``) unless given; ``background``:
        the rows standing in for masked modalities, or the URI of the ``.npz`` that holds them
        (the pipeline's way: an actor restarted on any node reads them again); ``device``: the
        actor's GPU or CPU (``SharedModel``) unless given; ``placements``: a folder where
        this actor writes its node and GPUs (the run's manifest records them)."""
        if placements is not None:
            # a file, not a message to an actor: the run keeps no process for this, and a
            # restarted actor (same actor id) writes one more start
            context = ray.get_runtime_context()
            placement = {
                "node": context.get_node_id(),
                "gpus": context.get_accelerator_ids().get("GPU", []),
            }
            storage.write_json(placement, storage.join(placements, f"{uuid.uuid4().hex}.json"))
        # every measure allocates and frees the same batch temporaries: keep them for reuse
        keep_freed_memory()
        use_actor_threads(job.compute)
        self.job = job
        self.measures = job_measures(job) if measures is None else measures
        if isinstance(background, str):
            background = storage.read_arrays(background)
        self.shared = SharedModel(job, background, device)
        self.operators = [measure.operator(job, self.shared) for measure in self.measures]
        self.schema: pa.Schema | None = None  # from the first batch's id and group types

    def __call__(self, batch: pa.Table) -> pa.Table:
        job = self.job
        context = BatchContext(batch, self.shared)
        names = [SAMPLE_ID, *([LABEL] if job.label_column is not None else [])]
        columns: dict[str, Any] = {n: batch.column(n) for n in [*names, *job.group_columns]}
        if job.model is not None:
            columns[PRED] = context.predictions
        for operator in self.operators:
            columns.update(operator(context))
        if self.schema is None:
            self.schema = scores_schema(
                job,
                self.measures,
                batch.schema.field(SAMPLE_ID).type,
                [batch.schema.field(group) for group in job.group_columns],
            )
        scores = pa.table(columns, schema=self.schema)
        if SOURCE_SHARD in batch.column_names:  # the pipeline's writer files rows by shard
            scores = scores.append_column(SOURCE_SHARD, batch.column(SOURCE_SHARD))
        return scores


# The operator this worker process built for a run of ``score_shard_blocks``, by run id: the
# run's later shards on this process reuse it, the next run replaces it (its artifacts may
# have been fitted again in between).
_built: dict[str, ScoreOperator] = {}


def score_shard_blocks(
    blocks: pa.Table,
    run: str,
    job: JobConfig,
    measures: list[Measure],
    background: str | None,
    placements: str,
) -> Iterator[pa.Table]:
    """Score rows of a shard (the read task hands on what it read) in batches of
    ``compute.batch_size``, with the operator this process built for ``run`` (one id per
    scoring stage) or, the first time, a new one (writing its placement)."""
    operator = _built.get(run)
    if operator is None:
        _built.clear()  # the last run's models go before this run's load
        operator = _built[run] = ScoreOperator(job, measures, background, placements=placements)
    else:  # the fit parts this process ran in between set their own threads
        use_actor_threads(job.compute)
    size = job.compute.batch_size
    for start in range(0, blocks.num_rows, size):
        yield operator(blocks.slice(start, size))

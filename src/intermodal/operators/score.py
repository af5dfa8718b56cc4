"""The one actor stage of ``score``: every measure of a job applied to a batch in turn.

One actor pool for the whole job keeps all per-row work in one process per batch (no Arrow
hand-offs between pools) and never lets two actor pools hold every CPU while the read tasks
wait for one (ray#44687). Order: PID codes, LSMI terms, PID BATCH estimates, I2MoE weights and
InTense contributions are appended to
the normalised input, then the model operator (InterSHAP, or the prediction alone) turns the
batch into score rows and carries those columns on; without a model the score columns are
selected directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from intermodal.estimators.discretize import Codebook
from intermodal.operators.columns import carried_columns, measure_columns, scores_schema
from intermodal.operators.fusion import I2MoEOperator, InTenseOperator
from intermodal.operators.intershap import (
    InterSHAPOperator,
    PredictionOperator,
    keep_freed_memory,
)
from intermodal.operators.lsmi import LSMIOperator
from intermodal.operators.pid_batch import PIDBatchOperator
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import SOURCE_SHARD, code_column, modality_values


def with_codes(batch: pa.Table, config: JobConfig, codebooks: dict[str, Codebook]) -> pa.Table:
    """``batch`` (normalised input) with a ``pid_code_<m>`` int32 column per modality, the cell
    of each row in the modality's codebook."""
    for modality in config.modalities:
        rows = modality_values(batch.column(modality.name), modality.size)
        codes = codebooks[modality.name].assign(rows).astype(np.int32)
        batch = batch.append_column(pa.field(code_column(modality.name), pa.int32()), [codes])
    return batch


def model_free_scores(batch: pa.Table, config: JobConfig) -> pa.Table:
    """The score rows of a job without a model: ids, labels, groups and the measure columns
    (the modality values are dropped)."""
    columns = carried_columns(batch, config) | measure_columns(batch, config)
    return pa.table(columns, schema=scores_schema(batch, config, prediction=False))


class ScoreOperator:
    """Loads what the job's measures need once per actor: PID codebooks (``Codebook.to_arrays``
    form), the LSMI, PID BATCH, I2MoE and InTense models, and the model operator with its
    background rows."""

    def __init__(
        self,
        config: dict[str, Any],
        background: dict[str, np.ndarray] | None = None,
        codebooks: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.config = JobConfig.model_validate(config)
        # every measure allocates and frees the same batch temporaries: keep them for reuse
        keep_freed_memory()
        measures = self.config.measures
        self.codebooks = (
            {name: Codebook.from_arrays(arrays) for name, arrays in codebooks.items()}
            if codebooks is not None
            else None
        )
        self.lsmi = LSMIOperator(config, background) if "lsmi" in measures else None
        self.pid_batch = PIDBatchOperator(config) if "pid_batch" in measures else None
        self.i2moe = I2MoEOperator(config) if "i2moe" in measures else None
        self.intense = InTenseOperator(config) if "intense" in measures else None
        self.model_operator: InterSHAPOperator | PredictionOperator | None = None
        if "intershap" in measures:
            if background is None:
                raise ValueError("InterSHAP needs background rows")
            self.model_operator = InterSHAPOperator(config, background)
        elif self.config.model is not None:
            self.model_operator = PredictionOperator(config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = self._scores(batch)
        if SOURCE_SHARD in batch.column_names:  # the pipeline's writer files rows by shard
            scores = scores.append_column(SOURCE_SHARD, batch.column(SOURCE_SHARD))
        return scores

    def _scores(self, batch: pa.Table) -> pa.Table:
        if self.codebooks is not None:
            batch = with_codes(batch, self.config, self.codebooks)
        if self.lsmi is not None:
            batch = self.lsmi(batch)
        if self.pid_batch is not None:
            batch = self.pid_batch(batch)
        if self.i2moe is not None:
            batch = self.i2moe(batch)
        if self.intense is not None:
            batch = self.intense(batch)
        if self.model_operator is not None:
            return self.model_operator(batch)
        return model_free_scores(batch, self.config)

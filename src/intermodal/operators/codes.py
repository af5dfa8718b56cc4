"""Ray Data stages for the PID codes: codebook cells per modality, and the score table of a run
that has no model operator after them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from intermodal.estimators.discretize import Codebook
from intermodal.operators.columns import carried_columns, code_columns, scores_schema
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import code_column, modality_values


def assign_codes(
    batch: pa.Table, config: dict[str, Any], codebooks: dict[str, dict[str, np.ndarray]]
) -> pa.Table:
    """``batch`` (normalised input) with a ``pid_code_<m>`` int32 column per modality, the cell
    of each row in the modality's codebook (``Codebook.to_arrays`` form)."""
    job = JobConfig.model_validate(config)
    for modality in job.modalities:
        codebook = Codebook.from_arrays(codebooks[modality.name])
        rows = modality_values(batch.column(modality.name), modality.size)
        codes = codebook.assign(rows).astype(np.int32)
        batch = batch.append_column(pa.field(code_column(modality.name), pa.int32()), [codes])
    return batch


def code_scores(batch: pa.Table, config: dict[str, Any]) -> pa.Table:
    """The score table of a run measuring PID alone without a model: ids, labels, groups and
    codes (the modality values are dropped)."""
    job = JobConfig.model_validate(config)
    columns = carried_columns(batch, job) | code_columns(batch, job)
    return pa.table(columns, schema=scores_schema(batch, job, prediction=False))

"""Columns every score table shares, whichever operators produced it."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pyarrow as pa

from intermodal.models.i2moe import expert_names
from intermodal.models.intense import term_names
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import (
    BATCH_BLOCK,
    BATCH_TERMS,
    LABEL,
    LSMI_TERMS,
    SAMPLE_ID,
    batch_column,
    code_column,
    fusion_fields,
    lsmi_column,
    score_schema,
)


def carried_columns(batch: pa.Table, config: JobConfig) -> dict[str, Any]:
    """The input columns every score table keeps: id, label and group columns."""
    names = [SAMPLE_ID, *([LABEL] if config.label_column is not None else [])]
    return {name: batch.column(name) for name in [*names, *config.group_columns]}


def _lsmi_pairs(config: JobConfig) -> list[tuple[str, str]]:
    return list(combinations(config.modality_names, 2)) if "lsmi" in config.measures else []


def _batch_pairs(config: JobConfig) -> list[tuple[str, str]]:
    return list(combinations(config.modality_names, 2)) if "pid_batch" in config.measures else []


def _batch_targets(config: JobConfig) -> list[str]:
    return ["label", *(["pred"] if config.model is not None else [])]


def i2moe_experts(config: JobConfig) -> list[str]:
    """The I2MoE experts scored (``uni_<m>`` per modality, ``syn``, ``red``); none without the
    measure."""
    return expert_names(config.modality_names) if "i2moe" in config.measures else []


def intense_terms(config: JobConfig) -> list[str]:
    """The InTense blocks scored (one per configured subset); none without the measure."""
    if "intense" not in config.measures:
        return []
    return term_names(config.modality_names, config.intense.subsets)


def fusion_column_names(config: JobConfig) -> list[str]:
    """Score columns of the I2MoE and InTense measures, in table order."""
    return [field.name for field in fusion_fields(i2moe_experts(config), intense_terms(config))]


def measure_columns(batch: pa.Table, config: JobConfig) -> dict[str, Any]:
    """Columns added by earlier stages (PID codes, LSMI terms, BATCH estimates, I2MoE weights,
    InTense contributions), carried through to the scores."""
    names = [code_column(m) for m in config.modality_names] if "pid_cvx" in config.measures else []
    names += [lsmi_column(t, a, b) for a, b in _lsmi_pairs(config) for t in LSMI_TERMS]
    if "pid_batch" in config.measures:
        names.append(BATCH_BLOCK)
    names += [
        batch_column(t, a, b, target)
        for target in _batch_targets(config)
        for a, b in _batch_pairs(config)
        for t in BATCH_TERMS
    ]
    names += fusion_column_names(config)
    return {name: batch.column(name) for name in names}


def scores_schema(batch: pa.Table, config: JobConfig, *, prediction: bool) -> pa.Schema:
    """The score table's schema for this job (``schemas.tables.score_schema``)."""
    intershap = "intershap" in config.measures
    return score_schema(
        batch.schema.field(SAMPLE_ID).type,
        config.label_column is not None,
        [batch.schema.field(group) for group in config.group_columns],
        prediction=prediction,
        intershap=(config.modality_names, config.intershap.target, config.num_classes)
        if intershap
        else None,
        code_modalities=config.modality_names if "pid_cvx" in config.measures else (),
        lsmi_pairs=_lsmi_pairs(config),
        batch_pairs=_batch_pairs(config),
        batch_targets=_batch_targets(config),
        i2moe_experts=i2moe_experts(config),
        intense_terms=intense_terms(config),
    )

"""Arrow schemas of the input, score, reject and global tables, and their column names.

Input: ``<id_column>`` (int64 or string, unique), one column per modality holding a list of
numbers (fixed-size list of float32 preferred; the config gives the per-sample shape), an
optional ``<label_column>`` (int64 in [0, num_classes)) and optional group columns.

Scores (one row per valid input row): ``sample_id``, ``label``, group columns, ``pred`` (class
predicted with all modalities), then per explained output (suffix ``__class<k>`` when every
class is explained, no suffix otherwise): ``explained_class``, ``intershap_value_full`` (v of
all modalities), ``intershap_value_empty`` (v of none), ``shapley_<m>``, the upper triangle
of the interaction matrix ``interaction_<a>__<b>`` (``a == b``: the main effect φ_aa), and
``intershap_local``. Values are softmax probabilities of the explained class and their
Shapley decomposition; local InterSHAP is a fraction in [0, 1]. With the ``pid_cvx`` measure,
``pid_code_<m>`` (int32) is each modality's codebook cell. Columns of measures not run are
absent, and ``pred`` is absent without a model. With ``lsmi``, ``lsmi_<term>_<a>__<b>`` (float64,
nats, null for rows without a label) per pair and term R, U1, U2, S. With ``pid_batch``,
``pid_batch_block`` (the row's scoring block) and ``pid_batch_<T>_<a>__<b>`` (the block's
BATCH estimate, bits) per pair and term R, U1, U2, S; ``pid_batch_model_...`` the same for the
model's predictions when a model is configured. With ``i2moe`` (an I2MoE trained on a sample of
``i2moe.fit_rows`` labelled rows, so in-sample for those rows): ``i2moe_w_<expert>`` (float64,
the row's weight of each expert ``uni_<m>`` per modality, ``syn``, ``red``; non-negative,
summing to 1) and ``i2moe_pred`` (int64, the class the I2MoE predicts). With ``intense`` (an
InTense trained the same way on ``intense.fit_rows`` rows): ``intense_c_<term>`` (float64, per
block, e.g. ``M1``, ``M1xM2``: the block's contribution to the logit of the class InTense
predicts), ``intense_bias`` (float64, that class's bias) and ``intense_pred`` (int64, the
predicted class); the contributions plus the bias sum to the predicted class's logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

SAMPLE_ID = "sample_id"
LABEL = "label"
PRED = "pred"
# index of a row's input shard: travels with the rows through the score stage to the score
# writer, which files rows by shard; never written to scores/
SOURCE_SHARD = "_source_shard"

REJECT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),  # as text: the bad row's id may itself be the problem
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row_index", pa.int64(), nullable=False),  # 0-based row within source_file
        pa.field("columns", pa.string(), nullable=False),  # offending columns, comma-separated
        pa.field("reason", pa.string(), nullable=False),
    ]
)

# global/<measure>.parquet: one row per statistic, every fact of it in a column of its own
# (docs/schema.md lists every statistic and term per measure), so a query filters by column:
#   measure    the registry name (``pid_cvx``, ``lsmi``, ...)
#   target     what the statistic is of: ``label`` / ``pred`` for PID-style terms, InterSHAP's
#              explained output (``predicted``, ``label``, ``class<k>``), ``""`` where none
#   statistic  ``mean``, ``p10``, ``p50``, ``p90`` (every float score column), or one of the
#              measure's own (``pid``, ``adjusted_mean``, ``adjustment``, ``relevance``,
#              ``intershap``)
#   term       ``R``, ``U1``, ``U2``, ``S``, ``I``, an expert, a block, an InterSHAP term; ``""``
#   modalities the modalities it is about: ``[a, b]`` a pair, ``[m]`` one, ``[]`` otherwise
#   column     the score column summarised, ``""`` for statistics not of one column
GLOBAL_SCHEMA = pa.schema(
    [
        pa.field("measure", pa.string(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("statistic", pa.string(), nullable=False),
        pa.field("term", pa.string(), nullable=False),
        pa.field("modalities", pa.list_(pa.string()), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("group_by", pa.string(), nullable=False),  # "" for the whole dataset
        pa.field("group", pa.string(), nullable=False),  # the group's value as text, "" for all
        pa.field("value", pa.float64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("stderr", pa.float64()),  # null where no standard error is defined
    ]
)
# the columns that name a statistic: no two rows of a global table share all of them
GLOBAL_KEY = ("measure", "target", "statistic", "term", "modalities", "column", "group_by", "group")


def target_suffixes(target: str, num_classes: int) -> list[str]:
    """Column suffix per explained output: one unsuffixed output, or one per class."""
    return [f"__class{k}" for k in range(num_classes)] if target == "all" else [""]


def shapley_column(modality: str, suffix: str = "") -> str:
    return f"shapley_{modality}{suffix}"


def interaction_column(first: str, second: str, suffix: str = "") -> str:
    return f"interaction_{first}__{second}{suffix}"


def interaction_pairs(modalities: Sequence[object]) -> list[tuple[int, int]]:
    """Upper triangle with the diagonal, in the order the score columns use."""
    n = len(modalities)
    return [(i, j) for i in range(n) for j in range(i, n)]


def intershap_columns(modalities: Sequence[str], suffix: str = "") -> list[str]:
    """Float columns of one explained output, in table order."""
    return [
        f"intershap_value_full{suffix}",
        f"intershap_value_empty{suffix}",
        *(shapley_column(m, suffix) for m in modalities),
        *(
            interaction_column(modalities[i], modalities[j], suffix)
            for i, j in interaction_pairs(modalities)
        ),
        f"intershap_local{suffix}",
    ]


def code_column(modality: str) -> str:
    """Score column of a modality's PID codebook cell."""
    return f"pid_code_{modality}"


class PIDTerms(NamedTuple):
    """The terms of a partial information decomposition of a pair of sources (paper 003):
    redundancy ``R``, information unique to the first source ``U1`` and to the second
    ``U2``, synergy ``S``. The one spelling every estimator returns (scalars for a dataset or a
    BATCH block, ``[n]`` arrays for LSMI's pointwise terms) and every table uses: score
    columns ``lsmi_<T>_<a>__<b>`` and ``pid_batch_<T>_<a>__<b>``, global ``term`` ``<T>``."""

    R: Any
    U1: Any
    U2: Any
    S: Any


PID_TERMS: tuple[str, ...] = PIDTerms._fields

# what PID-style measures decompose: the labels, and the model's predictions with a model
# (the ``target`` of their global rows)
PID_TARGETS: tuple[str, ...] = (LABEL, PRED)


def modality_pairs(modalities: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of modalities, in config order: the pairs PID and LSMI decompose."""
    return list(combinations(modalities, 2))


def lsmi_column(term: str, first: str, second: str) -> str:
    """Score column of one LSMI term (``PID_TERMS``) of the pair (first, second)."""
    return f"lsmi_{term}_{first}__{second}"


BATCH_BLOCK = "pid_batch_block"


def batch_column(term: str, first: str, second: str, target: str = "label") -> str:
    """Score column of one PID BATCH term (R, U1, U2, S) of the pair (first, second), of the
    labels (``pid_batch_...``) or of the model's predictions (``pid_batch_model_...``)."""
    prefix = "pid_batch" if target == "label" else "pid_batch_model"
    return f"{prefix}_{term}_{first}__{second}"


I2MOE_PRED = "i2moe_pred"
INTENSE_BIAS = "intense_bias"
INTENSE_PRED = "intense_pred"


I2MOE_WEIGHT_PREFIX = "i2moe_w_"


def i2moe_weight_column(expert: str) -> str:
    """Score column of one I2MoE expert's weight (``uni_<m>``, ``syn``, ``red``)."""
    return f"{I2MOE_WEIGHT_PREFIX}{expert}"


def intense_contribution_column(term: str) -> str:
    """Score column of one InTense block's contribution (``M1``, ``M1xM2``, ...)."""
    return f"intense_c_{term}"


def modality_type(size: int) -> pa.DataType:
    """The normalised Arrow type of a modality column: fixed-size list of float32."""
    return pa.list_(pa.float32(), size)


def normalised_input_schema(
    modalities: Sequence[tuple[str, int]],
    id_type: pa.DataType,
    label: bool,
    group_fields: Sequence[pa.Field] = (),
) -> pa.Schema:
    """The layout operators receive after validation, whatever the input's column names and
    list types: ``sample_id``, ``label``, group columns, then one fixed-size float32 list per
    modality ``(name, size)``, named after the modality."""
    fields = [pa.field(SAMPLE_ID, id_type, nullable=False)]
    if label:
        fields.append(pa.field(LABEL, pa.int64()))
    fields += [*group_fields, *(pa.field(name, modality_type(size)) for name, size in modalities)]
    return pa.schema(fields)


def modality_values(column: pa.ChunkedArray | pa.Array, size: int) -> np.ndarray:
    """A normalised modality column as a ``[n, size]`` float32 array (zero-copy when possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)

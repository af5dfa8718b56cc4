"""Arrow schemas of the tables every measure shares and their common column names.

Input: ``<id_column>`` (int64 or string, unique), one column per modality holding its values
(any numeric list, nested list or tensor layout; the config gives the per-sample shape), an
optional ``<label_column>`` (int64 in [0, num_classes)) and optional group columns; after
validation every modality is a fixed-size list of its ``dtype`` (float32 by default), padded
to ``max_length`` steps when its first axis is variable, with its rows' lengths in
``<modality>.length`` (``normalised_input_schema``).

Scores: ``sample_id``, ``label``, group columns, ``pred`` (the model's class with every
modality, absent without a model), then each measure's own columns, which its module names
and documents (``measures/<name>.py``; ``docs/schema.md`` lists them all). Rejects:
``REJECT_SCHEMA``. Global statistics: ``GLOBAL_SCHEMA``, one long table with typed columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # the config module's own tables come from here
    from intermodal.schemas.config import JobConfig

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


def global_record(
    measure: str,
    statistic: str,
    value: float,
    n: int,
    stderr: float | None = None,
    group: tuple[str, str] = ("", ""),
    *,
    term: str = "",
    modalities: Sequence[str] = (),
    target: str = "",
    column: str = "",
) -> dict:
    """One row of ``global/`` (``GLOBAL_SCHEMA``): ``statistic`` of ``measure``
    (``column``: the score column it summarises, if one); NaN standard errors (fewer than two
    rows) are written as null."""
    group_by, group_value = group
    return {
        "measure": measure,
        "target": target,
        "statistic": statistic,
        "term": term,
        "modalities": list(modalities),
        "column": column,
        "group_by": group_by,
        "group": group_value,
        "value": float(value),
        "n": int(n),
        "stderr": None if stderr is None or np.isnan(stderr) else float(stderr),
    }


def global_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


def modality_type(size: int, dtype: str = "float32") -> pa.DataType:
    """The normalised Arrow type of a modality column: fixed-size list of its dtype."""
    return pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), size)


def length_column(modality: str) -> str:
    """The normalised column of a variable-length modality's row lengths (in steps); the dot
    keeps it apart from any modality's name."""
    return f"{modality}.length"


def mask_key(modality: str) -> str:
    """The key of a variable-length modality's ``[n, max_length]`` bool step mask beside its
    values in modality arrays (``operators.context.modality_arrays``)."""
    return f"{modality}.mask"


def normalised_input_schema(
    modality_fields: Sequence[pa.Field],
    id_type: pa.DataType,
    label: bool,
    group_fields: Sequence[pa.Field] = (),
) -> pa.Schema:
    """The layout operators receive after validation, whatever the input's column names and
    list types: ``sample_id``, ``label``, group columns, then each modality's fields (its
    fixed-size list named after it, and ``length_column`` if variable)."""
    fields = [pa.field(SAMPLE_ID, id_type, nullable=False)]
    if label:
        fields.append(pa.field(LABEL, pa.int64()))
    fields += [*group_fields, *modality_fields]
    return pa.schema(fields)


def one_array(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array; a single chunk as it is (``combine_chunks`` would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def modality_values(column: pa.ChunkedArray | pa.Array, size: int) -> np.ndarray:
    """A normalised modality column as a ``[n, size]`` array of its dtype (zero-copy when
    possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = one_array(column)
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)


def modality_arrays(job: JobConfig, rows: pa.Table) -> dict[str, np.ndarray]:
    """``{modality: [n, size]}`` of normalised rows in each modality's dtype (zero-copy where
    possible), and for a variable-length modality its ``[n, max_length]`` bool step mask under
    ``mask_key(modality)``."""
    arrays = {}
    for m in job.modalities:
        arrays[m.name] = modality_values(rows.column(m.name), m.size)
        if m.variable:
            steps = rows.column(length_column(m.name)).to_numpy()
            arrays[mask_key(m.name)] = np.arange(m.max_length or 0) < steps[:, None]
    return arrays

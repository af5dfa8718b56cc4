"""Input checks: shard schemas before any work, rows per batch.

Schema problems (a missing column, a column of the wrong type, a fixed-size list of the wrong
length) stop the job before it starts. Row problems (null or duplicate ids, null modality
values, wrong vector length in a variable-length list, a sequence longer than max_length,
values the modality's dtype cannot hold, labels out of range) send the
row to ``rejects/`` with a reason naming the column; every input row ends in exactly one of
scores and rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from intermodal.schemas.config import JobConfig, ModalityConfig
from intermodal.schemas.tables import (
    LABEL,
    REJECT_SCHEMA,
    SAMPLE_ID,
    length_column,
    modality_type,
    normalised_input_schema,
    one_array,
)


class InputSchemaError(ValueError):
    """An input shard that cannot be read as configured; names the file and the column."""


# the user's model.preprocess with its kwargs bound: raw modality columns (modality name →
# Arrow array of the batch) → each modality's values (``preprocessed_column`` reads them)
Preprocess = Callable[[dict[str, pa.Array]], Mapping[str, Any]]
PREPROCESS_COLUMN = "model.preprocess"  # how rejects name the step that failed


def _is_list(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )


def _storage_type(data_type: pa.DataType) -> pa.DataType:
    """The type an extension type (Ray's tensors, Arrow's ``fixed_shape_tensor``) stores; a
    variable-shaped tensor stores ``struct<data: list, shape: list>``: its ``data``."""
    if isinstance(data_type, pa.BaseExtensionType):
        data_type = data_type.storage_type
    if pa.types.is_struct(data_type) and data_type.get_field_index("data") >= 0:
        data_type = data_type.field("data").type
    return data_type


def values_per_row(data_type: pa.DataType) -> tuple[pa.DataType, int | None] | None:
    """For a modality column type: its leaf value type and, when the type fixes it, how many
    values each row holds (a fixed-size list, nested fixed-size lists, a fixed-shape tensor);
    None when the type holds no list of numbers."""
    shape = getattr(data_type, "shape", None)  # Ray's and Arrow's fixed-shape tensors
    data_type = _storage_type(data_type)
    if not _is_list(data_type):
        return None
    fixed: int | None = 1
    while _is_list(data_type):
        fixed_size = pa.types.is_fixed_size_list(data_type)
        fixed = fixed * data_type.list_size if fixed and fixed_size else None
        data_type = data_type.value_type
    if not (pa.types.is_floating(data_type) or pa.types.is_integer(data_type)):
        return None
    if shape is not None and None not in shape and -1 not in shape:
        fixed = int(np.prod(shape))
    return data_type, fixed


def schema_problems(schema: pa.Schema, config: JobConfig) -> list[str]:
    """What keeps a shard with this schema from being read under ``config`` (empty: fine)."""
    problems = []
    names = set(schema.names)

    def require(column: str, what: str) -> pa.DataType | None:
        if column in names:
            return schema.field(column).type
        problems.append(f"column '{column}' ({what}) is missing; columns: {sorted(names)}")
        return None

    id_type = require(config.id_column, "id_column")
    if id_type is not None and not (
        pa.types.is_integer(id_type)
        or pa.types.is_string(id_type)
        or pa.types.is_large_string(id_type)
    ):
        problems.append(
            f"column '{config.id_column}' (id_column) must be int or string, got {id_type}"
        )
    if config.label_column is not None:
        label_type = require(config.label_column, "label_column; set it to null if unlabelled")
        if label_type is not None and not pa.types.is_integer(label_type):
            problems.append(
                f"column '{config.label_column}' (label) must be integer, got {label_type}"
            )
    for group in config.group_columns:
        require(group, "group_columns")
    for modality in config.modalities:
        column = modality.source_column
        data_type = require(column, f"modality '{modality.name}'")
        if data_type is None:
            continue
        if config.model is not None and config.model.preprocess is not None:
            continue  # any type: model.preprocess turns it into the modality's values
        layout = values_per_row(data_type)
        if layout is None:
            problems.append(
                f"column '{column}' (modality '{modality.name}') must be a list of numbers "
                f"(flat or nested, or a Ray or Arrow tensor), got {data_type}"
            )
        elif layout[1] is not None and not modality.variable and layout[1] != modality.size:
            problems.append(
                f"column '{column}' (modality '{modality.name}') holds "
                f"{layout[1]} values per row; shape {modality.shape} needs "
                f"{modality.size}"
            )
    return problems


@dataclass
class _RowProblems:
    """Reasons collected per row of one batch."""

    n_rows: int

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.n_rows, dtype=bool)
        self.not_preprocessed = np.zeros(self.n_rows, dtype=bool)  # their values are null
        self.columns: dict[int, list[str]] = {}
        self.reasons: dict[int, list[str]] = {}

    def add(self, mask: np.ndarray, column: str, reason: str | list[str]) -> None:
        rows = np.flatnonzero(mask)
        self.bad[rows] = True
        for position, row in enumerate(rows):
            self.columns.setdefault(int(row), []).append(column)
            text = reason if isinstance(reason, str) else reason[position]
            self.reasons.setdefault(int(row), []).append(text)


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def leaf_lists(column: pa.Array) -> pa.Array:
    """Any modality column as one list per row of its leaf values, in row-major order: nested
    lists are flattened, extension arrays (Ray's tensors, Arrow's ``fixed_shape_tensor``) read
    through their storage, without copying the values. Row nulls are kept."""
    row_null = column.is_null()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if pa.types.is_struct(column.type):  # a variable-shaped tensor: struct<data, shape>
        column = column.field("data")
    if not _is_list(column.type.value_type):  # one level: already a list of leaves per row
        return column
    offsets = _offsets(column)
    values = column.values
    while _is_list(values.type):
        offsets = _offsets(values)[offsets]
        values = values.values
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values, mask=row_null)


def _offsets(array: pa.Array) -> np.ndarray:
    """Where each row of a list-like array starts and ends in ``array.values`` ``[n + 1]``."""
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        return (array.offset + np.arange(len(array) + 1, dtype=np.int64)) * size
    return np.asarray(array.offsets, dtype=np.int64)


@dataclass
class ModalityRows:
    """The valid rows of one modality column: ``values`` ``[n_ok, size]`` of the modality's
    dtype (padded with ``pad_value`` after each row's end when its first axis is variable),
    ``rows`` the batch rows they came from, ``steps`` each row's length in steps (variable
    first axis only, else None)."""

    values: np.ndarray
    rows: np.ndarray
    steps: np.ndarray | None


def _cast(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The input's ``values`` as ``dtype``, which of them that type cannot hold (non-finite,
    out of range, or not whole numbers for an integer type), and how a reason names them."""
    target = np.dtype(dtype)
    if target.kind == "f":  # a value too large for the type becomes inf: checked after the cast
        with np.errstate(over="ignore"):
            cast = values.astype(target, copy=False)
            # one float64 sum is finite exactly when every value is (NaN and inf carry through)
            # unless float64 values add past its range: then the element-wise check decides
            total = np.add.reduce(cast, dtype=np.float64, axis=None)
        bad = np.zeros(len(cast), dtype=bool) if np.isfinite(total) else ~np.isfinite(cast)
        return cast, bad, "NaN/inf values"
    info = np.iinfo(target)
    with np.errstate(invalid="ignore"):
        bad = (values < info.min) | (values > info.max)
        if values.dtype.kind == "f":
            bad |= ~np.isfinite(values) | (values != np.floor(values))
    return np.where(bad, 0, values).astype(target), bad, f"values that are not {dtype}"


def _modality_rows(
    column: pa.Array, modality: ModalityConfig, problems: _RowProblems
) -> ModalityRows:
    """Rows of a modality column in the model's layout; null, wrong-length, too long (unless
    truncated), null-element and unrepresentable rows are recorded as problems."""
    name, size = modality.source_column, modality.size
    column = leaf_lists(column)
    null = _mask(column.is_null())
    problems.add(null & ~problems.not_preprocessed, name, "value is null")
    lengths = pc.list_value_length(column).fill_null(0).to_numpy()
    if modality.variable:
        step, limit = modality.step_size, modality.max_length or 0
        ragged = ~null & (lengths % step != 0)
        problems.add(
            ragged, name, [f"{n} values are not whole steps of {step}" for n in lengths[ragged]]
        )
        too_long = ~null & ~ragged & (lengths // step > limit) & (not modality.truncate)
        problems.add(
            too_long,
            name,
            [f"{n // step} steps exceed max_length {limit}" for n in lengths[too_long]],
        )
        wrong = ragged | too_long
    else:
        wrong = ~null & (lengths != size)
        problems.add(wrong, name, [f"expected {size} values, got {n}" for n in lengths[wrong]])
    shaped = ~null & ~wrong
    rows = np.flatnonzero(shaped)
    # the usual batch has no bad row: its values are read where they lie, not copied
    flat = (column if len(rows) == len(column) else column.filter(pa.array(shaped))).flatten()
    values, unrepresentable, what = _cast(flat.to_numpy(zero_copy_only=False), modality.dtype)
    missing = np.zeros(len(flat), dtype=bool)
    if flat.null_count:  # null elements read as NaN: named as null, not as NaN
        missing = _mask(flat.is_null())
        unrepresentable &= ~missing
    if modality.variable:
        kept_lengths = lengths[rows]
        row_of_value = np.repeat(np.arange(len(rows)), kept_lengths)

        def per_row(flags: np.ndarray) -> np.ndarray:
            return np.bincount(row_of_value, weights=flags, minlength=len(rows)).astype(int)
    else:

        def per_row(flags: np.ndarray) -> np.ndarray:
            return flags.reshape(-1, size).sum(axis=1)

    for flags, reason in ((missing, "null values"), (unrepresentable, what)):
        if not flags.any():
            continue
        count = per_row(flags)
        flagged = np.zeros(problems.n_rows, dtype=bool)
        flagged[rows] = count > 0
        problems.add(flagged, name, [f"{n} {reason}" for n in count[count > 0]])
    if not modality.variable:
        return ModalityRows(values.reshape(-1, size), rows, None)
    # scatter each row's values after its start in a padded [n_ok, size] matrix
    starts = np.cumsum(kept_lengths) - kept_lengths
    within = np.arange(len(values)) - np.repeat(starts, kept_lengths)
    kept = within < size  # beyond max_length: truncated (longer rows were rejected otherwise)
    matrix = np.full((len(rows), size), modality.pad_value, dtype=modality.dtype)
    good = kept & ~missing & ~unrepresentable
    matrix[row_of_value[good], within[good]] = values[good]
    steps = np.minimum(kept_lengths // modality.step_size, modality.max_length or 0)
    return ModalityRows(matrix, rows, steps.astype(np.int32))


def preprocessed_column(value: Any, n_rows: int, modality: str) -> pa.Array:
    """One modality's output of ``model.preprocess`` as a column of ``n_rows`` rows: an Arrow
    array, an array or tensor ``[n, *shape]`` (numpy, or anything ``np.asarray`` reads), or a
    sequence of per-row arrays of any length (token ids)."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if not isinstance(value, pa.Array):
        if isinstance(value, list | tuple):
            value = pa.array([np.asarray(row).reshape(-1) for row in value])
        else:
            array = np.asarray(value)
            if array.ndim < 2:
                raise ValueError(
                    f"model.preprocess returned {array.shape} for modality '{modality}': "
                    "expected [rows, *shape] or one array per row"
                )
            per_row = int(np.prod(array.shape[1:]))
            value = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), per_row)
    if len(value) != n_rows:
        raise ValueError(
            f"model.preprocess returned {len(value)} rows of modality '{modality}' for a batch "
            f"of {n_rows}"
        )
    return value


def _preprocess_rows(
    preprocess: Preprocess, raw: dict[str, pa.Array], n_rows: int
) -> dict[str, pa.Array]:
    """``preprocess`` of a batch, its outputs as columns."""
    output = preprocess(raw)
    missing = sorted(set(raw) - set(output))
    if missing:
        raise ValueError(f"model.preprocess returned no values for modalities {missing}")
    columns = {name: preprocessed_column(output[name], n_rows, name) for name in raw}
    for name, column in columns.items():
        if values_per_row(column.type) is None:
            raise ValueError(
                f"model.preprocess returned {column.type} for modality '{name}', not numbers"
            )
    return columns


def _preprocessed(
    preprocess: Preprocess, raw: dict[str, pa.Array], problems: _RowProblems
) -> dict[str, pa.Array]:
    """The batch's modality columns after ``preprocess``. When it raises on the batch, it runs
    row by row: a row it raises on is rejected with the error and its values are null."""
    try:
        return _preprocess_rows(preprocess, raw, problems.n_rows)
    except Exception:  # the user's code: find the rows it fails on
        pass
    rows: list[dict[str, pa.Array] | None] = []
    for row in range(problems.n_rows):
        try:
            rows.append(
                _preprocess_rows(preprocess, {k: v.slice(row, 1) for k, v in raw.items()}, 1)
            )
        except Exception as error:
            rows.append(None)
            reason = f"{type(error).__name__}: {first_line(error)}"
            flagged = np.zeros(problems.n_rows, dtype=bool)
            flagged[row] = True
            problems.add(flagged, PREPROCESS_COLUMN, f"model.preprocess raised {reason}")
            problems.not_preprocessed[row] = True
    done = [row for row in rows if row is not None]
    columns = {}
    for name in raw:
        value_type = done[0][name].type if done else pa.list_(pa.float32())
        columns[name] = pa.concat_arrays(
            [pa.nulls(1, value_type) if row is None else row[name].cast(value_type) for row in rows]
        )
    return columns


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (torch's run to dozens)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def modality_fields(modality: ModalityConfig) -> list[pa.Field]:
    """A modality's normalised columns: its values, and its row lengths if variable."""
    fields = [pa.field(modality.name, modality_type(modality.size, modality.dtype))]
    if modality.variable:
        fields.append(pa.field(length_column(modality.name), pa.int32()))
    return fields


def validate_rows(
    batch: pa.Table,
    config: JobConfig,
    duplicate_ids: pa.Array,
    source_file: str,
    first_row_index: int,
    preprocess: Preprocess | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Split a raw input batch into (valid rows in the normalised layout, rejects); with
    ``preprocess`` (the job's ``model.preprocess``) the modality columns are its outputs.

    The normalised layout: ``sample_id``, ``label`` (when configured), the group columns, then
    each modality's fields (``modality_fields``)."""
    n = batch.num_rows
    problems = _RowProblems(n)
    ids = one_array(batch.column(config.id_column))
    problems.add(_mask(ids.is_null()), config.id_column, "sample_id is null")
    if len(duplicate_ids):
        duplicated = _mask(pc.is_in(ids, value_set=duplicate_ids.cast(ids.type)))
        problems.add(duplicated, config.id_column, "duplicate sample_id (every copy rejected)")

    labels = None
    if config.label_column is not None:
        labels = one_array(batch.column(config.label_column)).cast(pa.int64())
        values = labels.fill_null(0).to_numpy()
        null = _mask(labels.is_null())
        for reason in config.label_reasons:
            problems.add(null, config.label_column, f"label is null but {reason}")
        out_of_range = ~null & ((values < 0) | (values >= config.num_classes))
        problems.add(
            out_of_range,
            config.label_column,
            [f"label {v} outside [0, {config.num_classes})" for v in values[out_of_range]],
        )

    raw = {m.name: one_array(batch.column(m.source_column)) for m in config.modalities}
    if preprocess is not None:
        raw = _preprocessed(preprocess, raw, problems)
    modalities = {m.name: _modality_rows(raw[m.name], m, problems) for m in config.modalities}

    keep = ~problems.bad
    every_row = bool(keep.all())  # then nothing is filtered, so nothing is copied
    keep_array = None if every_row else pa.array(keep)

    def kept_rows(column: pa.Array) -> pa.Array:
        return column if keep_array is None else column.filter(keep_array)

    valid = {SAMPLE_ID: kept_rows(ids)}
    if labels is not None:
        valid[LABEL] = kept_rows(labels)
    for group in config.group_columns:
        valid[group] = kept_rows(one_array(batch.column(group)))
    for modality in config.modalities:
        found = modalities[modality.name]
        kept = keep[found.rows]
        values = found.values if every_row else found.values[kept]
        valid[modality.name] = pa.FixedSizeListArray.from_arrays(
            pa.array(values.reshape(-1)), type=modality_type(modality.size, modality.dtype)
        )
        if found.steps is not None:
            valid[length_column(modality.name)] = pa.array(found.steps[kept])

    bad_rows = np.flatnonzero(problems.bad)
    rejects = pa.table(
        {
            "sample_id": ids.take(pa.array(bad_rows, pa.int64())).cast(pa.string()),
            "source_file": pa.array([source_file] * len(bad_rows), pa.string()),
            "row_index": pa.array(first_row_index + bad_rows, pa.int64()),
            "columns": pa.array(
                [",".join(dict.fromkeys(problems.columns[r])) for r in bad_rows], pa.string()
            ),
            "reason": pa.array(["; ".join(problems.reasons[r]) for r in bad_rows], pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    schema = normalised_input_schema(
        [field for m in config.modalities for field in modality_fields(m)],
        ids.type,
        label=labels is not None,
        group_fields=[batch.schema.field(group) for group in config.group_columns],
    )
    return pa.table(valid, schema=schema), rejects

"""Row checks send bad rows to rejects with a reason naming the column; schema checks fail
before any work."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from intermodal.measures import parse_config
from intermodal.schemas.validation import schema_problems, validate_rows

CONFIG = parse_config(
    {
        "dataset": "d",
        "input": "i",
        "output": "o",
        "num_classes": 2,
        "group_columns": ["site"],
        "modalities": [{"name": "a", "shape": [2]}, {"name": "b", "column": "b_raw", "shape": [3]}],
        "model": {"name": "m", "factory": "x.y:z"},
    }
)


def _batch() -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array([10, 11, 12, 13, 14, 15, None], pa.int64()),
            "label": pa.array([0, 1, 5, 1, 0, None, 1], pa.int64()),
            "site": ["x", "y", "x", "y", "x", "y", "x"],
            "a": pa.array(
                [[1, 2], [np.nan, 1], [1, 1], None, [0, 0], [1, 1], [1, 1]],
                pa.list_(pa.float32(), 2),
            ),
            "b_raw": pa.array(
                [[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2], [1, 2, np.inf], [0, 0, 0]],
                pa.list_(pa.float64()),
            ),
        }
    )


def test_each_bad_row_is_rejected_with_its_reasons() -> None:
    valid, rejects = validate_rows(_batch(), CONFIG, pa.array([10], pa.int64()), "f.parquet", 100)
    assert valid.column_names == ["sample_id", "label", "site", "a", "b"]
    assert valid.column("sample_id").to_pylist() == []  # every row has a problem
    reasons = dict(
        zip(
            rejects.column("row_index").to_pylist(),
            zip(
                rejects.column("columns").to_pylist(),
                rejects.column("reason").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    assert set(reasons) == set(range(100, 107))
    assert reasons[100] == ("sample_id", "duplicate sample_id (every copy rejected)")
    assert reasons[101] == ("a", "1 NaN/inf values")
    assert reasons[102] == ("label", "label 5 outside [0, 2)")
    assert reasons[103] == ("a", "value is null")
    assert reasons[104] == ("b_raw", "expected 3 values, got 2")
    assert reasons[105] == ("b_raw", "1 NaN/inf values")  # a null label is allowed
    assert reasons[106] == ("sample_id", "sample_id is null")
    assert set(rejects.column("source_file").to_pylist()) == {"f.parquet"}
    assert rejects.column("sample_id").to_pylist()[:2] == ["10", "11"]


def test_valid_rows_are_normalised() -> None:
    batch = _batch().slice(0, 1)
    valid, rejects = validate_rows(batch, CONFIG, pa.array([], pa.int64()), "f", 0)
    assert rejects.num_rows == 0
    assert valid.schema.field("b").type == pa.list_(pa.float32(), 3)
    assert valid.column("b").to_pylist() == [[1.0, 2.0, 3.0]]
    assert valid.column("site").to_pylist() == ["x"]


def test_schema_problems_name_the_column() -> None:
    schema = pa.schema(
        [
            ("sample_id", pa.float64()),
            ("label", pa.int64()),
            ("a", pa.list_(pa.float32(), 5)),
            ("b_raw", pa.string()),
        ]
    )
    problems = "\n".join(schema_problems(schema, CONFIG))
    assert "'sample_id' (id_column) must be int or string" in problems
    assert "'site' (group_columns) is missing" in problems
    assert "'a' (modality 'a') holds 5 values per row; shape [2] needs 2" in problems
    assert "'b_raw' (modality 'b') must be a list of numbers" in problems


@pytest.mark.parametrize("id_type", [pa.int64(), pa.string()])
def test_string_and_integer_ids(id_type) -> None:
    batch = (
        _batch()
        .slice(0, 1)
        .set_column(
            0,
            "sample_id",
            pa.array(["10"]).cast(id_type) if id_type == pa.string() else pa.array([10]),
        )
    )
    valid, _ = validate_rows(batch, CONFIG, pa.array([], id_type), "f", 0)
    assert valid.schema.field("sample_id").type == id_type


def test_a_null_element_reads_as_null_and_a_row_bad_twice_names_both_columns() -> None:
    batch = pa.table(
        {
            "sample_id": pa.array([1, 2], pa.int64()),
            "label": pa.array([0, 1], pa.int64()),
            "site": ["x", "y"],
            "a": pa.array([[1, None], [np.nan, 1]], pa.list_(pa.float32(), 2)),
            "b_raw": pa.array([[1, 2, 3], [1, 2]], pa.list_(pa.float64())),
        }
    )
    _, rejects = validate_rows(batch, CONFIG, pa.array([], pa.int64()), "f.parquet", 0)
    rows = rejects.select(["columns", "reason"]).to_pylist()
    assert rows == [
        {"columns": "a", "reason": "1 null values"},
        {"columns": "a,b_raw", "reason": "1 NaN/inf values; expected 3 values, got 2"},
    ]

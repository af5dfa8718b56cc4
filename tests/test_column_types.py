"""Modality columns of every numeric layout the ecosystem writes validate to the same rows as a
plain list<float> column of the same values: lists of any numeric type, large and fixed-size
lists, nested lists for multi-dimensional shapes, Arrow's ``fixed_shape_tensor`` and Ray's
tensor extension type (written by Ray Data itself)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intermodal.measures import parse_config
from intermodal.schemas.validation import schema_problems, validate_rows

ROWS, SHAPE = 12, (2, 3)
SIZE = SHAPE[0] * SHAPE[1]
VALUES = np.arange(ROWS * SIZE, dtype=np.float32).reshape(ROWS, *SHAPE) % 7  # exact in float16


def _job() -> object:
    return parse_config(
        {
            "dataset": "types",
            "input": "unused",
            "output": "unused",
            "num_classes": 2,
            "modalities": [
                {"name": "image", "column": "x", "shape": list(SHAPE)},
                {"name": "other", "shape": [1]},
            ],
            "measures": ["pid_cvx"],
        }
    )


def _table(column: pa.Array) -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(range(ROWS), pa.int64()),
            "label": pa.array(np.arange(ROWS) % 2, pa.int64()),
            "x": column,
            "other": pa.array([[float(i)] for i in range(ROWS)], pa.list_(pa.float32())),
        }
    )


def _flat(value_type: pa.DataType) -> list:
    return [row.reshape(-1).astype(value_type.to_pandas_dtype()).tolist() for row in VALUES]


def _nested(value_type: pa.DataType) -> list:
    return [row.astype(value_type.to_pandas_dtype()).tolist() for row in VALUES]


LAYOUTS = {
    "list<float32>": lambda: pa.array(_flat(pa.float32()), pa.list_(pa.float32())),
    "large_list<float64>": lambda: pa.array(_flat(pa.float64()), pa.large_list(pa.float64())),
    "fixed_size_list<float16>[6]": lambda: pa.array(
        _flat(pa.float16()), pa.list_(pa.float16(), SIZE)
    ),
    "list<int64>": lambda: pa.array(_flat(pa.int64()), pa.list_(pa.int64())),
    "list<uint8>": lambda: pa.array(_flat(pa.uint8()), pa.list_(pa.uint8())),
    "list<list<float32>>": lambda: pa.array(
        _nested(pa.float32()), pa.list_(pa.list_(pa.float32()))
    ),
    "fixed_size_list<fixed_size_list<int8>[3]>[2]": lambda: pa.array(
        _nested(pa.int8()), pa.list_(pa.list_(pa.int8(), 3), 2)
    ),
    "arrow.fixed_shape_tensor": lambda: pa.FixedShapeTensorArray.from_numpy_ndarray(VALUES),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_numeric_layout_validates_to_the_same_rows(layout: str, tmp_path) -> None:
    job = _job()
    expected, _ = validate_rows(_table(LAYOUTS["list<float32>"]()), job, pa.array([]), "f", 0)
    path = tmp_path / "shard.parquet"
    pq.write_table(_table(LAYOUTS[layout]()), path)  # through Parquet, as a user's file is
    table = pq.read_table(path)
    assert schema_problems(table.schema, job) == []
    valid, rejects = validate_rows(table, job, pa.array([]), str(path), 0)
    assert rejects.num_rows == 0
    assert valid.equals(expected)


def test_sliced_and_nulled_nested_rows_keep_their_place() -> None:
    """Row nulls of a nested column are rejected as null; a sliced batch (as Ray hands out)
    reads the rows it holds, not the first rows of its buffers."""
    nested = _nested(pa.float32())
    nested[3] = None
    column = pa.array(nested, pa.list_(pa.list_(pa.float32())))
    table = _table(column).slice(2, 6)
    valid, rejects = validate_rows(table, _job(), pa.array([]), "f", 2)
    assert rejects.column("row_index").to_pylist() == [3]
    assert rejects.column("reason").to_pylist() == ["value is null"]
    assert valid.column("sample_id").to_pylist() == [2, 4, 5, 6, 7]
    image = np.stack(valid.column("image").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(image, VALUES[[2, 4, 5, 6, 7]].reshape(5, -1))


def test_a_tensor_of_the_wrong_shape_is_refused_by_the_schema_check() -> None:
    wrong = pa.FixedShapeTensorArray.from_numpy_ndarray(np.zeros((ROWS, 3, 3), np.float32))
    problems = schema_problems(_table(wrong).schema, _job())
    assert problems == [
        "column 'x' (modality 'image') holds 9 values per row; shape [2, 3] needs 6"
    ]
    strings = pa.array([["a"]] * ROWS, pa.list_(pa.string()))
    (problem,) = schema_problems(_table(strings).schema, _job())
    assert "column 'x' (modality 'image') must be a list of numbers" in problem


@pytest.mark.usefixtures("ray_session")
def test_ray_datas_own_tensor_columns_validate_like_lists(tmp_path) -> None:
    """``ds.map_batches(embed).write_parquet(...)`` stores numpy columns as Ray's tensor
    extension type; reading them back must not need a conversion by the user."""
    import ray

    ray.data.from_items(
        [{"sample_id": i, "label": i % 2, "x": VALUES[i], "other": [float(i)]} for i in range(ROWS)]
    ).repartition(1).write_parquet(str(tmp_path))
    (path,) = tmp_path.glob("*.parquet")
    table = pq.read_table(path)
    assert isinstance(table.schema.field("x").type, pa.BaseExtensionType)  # Ray's tensor type
    job = _job()
    assert schema_problems(table.schema, job) == []
    valid, rejects = validate_rows(table.sort_by("sample_id"), job, pa.array([]), str(path), 0)
    expected, _ = validate_rows(_table(LAYOUTS["list<float32>"]()), job, pa.array([]), "f", 0)
    assert rejects.num_rows == 0
    assert valid.column("image").equals(expected.column("image"))

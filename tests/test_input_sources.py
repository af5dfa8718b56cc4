"""The data users already hold, written by the library that produces it, scores as the plain
list<float> Parquet of the same values (the same rows; scores to float32 rounding): Ray Data's
tensor columns, Arrow's ``fixed_shape_tensor``, Hugging Face ``datasets`` (``Array2D``/
``Sequence`` exported to Parquet, and ``save_to_disk``'s Arrow files), a Lance dataset, and a
``ray.data.Dataset`` handed to ``intermodal.score``. The model is a fixed FCNN and masked
modalities take zeros, so every score depends on the values read and on nothing drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from polars.testing import assert_frame_equal

import intermodal
from intermodal.measures import parse_config
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines.score import run_score
from intermodal.synthetic.hdxor import write_table_shards

pytestmark = pytest.mark.usefixtures("ray_session")

ROWS, SHARDS = 240, 3
A_SHAPE, B_SIZE = (2, 3), 4
RNG = np.random.default_rng(11)
A = RNG.normal(size=(ROWS, *A_SHAPE)).astype(np.float32)
B = RNG.normal(size=(ROWS, B_SIZE)).astype(np.float32)
LABELS = RNG.integers(0, 2, ROWS)


def _plain() -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(range(ROWS), pa.int64()),
            "label": pa.array(LABELS, pa.int64()),
            "a": pa.array(list(A.reshape(ROWS, -1)), pa.list_(pa.float32())),
            "b": pa.array(list(B), pa.list_(pa.float32())),
        }
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = build_fcnn(["a", "b"], [6, B_SIZE], 2, "early")
    path = tmp_path_factory.mktemp("model") / "fcnn.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def _job(data: Path | str, run: Path, weights: str) -> dict:
    return {
        "dataset": "sources",
        "input": str(data),
        "output": str(run),
        "num_classes": 2,
        "modalities": [{"name": "a", "shape": [6]}, {"name": "b", "shape": [B_SIZE]}],
        "measures": ["intershap"],
        "model": {
            "name": "fcnn",
            "factory": "intermodal.models.fcnn:build_fcnn",
            "kwargs": {"modalities": ["a", "b"], "dims": [6, B_SIZE], "num_classes": 2},
            "weights": weights,
        },
        "intershap": {"masking": "zeros"},
        "compute": {"batch_size": 64},
    }


def _scores(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "scores").sort("sample_id")


@pytest.fixture(scope="module")
def plain_scores(tmp_path_factory, weights) -> pl.DataFrame:
    root = tmp_path_factory.mktemp("plain")
    write_table_shards(_plain(), str(root / "data"), SHARDS)
    run_score(parse_config(_job(root / "data", root / "run", weights)), progress=lambda _: None)
    scores = _scores(root / "run")
    assert scores.height == ROWS
    return scores


def _ray_tensors(data: Path) -> None:
    import ray

    rows = [{"sample_id": i, "label": int(LABELS[i]), "a": A[i], "b": B[i]} for i in range(ROWS)]
    ray.data.from_items(rows).repartition(SHARDS).write_parquet(str(data))


def _fixed_shape_tensors(data: Path) -> None:
    table = pa.table(
        {
            "sample_id": pa.array(range(ROWS), pa.int64()),
            "label": pa.array(LABELS, pa.int64()),
            "a": pa.FixedShapeTensorArray.from_numpy_ndarray(A),
            "b": pa.FixedShapeTensorArray.from_numpy_ndarray(B),
        }
    )
    write_table_shards(table, str(data), SHARDS)


def _hf_dataset():
    import datasets

    features = datasets.Features(
        {
            "sample_id": datasets.Value("int64"),
            "label": datasets.Value("int64"),
            "a": datasets.Array2D(shape=A_SHAPE, dtype="float32"),
            "b": datasets.Sequence(datasets.Value("float32"), length=B_SIZE),
        }
    )
    columns = {"sample_id": range(ROWS), "label": LABELS, "a": A.tolist(), "b": B.tolist()}
    return datasets.Dataset.from_dict({k: list(v) for k, v in columns.items()}, features=features)


def _hf_parquet(data: Path) -> None:
    data.mkdir()
    dataset = _hf_dataset()
    for index in range(SHARDS):
        dataset.shard(SHARDS, index, contiguous=True).to_parquet(str(data / f"{index}.parquet"))


def _hf_save_to_disk(data: Path) -> None:
    _hf_dataset().save_to_disk(str(data), num_shards=SHARDS)


def _lance(data: Path) -> None:
    import lance

    table = _plain()
    lance.write_dataset(table, str(data), max_rows_per_file=ROWS // SHARDS)


WRITERS = {
    "ray_tensor_parquet": _ray_tensors,
    "fixed_shape_tensor_parquet": _fixed_shape_tensors,
    "hf_array2d_sequence_parquet": _hf_parquet,
    "hf_save_to_disk": _hf_save_to_disk,
    "lance": _lance,
}


@pytest.mark.parametrize("source", list(WRITERS))
def test_each_source_scores_like_plain_lists(source, tmp_path, weights, plain_scores) -> None:
    data = tmp_path / ("data.lance" if source == "lance" else "data")
    WRITERS[source](data)
    manifest = run_score(
        parse_config(_job(data, tmp_path / "run", weights)), progress=lambda _: None
    )
    assert manifest["rows"] == {"scored": ROWS, "rejected": 0}
    assert len(manifest["input"]["shards"]) == SHARDS
    # same rows, ids and columns; float32 scores to 1e-5: the model's batched matmuls may round
    # the last bits differently when another reader's blocks batch the rows differently
    assert_frame_equal(_scores(tmp_path / "run"), plain_scores, rel_tol=1e-5, abs_tol=1e-6)


def test_a_ray_dataset_scores_like_its_parquet(tmp_path, weights, plain_scores) -> None:
    import ray

    dataset = ray.data.from_arrow(_plain())
    job = _job("unused", tmp_path / "run", weights)
    manifest = intermodal.score(job, dataset=dataset, progress=lambda _: None)
    assert manifest["rows"] == {"scored": ROWS, "rejected": 0}
    assert_frame_equal(_scores(tmp_path / "run"), plain_scores, rel_tol=1e-5, abs_tol=1e-6)
    assert pq.read_table(tmp_path / "run" / "input").num_rows == ROWS  # the copy it scored

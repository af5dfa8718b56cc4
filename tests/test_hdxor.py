"""Tests for the HD-XOR synthetic data generator and its XOR function model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from intermodal.synthetic.hdxor import HDXORSpec, generate, write_shards, xor_function_model

SETTINGS = ["uniqueness", "synergy", "redundancy", "random"]


def _column(table: pa.Table, name: str) -> np.ndarray:
    """Fixed-size list column -> [n, d] array."""
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def _bit_inputs(table: pa.Table, spec: HDXORSpec) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(_column(table, f"{name}_bits")) for name in spec.modality_names}


def _predict(table: pa.Table, spec: HDXORSpec) -> np.ndarray:
    model = xor_function_model(spec.setting, spec.n_modalities, spec.unique_modality)
    return model(_bit_inputs(table, spec)).argmax(dim=1).numpy()


@pytest.mark.parametrize("setting", SETTINGS)
def test_schema(setting: str) -> None:
    spec = HDXORSpec(setting=setting, n_modalities=4, n_samples=64)
    table = generate(spec)
    n_bits = 1 if setting == "synergy" else 2
    expected = pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            *((f"m{m}", pa.list_(pa.float32(), d)) for m, d in enumerate([200, 100, 150, 100])),
            *((f"m{m}_bits", pa.list_(pa.float32(), n_bits)) for m in range(4)),
        ]
    )
    assert table.schema.equals(expected)
    assert table.num_rows == 64
    assert table.column("sample_id").to_pylist() == list(range(64))
    assert set(table.column("label").to_pylist()) <= {0, 1}
    assert spec.modality_names == ["m0", "m1", "m2", "m3"]


def test_custom_dims() -> None:
    spec = HDXORSpec(n_modalities=3, n_samples=16, dims=[5, 7, 9])
    table = generate(spec)
    assert [_column(table, name).shape for name in spec.modality_names] == [
        (16, 5),
        (16, 7),
        (16, 9),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_modalities": 5},
        {"n_modalities": 1},
        {"n_samples": 4},
        {"dims": [10]},
        {"unique_modality": 2},
        {"setting": "nonsense"},
        {"unknown": 1},
    ],
)
def test_spec_validation(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        HDXORSpec(**kwargs)


@pytest.mark.parametrize("setting", SETTINGS)
def test_determinism(setting: str) -> None:
    spec = HDXORSpec(setting=setting, n_modalities=3, n_samples=256, seed=7)
    assert generate(spec).equals(generate(spec))
    other = generate(spec.model_copy(update={"seed": 8}))
    assert not np.array_equal(_column(generate(spec), "m0"), _column(other, "m0"))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("n_modalities", [2, 3, 4])
def test_labels_balanced(setting: str, n_modalities: int) -> None:
    spec = HDXORSpec(setting=setting, n_modalities=n_modalities, n_samples=4000)
    labels = generate(spec).column("label").to_numpy()
    assert abs(labels.mean() - 0.5) < 0.05


@pytest.mark.parametrize(
    ("setting", "n_modalities", "unique_modality"),
    [
        ("synergy", 2, 0),
        ("synergy", 3, 0),
        ("synergy", 4, 0),
        ("uniqueness", 2, 0),
        ("uniqueness", 2, 1),
        ("uniqueness", 3, 2),
    ],
)
def test_xor_model_reproduces_label(setting: str, n_modalities: int, unique_modality: int) -> None:
    spec = HDXORSpec(
        setting=setting,
        n_modalities=n_modalities,
        unique_modality=unique_modality,
        n_samples=2000,
    )
    table = generate(spec)
    np.testing.assert_array_equal(_predict(table, spec), table.column("label").to_numpy())


def test_xor_model_output() -> None:
    model = xor_function_model("synergy", 2, margin=10.0)
    assert model.modalities == ("m0", "m1")
    assert list(model.parameters()) == []
    inputs = {
        "m0": torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64),
        "m1": torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64),
    }
    logits = model(inputs)
    assert logits.dtype == torch.float64
    expected = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [5.0, -5.0]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)


def test_xor_model_random_raises() -> None:
    with pytest.raises(ValueError):
        xor_function_model("random", 2)


def test_uniqueness_irrelevant_bits_are_noise() -> None:
    spec = HDXORSpec(setting="uniqueness", n_modalities=3, unique_modality=1, n_samples=4000)
    table = generate(spec)
    labels = table.column("label").to_numpy()
    for name in ("m0", "m2"):
        bits = _column(table, f"{name}_bits").astype(int)
        accuracy = np.mean((bits[:, 0] ^ bits[:, 1]) == labels)
        assert abs(accuracy - 0.5) < 0.05


def test_redundancy_bits_shared() -> None:
    spec = HDXORSpec(setting="redundancy", n_modalities=3, n_samples=256)
    table = generate(spec)
    reference = _column(table, "m0_bits")
    for name in ("m1", "m2"):
        np.testing.assert_array_equal(_column(table, f"{name}_bits"), reference)
    np.testing.assert_array_equal(_predict(table, spec), table.column("label").to_numpy())


def test_synergy_features_carry_bit() -> None:
    spec = HDXORSpec(setting="synergy", n_modalities=2, n_samples=4000)
    table = generate(spec)
    features = _column(table, "m0").astype(np.float64)
    bit = _column(table, "m0_bits")[:, 0]
    design = np.hstack([features, np.ones((len(features), 1))])
    target = 2 * bit - 1
    train, test = slice(0, 3000), slice(3000, None)
    weights, *_ = np.linalg.lstsq(design[train], target[train], rcond=None)
    accuracy = np.mean((design[test] @ weights > 0) == (bit[test] == 1))
    assert accuracy > 0.8


def _assert_shards_match(paths: list[str], spec: HDXORSpec) -> None:
    import fsspec

    tables = []
    for path in paths:
        with fsspec.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            assert all(
                parquet.metadata.row_group(i).num_rows <= 4096
                for i in range(parquet.metadata.num_row_groups)
            )
            tables.append(parquet.read())
    assert pa.concat_tables(tables).equals(generate(spec))


def test_write_shards_memory() -> None:
    spec = HDXORSpec(setting="uniqueness", n_modalities=3, n_samples=10_000)
    paths = write_shards(spec, "memory://hdxor-test", n_shards=2)
    assert paths == [
        "memory://hdxor-test/part-00000.parquet",
        "memory://hdxor-test/part-00001.parquet",
    ]
    _assert_shards_match(paths, spec)


def test_write_shards_local(tmp_path) -> None:
    spec = HDXORSpec(setting="synergy", n_modalities=3, n_samples=1001)
    paths = write_shards(spec, str(tmp_path / "out"), n_shards=4)
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"part-{i:05d}.parquet" for i in range(4)]
    _assert_shards_match(paths, spec)
    read_back = pq.read_table(tmp_path / "out")
    assert read_back.num_rows == 1001

"""Coalition values with cached encoders against naive input masking; the InterSHAP operator
called directly on an Arrow batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from intermodal.estimators.intershap import intershap_columns, local_intershap
from intermodal.measures import parse_config
from intermodal.models.fcnn import build_fcnn
from intermodal.operators.coalitions import CoalitionValues, naive_coalition_values
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_type

NAMES = ["a", "b", "c"]
DIMS = [6, 4, 8]


def _model(fusion: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_fcnn(NAMES, DIMS, num_classes=3, fusion=fusion).double().eval()


def _inputs(n: int, seed: int, dtype=torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        m: torch.randn(n, d, generator=generator, dtype=dtype)
        for m, d in zip(NAMES, DIMS, strict=True)
    }


@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_cached_encoders_equal_naive_masking(fusion: str) -> None:
    model = _model(fusion)
    inputs, background = _inputs(7, 1), _inputs(5, 2)
    cached = CoalitionValues(model, background)(inputs)
    naive = naive_coalition_values(model, inputs, background)
    assert cached.shape == (7, 8, 3)
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-12)
    # the full coalition is the unmasked prediction, the empty one the background mean
    torch.testing.assert_close(cached[:, -1], torch.softmax(model(inputs), -1))
    expected_empty = torch.softmax(model(background), -1).mean(0)
    torch.testing.assert_close(cached[:, 0], expected_empty.expand(7, 3))


def test_chunking_of_coalitions_does_not_change_values(monkeypatch) -> None:
    import intermodal.operators.coalitions as coalitions

    model = _model("late")
    inputs, background = _inputs(4, 3), _inputs(3, 4)
    # the general path (a model that declares no split first layer) chunks by MAX_FUSE_ROWS
    whole = CoalitionValues(model, background, split=False)(inputs)
    monkeypatch.setattr(coalitions, "MAX_FUSE_ROWS", 1)  # one coalition per fuse call
    chunked = CoalitionValues(model, background, split=False)(inputs)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def _config(target: str, weights: str) -> JobConfig:
    return parse_config(
        {
            "dataset": "unit",
            "input": "unused",
            "output": "unused",
            "num_classes": 3,
            "modalities": [{"name": m, "shape": [d]} for m, d in zip(NAMES, DIMS, strict=True)],
            "model": {
                "name": "late",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": {"modalities": NAMES, "dims": DIMS, "num_classes": 3, "fusion": "late"},
                "weights": weights,
            },
            "intershap": {"target": target},
        }
    )


def _batch(n: int) -> pa.Table:
    inputs = _inputs(n, 5, torch.float32)
    columns = {"sample_id": pa.array(np.arange(n) + 100), "label": pa.array(np.arange(n) % 3)}
    for m, d in zip(NAMES, DIMS, strict=True):
        columns[m] = pa.FixedSizeListArray.from_arrays(
            pa.array(inputs[m].numpy().ravel()), type=modality_type(d)
        )
    return pa.table(columns)


@pytest.mark.parametrize("target", ["predicted", "label", "all"])
def test_operator_emits_typed_columns_that_decompose_the_prediction(tmp_path, target) -> None:
    weights = tmp_path / "late.pt"
    torch.manual_seed(0)
    torch.save(build_fcnn(NAMES, DIMS, 3, "late").state_dict(), weights)
    background = {m: v.numpy() for m, v in _inputs(4, 6, torch.float32).items()}
    operator = ScoreOperator(_config(target, str(weights)), background=background)
    batch = _batch(9)
    out = operator(batch.slice(2))  # a slice: Ray hands operators offset views
    assert out.column("sample_id").to_pylist() == list(range(102, 109))
    suffixes = [f"__class{k}" for k in range(3)] if target == "all" else [""]
    for suffix in suffixes:
        names = intershap_columns(NAMES, suffix)
        table = {n: out.column(n).to_numpy() for n in names}
        assert all(out.schema.field(n).type == pa.float64() for n in names)
        upper = [n for n in names if n.startswith("interaction_")]
        diagonal = [f"interaction_{m}__{m}{suffix}" for m in NAMES]
        total = sum(table[n] for n in diagonal) + 2 * sum(
            table[n] for n in upper if n not in diagonal
        )
        np.testing.assert_allclose(
            total,
            table[f"intershap_value_full{suffix}"] - table[f"intershap_value_empty{suffix}"],
            atol=1e-9,
        )
        shapley = sum(table[f"shapley_{m}{suffix}"] for m in NAMES)
        np.testing.assert_allclose(shapley, total, atol=1e-9)
        assert (
            (table[f"intershap_local{suffix}"] >= 0) & (table[f"intershap_local{suffix}"] <= 1)
        ).all()
    if target == "label":
        assert out.column("explained_class").to_pylist() == out.column("label").to_pylist()
    if target == "predicted":
        assert out.column("explained_class").to_pylist() == out.column("pred").to_pylist()


def test_local_intershap_matches_the_matrix_columns(tmp_path) -> None:
    weights = tmp_path / "late.pt"
    torch.save(build_fcnn(NAMES, DIMS, 3, "late").state_dict(), weights)
    background = {m: v.numpy() for m, v in _inputs(4, 6, torch.float32).items()}
    out = ScoreOperator(_config("predicted", str(weights)), background=background)(_batch(5))
    matrix = np.zeros((5, 3, 3))
    for i, a in enumerate(NAMES):
        for j, b in enumerate(NAMES[i:], start=i):
            matrix[:, i, j] = matrix[:, j, i] = out.column(f"interaction_{a}__{b}").to_numpy()
    np.testing.assert_allclose(out.column("intershap_local").to_numpy(), local_intershap(matrix))

"""The in-memory API ``intermodal.intershap``: the score pipeline's columns for the same model,
inputs and background; dataset terms; numpy and torch inputs alike."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import intermodal
from intermodal.estimators.coalitions import full_coalition
from intermodal.estimators.intershap import (
    explained_values,
    global_terms,
    intershap_table,
    local_intershap,
)
from intermodal.explain import InterSHAPResult, intershap
from intermodal.models.fcnn import build_fcnn
from intermodal.operators.coalitions import CoalitionValues
from intermodal.schemas.tables import PRED

NAMES = ["a", "b", "c"]
DIMS = [6, 4, 8]
N_CLASSES = 3
EXPLAINED_CLASS = "explained_class"


def _arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = zip(NAMES, DIMS, strict=True)
    return {m: rng.standard_normal((n, d)).astype(np.float32) for m, d in shapes}


def _model(fusion: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_fcnn(NAMES, DIMS, N_CLASSES, fusion).eval()


def _pipeline_columns(
    model: torch.nn.Module, inputs: dict, background: dict, target: str, labels: np.ndarray
) -> dict[str, np.ndarray]:
    """The columns the score pipeline writes for one batch: its coalition values
    (``CoalitionValues`` on the background tensors), then the estimators its InterSHAP measure
    calls, with the prediction of the full coalition."""
    tensors = {m: torch.from_numpy(x) for m, x in background.items()}
    batch = {m: torch.from_numpy(x) for m, x in inputs.items()}
    probabilities = CoalitionValues(model, tensors)(batch).numpy()
    values, classes = explained_values(probabilities, target, labels)
    columns = {PRED: probabilities[:, full_coalition(len(NAMES))].argmax(axis=-1)}
    if classes is not None:
        columns[EXPLAINED_CLASS] = classes
    columns.update(intershap_table(values, NAMES, target, N_CLASSES))
    return columns


@pytest.mark.parametrize(
    ("fusion", "target"),
    [("early", "predicted"), ("intermediate", "label"), ("late", "all"), ("early", "all")],
)
def test_api_gives_the_pipelines_score_columns(one_torch_thread, fusion: str, target: str) -> None:
    model = _model(fusion)
    inputs, background = _arrays(11, 1), _arrays(5, 2)
    labels = np.arange(11) % N_CLASSES
    expected = _pipeline_columns(model, inputs, background, target, labels)
    result = intershap(model, inputs, background, target=target, labels=labels)
    assert set(result.columns) == set(expected)
    assert (EXPLAINED_CLASS in expected) == (target != "all")
    for name, values in expected.items():
        np.testing.assert_allclose(result.columns[name], values, rtol=0, atol=1e-12)
    if target == "label":
        np.testing.assert_array_equal(result.columns[EXPLAINED_CLASS], labels)


def _result(**kwargs: object) -> InterSHAPResult:
    return intershap(_model("intermediate"), _arrays(9, 3), _arrays(4, 4), **kwargs)


def test_result_arrays_agree_with_columns_and_dataset_terms(one_torch_thread) -> None:
    result = _result(target="all")
    n, targets, m = 9, N_CLASSES, len(NAMES)
    assert result.probabilities.shape == (n, 1 << m, N_CLASSES)
    assert result.shapley.shape == (n, targets, m)
    assert result.interactions.shape == (n, targets, m, m)
    assert result.explained_class is None
    np.testing.assert_array_equal(result.predicted, result.probabilities[:, -1].argmax(-1))
    for t in range(targets):
        suffix = f"__class{t}"
        for i, a in enumerate(NAMES):
            np.testing.assert_allclose(
                result.shapley[:, t, i], result.columns[f"shapley_{a}{suffix}"]
            )
        np.testing.assert_allclose(result.local[:, t], local_intershap(result.interactions[:, t]))
        expected = global_terms(result.interactions[:, t].mean(axis=0))
        assert result.global_terms[t].intershap == pytest.approx(expected.intershap)
        summary = {term: (value, stderr) for term, value, stderr in result.summary}
        assert summary[f"global{suffix}"][0] == pytest.approx(expected.intershap)
        local_mean, local_stderr = summary[f"local_mean{suffix}"]
        assert local_mean == pytest.approx(result.local[:, t].mean())
        assert local_stderr == pytest.approx(result.local[:, t].std(ddof=1) / np.sqrt(n))
    assert result.global_intershap == result.global_terms[0].intershap


def test_tensors_numpy_and_batch_sizes_agree(one_torch_thread) -> None:
    model = _model("early")
    inputs, background = _arrays(10, 5), _arrays(3, 6)
    reference = intershap(model, inputs, background)
    as_tensors = intershap(
        model,
        {m: torch.from_numpy(x) for m, x in inputs.items()},
        {m: torch.from_numpy(x).double() for m, x in background.items()},  # cast to float32
        batch_size=3,
    )
    for name, values in reference.columns.items():  # float32 matmuls over other row counts
        np.testing.assert_allclose(as_tensors.columns[name], values, rtol=0, atol=1e-6)


def test_training_mode_is_restored_and_bad_arguments_are_refused() -> None:
    model = _model("late").train()
    intershap(model, _arrays(2, 7), _arrays(2, 8))
    assert model.training
    with pytest.raises(ValueError, match="needs labels"):
        intershap(model, _arrays(2, 7), _arrays(2, 8), target="label")
    with pytest.raises(ValueError, match="no values for modalities"):
        intershap(model, {"a": np.zeros((2, 6))}, _arrays(2, 8))
    with pytest.raises(ValueError, match="no rows"):
        intershap(model, _arrays(0, 7), _arrays(2, 8))


def test_package_root_offers_intershap_lazily() -> None:
    assert intermodal.intershap is intershap
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, intermodal; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "intermodal.explain" not in loaded and "intermodal.operators" not in loaded
    with pytest.raises(AttributeError):
        _ = intermodal.no_such_name


class JoinedLinear(torch.nn.Module):
    """A plain ``forward(dict)`` model: no encoders, no modality names of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(5, 2)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat([inputs["x"], inputs["y"]], dim=1))


def test_a_plain_forward_module_takes_its_modalities_from_the_inputs(one_torch_thread) -> None:
    rng = np.random.default_rng(9)
    inputs = {"x": rng.standard_normal((6, 3)), "y": rng.standard_normal((6, 2))}  # float64
    background = {"x": np.zeros((1, 3)), "y": np.zeros((1, 2))}  # one baseline row
    result = intershap(JoinedLinear(), inputs, background)
    assert result.modalities == ["x", "y"]
    explained = result.columns["intershap_value_full"] - result.columns["intershap_value_empty"]
    shapley = result.columns["shapley_x"] + result.columns["shapley_y"]
    np.testing.assert_allclose(shapley, explained, atol=1e-12)

"""The block-split first layer: coalition values equal the general path (masked rows through the
whole of ``fuse``) on the project's FCNNs and on models that declare their own split."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import Tensor, nn

import intermodal.operators.coalitions as coalitions
from intermodal.models.fcnn import build_fcnn
from intermodal.models.protocol import (
    FirstLayerSplit,
    as_multimodal,
    declared_first_layer_split,
)
from intermodal.operators.coalitions import CoalitionValues, naive_coalition_values

DIMS = [6, 4, 8, 5]
TOLERANCE = 1e-6


def _names(n_modalities: int) -> list[str]:
    return [f"m{m}" for m in range(n_modalities)]


def _rows(n: int, n_modalities: int, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        m: torch.randn(n, d, generator=generator)
        for m, d in zip(_names(n_modalities), DIMS, strict=False)
    }


def _assert_split_equals_unsplit(model: nn.Module, n_modalities: int) -> None:
    inputs, background = _rows(7, n_modalities, 1), _rows(5, n_modalities, 2)
    split = CoalitionValues(model, background)
    assert split.split is not None, "the model's split was not detected"
    unsplit = CoalitionValues(model, background, split=False)
    assert unsplit.split is None
    values = split(inputs)
    assert values.shape == (7, 1 << n_modalities, 3)
    torch.testing.assert_close(values, unsplit(inputs), rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(
        values, naive_coalition_values(model, inputs, background), rtol=0, atol=TOLERANCE
    )


@pytest.mark.parametrize("n_modalities", [2, 3, 4])
@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_fcnn_split_equals_unsplit(one_torch_thread, fusion: str, n_modalities: int) -> None:
    torch.manual_seed(0)
    model = build_fcnn(_names(n_modalities), DIMS[:n_modalities], 3, fusion).eval()
    _assert_split_equals_unsplit(model, n_modalities)


class GatedEncoders(nn.Module):
    """A user model: per-modality encoders whose outputs are 2-D ([n, 2, 3], flattened by the
    split's contract), a first Linear over their concatenation, then a nonlinear head."""

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.encoders = nn.ModuleDict(
            {m: nn.Linear(d, 6) for m, d in zip(modalities, DIMS, strict=False)}
        )
        self.first = nn.Linear(6 * len(modalities), 9)
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(9, 3))

    def encode(self, name: str, x: Tensor) -> Tensor:
        return self.encoders[name](x).view(-1, 2, 3)

    def fuse(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        flat = [embeddings[m].flatten(1) for m in self.modalities]
        return self.head(self.first(torch.cat(flat, dim=1)))

    def first_layer_split(self) -> FirstLayerSplit:
        return FirstLayerSplit(self.first, self.head)


class ConcatForward(nn.Module):
    """A plain ``forward(dict)`` user model (wrapped with identity encoders) declaring its
    first layer, without a bias."""

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities_in_order = modalities
        self.first = nn.Linear(sum(DIMS[: len(modalities)]), 7, bias=False)
        self.rest = nn.Sequential(nn.GELU(), nn.Linear(7, 3))

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        joined = torch.cat([inputs[m] for m in self.modalities_in_order], dim=1)
        return self.rest(self.first(joined))

    def first_layer_split(self) -> FirstLayerSplit:
        return FirstLayerSplit(self.first, self.rest)


@pytest.mark.parametrize("n_modalities", [2, 3, 4])
def test_user_declared_split_equals_unsplit(one_torch_thread, n_modalities: int) -> None:
    torch.manual_seed(0)
    _assert_split_equals_unsplit(GatedEncoders(_names(n_modalities)).eval(), n_modalities)


@pytest.mark.parametrize("n_modalities", [2, 3, 4])
def test_forward_model_passes_its_split_on(one_torch_thread, n_modalities: int) -> None:
    torch.manual_seed(0)
    names = _names(n_modalities)
    model = as_multimodal(ConcatForward(names).eval(), names)
    assert declared_first_layer_split(model) is not None
    _assert_split_equals_unsplit(model, n_modalities)


class FirstModalityLogits(nn.Module):
    """A plain forward module that declares nothing."""

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return inputs["a"]


def test_models_without_a_split_take_the_general_path() -> None:
    model = as_multimodal(FirstModalityLogits(), ["a"])
    assert declared_first_layer_split(model) is None
    assert CoalitionValues(model, {"a": torch.zeros(2, 3)}).split is None


def test_a_split_that_does_not_fit_the_embeddings_is_refused() -> None:
    names = _names(2)
    model = GatedEncoders(names)
    model.first = nn.Linear(5, 9)  # the embeddings have 12 features
    with pytest.raises(ValueError, match="takes 5 features"):
        CoalitionValues(model, _rows(3, 2, 0))


def test_a_split_of_the_wrong_type_is_refused() -> None:
    class Wrong(nn.Module):
        def first_layer_split(self) -> nn.Linear:
            return nn.Linear(2, 2)

    with pytest.raises(TypeError, match="not a FirstLayerSplit"):
        declared_first_layer_split(Wrong())


def test_chunking_of_samples_and_coalitions_does_not_change_values(
    one_torch_thread, monkeypatch
) -> None:
    torch.manual_seed(0)
    # float64: matmuls over different row counts round differently in float32
    model = build_fcnn(_names(3), DIMS[:3], 3, "intermediate").double().eval()
    inputs = {m: x.double() for m, x in _rows(6, 3, 3).items()}
    background = {m: x.double() for m, x in _rows(4, 3, 4).items()}
    whole = CoalitionValues(model, background)(inputs)
    for rows in (1, 9, 40):  # one sample and coalition per chunk; several samples; coalitions
        monkeypatch.setattr(coalitions, "SPLIT_CHUNK_ROWS", rows)
        chunked = CoalitionValues(model, background)(inputs)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


def test_an_absent_non_finite_block_does_not_leak(one_torch_thread) -> None:
    """A masked modality's block is left out of the sum, not multiplied by zero."""
    torch.manual_seed(0)
    model = build_fcnn(_names(2), DIMS[:2], 3, "early").eval()
    inputs, background = _rows(3, 2, 5), _rows(4, 2, 6)
    inputs["m1"][0] = float("inf")
    values = CoalitionValues(model, background)(inputs)
    present_m0_only = 1
    assert torch.isfinite(values[:, present_m0_only]).all()

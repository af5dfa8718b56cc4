"""Fusion baselines, the model protocol, safe checkpoint loading, the training loop."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from intermodal.models.fcnn import FCNN, build_fcnn
from intermodal.models.protocol import ForwardModel, as_multimodal, build_model
from intermodal.models.training import TrainConfig, train_classifier
from intermodal.synthetic.hdxor import xor_function_model

FACTORY = "intermodal.models.fcnn:build_fcnn"
KWARGS = {"modalities": ["a", "b"], "dims": [8, 4], "num_classes": 2}


@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_fcnn_protocol_and_paper_widths(fusion: str) -> None:
    model = build_fcnn(["a", "b"], [8, 4], 2, fusion)
    inputs = {"a": torch.randn(5, 8), "b": torch.randn(5, 4)}
    assert isinstance(as_multimodal(model, ["a", "b"]), FCNN)
    encoded = {m: model.encode(m, x) for m, x in inputs.items()}
    torch.testing.assert_close(model.fuse(encoded), model(inputs))
    if fusion == "early":  # input 12 → hidden 6 → 3 → classes
        widths = [layer.out_features for layer in model.head if hasattr(layer, "out_features")]
        assert widths == [6, 3, 2]


def test_plain_forward_models_get_identity_encoders() -> None:
    wrapped = as_multimodal(xor_function_model("synergy", 2), ["m0", "m1"])
    assert isinstance(wrapped, ForwardModel)
    bits = torch.tensor([[1.0], [0.0]])
    assert wrapped.encode("m0", bits) is bits
    logits = wrapped.fuse({"m0": bits, "m1": torch.tensor([[0.0], [0.0]])})
    assert logits.argmax(-1).tolist() == [1, 0]


def test_weights_load_as_state_dict_only(tmp_path) -> None:
    model = build_fcnn(**KWARGS)
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    loaded = build_model(FACTORY, KWARGS, str(good), ["a", "b"])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert not loaded.training

    whole_module = tmp_path / "module.pt"
    torch.save(model, whole_module)  # pickles code: must be refused
    with pytest.raises(ValueError, match="not a state_dict"):
        build_model(FACTORY, KWARGS, str(whole_module), ["a", "b"])
    arbitrary = tmp_path / "object.pt"
    arbitrary.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ValueError, match=r"model\.weights"):
        build_model(FACTORY, KWARGS, str(arbitrary), ["a", "b"])


def test_factory_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        build_model("no_such_module:f", {}, None, ["a"])
    with pytest.raises(ValueError, match="has no 'missing'"):
        build_model("intermodal.models.fcnn:missing", {}, None, ["a"])


def test_training_learns_a_two_modality_rule() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(800, 8)), rng.normal(size=(800, 4))
    labels = ((a[:, 0] > 0) ^ (b[:, 0] > 0)).astype(np.int64)  # needs both modalities
    model = build_fcnn(**KWARGS, fusion="early")
    messages: list[str] = []
    result = train_classifier(
        model,
        {"a": a, "b": b},
        labels,
        TrainConfig(epochs=60, batch_size=64, lr=3e-3),
        messages.append,
    )
    assert result.train_accuracy > 0.85
    assert any("epoch 60/60" in m for m in messages)

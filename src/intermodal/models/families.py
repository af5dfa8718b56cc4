"""The model families a model library compares (paper 003 §4.4): early, intermediate and late
fusion FCNNs, I2MoE and InTense, each built from a config factory so that a job config can name
the trained model (``model.factory``, ``model.kwargs``, ``model.weights``), trained on
in-memory arrays and scored on held-out ones.

FCNNs train with cross-entropy (``models.training``); I2MoE and InTense with their own
objectives (``models.fusion_training``), I2MoE with half its epochs as warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from intermodal.entrypoints import import_entrypoint
from intermodal.models import FAMILIES, FCNN_FAMILIES
from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.models.training import TrainConfig, train_classifier
from intermodal.progress import Progress

FACTORIES = {
    **dict.fromkeys(FCNN_FAMILIES, "intermodal.models.fcnn:build_fcnn"),
    "i2moe": "intermodal.models.i2moe:I2MoE",
    "intense": "intermodal.models.intense:InTense",
}
# the fusion models' step sizes of their validations (docs/models.md): InTense learns its
# zero-initialised blocks faster at 3e-3
FUSION_LR = {"i2moe": 1e-3, "intense": 3e-3}
FUSION_BATCH = 64


@dataclass(frozen=True)
class FamilyModel:
    """A trained member of a family and how a job config rebuilds it."""

    family: str
    module: nn.Module
    factory: str
    kwargs: dict[str, Any]


def family_kwargs(
    family: str, modalities: Sequence[str], dims: Sequence[int], num_classes: int
) -> dict[str, Any]:
    """The factory's keyword arguments of ``family`` over ``modalities`` of sizes ``dims``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    if family in FCNN_FAMILIES:
        return {
            "modalities": list(modalities),
            "dims": list(dims),
            "num_classes": num_classes,
            "fusion": family,
        }
    return {"modalities": list(modalities), "input_dims": list(dims), "num_classes": num_classes}


def _tensors(inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # Arrow-backed arrays are read-only; torch wants writable memory (copies only then)
    return {m: torch.from_numpy(np.require(x, np.float32, ["C", "W"])) for m, x in inputs.items()}


def train_family(
    family: str,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    epochs: int,
    seed: int,
    progress: Progress,
) -> FamilyModel:
    """Train one member of ``family`` on ``inputs`` (``{modality: [n, d]}``) and class ids
    ``labels`` [n]; the initial weights and the minibatches come from ``seed``."""
    modalities = list(inputs)
    kwargs = family_kwargs(family, modalities, [x.shape[1] for x in inputs.values()], num_classes)
    factory = FACTORIES[family]
    torch.manual_seed(seed)
    module = import_entrypoint(factory)(**kwargs)
    if family in FCNN_FAMILIES:
        train_classifier(module, inputs, labels, TrainConfig(epochs=epochs, seed=seed), progress)
    else:
        tensors = _tensors(inputs)
        targets = torch.from_numpy(np.require(labels, np.int64, ["C", "W"]))
        training = FusionTrainConfig(
            epochs=epochs,
            batch_size=FUSION_BATCH,
            lr=FUSION_LR[family],
            seed=seed,
            warmup_epochs=epochs // 2 if family == "i2moe" else 0,
        )
        train_fusion_model(module, tensors, targets, training, progress)
    return FamilyModel(family, module.eval(), factory, kwargs)


def predict_classes(model: nn.Module, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The class ``model`` predicts for each row [n] of ``inputs`` (``{modality: [n, d]}``)."""
    tensors = _tensors(inputs)
    with torch.no_grad():
        return model(tensors).argmax(dim=-1).numpy().astype(np.int64)

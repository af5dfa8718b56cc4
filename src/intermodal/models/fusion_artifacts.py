"""I2MoE and InTense artifacts (``artifacts/i2moe/``, ``artifacts/intense/``): the model built
from the config, its saved ``state_dict`` (``model.pt``, loaded with ``weights_only=True``) and
the input tensors it takes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from intermodal import storage
from intermodal.models.artifacts import artifact_folder, load_state
from intermodal.models.i2moe import I2MoE
from intermodal.models.intense import InTense
from intermodal.schemas.config import I2MoEConfig, InTenseConfig, JobConfig
from intermodal.schemas.tables import modality_values

FusionMeasure = Literal["i2moe", "intense"]

FUSION_MEASURES: tuple[FusionMeasure, ...] = ("i2moe", "intense")


def fusion_settings(config: JobConfig, measure: FusionMeasure) -> I2MoEConfig | InTenseConfig:
    return config.i2moe if measure == "i2moe" else config.intense


def build_fusion_model(config: JobConfig, measure: FusionMeasure) -> nn.Module:
    """An untrained I2MoE or InTense over the configured modalities (flattened inputs)."""
    names = config.modality_names
    sizes = [m.size for m in config.modalities]
    if measure == "i2moe":
        settings = config.i2moe
        return I2MoE(
            names,
            sizes,
            num_classes=config.num_classes,
            backbone=settings.backbone,
            hidden_dim=settings.hidden_dim,
            temperature=settings.temperature,
            interaction_weight=settings.interaction_weight,
            perturbation=settings.perturbation,
            gate_objective=settings.gate_objective,
        )
    settings = config.intense
    return InTense(
        names,
        sizes,
        num_classes=config.num_classes,
        subsets=settings.subsets,
        hidden_dim=settings.hidden_dim,
        latent_dim=settings.latent_dim,
        p=settings.p,
        regularization=settings.regularization,
    )


def fusion_inputs(
    config: JobConfig, rows: pa.Table, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """``{modality: [n, size]}`` tensors of normalised rows, as the models take them."""
    # Arrow buffers are read-only and torch wants writable memory: copy only when needed
    return {
        m.name: torch.from_numpy(
            np.require(modality_values(rows.column(m.name), m.size), requirements=["C", "W"])
        ).to(dtype)
        for m in config.modalities
    }


def fusion_model_uri(config: JobConfig, measure: FusionMeasure) -> str:
    return storage.join(artifact_folder(config.output, measure), "model.pt")


def load_fusion_model(config: JobConfig, measure: FusionMeasure) -> nn.Module:
    """The saved ``measure`` model, in eval mode."""
    model = build_fusion_model(config, measure)
    model.load_state_dict(load_state(fusion_model_uri(config, measure)))
    return model.eval()

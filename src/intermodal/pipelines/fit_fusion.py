"""I2MoE and InTense artifacts: each model trained on a uniform sample of labelled rows →
``artifacts/i2moe/`` / ``artifacts/intense/``.

Files: ``model.pt`` (the model's ``state_dict``, loaded with ``weights_only=True`` into a model
rebuilt from the config) and ``fitted_on.json``. The model is trained on ``fit_rows`` sampled
rows and then scores every row, the sampled ones included: for those rows the scores are
in-sample.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from intermodal import storage
from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.models.i2moe import I2MoE
from intermodal.models.intense import InTense
from intermodal.pipelines.artifacts import FitMarker, load_state, save_state
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import I2MoEConfig, InTenseConfig, JobConfig
from intermodal.schemas.tables import LABEL, modality_values

FusionMeasure = Literal["i2moe", "intense"]
FUSION_MEASURES: tuple[FusionMeasure, ...] = ("i2moe", "intense")
# batch statistics (InTense's VBN) need two rows
MINIMUM_FIT_ROWS = 2


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


def _model_uri(config: JobConfig, measure: FusionMeasure) -> str:
    return storage.join(RunPaths(config.output).artifacts, measure, "model.pt")


def _marker(config: JobConfig, shards: list[Shard], measure: FusionMeasure) -> FitMarker:
    settings = fusion_settings(config, measure).model_dump(mode="json")
    settings["num_classes"] = config.num_classes  # the output layer's size
    return FitMarker(config, shards, measure, settings)


def fusion_fitted(config: JobConfig, shards: list[Shard], measure: FusionMeasure) -> bool:
    return _marker(config, shards, measure).matches()


def fit_fusion(
    config: JobConfig,
    shards: list[Shard],
    duplicates: pa.Array,
    progress: Progress = print,
    *,
    measure: FusionMeasure,
) -> nn.Module:
    """Train and save the ``measure`` model on ``fit_rows`` sampled labelled rows."""
    settings = fusion_settings(config, measure)
    marker = _marker(config, shards, measure)
    marker.clear()
    table = labelled_sample(
        config, shards, settings.fit_rows, settings.seed, duplicates, MINIMUM_FIT_ROWS, measure
    )
    progress(f"[{measure}] training on {table.num_rows} sampled rows")
    labels = torch.from_numpy(np.asarray(table.column(LABEL).to_numpy(), dtype=np.int64))
    torch.manual_seed(settings.seed)  # the initial weights
    model = build_fusion_model(config, measure)
    training = FusionTrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        warmup_epochs=settings.warmup_epochs if isinstance(settings, I2MoEConfig) else 0,
    )
    inputs = fusion_inputs(config, table)
    train_fusion_model(model, inputs, labels, training, lambda line: progress(f"[{measure}]{line}"))
    save_state(model.state_dict(), _model_uri(config, measure))
    marker.write()
    return model


def load_fusion_model(config: JobConfig, measure: FusionMeasure) -> nn.Module:
    """The saved ``measure`` model, in eval mode."""
    model = build_fusion_model(config, measure)
    model.load_state_dict(load_state(_model_uri(config, measure)))
    return model.eval()

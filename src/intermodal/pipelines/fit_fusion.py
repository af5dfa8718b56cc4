"""Fitting I2MoE and InTense: each model trained on a uniform sample of labelled rows →
``artifacts/i2moe/`` / ``artifacts/intense/``.

Files: ``model.pt`` (the model's ``state_dict``, loaded with ``weights_only=True`` into a model
rebuilt from the config; ``models/fusion_artifacts.py``) and ``fitted_on.json``. The model is
trained on ``fit_rows`` sampled rows and then scores every row, the sampled ones included: for
those rows the scores are in-sample.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from intermodal.models.artifacts import save_state
from intermodal.models.fusion_artifacts import (
    FusionMeasure,
    build_fusion_model,
    fusion_inputs,
    fusion_model_uri,
    fusion_settings,
)
from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.pipelines.artifacts import FitMarker
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import I2MoEConfig, JobConfig
from intermodal.schemas.tables import LABEL

# batch statistics (InTense's VBN) need two rows
MINIMUM_FIT_ROWS = 2


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
    save_state(model.state_dict(), fusion_model_uri(config, measure))
    marker.write()
    return model

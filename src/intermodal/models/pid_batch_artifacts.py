"""PID BATCH artifacts (``artifacts/pid_batch/``): per target (the labels, and the model's
predictions when a model is configured) the cross-fitted classifiers per modality and pair and
one encoder pair per pair of modalities, as ``fit`` saves them and the operator reads them.

Files: ``classifiers.pt`` (``FoldedMLP`` state dicts by ``<target>/<m>`` and
``<target>/<a>__<b>``), ``encoders.pt`` (``LabelEncoder`` state dicts by
``<target>/<a>__<b>/1`` and ``/2``); loaded with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from intermodal.models.artifacts import artifact_folder, load_state
from intermodal.models.classifiers import FoldedMLP
from intermodal.models.lsmi_artifacts import classifier_keys, key_name, lsmi_pairs
from intermodal.models.pid_batch import LabelEncoder
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values


@dataclass
class TargetModels:
    """The classifiers and encoder pairs fitted for one target (labels or predictions)."""

    classifiers: dict[str, FoldedMLP]  # by key <m> or <a>__<b>
    encoders: dict[str, tuple[LabelEncoder, LabelEncoder]]  # by pair key <a>__<b>


@dataclass
class BatchArtifacts:
    targets: dict[str, TargetModels]  # "label", and "pred" when a model is configured
    folds: int
    seed: int


def batch_targets(config: JobConfig) -> list[str]:
    """What BATCH decomposes: the labels, and the model's predictions (model PID) with a model."""
    return ["label", *(["pred"] if config.model is not None else [])]


def input_features(config: JobConfig, rows: pa.Table) -> dict[str, np.ndarray]:
    return {m.name: modality_values(rows.column(m.name), m.size) for m in config.modalities}


def batch_folder(config: JobConfig) -> str:
    return artifact_folder(config.output, "pid_batch")


def load_batch_artifacts(config: JobConfig) -> BatchArtifacts:
    settings = config.pid_batch
    folder = batch_folder(config)
    sizes = {m.name: m.size for m in config.modalities}
    classifier_states = load_state(f"{folder}/classifiers.pt")
    encoder_states = load_state(f"{folder}/encoders.pt")
    targets = {}
    for target in batch_targets(config):
        classifiers = {}
        for key in classifier_keys(config):
            model = FoldedMLP(
                sum(sizes[name] for name in key),
                settings.classifier.hidden,
                config.num_classes,
                settings.folds,
            )
            model.load_state_dict(classifier_states[f"{target}/{key_name(key)}"])
            classifiers[key_name(key)] = model.eval()
        encoders = {}
        for pair in lsmi_pairs(config):
            pair_encoders = []
            for side, name in enumerate(pair):
                encoder = LabelEncoder(
                    sizes[name], config.num_classes, settings.hidden, settings.embed_dim
                )
                state = encoder_states[f"{target}/{key_name(pair)}/{side + 1}"]
                encoder.load_state_dict(state)
                pair_encoders.append(encoder.eval())
            encoders[key_name(pair)] = (pair_encoders[0], pair_encoders[1])
        targets[target] = TargetModels(classifiers, encoders)
    return BatchArtifacts(targets, settings.folds, settings.seed)

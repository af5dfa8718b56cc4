"""PID BATCH artifacts: per target (the labels, and the model's predictions when a model is
configured), cross-fitted classifiers per modality and pair, then one encoder pair per pair of
modalities trained against the classifiers' held-out outputs → ``artifacts/pid_batch/``.

Files: ``classifiers.pt`` (``FoldedMLP`` state dicts by ``<target>/<m>`` and
``<target>/<a>__<b>``), ``encoders.pt`` (``LabelEncoder`` state dicts by
``<target>/<a>__<b>/1`` and ``/2``), ``fitted_on.json``; loaded with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from intermodal import storage
from intermodal.models.classifiers import (
    ClassifierTraining,
    FoldedMLP,
    fold_of,
    own_fold_probabilities,
)
from intermodal.models.pid_batch import EncoderTraining, LabelEncoder, train_encoders
from intermodal.operators.intershap import PredictionOperator
from intermodal.pipelines.artifacts import FitMarker, load_state, save_state
from intermodal.pipelines.fit_lsmi import (
    classifier_keys,
    key_name,
    lsmi_pairs,
    train_classifiers,
)
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, SAMPLE_ID, modality_values


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


def predictions(config: JobConfig, rows: pa.Table) -> np.ndarray:
    """The configured model's predicted class ``[n]`` for normalised rows, in batches."""
    operator = PredictionOperator(config.model_dump(mode="json"))
    size = config.compute.batch_size
    parts = [operator.predict(rows.slice(start, size)) for start in range(0, rows.num_rows, size)]
    return np.concatenate(parts)


def encoder_training(config: JobConfig) -> EncoderTraining:
    settings = config.pid_batch
    return EncoderTraining(
        block_size=settings.block_size,
        epochs=settings.epochs,
        lr=settings.lr,
        hidden=settings.hidden,
        embed_dim=settings.embed_dim,
        sinkhorn_iters=settings.sinkhorn_iters,
        sinkhorn_tol=settings.sinkhorn_tol,
        seed=settings.seed,
    )


def input_features(config: JobConfig, rows: pa.Table) -> dict[str, np.ndarray]:
    return {m.name: modality_values(rows.column(m.name), m.size) for m in config.modalities}


def _folder(config: JobConfig) -> str:
    return storage.join(RunPaths(config.output).artifacts, "pid_batch")


def _marker(config: JobConfig, shards: list[Shard]) -> FitMarker:
    settings = config.pid_batch.model_dump(mode="json")
    if config.model is not None:  # model PID is fitted on its predictions
        settings["model"] = config.model.model_dump(mode="json")
    return FitMarker(config, shards, "pid_batch", settings)


def batch_fitted(config: JobConfig, shards: list[Shard]) -> bool:
    return _marker(config, shards).matches()


def fit_pid_batch(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array, progress: Progress = print
) -> BatchArtifacts:
    """Fit and save the BATCH artifacts on ``pid_batch.fit_rows`` sampled labelled rows."""
    settings = config.pid_batch
    marker = _marker(config, shards)
    marker.clear()
    minimum = max(settings.folds * 2, settings.block_size)  # at least one block
    table = labelled_sample(
        config, shards, settings.fit_rows, settings.seed, duplicates, minimum, "PID BATCH"
    )
    progress(f"[pid_batch] fitting on {table.num_rows} sampled rows")
    features = input_features(config, table)
    labels = table.column(LABEL).to_numpy()
    folds = fold_of(table.column(SAMPLE_ID), settings.folds, settings.seed)
    training = ClassifierTraining(**settings.classifier.model_dump(), seed=settings.seed)
    targets = {"label": labels}
    if config.model is not None:
        progress("[pid_batch] model predictions of the sample (model PID)")
        targets["pred"] = predictions(config, table)
    fitted = {}
    for target, values in targets.items():
        classifiers = train_classifiers(
            classifier_keys(config),
            features,
            values,
            folds,
            settings.folds,
            config.num_classes,
            training,
            progress,
        )
        held_out = {
            name: own_fold_probabilities(classifiers[name], features[name], folds)
            for name in config.modality_names
        }
        encoders = {
            key_name((a, b)): train_encoders(
                features[a],
                features[b],
                held_out[a],
                held_out[b],
                encoder_training(config),
                name=f"{target}: encoders {a}, {b}",
                progress=progress,
            )
            for a, b in lsmi_pairs(config)
        }
        fitted[target] = TargetModels(classifiers, encoders)
    folder = _folder(config)
    classifier_states = {
        f"{target}/{key}": model.state_dict()
        for target, models in fitted.items()
        for key, model in models.classifiers.items()
    }
    save_state(classifier_states, f"{folder}/classifiers.pt")
    encoder_states = {
        f"{target}/{pair}/{side + 1}": encoder.state_dict()
        for target, models in fitted.items()
        for pair, pair_encoders in models.encoders.items()
        for side, encoder in enumerate(pair_encoders)
    }
    save_state(encoder_states, f"{folder}/encoders.pt")
    marker.write()
    return BatchArtifacts(fitted, settings.folds, settings.seed)


def load_batch_artifacts(config: JobConfig) -> BatchArtifacts:
    settings = config.pid_batch
    folder = _folder(config)
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

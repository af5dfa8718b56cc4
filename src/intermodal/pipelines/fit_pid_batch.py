"""Fitting PID BATCH: per target (the labels, and the model's predictions when a model is
configured), cross-fitted classifiers per modality and pair, then one encoder pair per pair of
modalities trained against the classifiers' held-out outputs → ``artifacts/pid_batch/``
(files: ``models/pid_batch_artifacts.py``) and ``fitted_on.json``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from intermodal.models.artifacts import save_state
from intermodal.models.classifiers import (
    ClassifierTraining,
    fold_of,
    own_fold_probabilities,
)
from intermodal.models.lsmi_artifacts import classifier_keys, key_name, lsmi_pairs
from intermodal.models.pid_batch import EncoderTraining, train_encoders
from intermodal.models.pid_batch_artifacts import (
    BatchArtifacts,
    TargetModels,
    batch_folder,
    input_features,
)
from intermodal.operators.intershap import PredictionOperator
from intermodal.pipelines.artifacts import FitMarker
from intermodal.pipelines.fit_lsmi import train_classifiers
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, SAMPLE_ID


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
    folder = batch_folder(config)
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

"""Fitting LSMI: KNIFE entropy models per modality and cross-fitted classifiers per modality
and per pair, learnt on a uniform sample of labelled rows → ``artifacts/lsmi/`` (files:
``models/lsmi_artifacts.py``) and ``fitted_on.json``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from intermodal.estimators.knife import KnifeConfig, fit_entropy_model
from intermodal.models.classifiers import ClassifierTraining, FoldedMLP, fold_of, train_folded
from intermodal.models.lsmi_artifacts import (
    LSMIArtifacts,
    classifier_keys,
    joined,
    key_name,
    lsmi_features,
    lsmi_model,
    save_artifacts,
)
from intermodal.pipelines.artifacts import FitMarker
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, SAMPLE_ID


def train_classifiers(
    keys: list[tuple[str, ...]],
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    n_folds: int,
    num_classes: int,
    training: ClassifierTraining,
    progress: Progress,
) -> dict[str, FoldedMLP]:
    """One cross-fitted ``FoldedMLP`` per key (its modalities' features side by side)."""
    return {
        key_name(key): train_folded(
            joined(features, key),
            labels,
            folds,
            n_folds,
            num_classes,
            training,
            name=f"p(y | {', '.join(key)})",
            progress=progress,
        )
        for key in keys
    }


def _marker(config: JobConfig, shards: list[Shard]) -> FitMarker:
    settings = config.lsmi.model_dump(mode="json")
    if config.lsmi.features == "encoder" and config.model is not None:
        settings["model"] = config.model.model_dump(mode="json")
    return FitMarker(config, shards, "lsmi", settings)


def log_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``log p(y) [C]`` from class frequencies, with one pseudo-count per class so a class
    absent from the sample still has a finite prior."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def fit_lsmi(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array, progress: Progress = print
) -> LSMIArtifacts:
    """Fit and save the LSMI artifacts on ``lsmi.fit_rows`` sampled rows with a label."""
    settings = config.lsmi
    marker = _marker(config, shards)
    marker.clear()
    table = labelled_sample(
        config, shards, settings.fit_rows, settings.seed, duplicates, settings.folds * 2, "LSMI"
    )
    progress(f"[lsmi] fitting on {table.num_rows} sampled rows, {settings.folds} folds")
    features = lsmi_features(config, table, lsmi_model(config))
    labels = table.column(LABEL).to_numpy()
    folds = fold_of(table.column(SAMPLE_ID), settings.folds, settings.seed)
    entropy_settings = settings.entropy
    knife = KnifeConfig(
        n_components=entropy_settings.n_components,
        diagonal=entropy_settings.diagonal,
        pca_components=entropy_settings.pca_components,
        epochs=entropy_settings.epochs,
        batch_size=entropy_settings.batch_size,
        lr=entropy_settings.lr,
        seed=settings.seed,
    )
    entropy = {}
    for name, rows in features.items():
        progress(f"[lsmi] entropy model of {name} ({rows.shape[1]} features)")
        entropy[name] = fit_entropy_model(rows, knife, progress)
    training = ClassifierTraining(**settings.classifier.model_dump(), seed=settings.seed)
    # with classifiers: model the coalitions of the configured model stand in: nothing to train
    crossfit_keys = classifier_keys(config) if settings.classifiers == "crossfit" else []
    classifiers = train_classifiers(
        crossfit_keys,
        features,
        labels,
        folds,
        settings.folds,
        config.num_classes,
        training,
        progress,
    )
    artifacts = LSMIArtifacts(
        entropy,
        classifiers,
        log_prior(labels, config.num_classes),
        settings.folds,
        settings.seed,
    )
    save_artifacts(config, artifacts)
    marker.write()
    return artifacts


def lsmi_fitted(config: JobConfig, shards: list[Shard]) -> bool:
    return _marker(config, shards).matches()

"""LSMI artifacts: KNIFE entropy models per modality and cross-fitted classifiers per modality
and per pair, learnt on a uniform sample of labelled rows → ``artifacts/lsmi/``.

Files: ``entropy-<m>.npz`` (preprocessing arrays) and ``entropy.pt`` (KNIFE state dicts by
modality), ``classifiers.pt`` (``FoldedMLP`` state dicts by key: ``<m>`` or ``<a>__<b>``),
``prior.npz`` (``log p(y)``), ``fitted_on.json``. Everything loads with
``torch.load(..., weights_only=True)`` / ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa
import torch

from intermodal import storage
from intermodal.estimators.knife import EntropyModel, KnifeConfig, fit_entropy_model
from intermodal.models.classifiers import ClassifierTraining, FoldedMLP, fold_of, train_folded
from intermodal.models.protocol import MultimodalModel, build_model
from intermodal.pipelines.artifacts import FitMarker, load_state, save_state
from intermodal.pipelines.inputs import Shard, labelled_sample
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, SAMPLE_ID, modality_values

ENCODE_CHUNK_ROWS = 4096


def lsmi_pairs(config: JobConfig) -> list[tuple[str, str]]:
    """Every pair of modalities, in config order (M > 2: paper 001 App. A.3.1)."""
    return list(combinations(config.modality_names, 2))


def classifier_keys(config: JobConfig) -> list[tuple[str, ...]]:
    """Inputs of each classifier: one per modality, one per pair."""
    return [(name,) for name in config.modality_names] + lsmi_pairs(config)


def key_name(key: tuple[str, ...]) -> str:
    return "__".join(key)


def lsmi_model(config: JobConfig) -> MultimodalModel | None:
    """The configured model when LSMI reads its encoder embeddings, else None."""
    if config.lsmi.features != "encoder" or config.model is None:
        return None
    model = config.model
    return build_model(model.factory, model.kwargs, model.weights, config.modality_names)


def lsmi_features(
    config: JobConfig, rows: pa.Table, model: MultimodalModel | None
) -> dict[str, np.ndarray]:
    """``{modality: [n, f] float32}``: the normalised input values, or the model's
    ``encode(name, x)`` flattened, in chunks of ``ENCODE_CHUNK_ROWS`` rows."""
    values = {m.name: modality_values(rows.column(m.name), m.size) for m in config.modalities}
    if model is None:
        return values
    features = {}
    n_chunks = max(1, -(-len(rows) // ENCODE_CHUNK_ROWS))
    with torch.no_grad():
        for m in config.modalities:
            chunks = [
                model.encode(m.name, torch.from_numpy(np.array(chunk)).view(-1, *m.shape))
                .reshape(len(chunk), -1)
                .float()
                .numpy()
                for chunk in np.array_split(values[m.name], n_chunks)
            ]
            features[m.name] = np.concatenate(chunks)
    return features


def joined(features: dict[str, np.ndarray], key: tuple[str, ...]) -> np.ndarray:
    """The classifier input of ``key``: its modalities' features side by side."""
    return np.concatenate([features[name] for name in key], axis=1)


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


@dataclass
class LSMIArtifacts:
    entropy: dict[str, EntropyModel]
    classifiers: dict[str, FoldedMLP]
    log_prior: np.ndarray  # [C]
    folds: int
    seed: int


def _folder(config: JobConfig) -> str:
    return storage.join(RunPaths(config.output).artifacts, "lsmi")


def _marker(config: JobConfig, shards: list[Shard]) -> FitMarker:
    settings = config.lsmi.model_dump(mode="json")
    if config.lsmi.features == "encoder" and config.model is not None:
        settings["model"] = config.model.model_dump(mode="json")
    return FitMarker(config, shards, "lsmi", settings)


def save_artifacts(config: JobConfig, artifacts: LSMIArtifacts) -> None:
    folder = _folder(config)
    states = {}
    for name, model in artifacts.entropy.items():
        arrays, states[name] = model.to_state()
        storage.write_arrays(arrays, storage.join(folder, f"entropy-{name}.npz"))
    save_state(states, storage.join(folder, "entropy.pt"))
    classifiers = {name: model.state_dict() for name, model in artifacts.classifiers.items()}
    save_state(classifiers, storage.join(folder, "classifiers.pt"))
    storage.write_arrays(
        {
            "log_prior": artifacts.log_prior,
            "folds": np.array(artifacts.folds),
            "seed": np.array(artifacts.seed),
        },
        storage.join(folder, "prior.npz"),
    )


def load_artifacts(config: JobConfig) -> LSMIArtifacts:
    """The saved artifacts (classifier input sizes from the entropy models' feature sizes)."""
    folder = _folder(config)
    prior = storage.read_arrays(storage.join(folder, "prior.npz"))
    folds = int(prior["folds"])
    entropy_states = load_state(storage.join(folder, "entropy.pt"))
    entropy = {
        name: EntropyModel.from_state(
            storage.read_arrays(storage.join(folder, f"entropy-{name}.npz")), entropy_states[name]
        )
        for name in config.modality_names
    }
    states = load_state(storage.join(folder, "classifiers.pt"))
    classifiers = {}
    for key in classifier_keys(config) if config.lsmi.classifiers == "crossfit" else []:
        model = FoldedMLP(
            sum(entropy[name].dim for name in key),
            config.lsmi.classifier.hidden,
            config.num_classes,
            folds,
        )
        model.load_state_dict(states[key_name(key)])
        classifiers[key_name(key)] = model.eval()
    return LSMIArtifacts(entropy, classifiers, prior["log_prior"], folds, int(prior["seed"]))


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

"""LSMI artifacts (``artifacts/lsmi/``): what ``fit`` learns for LSMI and the LSMI and PID BATCH
operators read, and the feature layout both sides share.

Files: ``entropy-<m>.npz`` (preprocessing arrays) and ``entropy.pt`` (KNIFE state dicts by
modality), ``classifiers.pt`` (``FoldedMLP`` state dicts by key: ``<m>`` or ``<a>__<b>``),
``prior.npz`` (``log p(y)``). Everything loads with ``torch.load(..., weights_only=True)`` /
``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa
import torch

from intermodal import storage
from intermodal.estimators.knife import EntropyModel
from intermodal.models.artifacts import artifact_folder, load_state, save_state
from intermodal.models.classifiers import FoldedMLP
from intermodal.models.protocol import MultimodalModel, build_model
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values

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


@dataclass
class LSMIArtifacts:
    entropy: dict[str, EntropyModel]
    classifiers: dict[str, FoldedMLP]
    log_prior: np.ndarray  # [C]
    folds: int
    seed: int


def lsmi_folder(config: JobConfig) -> str:
    return artifact_folder(config.output, "lsmi")


def save_artifacts(config: JobConfig, artifacts: LSMIArtifacts) -> None:
    folder = lsmi_folder(config)
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
    folder = lsmi_folder(config)
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

"""Cross-fitted classifiers ``p(y | features)`` for LSMI: K fold models trained as one module.

Each row belongs to one fold, a stable hash of its id (``fold_of``), so a row keeps its fold
between ``fit`` and ``score`` without a lookup table. Fold model ``k`` is trained on the rows of
every other fold and scores the rows of fold ``k`` — no row is scored by a classifier that saw
it (a memorising classifier would otherwise report ``p(y | x) ≈ 1`` and saturate ``i(x; y)``).

The K models are K independent MLPs whose weights are stacked ``[K, ...]``: one forward pass
over a minibatch evaluates all of them, and the loss of row ``b`` is masked out for model
``fold(b)``. Training all folds together costs one pass per epoch instead of K.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field
from torch import nn

from intermodal import storage
from intermodal.models.artifacts import artifact_folder, load_state, save_state
from intermodal.models.training import FitWorkers, adam, fit_device
from intermodal.progress import Heartbeat, Progress
from intermodal.schemas.config import Strict
from intermodal.schemas.tables import modality_pairs

# splitmix64 finaliser constants: a cheap, well-mixed 64-bit hash of integer ids
_MIX_1, _MIX_2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
LOG_PROBABILITY_FLOOR = math.log(1e-12)  # clamp for log p(y | x) of a confidently wrong model
# a held-out loss must fall by more than this (nats) to count as progress for early stopping
MIN_IMPROVEMENT = 1e-4
CLASSIFIER_STORE = "classifiers"  # artifacts/classifiers/: shared by the measures that train them
CLASSIFIER_INDEX = "classifiers.json"  # in a measure's folder: its classifiers' names → digests


class ClassifierConfig(Strict):
    """Cross-fitted MLPs p(y | x_m) and p(y | x_a, x_b): two hidden ReLU layers, Adam."""

    hidden: int = Field(default=64, ge=1)
    epochs: int = Field(default=30, ge=1)  # at most; see patience
    # stop once no fold model's held-out loss improved for this many epochs
    patience: int = Field(default=5, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)


def classifier_keys(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Inputs of the cross-fitted classifiers: one per modality, one per pair."""
    return [(name,) for name in modalities] + modality_pairs(modalities)


def key_name(key: tuple[str, ...]) -> str:
    """A classifier's name from its inputs: ``<m>`` or ``<a>__<b>``."""
    return "__".join(key)


def joined(features: Mapping[str, np.ndarray], key: tuple[str, ...]) -> np.ndarray:
    """The classifier input of ``key``: its modalities' features side by side."""
    return np.concatenate([features[name] for name in key], axis=1)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX_1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX_2)
        return z ^ (z >> np.uint64(31))


def fold_of(ids: pa.Array | pa.ChunkedArray, folds: int, seed: int) -> np.ndarray:
    """Fold ``[n]`` int64 in ``[0, folds)`` of each id (int64 or string), the same in every
    process and run for a given ``seed``."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_integer(ids.type):
        hashed = _splitmix64(ids.to_numpy(zero_copy_only=False).astype(np.int64) ^ seed)
    else:
        salt = seed.to_bytes(8, "little", signed=True)
        hashed = np.array(
            [
                int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8, salt=salt).digest())
                for v in ids.to_pylist()
            ],
            dtype=np.uint64,
        )
    return (hashed % np.uint64(folds)).astype(np.int64)


@dataclass(frozen=True)
class ClassifierTraining:
    hidden: int = 64
    epochs: int = 30
    patience: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


class FoldedMLP(nn.Module):
    """``K`` MLPs ``in → hidden → hidden → classes`` (ReLU) with stacked weights; inputs are
    standardised by the fitted ``mean``/``scale`` buffers ``[in]``."""

    def __init__(
        self, in_dim: int, hidden: int, num_classes: int, folds: int, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        sizes = [in_dim, hidden, hidden, num_classes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            # nn.Linear's default initialisation, drawn independently per fold
            bound = 1.0 / math.sqrt(fan_in)
            shape = (folds, fan_in, fan_out)
            weight = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            bias = (torch.rand((folds, 1, fan_out), generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))

    @property
    def folds(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, B, classes]`` of every fold model for ``x [B, in]``."""
        hidden = ((x - self.mean) / self.scale).unsqueeze(0)
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = torch.baddbmm(bias, hidden.expand(weight.shape[0], -1, -1), weight)
            if layer < last:
                hidden = torch.relu(hidden)
        return hidden

    def fold_forward(self, x: torch.Tensor, fold: int) -> torch.Tensor:
        """Logits ``[B, classes]`` of fold model ``fold`` alone."""
        hidden = (x - self.mean) / self.scale
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = torch.addmm(bias[fold], hidden, weight[fold])
            if layer < last:
                hidden = torch.relu(hidden)
        return hidden

    def own_fold_log_proba(self, x: torch.Tensor, folds: torch.Tensor) -> torch.Tensor:
        """``log p(· | x) [B, classes]`` from each row's own fold model (which never saw it);
        each model runs on its fold's rows only."""
        logits = torch.empty(len(x), self.weights[-1].shape[-1], dtype=x.dtype, device=x.device)
        for fold in range(self.folds):
            rows = (folds == fold).nonzero(as_tuple=True)[0]
            if len(rows):
                logits[rows] = self.fold_forward(x[rows], fold)
        return torch.log_softmax(logits, dim=-1)


def own_fold_probabilities(model: FoldedMLP, features: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """``p(· | x)`` ``[n, classes]`` float64, each row by its own fold model."""
    return own_fold_probability_tensor(model, features, folds).cpu().numpy()


def own_fold_probability_tensor(
    model: FoldedMLP, features: np.ndarray, folds: np.ndarray
) -> torch.Tensor:
    """``own_fold_probabilities`` as a float64 tensor on the model's device, for callers that
    compute on with it there."""
    device = model.mean.device
    with torch.no_grad():
        log_proba = model.own_fold_log_proba(
            torch.from_numpy(np.require(features, np.float32, ["C", "W"])).to(device),
            torch.from_numpy(np.require(folds, np.int64, ["C", "W"])).to(device),
        )
    return log_proba.double().exp()


def log_proba_of_labels(
    model: FoldedMLP, features: np.ndarray, folds: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """``log p(y | x)`` ``[n]`` float64 of the given labels, each row by its own fold model,
    floored at ``LOG_PROBABILITY_FLOOR``."""
    probabilities = own_fold_probabilities(model, features, folds)
    picked = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(picked), LOG_PROBABILITY_FLOOR)


def _held_out_loss(
    model: FoldedMLP, k: int, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of fold model ``k`` on the selected rows (inf when there are none)."""
    if not rows.any():
        return torch.tensor(math.inf, device=x.device)
    return nn.functional.cross_entropy(model.fold_forward(x[rows], k), y[rows])


def train_folded(
    features: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    n_folds: int,
    num_classes: int,
    config: ClassifierTraining,
    name: str = "classifier",
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> FoldedMLP:
    """Train the ``n_folds`` models on ``features [n, d]`` and ``labels [n]``: model ``k`` on the
    rows of neither fold ``k`` nor fold ``k + 1``. After every epoch model ``k`` is scored on
    fold ``k + 1`` and keeps the weights of its lowest cross-entropy there, so an over-fitting
    MLP does not report confident noise — on uninformative features it stays near the prior.
    Training stops once no model's held-out loss improved by ``MIN_IMPROVEMENT`` for
    ``config.patience`` epochs. Reports the out-of-fold accuracy through ``progress``. Trains on
    ``device``; the model comes back on the CPU."""
    x = torch.from_numpy(np.require(features, np.float32, ["C", "W"])).to(device)
    y = torch.from_numpy(np.require(labels, np.int64, ["C", "W"])).to(device)
    fold = torch.from_numpy(np.require(folds, np.int64, ["C", "W"])).to(device)
    model = FoldedMLP(x.shape[1], config.hidden, num_classes, n_folds, config.seed).to(device)
    std = x.std(dim=0, unbiased=False)
    model.mean.copy_(x.mean(dim=0))
    model.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # model k trains on every fold but k (scored later) and k + 1 (its early-stopping rows), so
    # neither its weights nor its choice of epoch ever depend on the labels of fold k
    stopping_fold = (torch.arange(n_folds, device=device) + 1) % n_folds
    model_index = torch.arange(n_folds, device=device)[:, None]
    best_loss = torch.full((n_folds,), math.inf, device=device)
    best = [parameter.detach().clone() for parameter in model.parameters()]
    heartbeat, start, stale = Heartbeat(), time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        for batch in order.split(config.batch_size):
            row_fold = fold[batch][None, :]
            trained_on = ((row_fold != model_index) & (row_fold != stopping_fold[:, None])).float()
            logits = model(x[batch])
            losses = nn.functional.cross_entropy(
                logits.reshape(-1, num_classes), y[batch].repeat(n_folds), reduction="none"
            ).view(n_folds, -1)
            per_model = (losses * trained_on).sum(dim=1) / trained_on.sum(dim=1).clamp_min(1)
            optimiser.zero_grad()
            per_model.sum().backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            stopping_loss = torch.stack(
                [_held_out_loss(model, k, x, y, fold == stopping_fold[k]) for k in range(n_folds)]
            )
            improved = stopping_loss < best_loss
            stale = 0 if (stopping_loss < best_loss - MIN_IMPROVEMENT).any() else stale + 1
            best_loss = torch.where(improved, stopping_loss, best_loss)
            for kept, parameter in zip(best, model.parameters(), strict=True):
                kept[improved] = parameter.detach()[improved]
        if stale >= config.patience:
            break
        if progress is not None and heartbeat.due():
            progress(
                f"[classifier] {name}: epoch {epoch}/{config.epochs}"
                f"  stopping loss {float(best_loss.mean()):.4f}"
            )
    with torch.no_grad():
        for kept, parameter in zip(best, model.parameters(), strict=True):
            parameter.copy_(kept)
    if progress is not None:
        with torch.no_grad():
            held_out = model.own_fold_log_proba(x, fold).argmax(dim=-1)
        stopped = f"stopped after {epoch}" if epoch < config.epochs else f"{epoch}"
        progress(
            f"[classifier] {name}: {stopped} epochs in {time.perf_counter() - start:.1f} s,"
            f"  stopping loss {float(best_loss.mean()):.4f}"
            f"  out-of-fold accuracy {float((held_out == y).float().mean()):.3f}"
        )
    return model.cpu()


def train_classifiers(
    keys: list[tuple[str, ...]],
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    n_folds: int,
    num_classes: int,
    training: ClassifierTraining,
    workers: FitWorkers,
) -> Classifiers:
    """One cross-fitted ``FoldedMLP`` per key (its modalities' features side by side), each a
    part of its own on ``workers``, keyed by everything it depends on: another measure's fit
    that needs the same classifier (same rows, labels, folds and settings) shares it."""
    data = workers.share((dict(features), labels, folds))
    inputs = {name: content_digest(values) for name, values in features.items()}
    setting = content_digest(labels, folds) + repr((n_folds, num_classes, training))
    parts = {
        key_name(key): f"classifier {key_name(key)} {[inputs[name] for name in key]} {setting}"
        for key in keys
    }
    handles = [
        workers.submit_once(
            parts[key_name(key)],
            train_key,
            data,
            key,
            n_folds,
            num_classes,
            training,
            workers.progress,
        )
        for key in keys
    ]
    models = dict(zip(parts, workers.gather(handles), strict=True))
    digests = {
        name: hashlib.blake2b(part.encode(), digest_size=16).hexdigest()
        for name, part in parts.items()
    }
    return Classifiers(models, digests)


@dataclass(frozen=True)
class Classifiers:
    """Cross-fitted classifiers by name (``<m>``, ``<a>__<b>``, or prefixed by a measure) and,
    for each, a digest of everything it was trained from: one digest, one model."""

    models: dict[str, FoldedMLP]
    digests: dict[str, str]

    def prefixed(self, prefix: str) -> Classifiers:
        return Classifiers(
            {prefix + name: model for name, model in self.models.items()},
            {prefix + name: digest for name, digest in self.digests.items()},
        )

    def merged(self, other: Classifiers) -> Classifiers:
        return Classifiers({**self.models, **other.models}, {**self.digests, **other.digests})


def classifier_store(run_dir: str) -> str:
    """``artifacts/classifiers/``: every trained classifier once, as ``<digest>.pt``; a
    measure's ``classifiers.json`` names the ones it uses."""
    return artifact_folder(run_dir, CLASSIFIER_STORE)


def save_classifiers(classifiers: Classifiers, run_dir: str, index_uri: str) -> None:
    """Each model into the run's store, unless a fit of another measure put the same one
    there, then the index of names → digests at ``index_uri``."""
    store = classifier_store(run_dir)
    for name, model in classifiers.models.items():
        uri = storage.join(store, f"{classifiers.digests[name]}.pt")
        if not storage.exists(uri):
            save_state(model.state_dict(), uri)
    storage.write_json(classifiers.digests, index_uri)


def load_classifier_states(run_dir: str, index_uri: str) -> dict[str, dict]:
    """``{name: state_dict}`` of the classifiers an index names."""
    store = classifier_store(run_dir)
    digests = storage.read_json(index_uri)
    return {name: load_state(storage.join(store, f"{d}.pt")) for name, d in digests.items()}


def prune_classifier_store(run_dir: str) -> None:
    """Remove the stored classifiers no measure's index names any more (after a refit with
    other settings). Only between fits: a fit running now may not have written its index."""
    store = classifier_store(run_dir)
    if not storage.exists(store):
        return
    fs, store_path = storage.filesystem(store)
    artifacts = store_path.rsplit("/", 1)[0]
    used: set[str] = set()
    for index in fs.glob(f"{artifacts}/*/{CLASSIFIER_INDEX}"):
        used.update(storage.read_json(fs.unstrip_protocol(index)).values())
    for path in fs.ls(store_path, detail=False):
        if path.rsplit("/", 1)[1].removesuffix(".pt") not in used:
            fs.rm(path)


def content_digest(*arrays: np.ndarray) -> str:
    """A digest of the arrays' dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.view(np.uint8).data)
    return digest.hexdigest()


def train_key(
    data: tuple[Mapping[str, np.ndarray], np.ndarray, np.ndarray],
    key: tuple[str, ...],
    n_folds: int,
    num_classes: int,
    training: ClassifierTraining,
    progress: Progress,
) -> FoldedMLP:
    """The fit part of one classifier: ``data`` is ``(features, labels, folds)``."""
    features, labels, folds = data
    return train_folded(
        joined(features, key),
        labels,
        folds,
        n_folds,
        num_classes,
        training,
        name=f"p(y | {', '.join(key)})",
        progress=progress,
        device=fit_device(),
    )

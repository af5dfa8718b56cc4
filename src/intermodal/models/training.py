"""A small supervised training loop for multimodal classifiers, with progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim import Adam

from intermodal.models.protocol import ModalityInput, map_rows
from intermodal.progress import Progress, print_progress


class FitWorkers(Protocol):
    """Where the parts of a fit run. A fit submits its independent parts (one model per
    modality, pair or target) and gathers their results, so they run side by side where there
    is room; ``share`` hands a large value to every part once. Parts are top-level functions of
    picklable arguments; they return models on the CPU. ``progress`` reports from a part."""

    progress: Progress

    def share(self, value: Any) -> Any: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def submit_once(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``submit``, or the part already submitted under ``key`` (a digest of everything
        the part depends on) by this or another measure's fit in the same round."""
        ...

    def gather(self, handles: list[Any]) -> list[Any]: ...


class InlineWorkers:
    """Parts run one after another in this process, as they are submitted (no Ray)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def share(self, value: Any) -> Any:
        return value

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def submit_once(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def gather(self, handles: list[Any]) -> list[Any]:
        return list(handles)


CPU = torch.device("cpu")


def fit_device() -> torch.device:
    """The device a fit part trains on: the GPU this process sees, else the CPU (Ray shows a
    task only the GPUs it was given)."""
    return torch.device("cuda") if torch.cuda.is_available() else CPU


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    validation_fraction: float = 0.15


@dataclass(frozen=True)
class TrainResult:
    train_accuracy: float
    validation_accuracy: float
    seconds: float


def _accuracy(model: nn.Module, inputs: Mapping[str, ModalityInput], labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(dim=-1) == labels).float().mean())


def report_epoch(epoch: int, epochs: int, reports: int = 3) -> bool:
    """Whether a training loop reports after ``epoch`` (1-based): about ``reports`` times, and
    always after the last epoch."""
    return epoch == epochs or epoch % max(1, epochs // reports) == 0


def adam(parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0) -> Adam:
    """Adam with the fused kernel: one update for every parameter instead of a Python loop
    over them, which is most of an optimiser step for the small models trained here."""
    return Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def _training_tensor(x: np.ndarray | Mapping[str, np.ndarray]) -> ModalityInput:
    """A modality's training input as the model receives it: floats as float32, other types
    (token ids, masks, uint8 pixels) as they are; a mapping (values and mask) per key."""
    if isinstance(x, Mapping):
        return {key: _training_tensor(value) for key, value in x.items()}  # type: ignore[misc]
    dtype = np.float32 if np.asarray(x).dtype.kind == "f" else None
    # Arrow-backed arrays are read-only; torch wants writable memory (copies only then)
    return torch.from_numpy(np.require(x, dtype, ["C", "W"]))


def train_classifier(
    model: nn.Module,
    inputs: Mapping[str, np.ndarray | Mapping[str, np.ndarray]],
    labels: np.ndarray,
    config: TrainConfig = TrainConfig(),
    progress: Progress = print_progress,
) -> TrainResult:
    """Train ``model(dict of [N, ...] tensors) -> logits`` with cross-entropy and Adam on a
    random split; reports per-epoch loss and validation accuracy through ``progress``."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    tensors = {name: _training_tensor(x) for name, x in inputs.items()}
    targets = torch.from_numpy(np.require(labels, np.int64, ["C", "W"]))
    n = len(targets)
    order = torch.randperm(n, generator=generator)
    n_validation = int(n * config.validation_fraction)
    validation, train = order[:n_validation], order[n_validation:]

    def subset(rows: torch.Tensor) -> dict[str, ModalityInput]:
        return {name: map_rows(lambda t: t[rows], x) for name, x in tensors.items()}

    optimiser = adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, config.epochs + 1):
        model.train()
        shuffled = train[torch.randperm(len(train), generator=generator)]
        total = 0.0
        for batch in shuffled.split(config.batch_size):
            optimiser.zero_grad()
            loss = loss_fn(model(subset(batch)), targets[batch])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        model.eval()
        if report_epoch(epoch, config.epochs, reports=5):
            accuracy = _accuracy(model, subset(validation), targets[validation])
            progress(
                f"  epoch {epoch}/{config.epochs}  loss {total / len(train):.4f}  "
                f"validation accuracy {accuracy:.3f}"
            )
    model.eval()
    return TrainResult(
        train_accuracy=_accuracy(model, subset(train), targets[train]),
        validation_accuracy=_accuracy(model, subset(validation), targets[validation]),
        seconds=time.perf_counter() - start,
    )

"""One training loop for the interpretable fusion models (I2MoE, InTense) on in-memory tensors.

Each model states its own objective through ``training_loss(inputs, targets)``: I2MoE's task
loss + λ_int · mean interaction loss, InTense's task loss + Λ · block L^q regulariser. The loop
is plain minibatch Adam, seeded, reporting every ``progress.HEARTBEAT_SECONDS`` and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from intermodal.models.training import adam
from intermodal.progress import Heartbeat, Progress, print_progress

Model = TypeVar("Model", bound=nn.Module)
Task = Literal["classification", "regression"]


def check_task(task: str) -> None:
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")


def task_loss(
    task: Task, outputs: Tensor, targets: Tensor, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Cross-entropy of ``outputs`` [B, C] against class ids [B], or the squared error of the
    single output [B, 1] against values [B]; averaged, or per sample [B] (``"none"``)."""
    if task == "classification":
        return F.cross_entropy(outputs, targets.long(), reduction=reduction)
    return F.mse_loss(outputs.squeeze(-1), targets.to(outputs.dtype), reduction=reduction)


@dataclass(frozen=True)
class FusionTrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    # First epochs minimise ``model.warmup_loss`` (I2MoE: every expert fits the task alone)
    warmup_epochs: int = 0


def train_fusion_model(
    model: Model,
    inputs: Mapping[str, Tensor],
    targets: Tensor,
    config: FusionTrainConfig = FusionTrainConfig(),
    progress: Progress = print_progress,
) -> Model:
    """Minimise ``model.training_loss`` over minibatches of ``inputs`` (``{modality: [N, d]}``)
    and ``targets`` ([N] class ids or values) with Adam; returns ``model`` in eval mode.

    The seed fixes the parameter-independent randomness of the run: the minibatch order and
    the noise drawn inside the model (I2MoE's perturbations).
    """
    if not hasattr(model, "training_loss"):
        raise TypeError(f"{type(model).__name__} has no training_loss(inputs, targets)")
    if config.warmup_epochs and not hasattr(model, "warmup_loss"):
        raise TypeError(f"{type(model).__name__} has no warmup_loss for warmup_epochs")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(targets)
    heartbeat, start = Heartbeat(), time.perf_counter()
    model.train()
    for epoch in range(1, config.epochs + 1):
        warmup = epoch <= config.warmup_epochs
        objective = model.warmup_loss if warmup else model.training_loss
        total, seen = 0.0, 0
        for rows in torch.randperm(n, generator=generator).split(config.batch_size):
            if len(rows) < 2:  # batch statistics (VBN) need two rows
                continue
            optimiser.zero_grad()
            loss = objective({m: x[rows] for m, x in inputs.items()}, targets[rows])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(rows)
            seen += len(rows)
        if heartbeat.due() or epoch == config.epochs:
            phase = " (warm-up)" if warmup else ""
            progress(
                f" epoch {epoch}/{config.epochs}{phase}  loss {total / max(seen, 1):.4f}"
                f" ({time.perf_counter() - start:.1f} s)"
            )
    model.eval()
    return model

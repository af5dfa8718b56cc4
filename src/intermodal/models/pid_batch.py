"""The BATCH estimator's encoder pair and its training (paper 003 App. B.3).

Each modality gets a 3-layer MLP (inputs standardised with fitted statistics) whose output is
``embed_dim`` features per label, standardised over the block's rows; the kernel of a block
is ``exp(f1 · f2 / √d)`` per label (``estimators.pid_batch.log_kernel``). Training: shuffled
blocks of ``block_size`` rows, the coupling projected on the frozen classifiers' outputs, Adam
on ``I_q̃(Y; X1, X2)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from intermodal.estimators.pid_batch import coupling, log_kernel, union_information
from intermodal.models.training import adam
from intermodal.progress import Heartbeat, Progress

STANDARDISE_EPS = 1e-6


@dataclass(frozen=True)
class EncoderTraining:
    block_size: int = 256
    epochs: int = 10
    lr: float = 1e-3
    hidden: int = 32
    embed_dim: int = 10
    sinkhorn_iters: int = 200
    sinkhorn_tol: float = 1e-6
    sinkhorn_grad_iters: int | None = 1
    seed: int = 0


class LabelEncoder(nn.Module):
    """``x [n, in] → [n, C, d]``: per-label features, standardised over the ``n`` rows."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes * embed_dim),
        )
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))

    def fit_scaler(self, x: Tensor) -> None:
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(x.mean(dim=0))
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        features = self.net((x - self.mean) / self.scale)
        features = (features - features.mean(dim=0)) / (features.std(dim=0) + STANDARDISE_EPS)
        return features.view(len(x), self.num_classes, self.embed_dim)


def blocks(n_rows: int, block_size: int) -> list[slice]:
    """Consecutive blocks of ``block_size`` rows; a last block under half that size joins the
    previous one (a coupling over a handful of rows says little)."""
    starts = list(range(0, n_rows, block_size))
    if len(starts) > 1 and n_rows - starts[-1] < block_size / 2:
        starts.pop()
    ends = [*starts[1:], n_rows]
    return [slice(start, end) for start, end in zip(starts, ends, strict=True)]


def train_encoders(
    x1: np.ndarray,
    x2: np.ndarray,
    p_y_x1: np.ndarray,
    p_y_x2: np.ndarray,
    config: EncoderTraining,
    name: str = "encoders",
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> tuple[LabelEncoder, LabelEncoder]:
    """Encoders for features ``x1 [n, d1]``, ``x2 [n, d2]`` given the frozen (held-out)
    classifier outputs ``p_y_x* [n, C]``; minimises the mean block ``I_q̃(Y; X1, X2)``. Trains
    on ``device``; the encoders come back on the CPU."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    inputs = [torch.from_numpy(np.require(x, np.float32, ["C", "W"])).to(device) for x in (x1, x2)]
    targets = [
        torch.from_numpy(np.require(p, np.float64, ["C", "W"])).to(device) for p in (p_y_x1, p_y_x2)
    ]
    num_classes = targets[0].shape[1]
    encoders = [
        LabelEncoder(x.shape[1], num_classes, config.hidden, config.embed_dim).to(device)
        for x in inputs
    ]
    for encoder, x in zip(encoders, inputs, strict=True):
        encoder.fit_scaler(x)
    parameters = [p for encoder in encoders for p in encoder.parameters()]
    optimiser = adam(parameters, lr=config.lr)
    heartbeat, start = Heartbeat(), time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(inputs[0]), generator=generator).to(device)
        total, count = 0.0, 0
        for block in blocks(len(order), config.block_size):
            rows = order[block]
            f1, f2 = (
                encoder(x[rows]).double() for encoder, x in zip(encoders, inputs, strict=True)
            )
            log_q = coupling(
                log_kernel(f1, f2),
                targets[0][rows],
                targets[1][rows],
                n_iters=config.sinkhorn_iters,
                tol=config.sinkhorn_tol,
                grad_iters=config.sinkhorn_grad_iters,
            )
            loss = union_information(log_q)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(rows), count + len(rows)
        if progress is not None and (heartbeat.due() or epoch == config.epochs):
            progress(
                f"[pid_batch] {name}: epoch {epoch}/{config.epochs}  I_q {total / count:.4f} nats"
                f" ({time.perf_counter() - start:.1f} s)"
            )
    return encoders[0].eval().cpu(), encoders[1].eval().cpu()

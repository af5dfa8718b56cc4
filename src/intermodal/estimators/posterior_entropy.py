"""LSMI's pointwise entropies on a common space: the coordinates of each modality's posterior.

LSMI compares the pointwise entropies of two modalities (``r⁺ = min(h(x1), h(x2))``, eq. 5, and
``r⁻ = min(h(x1) − i(x1; y), h(x2) − i(x2; y))`` through eq. 8). The differential entropy of raw
features grows with their width and with every label-free feature a modality carries
(``h(x, n) = h(x) + h(n)`` row by row for noise ``n`` independent of ``x``), so on modalities of
different widths the minimum picks the same modality on every row and the per-row split
follows the width, not the information.

Here a modality ``x_m`` is represented by its label posterior ``p(· | x_m)`` (a classifier's,
e.g. LSMI's own cross-fitted ``p(y | x_m)``, its fold models averaged), a point of the
probability simplex written in orthonormal coordinates ``t_m = p(· | x_m) @ B`` (``B [C, C − 1]``
an orthonormal basis of the vectors summing to zero, so distances between posteriors are
kept). Every modality then lives in the same space ``R^{C−1}`` with the same units, whatever its
width, units or label-free features. ``h(x_m) = −log p_θ(t_m)`` with ``p_θ`` a KNIFE fitted to
``t_m + N(0, σ²I)``: the coordinates smoothed at the ``resolution`` σ, not standardised
(standardising would rescale each modality by its own spread and undo the common units).
Posteriors closer than about σ count as one state, so up to a constant shared by every
modality ``h`` is the surprisal ``−log P(state)`` of the row's posterior state, the paper's
``h(x) = −log p(x)`` for discrete data, and a classifier's jitter around a state (which would
otherwise decide the minimum again) stays out of it.

``i(x_m; y)`` still comes from the classifiers, and ``u1, u2, s`` from eq. 2, so the identities
``r + u1 = i(x1; y)``, ``r + u2 = i(x2; y)`` and ``r + u1 + u2 + s = i(x1, x2; y)`` stay exact
per row; the entropies only decide where between ``i(x1; y)`` and ``i(x2; y)`` each row's ``r``
falls. Reasons and measurements: docs/choices.md, "LSMI on modalities of different widths".

The encoder is any module mapping rows ``[B, d]`` float32 to logits ``[..., B, C]``; leading
axes (the fold models of a cross-fitted classifier) are averaged in probability, so the
coordinates are one function of the row, the same at fit and at scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from intermodal.estimators.discretize import _checked
from intermodal.estimators.knife import (
    ENTROPY_CHUNK_ROWS,
    EntropyModel,
    KnifeConfig,
    fit_entropy_model,
)

# Smoothing std of the posterior coordinates (distance between probability vectors): wider than
# a cross-fitted classifier's jitter around a posterior (about 0.05 in docs/choices.md's
# measurements), narrow enough that a certain and an even posterior (0.71 apart for two
# classes) stay distinct states.
DEFAULT_RESOLUTION = 0.2
# Small samples are repeated (each copy with its own noise) up to this many smoothed rows, so
# that KNIFE's minibatch steps see the smoothed density and not a few noisy points.
SMOOTHED_ROWS = 1 << 15
MAX_COPIES = 16


def sum_zero_basis(num_classes: int) -> np.ndarray:
    """``[C, C − 1]`` float64: orthonormal columns spanning the vectors of ``R^C`` that sum to
    zero (Helmert's), so ``log p @ basis`` drops the normalising constant of ``log p``."""
    if num_classes < 2:
        raise ValueError(f"a posterior needs at least 2 classes, got {num_classes}")
    basis = np.zeros((num_classes, num_classes - 1))
    for j in range(1, num_classes):
        norm = math.sqrt(j * (j + 1))
        basis[:j, j - 1] = 1.0 / norm
        basis[j, j - 1] = -j / norm
    return basis


def encoder_device(encoder: nn.Module) -> torch.device:
    """Where ``encoder`` computes (its first parameter or buffer's device; CPU without one)."""
    for tensor in (*encoder.parameters(), *encoder.buffers()):
        return tensor.device
    return torch.device("cpu")


def posterior_coordinates(
    encoder: nn.Module, rows: np.ndarray, chunk_rows: int = ENTROPY_CHUNK_ROWS
) -> np.ndarray:
    """``[n, C − 1]`` float64: ``p(· | x) @ B`` of ``rows [n, d]``, the probabilities averaged
    over the encoder's leading axes (fold models), ``chunk_rows`` rows at a time."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    device = encoder_device(encoder)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(rows), chunk_rows):
            x = np.require(rows[start : start + chunk_rows], np.float32, ["C", "W"])
            proba = torch.softmax(encoder(torch.from_numpy(x).to(device)).double(), -1)
            proba = proba.reshape(-1, *proba.shape[-2:]).mean(dim=0)  # [B, C]
            chunks.append(proba.cpu().numpy())
    if not chunks:
        raise ValueError("no rows")
    proba = np.concatenate(chunks)
    return proba @ sum_zero_basis(proba.shape[1])


@dataclass(frozen=True, eq=False)
class PosteriorEntropyModel:
    """A modality's pointwise entropy on its posterior coordinates: rows ``[n, in_dim]`` →
    ``posterior_coordinates`` by ``encoder`` → ``entropy_model`` (KNIFE, in eval mode)."""

    encoder: nn.Module
    entropy_model: EntropyModel
    in_dim: int

    @property
    def dim(self) -> int:
        """Feature dimension of the rows ``entropy`` accepts (the modality's, not ``C − 1``)."""
        return self.in_dim

    def to(self, device: torch.device) -> PosteriorEntropyModel:
        """This model with its encoder and KNIFE on ``device``."""
        self.encoder.to(device)
        self.entropy_model.to(device)
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """The posterior coordinates ``[n, C − 1]`` of ``rows [n, in_dim]``."""
        return posterior_coordinates(self.encoder, _checked(rows, self.in_dim))

    def entropy(self, rows: np.ndarray, chunk_rows: int = ENTROPY_CHUNK_ROWS) -> np.ndarray:
        """Per-sample ``h = −log p_θ(t)`` ``[n]`` float64, in nats, of the posterior coordinates
        ``t`` of ``rows [n, in_dim]``, ``chunk_rows`` rows at a time."""
        rows = _checked(rows, self.in_dim)
        coordinates = posterior_coordinates(self.encoder, rows, chunk_rows)
        return self.entropy_model.entropy(coordinates, chunk_rows)


def fit_posterior_entropy_model(
    encoder: nn.Module,
    rows: np.ndarray,
    config: KnifeConfig,
    resolution: float = DEFAULT_RESOLUTION,
    progress: Callable[[str], None] | None = None,
    device: torch.device | str = "cpu",
) -> PosteriorEntropyModel:
    """KNIFE (``config``, but neither standardised nor PCA-projected: the coordinates share
    their units across modalities) fitted on the posterior coordinates of ``rows [m, d]``
    under ``encoder`` (in eval mode) plus N(0, ``resolution``²) noise: each row repeated so
    that at least ``SMOOTHED_ROWS`` noisy rows (at most 16 copies of each) are fitted, the
    noise seeded by ``config.seed``. Trains on ``device``; the model comes back on the CPU."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise ValueError(f"rows must have shape [m, d] with d ≥ 1, got {rows.shape}")
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be positive and finite, got {resolution}")
    encoder.eval()
    coordinates = posterior_coordinates(encoder, rows)
    knife = replace(config, standardize=False, pca_components=None)
    copies = max(1, min(MAX_COPIES, -(-SMOOTHED_ROWS // len(coordinates))))
    rng = np.random.default_rng(config.seed)
    smoothed = np.repeat(coordinates, copies, axis=0)
    smoothed += rng.normal(0.0, resolution, size=smoothed.shape)
    entropy_model = fit_entropy_model(smoothed, knife, progress, device=device)
    return PosteriorEntropyModel(encoder.cpu(), entropy_model, rows.shape[1])

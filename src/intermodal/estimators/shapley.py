"""Exact Shapley values and the InterSHAP interaction matrix from coalition values.

Both are linear in the coalition values, so each is one matmul with a ``[2**M, ·]`` weight
matrix built once per M. Conventions (paper 000 eqs. 1–3):

- ``φ_i = Σ_{S ⊆ M∖i} |S|!(M−|S|−1)!/M! · (v(S∪i) − v(S))``;
- ``φ_ij = Σ_{S ⊆ M∖{i,j}} |S|!(M−|S|−2)!/(2(M−1)!) · ∇_ij(S)`` for i ≠ j, with
  ``∇_ij(S) = v(S∪ij) − v(S∪i) − v(S∪j) + v(S)`` — half the Grabisch–Roubens SII;
- ``φ_ii = φ_i − Σ_{j≠i} φ_ij``, so the matrix sums to ``v(M) − v(∅)``.
"""

from __future__ import annotations

from functools import cache
from math import factorial

import numpy as np

from intermodal.estimators.coalitions import coalition_sizes, membership, n_modalities_from_values


@cache
def shapley_weights(n_modalities: int) -> np.ndarray:
    """``[2**M, M]``: ``values @ W`` gives the Shapley values."""
    m = n_modalities
    present = membership(m)
    size = coalition_sizes(m)[:, None]
    # kernel[s] = s!(M−s−1)!/M!, the weight of a coalition of size s that lacks the player
    kernel = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)])
    # v(S) enters φ_i with +kernel[|S|−1] when i ∈ S (as S∪i) and −kernel[|S|] when i ∉ S
    weights = np.where(present, kernel[np.maximum(size - 1, 0)], -kernel[np.minimum(size, m - 1)])
    weights.setflags(write=False)
    return weights


@cache
def pair_weights(n_modalities: int) -> np.ndarray:
    """``[2**M, M, M]``: ``einsum('...s,sij->...ij', values, W)`` gives φ_ij (zero diagonal)."""
    m = n_modalities
    if m < 2:
        return np.zeros((1 << m, m, m))
    present = membership(m).astype(np.int64)
    size = coalition_sizes(m)[:, None, None]
    # kernel[t] = t!(M−t−2)!/(2(M−1)!), the weight of ∇_ij(T) for |T| = t, T ⊆ M∖{i,j}
    kernel = np.array(
        [factorial(t) * factorial(m - t - 2) / (2 * factorial(m - 1)) for t in range(m - 1)]
    )
    # v(U) appears in ∇_ij(U∖{i,j}) with sign + when U holds both or neither of i, j, else −
    n_ij = present[:, :, None] + present[:, None, :]
    rest = np.clip(size - n_ij, 0, m - 2)
    weights = np.where(n_ij == 1, -1.0, 1.0) * kernel[rest]
    weights[:, np.arange(m), np.arange(m)] = 0.0
    weights.setflags(write=False)
    return weights


def shapley_values(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values ``[..., M]`` of coalition values ``[..., 2**M]``."""
    values = np.asarray(values, dtype=np.float64)
    n_modalities = n_modalities_from_values(values.shape[-1])
    return values @ shapley_weights(n_modalities)


def interaction_matrix(values: np.ndarray) -> np.ndarray:
    """Symmetric InterSHAP matrix ``[..., M, M]``: φ_ij off the diagonal, φ_ii on it."""
    values = np.asarray(values, dtype=np.float64)
    n_modalities = n_modalities_from_values(values.shape[-1])
    pairs = np.einsum("...s,sij->...ij", values, pair_weights(n_modalities))
    main = shapley_values(values) - pairs.sum(axis=-1)
    diagonal = np.arange(n_modalities)
    pairs[..., diagonal, diagonal] = main
    return pairs

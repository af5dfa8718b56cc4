"""Shannon quantities of discrete joints given as probability arrays (nats, 0 · log 0 = 0)."""

from __future__ import annotations

import numpy as np

SUM_TOLERANCE = 1e-6


def validated_joint(p: np.ndarray) -> np.ndarray:
    """``p`` as float64 ``[k1, k2, ky]`` renormalised to 1; ValueError naming what is wrong
    when it is not finite, non-negative, 3-d, non-empty and summing to 1 within 1e-6."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"joint must be 3-d [k1, k2, ky], got shape {p.shape}")
    if p.size == 0:
        raise ValueError(f"joint must not be empty, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("joint has non-finite entries")
    if np.any(p < 0):
        raise ValueError(f"joint has negative entries (min {p.min():.3g})")
    total = p.sum()
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"joint must sum to 1 within {SUM_TOLERANCE}, sums to {total:.9g}")
    return p / total


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of the probabilities in ``p`` (any shape), 0·log 0 = 0."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(pxy: np.ndarray) -> float:
    """``I(X; Y)`` (nats) of a joint ``[kx, ky]``."""
    return entropy(pxy.sum(axis=1)) + entropy(pxy.sum(axis=0)) - entropy(pxy)


def conditional_entropy(q: np.ndarray) -> float:
    """``H_q(Y | X1, X2)`` (nats) of a joint ``[k1, k2, ky]``."""
    return entropy(q) - entropy(q.sum(axis=2))

"""Interaction-guided ensembles (paper 001 §4.3.3): per sample, a model that reads one modality
of a pair is weighted by that modality's unique information plus half the redundancy, and a
model that reads both by the synergy:

    mass(first) = u1 + r/2,   mass(second) = u2 + r/2,   mass(both) = s

with ``r, u1, u2, s`` the sample's adjusted pointwise terms clipped at 0. A role no model
plays hands its mass to the models that read both (they see that modality too); models of one
role share its mass equally; each model's weight is its mass over the sample's total (equal
weights where the total is 0). The ensemble's class probabilities are the weighted sum of the
models' ``p(c | x)``. Baselines: the plain average, and one weight per model fitted on
held-out rows by EM (the maximum-likelihood mixture weights).

Shapes: ``terms [n, 4]`` (R, U1, U2, S), ``roles`` one of ``ROLES`` per model (K),
``probabilities [n, K, C]``, ``weights [n, K]`` or ``[K]``, ``labels [n]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROLES = ("first", "second", "both")  # which modalities of the pair a model reads
EM_ITERATIONS = 500
EM_TOLERANCE = 1e-10


def role_masses(terms: np.ndarray) -> np.ndarray:
    """``[n, 3]`` mass of each role in ``ROLES`` order from ``terms [n, 4]`` (clipped at 0)."""
    r, u1, u2, s = np.clip(np.asarray(terms, dtype=np.float64), 0.0, None).T
    return np.column_stack([u1 + r / 2, u2 + r / 2, s])


def interaction_weights(terms: np.ndarray, roles: Sequence[str]) -> np.ndarray:
    """``[n, K]`` per-sample weights of K models of ``roles`` (at least one ``both``)."""
    if "both" not in roles:
        raise ValueError(f"roles {list(roles)}: the ensemble needs a model that reads both")
    masses = role_masses(terms)
    played = {role: [k for k, r in enumerate(roles) if r == role] for role in ROLES}
    weights = np.zeros((masses.shape[0], len(roles)))
    for index, role in enumerate(ROLES):
        takers = played[role] or played["both"]
        weights[:, takers] += masses[:, index : index + 1] / len(takers)
    total = weights.sum(axis=1, keepdims=True)
    return np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / len(roles))


def ensemble_probabilities(weights: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``[n, C]``: Σ_k w_k · p_k(c | x), with per-sample ``[n, K]`` or global ``[K]`` weights."""
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), probabilities.shape[:2])
    return np.einsum("nk,nkc->nc", weights, probabilities)


def global_weights(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[K]`` mixture weights (≥ 0, summing to 1) maximising the mean log-likelihood
    ``log Σ_k w_k p_k(y | x)`` of the labelled rows, by EM from equal weights."""
    n, models, _ = probabilities.shape
    if n == 0:
        return np.full(models, 1.0 / models)
    likelihood = probabilities[np.arange(n), :, np.asarray(labels, dtype=np.int64)]  # [n, K]
    weights = np.full(models, 1.0 / models)
    for _ in range(EM_ITERATIONS):
        joint = likelihood * weights
        responsibility = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
        updated = responsibility.mean(axis=0)
        if np.abs(updated - weights).max() < EM_TOLERANCE:
            return updated
        weights = updated
    return weights


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax ``[n, C]`` (or ``[n]`` classes) is the label; NaN on none."""
    predicted = probabilities.argmax(axis=1) if probabilities.ndim == 2 else probabilities
    return float(np.mean(predicted == labels)) if len(labels) else float("nan")

"""PID agreement between a dataset and a model trained on it (paper 003 §4.4, eq. 6).

The dataset's PID ``I_D`` (of the labels) is normalised to shares, ``Î_D = I_D / Σ_I' I_D,I'``,
and each share weighs the same term of the model's PID ``I_f`` (of its predictions):
``α_I = Î_D,I · I_f,I`` for ``I`` in R, U1, U2, S, and ``α = Σ_I α_I``. A model scores high
where it carries much of the interactions the dataset needs. ``α_I`` has the unit of ``I_f``.

Shapes: terms ``[..., 4]`` in ``PID_TERMS`` order (R, U1, U2, S); batches broadcast.
"""

from __future__ import annotations

import numpy as np


def normalised_pid(terms: np.ndarray) -> np.ndarray:
    """``[..., 4]`` shares ``I / Σ I`` of each term; NaN where the terms sum to ≤ 0 (a dataset
    without information about its labels has no shares)."""
    terms = np.asarray(terms, dtype=np.float64)
    total = terms.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, terms / safe, np.nan)


def pid_agreement(dataset_terms: np.ndarray, model_terms: np.ndarray) -> np.ndarray:
    """``[..., 5]``: ``α_R, α_U1, α_U2, α_S`` and their sum ``α`` of a dataset's PID
    ``[..., 4]`` and a model's ``[..., 4]`` (NaN where the dataset's terms sum to ≤ 0)."""
    per_term = normalised_pid(dataset_terms) * np.asarray(model_terms, dtype=np.float64)
    return np.concatenate([per_term, per_term.sum(axis=-1, keepdims=True)], axis=-1)

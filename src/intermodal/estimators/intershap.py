"""InterSHAP from interaction matrices (paper 000 eqs. 5–11).

Global scores use the *signed* mean matrix over samples, then its absolute value (opposing
effects cancel across the dataset); local scores use each sample's absolute matrix. When a
model's behaviour is zero (a constant output) there is nothing to attribute: the scores are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intermodal.estimators.shapley import interaction_matrix, shapley_values


def target_suffixes(target: str, num_classes: int) -> list[str]:
    """Score column suffix per explained output: none for one output, ``__class<k>`` for
    each class (``target: all``)."""
    return [f"__class{k}" for k in range(num_classes)] if target == "all" else [""]


def shapley_column(modality: str, suffix: str = "") -> str:
    return f"shapley_{modality}{suffix}"


def interaction_column(first: str, second: str, suffix: str = "") -> str:
    return f"interaction_{first}__{second}{suffix}"


def interaction_pairs(modalities: Sequence[object]) -> list[tuple[int, int]]:
    """Upper triangle with the diagonal, in the order the score columns use."""
    n = len(modalities)
    return [(i, j) for i in range(n) for j in range(i, n)]


def intershap_columns(modalities: Sequence[str], suffix: str = "") -> list[str]:
    """Float columns of one explained output, in table order."""
    return [
        f"intershap_value_full{suffix}",
        f"intershap_value_empty{suffix}",
        *(shapley_column(m, suffix) for m in modalities),
        *(
            interaction_column(modalities[i], modalities[j], suffix)
            for i, j in interaction_pairs(modalities)
        ),
        f"intershap_local{suffix}",
    ]


def _interaction_fraction(abs_matrices: np.ndarray) -> np.ndarray:
    """Off-diagonal share of the total of non-negative matrices ``[..., M, M]`` → ``[...]``."""
    behaviour = abs_matrices.sum(axis=(-2, -1))
    interactions = behaviour - np.trace(abs_matrices, axis1=-2, axis2=-1)
    safe = np.where(behaviour > 0, behaviour, 1.0)
    return np.where(behaviour > 0, interactions / safe, 0.0)


def local_intershap(matrices: np.ndarray) -> np.ndarray:
    """Per-sample InterSHAP ``I_a`` (eq. 10) of matrices ``[..., M, M]`` → ``[...]``, in [0, 1]."""
    return _interaction_fraction(np.abs(np.asarray(matrices, dtype=np.float64)))


@dataclass(frozen=True)
class GlobalInterSHAP:
    """Dataset-level InterSHAP terms from the mean signed interaction matrix (eqs. 5–9)."""

    intershap: float  # Interactions / Behaviour
    interactions: float  # Σ_{i≠j} Φ_ij
    behaviour: float  # Σ_{i,j} Φ_ij
    modality_contributions: np.ndarray  # [M] M_i = Φ_ii / Behaviour


def global_terms(mean_matrix: np.ndarray) -> GlobalInterSHAP:
    """Global terms from the mean over samples of the signed matrices ``[M, M]``."""
    phi = np.abs(np.asarray(mean_matrix, dtype=np.float64))
    behaviour = float(phi.sum())
    interactions = behaviour - float(np.trace(phi))
    contributions = np.diag(phi) / behaviour if behaviour > 0 else np.zeros(len(phi))
    return GlobalInterSHAP(
        intershap=float(_interaction_fraction(phi)),
        interactions=interactions,
        behaviour=behaviour,
        modality_contributions=contributions,
    )


def global_intershap(matrices: np.ndarray) -> float:
    """Global InterSHAP (eq. 8) of per-sample matrices ``[N, M, M]`` (any leading axes)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    mean_matrix = matrices.reshape(-1, *matrices.shape[-2:]).mean(axis=0)
    return global_terms(mean_matrix).intershap


def upper_triangle_indices(n_modalities: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle with the diagonal in the order of the
    ``interaction_<a>__<b>`` score columns (``interaction_pairs``)."""
    pairs = interaction_pairs(range(n_modalities))
    return np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])


def symmetric_from_upper(upper: np.ndarray, n_modalities: int) -> np.ndarray:
    """``[..., M(M+1)/2]`` upper-triangle entries → symmetric ``[..., M, M]``."""
    rows, cols = upper_triangle_indices(n_modalities)
    matrix = np.zeros((*upper.shape[:-1], n_modalities, n_modalities))
    matrix[..., rows, cols] = upper
    matrix[..., cols, rows] = upper
    return matrix


def dataset_terms(
    mean_upper: np.ndarray, modalities: list[str]
) -> list[tuple[str, tuple[str, ...], float]]:
    """InterSHAP's dataset terms ``(term, modalities it is of, value)`` from merged means of
    the interaction matrix's upper triangle: ``global`` (eqs. 5–8), ``modalities`` (1 −
    global, eq. 9), ``interactions``, ``behaviour`` and per modality ``modality`` (M_i). Ratios
    and sums of means: no standard error."""
    terms = global_terms(symmetric_from_upper(mean_upper, len(modalities)))
    rows: list[tuple[str, tuple[str, ...], float]] = [
        ("global", (), terms.intershap),
        ("modalities", (), 1.0 - terms.intershap if terms.behaviour > 0 else 0.0),
        ("interactions", (), terms.interactions),
        ("behaviour", (), terms.behaviour),
    ]
    rows += [
        ("modality", (m,), float(c))
        for m, c in zip(modalities, terms.modality_contributions, strict=True)
    ]
    return rows


def summary_terms(
    mean_upper: np.ndarray,
    stderr_upper: np.ndarray,
    local_mean: float,
    local_stderr: float,
    modalities: list[str],
) -> list[tuple[str, float, float | None]]:
    """Named dataset terms ``(term, value, stderr)`` from merged means of the interaction
    matrix's upper triangle and of local InterSHAP (``dataset_terms`` with the means
    themselves: ``local_mean``, ``mean_interaction_<a>__<b>``). Ratios of means get no
    stderr."""
    n = len(modalities)
    named = [
        (term if not members else f"{term}_{members[0]}", value)
        for term, members, value in dataset_terms(mean_upper, modalities)
    ]
    rows: list[tuple[str, float, float | None]] = [
        (named[0][0], named[0][1], None),
        ("local_mean", local_mean, local_stderr),
        *((term, value, None) for term, value in named[1:]),
    ]
    for (i, j), value, stderr in zip(
        zip(*upper_triangle_indices(n), strict=True), mean_upper, stderr_upper, strict=True
    ):
        rows.append(
            (f"mean_interaction_{modalities[i]}__{modalities[j]}", float(value), float(stderr))
        )
    return rows


def explained_values(
    probabilities: np.ndarray, target: str, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Coalition values ``[B, T, 2**M]`` of the explained outputs and their class ``[B]``
    (None when every class is explained) from probabilities ``[B, 2**M, C]``."""
    if target == "all":
        return probabilities.transpose(0, 2, 1), None
    full = probabilities.shape[1] - 1
    if target == "predicted":
        classes = probabilities[:, full].argmax(axis=-1)
    elif labels is None:
        raise ValueError("explaining the label needs the label column")
    else:
        classes = labels
    rows = np.arange(len(probabilities))
    return probabilities[rows, :, classes][:, None, :], classes


def intershap_table(
    values: np.ndarray, modalities: list[str], target: str, num_classes: int
) -> dict[str, np.ndarray]:
    """Score columns of coalition values ``[B, T, 2**M]``."""
    shapley = shapley_values(values)
    matrices = interaction_matrix(values)
    local = local_intershap(matrices)
    pairs = interaction_pairs(modalities)
    columns = {}
    for t, suffix in enumerate(target_suffixes(target, num_classes)):
        stacked = [
            values[:, t, -1],
            values[:, t, 0],
            *shapley[:, t].T,
            *(matrices[:, t, i, j] for i, j in pairs),
            local[:, t],
        ]
        columns.update(zip(intershap_columns(modalities, suffix), stacked, strict=True))
    return columns

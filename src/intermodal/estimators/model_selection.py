"""Model selection by PID (paper 003 §4.4, App. C.8): a new dataset's closest library dataset
is the one whose normalised PID differs least, ``s(D, D') = Σ_I |Î_D,I − Î_D',I|`` over R, U1,
U2, S, and the families that did best on it are the recommendation.

Shapes: PID terms ``[..., 4]`` in ``PID_TERMS`` order; a library's terms ``[D, 4]`` and its
held-out accuracies ``[D, F]`` (dataset × family).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intermodal.estimators.pid_agreement import normalised_pid


def pid_distance(terms: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``[...]``: ``Σ_I |Î − Î'|`` of two PIDs ``[..., 4]`` (broadcast); in [0, 2], NaN where
    either has no shares (terms summing to ≤ 0)."""
    return np.abs(normalised_pid(terms) - normalised_pid(other)).sum(axis=-1)


def ranked_families(accuracies: np.ndarray) -> np.ndarray:
    """Family indices ``[F]`` from the most to the least accurate of one dataset's accuracies
    ``[F]`` (ties keep the family order)."""
    return np.argsort(-np.asarray(accuracies, dtype=np.float64), kind="stable")


@dataclass(frozen=True)
class LeaveOneOut:
    """Each library dataset treated as new against the others: ``closest`` [D] the index of its
    closest other dataset, ``distance`` [D] the distance to it, ``recommended`` [D] the best
    family there, ``ratio`` [D] that family's accuracy on the dataset over the dataset's best
    accuracy, ``worst_of_top`` [D] the same ratio of the least accurate (on the dataset) of
    the ``top`` best families there (paper 003 Table 5 reports the top 3)."""

    closest: np.ndarray
    distance: np.ndarray
    recommended: np.ndarray
    ratio: np.ndarray
    worst_of_top: np.ndarray


def leave_one_out(terms: np.ndarray, accuracies: np.ndarray, top: int = 3) -> LeaveOneOut:
    """Leave-one-out model selection over a library of PIDs ``[D, 4]`` and held-out
    accuracies ``[D, F]`` (D ≥ 2)."""
    terms = np.asarray(terms, dtype=np.float64)
    accuracies = np.asarray(accuracies, dtype=np.float64)
    distances = pid_distance(terms[:, None, :], terms[None, :, :])  # [D, D]
    np.fill_diagonal(distances, np.inf)  # a dataset is not its own neighbour
    closest = np.argmin(distances, axis=1)
    recommended = np.array([ranked_families(accuracies[c])[0] for c in closest], dtype=np.int64)
    rows = np.arange(len(terms))
    best = accuracies.max(axis=1)
    ratio = accuracies[rows, recommended] / best
    worst_of_top = np.array(
        [accuracies[d, ranked_families(accuracies[c])[:top]].min() for d, c in enumerate(closest)]
    )
    return LeaveOneOut(closest, distances[rows, closest], recommended, ratio, worst_of_top / best)

"""How a mixture's experts agree and whether the mixture is right (paper 002 §6.2, Table 3):
per labelled row, whether each expert's own class is the label, whether the mixture's class is,
and which of four cells the row falls in: every expert predicts the same class (agree) or not
(disagree), crossed with the mixture being right (correct) or not (wrong). Means of these
indicators over rows are each expert's accuracy, the mixture's accuracy and the four shares,
which sum to 1; as means, they merge with ``stats.Moments``.

Shapes: ``expert_classes [n, E]`` (each expert's argmax), ``predicted [n]`` (the mixture's),
``labels [n]``; the indicators ``[n, E + 1 + 4]``.
"""

from __future__ import annotations

import numpy as np

AGREEMENT_CELLS = ("agree_correct", "agree_wrong", "disagree_correct", "disagree_wrong")


def expert_indicators(
    expert_classes: np.ndarray, predicted: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """``[n, E + 5]`` float64: each expert right, the mixture right, then the four cells of
    ``AGREEMENT_CELLS`` (one of which is 1 per row)."""
    expert_classes = np.asarray(expert_classes)
    labels = np.asarray(labels)
    experts_right = expert_classes == labels[:, None]
    right = np.asarray(predicted) == labels
    agree = (expert_classes == expert_classes[:, :1]).all(axis=1)
    cells = [agree & right, agree & ~right, ~agree & right, ~agree & ~right]
    return np.column_stack([experts_right, right, *cells]).astype(np.float64)

"""Discrete joints ``p [k1, k2, ky]`` shared by the PID tests."""

from __future__ import annotations

import numpy as np


def gate(function) -> np.ndarray:
    """``[2, 2, ky]`` joint of two fair independent bits and ``y = function(x1, x2)``."""
    outputs = {(a, b): function(a, b) for a in range(2) for b in range(2)}
    p = np.zeros((2, 2, max(outputs.values()) + 1))
    for (a, b), y in outputs.items():
        p[a, b, y] = 0.25
    return p


def random_joint(
    shape: tuple[int, int, int], seed: int, zeros: float = 0.0, tiny: float = 0.0
) -> np.ndarray:
    """Dirichlet(0.5) joint with a fraction ``zeros`` of cells set to 0 and ``tiny`` to 1e-12."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(int(np.prod(shape)), 0.5)).reshape(shape)
    draw = rng.random(shape)
    p[draw < zeros] = 0.0
    p[(draw >= zeros) & (draw < zeros + tiny)] = 1e-12
    return p / p.sum()

"""Coalitions of modalities as bitmasks (bit m set = modality m present)."""

from __future__ import annotations

from functools import cache

import numpy as np

MAX_MODALITIES = 10


def check_n_modalities(n_modalities: int) -> None:
    if not 1 <= n_modalities <= MAX_MODALITIES:
        raise ValueError(f"need 1..{MAX_MODALITIES} modalities, got {n_modalities}")


def n_modalities_from_values(n_coalitions: int) -> int:
    """M from the length 2**M of a coalition axis."""
    n_modalities = n_coalitions.bit_length() - 1
    if n_coalitions < 2 or 1 << n_modalities != n_coalitions:
        raise ValueError(f"coalition axis must have length 2**M, got {n_coalitions}")
    check_n_modalities(n_modalities)
    return n_modalities


@cache
def membership(n_modalities: int) -> np.ndarray:
    """``[2**M, M]`` bool: ``membership[S, m]`` is True when modality m is in coalition S."""
    check_n_modalities(n_modalities)
    coalitions = np.arange(1 << n_modalities)[:, None]
    return (coalitions >> np.arange(n_modalities)[None, :]) & 1 == 1


@cache
def coalition_sizes(n_modalities: int) -> np.ndarray:
    """``[2**M]`` int: number of modalities present in each coalition."""
    return membership(n_modalities).sum(axis=1)


def full_coalition(n_modalities: int) -> int:
    return (1 << n_modalities) - 1

"""Shapley values and the interaction matrix against a brute-force reading of paper 000."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from intermodal.estimators.shapley import interaction_matrix, shapley_values


def _subsets(players: list[int]):
    for size in range(len(players) + 1):
        yield from itertools.combinations(players, size)


def _v(values: np.ndarray, coalition) -> float:
    return values[sum(1 << m for m in coalition)]


def brute_force(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """φ_i (eq. 1), φ_ij (eq. 2), φ_ii (eq. 3) summed subset by subset, one game."""
    phi = np.zeros(m)
    for i in range(m):
        others = [p for p in range(m) if p != i]
        for s in _subsets(others):
            weight = factorial(len(s)) * factorial(m - len(s) - 1) / factorial(m)
            phi[i] += weight * (_v(values, (*s, i)) - _v(values, s))
    matrix = np.zeros((m, m))
    for i, j in itertools.permutations(range(m), 2):
        rest = [p for p in range(m) if p not in (i, j)]
        for s in _subsets(rest):
            weight = factorial(len(s)) * factorial(m - len(s) - 2) / (2 * factorial(m - 1))
            nabla = (
                _v(values, (*s, i, j)) - _v(values, (*s, i)) - _v(values, (*s, j)) + _v(values, s)
            )
            matrix[i, j] += weight * nabla
    for i in range(m):
        matrix[i, i] = phi[i] - sum(matrix[i, j] for j in range(m) if j != i)
    return phi, matrix


@pytest.mark.parametrize("m", range(2, 9))
def test_matches_brute_force_on_random_games(m: int) -> None:
    rng = np.random.default_rng(m)
    games = rng.normal(size=(3, 1 << m))
    phi, matrices = shapley_values(games), interaction_matrix(games)
    for game, game_phi, game_matrix in zip(games, phi, matrices, strict=True):
        expected_phi, expected_matrix = brute_force(game, m)
        np.testing.assert_allclose(game_phi, expected_phi, rtol=0, atol=1e-9)
        np.testing.assert_allclose(game_matrix, expected_matrix, rtol=0, atol=1e-9)


@pytest.mark.parametrize("m", [2, 3, 5, 10])
def test_efficiency_and_symmetry(m: int) -> None:
    games = np.random.default_rng(0).uniform(size=(4, 2, 1 << m))  # leading axes broadcast
    matrices = interaction_matrix(games)
    assert matrices.shape == (4, 2, m, m)
    np.testing.assert_allclose(matrices, np.swapaxes(matrices, -1, -2), atol=1e-12)
    np.testing.assert_allclose(
        matrices.sum(axis=(-2, -1)), games[..., -1] - games[..., 0], atol=1e-9
    )
    np.testing.assert_allclose(
        shapley_values(games).sum(-1), games[..., -1] - games[..., 0], atol=1e-9
    )


def test_known_games() -> None:
    # v = x0 * x1 (pure synergy, M = 2): all of v(M) − v(∅) = 1 is interaction, φ_01 = 1/2
    matrix = interaction_matrix(np.array([0.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(matrix, [[0.0, 0.5], [0.5, 0.0]])
    # additive game v(S) = Σ_{m∈S} w_m: no interaction, Shapley values are the weights
    weights = np.array([1.0, 2.0, 3.0])
    additive = np.array([weights[[m for m in range(3) if s >> m & 1]].sum() for s in range(8)])
    np.testing.assert_allclose(interaction_matrix(additive), np.diag(weights), atol=1e-12)
    # unanimity game of three players: each pair carries a third of the value's interaction
    unanimity = np.zeros(8)
    unanimity[7] = 1.0
    np.testing.assert_allclose(shapley_values(unanimity), [1 / 3] * 3)


@pytest.mark.parametrize("length", [1, 3, 6, 2048])
def test_rejects_axis_that_is_not_a_power_of_two_up_to_ten_modalities(length: int) -> None:
    with pytest.raises(ValueError, match=r"coalition|modalities"):
        shapley_values(np.zeros(length))

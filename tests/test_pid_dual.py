"""The dual interior-point PID maximiser against the cvxpy program of ``pid_cvx``."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from joints import gate, random_joint  # tests/joints.py

from intermodal.estimators import information, pid_cvx
from intermodal.estimators.pid_dual import maximiser_dual

# Clarabel's defaults leave H(Y | X1, X2) about 1e-7 nats short at 20 × 20 × 10; these make it
# a reference good to ~1e-11 nats
TIGHT_CLARABEL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}


def with_empty_values(seed: int) -> np.ndarray:
    """``[6, 5, 4]`` joint where one x1 value, one x2 value and one label never occur."""
    p = random_joint((6, 5, 4), seed, zeros=0.2)
    p[2], p[:, 4], p[:, :, 1] = 0.0, 0.0, 0.0
    return p / p.sum()


JOINTS = {
    "and": gate(lambda a, b: a & b),
    "or": gate(lambda a, b: a | b),
    "xor": gate(lambda a, b: a ^ b),
    **{f"empty-{seed}": with_empty_values(seed) for seed in range(2)},
    **{
        f"{'x'.join(map(str, shape))}-{seed}-{label}": random_joint(shape, seed, zeros, tiny)
        for shape, seeds in [((3, 3, 2), 3), ((5, 4, 3), 3), ((10, 10, 5), 3), ((20, 20, 10), 2)]
        for seed in range(seeds)
        for label, zeros, tiny in [("dense", 0.0, 0.0), ("sparse", 0.3, 0.1)]
    },
}


def marginal_error(q: np.ndarray, p: np.ndarray) -> float:
    return float(
        max(
            np.abs(q.sum(axis=1) - p.sum(axis=1)).max(), np.abs(q.sum(axis=0) - p.sum(axis=0)).max()
        )
    )


def pid_terms(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``[R, U1, U2, S]`` in bits from a maximiser ``q``, by ``pid_from_joint``'s formulas."""
    info1 = information.mutual_information(p.sum(axis=1))
    info2 = information.mutual_information(p.sum(axis=0))
    info12 = information.mutual_information(p.reshape(-1, p.shape[2]))
    info_q = information.entropy(p.sum(axis=(0, 1))) - information.conditional_entropy(q)
    terms = [info1 + info2 - info_q, info_q - info2, info_q - info1, info12 - info_q]
    return np.array(terms) / np.log(2)


def tight_reference(p: np.ndarray) -> np.ndarray | None:
    """cvxpy's maximiser at tight Clarabel tolerances, or None when Clarabel cannot certify it."""
    problem, q, support = pid_cvx._problem(p)
    problem.solve(solver=cp.CLARABEL, **TIGHT_CLARABEL)
    if problem.status != cp.OPTIMAL:
        return None
    q_star = np.zeros_like(p)
    q_star[support] = np.maximum(q.value, 0.0)
    return q_star


# the predictor-corrector stalls on this joint (1e-12 cells) and the barrier fallback ends
# ~5e-8 nats short: its ν = 1 / (t · −f) inherits the round-off of slacks near 1e-12
KNOWN_SHORTFALL = {"5x4x3-1-sparse"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="barrier fallback accuracy"))
        if name in KNOWN_SHORTFALL
        else name
        for name in JOINTS
    ],
)
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_matches_cvxpy_maximiser(name: str) -> None:
    p = information.validated_joint(JOINTS[name])
    q, diagnostics = maximiser_dual(p)
    assert q.shape == p.shape
    assert q.min() >= 0.0
    assert marginal_error(q, p) <= 1e-8
    assert diagnostics["marginal_error"] <= 1e-8
    # q is exactly feasible and the dual point strictly feasible, so this certifies optimality
    assert diagnostics["duality_gap"] <= 1e-9
    entropy = information.conditional_entropy(q)
    reference = tight_reference(p)
    if reference is not None:
        assert entropy == pytest.approx(information.conditional_entropy(reference), abs=1e-9)
    expected = pid_cvx.pid_from_joint(p)
    expected_terms = list(expected.terms)
    np.testing.assert_allclose(pid_terms(p, q), expected_terms, atol=1e-6)


def test_gates_have_known_synergy() -> None:
    """XOR is all synergy (1 bit); AND has R = 0.75 log2(4/3) and no unique information."""
    xor = pid_terms(JOINTS["xor"], maximiser_dual(JOINTS["xor"])[0])
    np.testing.assert_allclose(xor, [0.0, 0.0, 0.0, 1.0], atol=1e-8)
    and_ = pid_terms(JOINTS["and"], maximiser_dual(JOINTS["and"])[0])
    np.testing.assert_allclose(and_[:3], [0.75 * np.log2(4 / 3), 0.0, 0.0], atol=1e-8)


def test_diagnostics_report_convergence() -> None:
    _, diagnostics = maximiser_dual(JOINTS["10x10x5-0-dense"])
    assert set(diagnostics) == {
        "iterations",
        "method",
        "duality_gap",
        "marginal_error",
        "rebalance_change",
    }
    assert 0 < diagnostics["iterations"] < 200
    assert diagnostics["method"] == "predictor-corrector"
    assert abs(diagnostics["rebalance_change"]) <= 1e-8


def test_raises_when_iterations_run_out() -> None:
    with pytest.raises(RuntimeError, match="did not reach"):
        maximiser_dual(JOINTS["10x10x5-0-dense"], max_iter=2)


@pytest.mark.parametrize(
    "joint",
    [np.ones((2, 2)) / 4, np.full((2, 2, 2), -0.125), np.full((2, 2, 2), 0.5), np.zeros((0, 2, 2))],
)
def test_rejects_bad_joints(joint: np.ndarray) -> None:
    with pytest.raises(ValueError):
        maximiser_dual(joint)


@pytest.mark.parametrize("name", sorted(KNOWN_SHORTFALL))
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_pid_from_joint_falls_back_to_cvxpy_on_a_short_dual(name: str) -> None:
    result = pid_cvx.pid_from_joint(JOINTS[name])
    assert result.solver != pid_cvx.DUAL_SOLVER
    # the dual's own q is feasible and within its gap (~5e-8 nats) of the optimum
    expected = pid_terms(JOINTS[name], maximiser_dual(JOINTS[name])[0])
    terms = list(result.terms)
    np.testing.assert_allclose(terms, expected, atol=1e-6)

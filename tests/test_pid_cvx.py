"""Exact PID against paper 003 Table 1, the PID identities and an independent SLSQP solve."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from joints import gate, random_joint  # tests/joints.py

from intermodal.estimators import pid_cvx
from intermodal.estimators.pid_cvx import PIDResult, pid_from_joint

AND_REDUNDANCY = 0.75 * np.log2(4 / 3)  # I(X1; Y) for Y = X1 AND X2 of two fair bits


def terms(result: PIDResult) -> np.ndarray:
    return np.array(list(result.terms))


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information(pxy: np.ndarray) -> float:
    return entropy(pxy.sum(axis=1)) + entropy(pxy.sum(axis=0)) - entropy(pxy)


def conditional_entropy(q: np.ndarray) -> float:
    """``H_q(Y | X1, X2)`` in bits."""
    return entropy(q) - entropy(q.sum(axis=2))


def conditional_mutual_information(q: np.ndarray) -> float:
    """``I_q(X1; Y | X2)`` in bits, straight from the definition."""
    return (
        entropy(q.sum(axis=2)) + entropy(q.sum(axis=0)) - entropy(q) - entropy(q.sum(axis=(0, 2)))
    )


RANDOM_JOINTS = [
    ((3, 3, 2), 0, 0.0, 0.0),
    ((3, 3, 2), 1, 0.3, 0.0),
    ((5, 4, 3), 2, 0.0, 0.0),
    ((5, 4, 3), 3, 0.2, 0.2),
    ((10, 10, 5), 4, 0.0, 0.0),
    ((10, 10, 5), 5, 0.3, 0.1),
    ((10, 10, 5), 6, 0.0, 0.3),
]


def brute_force_min_information(p: np.ndarray) -> float:
    """``min I_q(X1, X2; Y)`` (bits) over Δ_p by SLSQP over the null space of the marginal
    constraints, all cells free: a formulation independent of the module's."""
    k1, k2, ky = p.shape
    sum_x2 = np.kron(np.kron(np.eye(k1), np.ones((1, k2))), np.eye(ky))
    sum_x1 = np.kron(np.ones((1, k1)), np.eye(k2 * ky))
    basis = scipy.linalg.null_space(np.vstack([sum_x2, sum_x1]))
    start = p.ravel()

    def joint(z: np.ndarray) -> np.ndarray:
        return np.maximum(start + basis @ z, 0.0).reshape(p.shape)

    def negative_entropy(z: np.ndarray) -> float:
        return -conditional_entropy(joint(z))

    def gradient(z: np.ndarray) -> np.ndarray:
        q = np.maximum(joint(z), 1e-15)
        return basis.T @ (np.log2(q / q.sum(axis=2, keepdims=True))).ravel()

    result = scipy.optimize.minimize(
        negative_entropy,
        np.zeros(basis.shape[1]),
        jac=gradient,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: start + basis @ z, "jac": lambda z: basis}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return entropy(p.sum(axis=(0, 1))) + result.fun


@pytest.mark.parametrize(
    ("name", "joint", "expected"),
    [
        ("and", gate(lambda a, b: a & b), [AND_REDUNDANCY, 0, 0, 0.5]),
        ("or", gate(lambda a, b: a | b), [AND_REDUNDANCY, 0, 0, 0.5]),
        ("xor", gate(lambda a, b: a ^ b), [0, 0, 0, 1]),
        ("copy x1", gate(lambda a, b: a), [0, 1, 0, 0]),
        ("copy both", gate(lambda a, b: 2 * a + b), [0, 1, 1, 0]),
        ("redundant", np.array([[[0.5, 0], [0, 0]], [[0, 0], [0, 0.5]]]), [1, 0, 0, 0]),
    ],
)
def test_table_1(name: str, joint: np.ndarray, expected: list[float]) -> None:
    result = pid_from_joint(joint)
    np.testing.assert_allclose(terms(result), expected, atol=1e-4, err_msg=name)
    assert result.mutual_information == pytest.approx(sum(expected), abs=1e-12)


def test_and_redundancy_value() -> None:
    assert abs(AND_REDUNDANCY - 0.311278) < 1e-6


@pytest.mark.parametrize(("shape", "seed", "zeros", "tiny"), RANDOM_JOINTS)
def test_identities(shape, seed: int, zeros: float, tiny: float) -> None:
    p = random_joint(shape, seed, zeros, tiny)
    result = pid_from_joint(p)
    info1, info2 = mutual_information(p.sum(axis=1)), mutual_information(p.sum(axis=0))
    info12 = mutual_information(p.reshape(-1, shape[2]))
    assert result.mutual_information == pytest.approx(info12, abs=1e-12)
    assert pytest.approx(info1, abs=1e-5) == result.terms.R + result.terms.U1
    assert pytest.approx(info2, abs=1e-5) == result.terms.R + result.terms.U2
    assert terms(result).sum() == pytest.approx(info12, abs=1e-5)
    assert np.all(terms(result) >= -1e-7)
    # the terms equal their definitions evaluated on q* directly
    q = result.q
    assert pytest.approx(conditional_mutual_information(q), abs=1e-5) == result.terms.U1
    swapped = q.transpose(1, 0, 2)
    assert pytest.approx(conditional_mutual_information(swapped), abs=1e-5) == result.terms.U2


@pytest.mark.parametrize(("shape", "seed", "zeros", "tiny"), RANDOM_JOINTS)
def test_optimum_is_feasible_and_beats_candidates(shape, seed: int, zeros: float, tiny: float):
    p = random_joint(shape, seed, zeros, tiny)
    q = pid_from_joint(p).q
    assert q.shape == p.shape
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(axis=1), p.sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=0), p.sum(axis=0), atol=1e-6)
    p_y = p.sum(axis=(0, 1))
    product = np.divide(
        p.sum(axis=1)[:, None, :] * p.sum(axis=0)[None, :, :],
        p_y,
        out=np.zeros_like(p),
        where=p_y > 0,
    )
    assert conditional_entropy(q) >= conditional_entropy(p) - 1e-7
    assert conditional_entropy(q) >= conditional_entropy(product) - 1e-7


@pytest.mark.parametrize(("shape", "seed"), [((3, 3, 2), 10), ((3, 3, 2), 11), ((2, 3, 3), 12)])
def test_matches_brute_force(shape, seed: int) -> None:
    p = random_joint(shape, seed)
    result = pid_from_joint(p)
    min_information = brute_force_min_information(p)
    expected_synergy = mutual_information(p.reshape(-1, shape[2])) - min_information
    expected_unique_1 = min_information - mutual_information(p.sum(axis=0))
    assert pytest.approx(expected_synergy, abs=1e-4) == result.terms.S
    assert pytest.approx(expected_unique_1, abs=1e-4) == result.terms.U1


def test_base_e_is_bits_times_ln2() -> None:
    p = random_joint((5, 4, 3), 7)
    bits, nats = pid_from_joint(p), pid_from_joint(p, base=np.e)
    np.testing.assert_allclose(terms(nats), terms(bits) * np.log(2), atol=1e-7)
    assert nats.mutual_information == pytest.approx(bits.mutual_information * np.log(2))


@pytest.mark.parametrize(
    ("joint", "message"),
    [
        (np.full((2, 2), 0.25), "3-d"),
        (np.array([[[0.6, -0.1], [0.25, 0.25]]]), "negative"),
        (np.full((2, 2, 2), 0.1), "sum to 1"),
        (np.array([[[np.nan, 0.5], [0.25, 0.25]]]), "non-finite"),
        (np.zeros((0, 2, 2)), "empty"),
    ],
)
def test_bad_inputs(joint: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pid_from_joint(joint)


def test_tiny_sum_deviation_is_renormalised() -> None:
    result = pid_from_joint(gate(lambda a, b: a ^ b) * (1 + 1e-8))
    assert pytest.approx(1.0, abs=1e-4) == result.terms.S


@pytest.mark.parametrize(
    "joint",
    [
        np.full((2, 3, 1), 1 / 6),  # constant Y
        np.ones((1, 1, 1)),  # a single cell
        np.einsum("a,b,y->aby", [0.3, 0.7], [0.5, 0.25, 0.25], [0.1, 0.9]),  # Y independent
        np.pad(np.full((1, 2, 2), 0.25), ((0, 2), (0, 0), (0, 0))),  # constant X1, X2 ⊥ Y
    ],
)
def test_degenerate_joints_give_zeros(joint: np.ndarray) -> None:
    result = pid_from_joint(joint)
    np.testing.assert_allclose(terms(result), 0, atol=1e-12)
    assert result.solver == "none"


def test_constant_x1_leaves_only_unique_2() -> None:
    # with X1 constant Δ_p = {p}: everything X2 says about Y is unique to it
    result = pid_from_joint(np.array([[[0.5, 0], [0, 0.5]]]))
    np.testing.assert_allclose(terms(result), [0, 0, 1, 0], atol=1e-12)
    assert result.solver == "none"


STARVED_DUAL = (pid_cvx.DUAL_SOLVER, {"max_iter": 2})
STARVED_CLARABEL = (cp.CLARABEL, {"max_iter": 1})


def test_dual_solves_when_it_converges() -> None:
    result = pid_from_joint(random_joint((10, 10, 5), seed=0))
    assert result.solver == pid_cvx.DUAL_SOLVER
    assert result.status.startswith("optimal")


def test_falls_back_to_clarabel_when_the_dual_stops_early(monkeypatch) -> None:
    attempts = [STARVED_DUAL, *pid_cvx._solver_attempts()[1:]]
    monkeypatch.setattr(pid_cvx, "_solver_attempts", lambda: attempts)
    result = pid_from_joint(gate(lambda a, b: a & b))
    assert result.solver == cp.CLARABEL
    np.testing.assert_allclose(terms(result), [AND_REDUNDANCY, 0, 0, 0.5], atol=1e-6)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_falls_back_to_scs_when_clarabel_stops_early(monkeypatch) -> None:
    attempts = [STARVED_DUAL, STARVED_CLARABEL, *pid_cvx._solver_attempts()[2:]]
    monkeypatch.setattr(pid_cvx, "_solver_attempts", lambda: attempts)
    result = pid_from_joint(gate(lambda a, b: a & b))
    assert result.solver == cp.SCS
    np.testing.assert_allclose(terms(result), [AND_REDUNDANCY, 0, 0, 0.5], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_raises_when_nothing_converges(monkeypatch) -> None:
    monkeypatch.setattr(pid_cvx, "_solver_attempts", lambda: [STARVED_DUAL, STARVED_CLARABEL])
    with pytest.raises(RuntimeError, match=r"dual-ipm .*CLARABEL"):
        pid_from_joint(gate(lambda a, b: a & b))


def paper_program_terms(p: np.ndarray) -> np.ndarray:
    """``[R, U1, U2, S]`` (bits) from the paper's program as written (App. B.1): one dense
    ``[k1, k2]`` variable per label, ``min Σ_y rel_entr(Q_y, Σ_y' Q_y')``, marginal equalities
    per label; solved by Clarabel at tight tolerances."""
    k1, k2, ky = p.shape
    q = [cp.Variable((k1, k2), nonneg=True) for _ in range(ky)]
    pair_mass = sum(q)
    objective = sum(cp.sum(cp.rel_entr(q[y], pair_mass)) for y in range(ky))
    constraints = [
        c
        for y in range(ky)
        for c in (
            cp.sum(q[y], axis=1) == p[:, :, y].sum(axis=1),
            cp.sum(q[y], axis=0) == p[:, :, y].sum(axis=0),
        )
    ]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    q_star = np.stack([np.maximum(q[y].value, 0.0) for y in range(ky)], axis=2)
    info1 = mutual_information(p.sum(axis=1))
    info2 = mutual_information(p.sum(axis=0))
    info12 = mutual_information(p.reshape(-1, ky))
    info_q = entropy(p.sum(axis=(0, 1))) - conditional_entropy(q_star)
    return np.array([info1 + info2 - info_q, info_q - info2, info_q - info1, info12 - info_q])


@pytest.mark.parametrize(
    ("shape", "seed", "zeros"),
    [((10, 10, 5), 20, 0.0), ((10, 10, 5), 21, 0.3), ((8, 6, 4), 22, 0.0), ((4, 7, 3), 23, 0.2)],
)
def test_agrees_with_the_papers_program_to_1e_5_bits(shape, seed: int, zeros: float) -> None:
    p = random_joint(shape, seed, zeros=zeros)
    np.testing.assert_allclose(terms(pid_from_joint(p)), paper_program_terms(p), atol=1e-5)

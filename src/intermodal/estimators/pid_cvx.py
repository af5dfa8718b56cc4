"""Exact partial information decomposition (PID) of a discrete joint ``p(x1, x2, y)``.

Bertschinger et al.'s definition (paper 003 §2.1, §3.1, App. B.1): over
``Δ_p = {q ≥ 0 : q(x1, y) = p(x1, y), q(x2, y) = p(x2, y)}`` one maximiser
``q* = argmax H_q(Y | X1, X2)`` gives all four terms,

- ``U1 = I_q*(X1; Y | X2)``, ``U2 = I_q*(X2; Y | X1)``;
- ``R = I_p(X1; Y) − U1 = I_p(X2; Y) − U2``;
- ``S = I_p(X1, X2; Y) − I_q*(X1, X2; Y)``,

so ``R + U1 + U2 + S = I_p(X1, X2; Y)``. ``H_q(Y | X1, X2) = −Σ rel_entr(q, q(x1, x2))`` with
``q(x1, x2)`` broadcast over y, a jointly convex form cvxpy accepts; the marginal constraints
are sparse matrices over the cells that can be non-zero at all. Joints are ``[k1, k2, ky]``.

The maximiser is first sought through the program's Lagrange dual (``pid_dual``: ``(k1 + k2)·ky``
variables instead of one per cell, a certified duality gap); when that gap is not below
``DUAL_ACCEPTED_GAP`` the cvxpy program above is solved instead (Clarabel, then SCS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

if TYPE_CHECKING:
    import cvxpy as cp

from intermodal.estimators.information import (
    conditional_entropy,
    entropy,
    mutual_information,
    validated_joint,
)
from intermodal.estimators.pid_dual import maximiser_dual
from intermodal.schemas.tables import PIDTerms

CLIP_TOLERANCE = 1e-7
# Mutual information below this (nats) is treated as exactly zero: every PID term is then zero.
ZERO_INFORMATION = 1e-12
# the dual's maximiser is used when its certified gap in H(Y | X1, X2) is at most this (nats);
# Clarabel's own default tolerances are about 1e-8
DUAL_ACCEPTED_GAP = 1e-9
DUAL_SOLVER = "dual-ipm"
# found once: threadpool_limits() would rescan the loaded libraries on every solve (~3 ms)
_THREADPOOLS = ThreadpoolController()


@dataclass(frozen=True)
class PIDResult:
    """PID terms in units of ``log(base)``, the maximiser ``q [k1, k2, ky]`` and how it was
    found (``solver`` is ``"none"`` when ``Δ_p`` needs no solve)."""

    terms: PIDTerms  # R, U1, U2, S
    mutual_information: float
    q: np.ndarray
    solver: str
    status: str


def _incidence(cell_groups: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """``[n_groups, n_cells]`` 0/1 matrix: row g sums the cells whose group is g."""
    n_cells = len(cell_groups)
    ones = np.ones(n_cells)
    return sp.csr_matrix((ones, (cell_groups, np.arange(n_cells))), shape=(n_groups, n_cells))


def _problem(p: np.ndarray) -> tuple[cp.Problem, cp.Variable, np.ndarray]:
    """The convex program over the cells of ``Δ_p``'s support and that support ``[k1, k2, ky]``."""
    import cvxpy as cp  # 0.8 s to import: only a joint the dual cannot certify pays it

    k1, k2, ky = p.shape
    p1, p2 = p.sum(axis=1), p.sum(axis=0)
    support = (p1[:, None, :] > 0) & (p2[None, :, :] > 0)
    i1, i2, iy = np.nonzero(support)
    _, pair = np.unique(i1 * k2 + i2, return_inverse=True)
    pairs = _incidence(pair, pair.max() + 1)
    keep1 = np.flatnonzero(p1.ravel() > 0)
    # per y the support is complete bipartite between x1 and x2, so the two marginal blocks
    # share one redundant row; dropping it keeps the equality constraints full rank
    mask2 = p2 > 0
    mask2[mask2.argmax(axis=0), np.arange(ky)] = False
    keep2 = np.flatnonzero(mask2.ravel())
    a1 = _incidence(i1 * ky + iy, k1 * ky)[keep1]
    a2 = _incidence(i2 * ky + iy, k2 * ky)[keep2]
    q = cp.Variable(len(i1), nonneg=True)
    # −H_q(Y | X1, X2): each cell against its (x1, x2) mass, repeated over y
    objective = cp.Minimize(cp.sum(cp.rel_entr(q, pairs.T @ (pairs @ q))))
    constraints = [a1 @ q == p1.ravel()[keep1], a2 @ q == p2.ravel()[keep2]]
    return cp.Problem(objective, constraints), q, support


def _solver_attempts() -> list[tuple[str, dict]]:
    """Solvers in the order tried, with their options: the dual first, then the cvxpy program."""
    import cvxpy as cp

    attempts = [
        (DUAL_SOLVER, {"max_iter": 200}),
        (cp.CLARABEL, {}),
        (cp.SCS, {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}),
    ]
    if cp.ECOS in cp.installed_solvers():
        attempts.append((cp.ECOS, {}))
    return attempts


def _dual_maximiser(p: np.ndarray, options: dict) -> tuple[np.ndarray, str]:
    """``maximiser_dual``'s ``q*`` and status; RuntimeError when it fails or its gap is too
    wide to trust."""
    # the Newton systems are a few hundred wide: BLAS threads only add contention there
    with _THREADPOOLS.limit(limits=1, user_api="blas"):
        q, diagnostics = maximiser_dual(p, **options)
    gap = diagnostics["duality_gap"]
    if not gap <= DUAL_ACCEPTED_GAP:  # also refuses a NaN gap
        raise RuntimeError(f"duality gap {gap:.1e} nats")
    return q, f"optimal (gap {gap:.1e} nats)"


def _maximiser(p: np.ndarray) -> tuple[np.ndarray, str, str]:
    """``q* [k1, k2, ky]`` (clamped to ≥ 0), the solver that found it and its status."""
    import cvxpy as cp

    tried = []
    program = None
    for solver, options in _solver_attempts():
        if solver == DUAL_SOLVER:
            try:
                q_dual, status = _dual_maximiser(p, options)
                return q_dual, solver, status
            except RuntimeError as error:
                tried.append(f"{solver} ({error})")
                continue
        problem, q, support = program = program or _problem(p)
        try:
            problem.solve(solver=solver, **options)
        except cp.SolverError as error:
            tried.append(f"{solver} ({error})")
            continue
        if problem.status == cp.OPTIMAL:
            q_star = np.zeros_like(p)
            q_star[support] = np.maximum(q.value, 0.0)
            return q_star, solver, problem.status
        tried.append(f"{solver} ({problem.status})")
    raise RuntimeError(f"no solver converged on the PID program; tried {', '.join(tried)}")


def _clipped(value: float) -> float:
    return 0.0 if -CLIP_TOLERANCE < value < 0.0 else float(value)


def pid_from_joint(p: np.ndarray, *, base: float = 2) -> PIDResult:
    """Exact (BROJA) PID of a joint ``p [k1, k2, ky]`` with logs in ``base``.

    ``p`` must be finite, non-negative and sum to 1 within 1e-6 (it is renormalised).
    Raises ValueError on a bad joint and RuntimeError when no solver converges.
    """
    p = validated_joint(p)
    p1, p2 = p.sum(axis=1), p.sum(axis=0)
    info1, info2 = mutual_information(p1), mutual_information(p2)
    info12 = mutual_information(p.reshape(-1, p.shape[2]))
    n_values = [np.count_nonzero(p.sum(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    if info12 <= ZERO_INFORMATION or min(n_values) == 1:
        # a constant X1 or X2 pins Δ_p to {p}; with Y constant or independent of (X1, X2),
        # p already attains the largest H(Y | X1, X2) = H(Y)
        q_star, solver, status = p, "none", "trivial"
    else:
        q_star, solver, status = _maximiser(p)
    # I_q*(X1, X2; Y) through p's H(Y), so the identities hold exactly for q* ∈ Δ_p
    info_q = entropy(p.sum(axis=(0, 1))) - conditional_entropy(q_star)
    scale = np.log(base)
    return PIDResult(
        terms=PIDTerms(
            R=_clipped((info1 + info2 - info_q) / scale),
            U1=_clipped((info_q - info2) / scale),
            U2=_clipped((info_q - info1) / scale),
            S=_clipped((info12 - info_q) / scale),
        ),
        mutual_information=float(info12 / scale),
        q=q_star,
        solver=solver,
        status=status,
    )

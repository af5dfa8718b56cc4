"""The BROJA PID maximiser ``q*`` through its Lagrange dual, solved by an interior-point method.

The primal of ``pid_cvx`` is ``min Σ q log(q / q(x1, x2))`` over ``q ≥ 0`` with
``q(x1, y) = p(x1, y)`` and ``q(x2, y) = p(x2, y)``. Minimising its Lagrangian over ``q`` one
``(x1, x2)`` pair at a time (``q = ν · r`` with ``r`` a distribution over y) leaves
``−ν · logsumexp_y(λ(x1, y) + μ(x2, y))``, bounded below in ``ν ≥ 0`` only when the
log-sum-exp is ≤ 0. The dual is therefore

    max  Σ λ(x1, y) p(x1, y) + Σ μ(x2, y) p(x2, y)
    s.t. f(x1, x2) = logsumexp_y(λ(x1, y) + μ(x2, y)) ≤ 0   for every pair (x1, x2),

and at the optimum ``q*(x1, x2, y) = ν(x1, x2) · softmax_y(λ + μ)`` with ``ν`` the constraints'
multipliers. Only ``(k1 + k2) · ky`` variables and ``k1 · k2`` constraints remain, so a dense
Newton system replaces the conic solve over all ``k1 · k2 · ky`` cells.

A Mehrotra predictor-corrector solves it, with a barrier method as the slower fallback when
the former stalls. The dual residual is exactly the marginal error of ``ν · softmax``, so that
``q`` is feasible to the solver tolerance; a few per-label row/column rescalings (which only
shift ``λ`` and ``μ``, keeping ``q`` in the optimal family) then make it exact, and the gap
between its ``−H`` and the dual objective certifies how close to optimal it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.linalg

from intermodal.estimators.information import conditional_entropy, validated_joint

# predictor-corrector: sufficient decrease of the KKT residual, backtracking factor, how far
# towards the boundary a step may go and the least centring weight (Mehrotra's σ)
SUFFICIENT_DECREASE = 0.01
BACKTRACK = 0.5
FRACTION_TO_BOUNDARY = 0.99
MIN_CENTRING = 1e-3
# a step this small means the search is stuck (predictor-corrector) or at round-off (barrier)
STALLED_STEP = 1e-12
# the predictor-corrector counts as stalled when its gap has not halved in this many steps
STALL_WINDOW = 15
# barrier fallback: growth of t per centring, Armijo fraction, and centring stops once the
# Newton decrement is below this / t (φ_t then within a small fraction of the gap)
BARRIER_GROWTH = 20.0
ARMIJO = 0.25
CENTRING_TOLERANCE = 1e-2
# t · (Newton decrement) below which the full step is taken (quadratic convergence region)
NEWTON_REGION = 0.25
MAX_REBALANCE_SWEEPS = 50
REBALANCE_TOLERANCE = 1e-15


def _free_masks(p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ``λ [k1, ky]`` and ``μ [k2, ky]`` entries are optimised.

    Entries with zero marginal are absent (−∞). Per y the support is complete bipartite in
    ``(x1, x2)``, so ``λ(·, y) + c``, ``μ(·, y) − c`` is a flat direction; fixing one ``μ`` per
    label at 0 removes it and keeps the Newton matrix non-singular.
    """
    free2 = p2 > 0
    free2[free2.argmax(axis=0), np.arange(p2.shape[1])] = False
    return p1 > 0, free2


def _active_pairs(p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i1, i2)`` of pairs with at least one supported label; the rest carry no mass."""
    shared = (p1 > 0).astype(float) @ (p2 > 0).astype(float).T
    return np.nonzero(shared > 0)


def _log_sum_exp(
    lam: np.ndarray, mu: np.ndarray, i1: np.ndarray, i2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Constraint values ``f [n_pairs]`` and softmaxes ``s [n_pairs, ky]`` of ``λ(i1) + μ(i2)``.

    Every active pair has a finite entry, so the row maxima are finite and −∞ entries give 0.
    """
    scores = lam[i1] + mu[i2]
    peak = scores.max(axis=1, keepdims=True)
    weights = np.exp(scores - peak)
    total = weights.sum(axis=1, keepdims=True)
    return (peak + np.log(total))[:, 0], weights / total


def _pair_mass(nu: np.ndarray, soft: np.ndarray, i1, i2, k1: int, k2: int) -> np.ndarray:
    """``q [k1, k2, ky] = ν · softmax`` on the active pairs, zero elsewhere."""
    q = np.zeros((k1, k2, soft.shape[1]))
    q[i1, i2] = nu[:, None] * soft
    return q


def _pair_blocks(nu, soft, slack, i1, i2, k1: int, k2: int) -> np.ndarray:
    """Per-pair Newton blocks ``[k1, k2, ky, ky]`` (zero for inactive pairs).

    The reduced primal-dual Newton matrix is ``Σ_k ν_k ∇²f_k + (ν_k / −f_k) ∇f_k ∇f_kᵀ``; pair k
    touches only ``λ(i1)`` and ``μ(i2)``, with ``ν diag(s) + (ν / −f − ν) s sᵀ`` on all four of
    its ky × ky positions.
    """
    ky = soft.shape[1]
    blocks = (nu / slack - nu)[:, None, None] * (soft[:, :, None] * soft[:, None, :])
    blocks[:, np.arange(ky), np.arange(ky)] += nu[:, None] * soft
    grid = np.zeros((k1, k2, ky, ky))
    grid[i1, i2] = blocks
    return grid


def _newton_factor(
    grid: np.ndarray, free1: np.ndarray, free2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Factorise the Newton matrix once for the predictor and corrector solves.

    The λλ part is block diagonal (one ky × ky block per x1), so the Cholesky factorisation of
    the whole matrix splits into batched small factors ``L1 [k1, ky, ky]`` for λ and one dense
    factor of the Schur complement in μ, ``[k2 · ky]²``. Non-free entries get an identity row
    (and a zero right-hand side from the caller), which pins their step at 0. Returns
    ``L1⁻¹``, ``W = L1⁻¹ B [k1 · ky, k2 · ky]`` and the complement's Cholesky factor.
    """
    k1, k2, ky, _ = grid.shape
    diag1 = grid.sum(axis=1)
    diag1[~free1] = 0.0
    diag1[:, np.arange(ky), np.arange(ky)] += ~free1
    coupling = grid.transpose(0, 2, 1, 3).reshape(k1, ky, k2 * ky) * free2.ravel()
    diag2 = np.zeros((k2, ky, k2, ky))
    diag2[np.arange(k2), :, np.arange(k2), :] = grid.sum(axis=0)
    diag2 = diag2.reshape(k2 * ky, k2 * ky)
    pinned2 = ~free2.ravel()
    diag2[pinned2] = 0.0
    diag2[:, pinned2] = 0.0
    diag2[pinned2, pinned2] = 1.0
    # triangular inverses stay accurate when L1 is badly conditioned, and they batch well
    inverse1 = np.linalg.inv(_shifted_cholesky(diag1, np.linalg.cholesky))
    whitened = (inverse1 @ coupling).reshape(k1 * ky, k2 * ky)
    # the iterates are finite by construction: skip scipy's per-call finiteness scan
    factorise = partial(scipy.linalg.cho_factor, check_finite=False)
    schur = _shifted_cholesky(diag2 - whitened.T @ whitened, factorise)
    return inverse1, whitened, schur


def _shifted_cholesky(matrix: np.ndarray, factorise):
    """``factorise(matrix + δ I)`` with the smallest δ in 0, 1e-14, 1e-12, ... (relative to the
    largest diagonal entry) that succeeds; ``matrix`` is ``[n, n]`` or a batch ``[b, n, n]``.

    Marginals near 1e-12 make the Newton matrix so ill-conditioned that round-off can cost it
    positive definiteness; a shift that small only perturbs the step, never the iterate's
    feasibility, which the line search guards.
    """
    scale = np.abs(np.diagonal(matrix, axis1=-2, axis2=-1)).max()
    identity = np.eye(matrix.shape[-1])
    for shift in (0.0, *np.logspace(-14, -4, 6)):
        try:
            return factorise(matrix + shift * scale * identity)
        except np.linalg.LinAlgError:
            continue
    raise RuntimeError("PID dual Newton matrix is not positive definite")


def _newton_solve(
    factor: tuple[np.ndarray, np.ndarray, tuple], rhs1: np.ndarray, rhs2: np.ndarray
) -> np.ndarray:
    """Stacked step ``[Δλ, Δμ]`` for right-hand sides ``rhs1 [k1, ky]``, ``rhs2 [k2, ky]``.

    Block elimination: ``u = L1⁻¹ r1``, ``S Δμ = r2 − Wᵀ u``, ``Δλ = L1⁻ᵀ (u − W Δμ)``.
    """
    inverse1, whitened, schur = factor
    k1, ky, _ = inverse1.shape
    whitened_rhs = (inverse1 @ rhs1[:, :, None]).ravel()
    rhs = rhs2.ravel() - whitened.T @ whitened_rhs
    step2 = scipy.linalg.cho_solve(schur, rhs, check_finite=False)
    back = (whitened_rhs - whitened @ step2).reshape(k1, ky, 1)
    step1 = inverse1.transpose(0, 2, 1) @ back
    return np.concatenate([step1.ravel(), step2])


def _rebalanced(q: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """``q`` rescaled per label by ``a(x1, y) b(x2, y)`` until both marginals match.

    Such factors only shift ``λ`` and ``μ``, so ``q`` stays of the optimal form while the
    small interior-point residual is removed (iterative proportional fitting per y).
    """
    for _ in range(MAX_REBALANCE_SWEEPS):
        q1 = q.sum(axis=1)
        q = q * np.divide(p1, q1, out=np.zeros_like(p1), where=q1 > 0)[:, None, :]
        q2 = q.sum(axis=0)
        q = q * np.divide(p2, q2, out=np.zeros_like(p2), where=q2 > 0)[None, :, :]
        if _marginal_error(q, p1, p2) <= REBALANCE_TOLERANCE:
            break
    return q


def _marginal_error(q: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> float:
    """Largest absolute violation of ``q(x1, y) = p1`` and ``q(x2, y) = p2``."""
    return float(max(np.abs(q.sum(axis=1) - p1).max(), np.abs(q.sum(axis=0) - p2).max()))


def _split(z: np.ndarray, k1: int, ky: int) -> tuple[np.ndarray, np.ndarray]:
    """``λ [k1, ky]`` and ``μ [k2, ky]`` views of the stacked dual vector."""
    return z[: k1 * ky].reshape(k1, ky), z[k1 * ky :].reshape(-1, ky)


def _start(p1, p2, free2, i1, i2) -> tuple[np.ndarray, np.ndarray]:
    """Strictly feasible ``(z, ν [n_pairs])`` whose ``ν · softmax`` is the coupling
    ``q0 = p(x1, y) p(x2, y) / p(y)``.

    ``q0`` lies in ``Δ_p``, so the marginal residual starts at zero, and its log-scale dual
    already carries tiny marginals (1e-12) instead of reaching them a unit Newton step at a
    time. ``λ + μ = log q0 − 1`` gives ``f = log q0(x1, x2) − 1 ≤ −1``; pinned μ entries are 0.
    """
    with np.errstate(divide="ignore"):
        log1, log2 = np.log(p1), np.log(p2)
    pinned = np.where(free2 | (p2 == 0), 0.0, log2).sum(axis=0)
    # labels never seen have p1 = p2 = 0 and stay −∞ rather than −∞ − (−∞)
    label = p1.sum(axis=0)
    log_label = np.log(label, out=np.zeros_like(label), where=label > 0)
    lam = np.where(p1 > 0, log1 - log_label, -np.inf) + pinned - 1.0
    mu = log2 - pinned
    return np.concatenate([lam.ravel(), mu.ravel()]), np.exp(lam[i1] + mu[i2] + 1.0).sum(axis=1)


@dataclass(frozen=True)
class _Dual:
    """The dual program of one joint: marginals ``p1 [k1, ky]``, ``p2 [k2, ky]``, which of
    ``λ``/``μ`` are free, and the active pairs ``(i1, i2)``."""

    p1: np.ndarray
    p2: np.ndarray
    free1: np.ndarray
    free2: np.ndarray
    i1: np.ndarray
    i2: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.p1.shape[0], self.p2.shape[0], self.p1.shape[1]

    def constraints(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``f [n_pairs]`` and softmaxes ``[n_pairs, ky]`` at the stacked dual vector ``z``."""
        k1, _, ky = self.shape
        return _log_sum_exp(*_split(z, k1, ky), self.i1, self.i2)

    def primal(self, nu: np.ndarray, soft: np.ndarray) -> np.ndarray:
        """``ν · softmax [k1, k2, ky]``."""
        k1, k2, _ = self.shape
        return _pair_mass(nu, soft, self.i1, self.i2, k1, k2)

    def marginal_gap(self, nu: np.ndarray, soft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p's marginals minus those of ``ν · softmax``, on the free entries only."""
        q = self.primal(nu, soft)
        return (
            np.where(self.free1, self.p1 - q.sum(axis=1), 0.0),
            np.where(self.free2, self.p2 - q.sum(axis=0), 0.0),
        )

    def factor(self, nu: np.ndarray, soft: np.ndarray, slack: np.ndarray) -> tuple:
        """Newton matrix factor for multipliers ``ν`` and slacks ``−f`` (``_newton_factor``)."""
        k1, k2, _ = self.shape
        grid = _pair_blocks(nu, soft, slack, self.i1, self.i2, k1, k2)
        return _newton_factor(grid, self.free1, self.free2)

    def directional(self, soft: np.ndarray, step: np.ndarray) -> np.ndarray:
        """``∇f_kᵀ Δz [n_pairs]``: the softmax-weighted change of ``λ(i1) + μ(i2)``."""
        k1, _, ky = self.shape
        step_lam, step_mu = _split(step, k1, ky)
        return (soft * (step_lam[self.i1] + step_mu[self.i2])).sum(axis=1)


def _max_step(values: np.ndarray, steps: np.ndarray) -> float:
    """Largest step in [0, 1] keeping ``values + step · steps ≥ 0`` (all ``values`` > 0)."""
    shrinking = steps < 0
    return min(1.0, float((-values[shrinking] / steps[shrinking]).min(initial=np.inf)))


def _merit(dual: _Dual, nu: np.ndarray, f: np.ndarray, soft: np.ndarray, target: float) -> float:
    """Norm of the perturbed KKT residual: marginal error and ``ν · slack − target``."""
    gap1, gap2 = dual.marginal_gap(nu, soft)
    return float(np.sqrt((gap1**2).sum() + (gap2**2).sum() + ((-nu * f - target) ** 2).sum()))


def _predictor_corrector(
    dual: _Dual, z: np.ndarray, nu: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Mehrotra predictor-corrector from a strictly feasible ``(z, ν)``.

    Returns the last ``(z, ν)``, the iterations used and whether both the gap ``Σ ν · −f`` and
    the largest marginal residual reached ``tol``. It stops early (unconverged) when it stalls:
    a slack driven towards round-off while the gap is large can block nearly every step.
    """
    f, soft = dual.constraints(z)
    gaps = []
    for iteration in range(1, max_iter + 1):
        slack = -f
        gap = float(nu @ slack)
        gap1, gap2 = dual.marginal_gap(nu, soft)
        if max(np.abs(gap1).max(), np.abs(gap2).max()) <= tol and gap <= tol:
            return z, nu, iteration, True
        gaps.append(gap)
        if len(gaps) > STALL_WINDOW and gap > 0.5 * gaps[-STALL_WINDOW - 1]:
            return z, nu, iteration, False
        factor = dual.factor(nu, soft, slack)

        def direction(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # Newton step towards ν_k · slack_k = target_k: (Δz, Δν, ∇f_kᵀ Δz)
            step_z = _newton_solve(factor, *dual.marginal_gap(target / slack, soft))  # noqa: B023
            grad_dot = dual.directional(soft, step_z)  # noqa: B023
            return step_z, (nu * grad_dot - nu * slack + target) / slack, grad_dot  # noqa: B023

        # predictor: pure Newton on the KKT conditions; its progress sets the centring weight
        _, step_nu, grad_dot = direction(np.zeros_like(nu))
        size = min(_max_step(nu, step_nu), _max_step(slack, -grad_dot))
        centred = gap / len(nu)
        predicted = float((nu + size * step_nu) @ (slack - size * grad_dot)) / len(nu)
        # Mehrotra's centring weight, floored so no slack is driven below round-off in one step
        target = min(1.0, max(predicted / centred, MIN_CENTRING ** (1 / 3))) ** 3 * centred
        # corrector: centred target plus the predictor's second-order complementarity term
        step_z, step_nu, grad_dot = direction(target + step_nu * grad_dot)
        size = FRACTION_TO_BOUNDARY * min(_max_step(nu, step_nu), _max_step(slack, -grad_dot))
        start = _merit(dual, nu, f, soft, target)
        while True:
            z_new, nu_new = z + size * step_z, nu + size * step_nu
            f_new, soft_new = dual.constraints(z_new)
            if (
                f_new.max() < 0
                and _merit(dual, nu_new, f_new, soft_new, target)
                <= (1 - SUFFICIENT_DECREASE * size) * start
            ):
                break
            size *= BACKTRACK
            if size < STALLED_STEP:
                return z, nu, iteration, False
        z, nu, f, soft = z_new, nu_new, f_new, soft_new
    return z, nu, max_iter, False


def _barrier(
    dual: _Dual, z: np.ndarray, gap: float, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Barrier method from a strictly feasible ``z`` whose duality gap is about ``gap``.

    Newton centring on ``φ_t(z) = −b·z − Σ log(−f) / t`` for growing ``t``; the centre's primal
    is ``ν · softmax`` with ``ν = 1 / (t · −f)`` at gap ``n_pairs / t``. Each centring is damped
    Newton on a convex function, so it always progresses; it is the slower, safe fallback.
    Returns the final ``z``, its ``ν`` and the Newton steps used; raises RuntimeError when
    ``max_iter`` steps do not reach ``tol``.
    """
    b = np.concatenate([dual.p1.ravel(), dual.p2.ravel()])
    known = b > 0

    def barrier(z: np.ndarray, t: float) -> tuple[float, np.ndarray, np.ndarray]:
        # φ_t (inf outside the domain), the constraint values f and the softmaxes
        f, soft = dual.constraints(z)
        if f.max() >= 0:
            return np.inf, f, soft
        return float(-(b[known] @ z[known]) - np.log(-f).sum() / t), f, soft

    n_pairs = len(dual.i1)
    t = n_pairs / max(gap, tol)
    value, f, soft = barrier(z, t)
    for iteration in range(1, max_iter + 1):
        nu = 1.0 / (t * -f)
        rhs = dual.marginal_gap(nu, soft)
        step = _newton_solve(dual.factor(nu, soft, -f), *rhs)
        decrement = float(step @ np.concatenate([part.ravel() for part in rhs]))
        size = 1.0
        while decrement > CENTRING_TOLERANCE / t and size >= STALLED_STEP:
            trial, f_trial, soft_trial = barrier(z + size * step, t)
            # near the centre a full Newton step is safe, and Armijo's test drowns in round-off
            quadratic = size == 1.0 and t * decrement <= NEWTON_REGION and np.isfinite(trial)
            if quadratic or trial <= value - ARMIJO * size * decrement:
                z, value, f, soft = z + size * step, trial, f_trial, soft_trial
                break
            size *= BACKTRACK
        else:
            # centred (or at φ_t's round-off floor): done, or tighten the barrier
            if n_pairs / t <= tol:
                return z, nu, iteration
            t *= BARRIER_GROWTH
            value, f, soft = barrier(z, t)
    raise RuntimeError(f"PID dual did not reach tol {tol} in {max_iter} iterations")


def maximiser_dual(
    p: np.ndarray, *, tol: float = 1e-10, max_iter: int = 200
) -> tuple[np.ndarray, dict]:
    """``q* = argmax H_q(Y | X1, X2)`` over ``Δ_p`` for a joint ``p [k1, k2, ky]``.

    Mehrotra predictor-corrector on the dual (module docstring); if its line search stalls the
    barrier method continues from the same point. Returns ``q* [k1, k2, ky]`` and
    diagnostics: ``iterations`` (Newton steps, both methods), ``method`` (``"predictor-corrector"``
    or ``"barrier"``), ``duality_gap`` (``−H_q*`` minus the dual objective, nats: a certificate,
    as ``q*`` is feasible and the dual point strictly feasible), ``marginal_error`` of ``q*`` and
    ``rebalance_change`` (change in ``H_q(Y | X1, X2)`` from the final rescaling, nats).
    ``tol`` bounds the gap and the marginal residual before rescaling. Raises ValueError on a
    bad joint and RuntimeError when ``max_iter`` Newton steps do not reach ``tol``.
    """
    p = validated_joint(p)
    p1, p2 = p.sum(axis=1), p.sum(axis=0)
    free1, free2 = _free_masks(p1, p2)
    dual = _Dual(p1, p2, free1, free2, *_active_pairs(p1, p2))
    z, nu = _start(p1, p2, free2, dual.i1, dual.i2)
    z, nu, iterations, converged = _predictor_corrector(dual, z, nu, tol, max_iter)
    method = "predictor-corrector"
    if not converged:
        gap = float(nu @ -dual.constraints(z)[0])
        z, nu, extra = _barrier(dual, z, gap, tol, max_iter - iterations)
        iterations, method = iterations + extra, "barrier"
    q_interior = dual.primal(nu, dual.constraints(z)[1])
    q = _rebalanced(q_interior, p1, p2)
    known1, known2 = p1 > 0, p2 > 0
    lam, mu = _split(z, *dual.shape[::2])
    dual_value = float(lam[known1] @ p1[known1] + mu[known2] @ p2[known2])
    diagnostics = {
        "iterations": iterations,
        "method": method,
        "duality_gap": -conditional_entropy(q) - dual_value,
        "marginal_error": _marginal_error(q, p1, p2),
        "rebalance_change": conditional_entropy(q) - conditional_entropy(q_interior),
    }
    return q, diagnostics

"""Batched, log-domain, differentiable Sinkhorn projection onto fixed marginals.

PID BATCH (paper 003 §3.2, App. B.3) learns a positive kernel ``A[y, i, j]`` over minibatch rows
``i`` of modality 1 and ``j`` of modality 2 and projects it, per label ``y``, onto the row
marginals ``p̂(y | x1_i) / m`` and the column marginals ``p̂(y | x2_j) / m``. The projection is
the unique plan of the form ``Q = diag(u) · A · diag(v)`` with those marginals (the I-projection
of ``A`` onto them), found by alternately rescaling rows and columns (Sinkhorn's algorithm).

Unlike the reference code (a Python loop over labels, probability space, a 0.01 tolerance),
``sinkhorn`` works on all leading dims at once, keeps the scalings as logs ``f = log u`` and
``g = log v`` (so kernels spanning hundreds of nats neither underflow nor overflow), iterates
until the row marginals are met to ``tol`` and stays differentiable: the iterations are
unrolled in autograd, only the stopping test is taken outside the graph.

Shapes: ``log_a [..., m, n]``, ``log_row [..., m]``, ``log_col [..., n]``, result
``log_q [..., m, n]``; ``...`` is any number (also zero) of leading dims, one slice each.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["common_mass", "sinkhorn", "sinkhorn_with_error"]

LOG_2 = math.log(2.0)
# Without autograd, float64 kernels whose entries span at most this many nats iterate on
# exp-domain scalings (matrix-vector products); wider ones, float32 and autograd stay in logs
SCALING_RANGE = 200.0


def common_mass(log_row: Tensor, log_col: Tensor) -> tuple[Tensor, Tensor]:
    """Both log marginals rescaled to the arithmetic mean of their two totals, per slice.

    ``log_row [..., m]`` and ``log_col [..., n]`` → the same shapes, with
    ``Σ exp(row') = Σ exp(col') = (Σ exp(log_row) + Σ exp(log_col)) / 2`` in every slice: each
    marginal is multiplied by ``mean_mass / own_total`` (``log_row += log(mean_mass) −
    logsumexp(log_row)``, likewise ``log_col``). A plan needs equal row and column totals; in
    PID BATCH the two come from two different classifiers and never agree exactly, and the
    mean treats both alike. Differentiable; marginals of equal mass come back unchanged (up to
    rounding).
    """
    row_total = torch.logsumexp(log_row, dim=-1)
    col_total = torch.logsumexp(log_col, dim=-1)
    log_mean = torch.logaddexp(row_total, col_total) - LOG_2
    return (
        log_row + (log_mean - row_total).unsqueeze(-1),
        log_col + (log_mean - col_total).unsqueeze(-1),
    )


def sinkhorn(
    log_a: Tensor,
    log_row: Tensor,
    log_col: Tensor,
    *,
    n_iters: int = 1000,
    tol: float = 1e-9,
    check_every: int = 10,
    grad_iters: int | None = None,
) -> Tensor:
    """``log_q [..., m, n]``: log of ``diag(u) · A · diag(v)`` with the given (rescaled) marginals.

    ``log_a [..., m, n]`` is the log of a positive kernel; ``-inf`` entries are structural zeros
    and stay ``-inf``, but every row and every column of a slice needs a finite entry.
    ``log_row [..., m]`` and ``log_col [..., n]`` are the log target marginals (finite, i.e.
    positive masses). All three share dtype and device; leading dims are independent slices.

    Masses: when a slice's two marginals have different totals, both are first rescaled to
    the mean of the two totals (``common_mass``), so the plan's row sums are
    ``exp(log_row) · mean_mass / row_total`` and its column sums
    ``exp(log_col) · mean_mass / col_total``, with ``mean_mass = (row_total + col_total) / 2``.

    Each iteration sets ``f = log_row − logsumexp(log_a + g, -1)`` and then
    ``g = log_col − logsumexp(log_a + f, -2)``; the column update comes last, so the columns are
    exact (to rounding) and the largest row-marginal error in probability space,
    ``max |Σ_j q_ij − row_i|`` over the whole batch, measures convergence. It is checked every
    ``check_every`` iterations and the loop stops once it is ``≤ tol``; after ``n_iters``
    the last iterate is returned anyway (``sinkhorn_with_error`` also reports the error).
    ``log_q`` is differentiable w.r.t. ``log_a``, ``log_row`` and ``log_col`` (the iterations
    are unrolled, so autograd keeps a few ``[..., m, n]`` tensors per iteration; without
    autograd one scratch tensor of that shape is reused and returned). ``torch.func.grad``
    works; ``torch.vmap`` does not (the stopping test is data-dependent control flow), nor is
    it needed: leading dims are batched already.
    """
    log_q, _ = sinkhorn_with_error(
        log_a,
        log_row,
        log_col,
        n_iters=n_iters,
        tol=tol,
        check_every=check_every,
        grad_iters=grad_iters,
    )
    return log_q


def sinkhorn_with_error(
    log_a: Tensor,
    log_row: Tensor,
    log_col: Tensor,
    *,
    n_iters: int = 1000,
    tol: float = 1e-9,
    check_every: int = 10,
    grad_iters: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``sinkhorn`` and the final row-marginal error of each slice.

    Returns ``(log_q [..., m, n], error [...])`` where ``error`` (detached, ``log_a``'s dtype)
    is ``max_i |Σ_j q_ij − row_i|`` against the rescaled row marginal (see ``sinkhorn``);
    ``error.max() > tol`` means the loop ran out of ``n_iters`` first.
    """
    _validate(log_a, log_row, log_col, n_iters, tol, check_every)
    if grad_iters is not None and torch.is_grad_enabled():
        with torch.no_grad():
            _, error, g = _iterate(log_a, log_row, log_col, n_iters, tol, check_every)
        # tol 0 and one check at the end: exactly grad_iters iterations
        log_q, _, _ = _iterate(log_a, log_row, log_col, grad_iters, 0.0, grad_iters, g.detach())
        return log_q, error
    log_q, error, _ = _iterate(log_a, log_row, log_col, n_iters, tol, check_every)
    return log_q, error


def _iterate(
    log_a: Tensor,
    log_row: Tensor,
    log_col: Tensor,
    n_iters: int,
    tol: float,
    check_every: int,
    g: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    if log_a.numel() == 0:  # an empty batch: nothing to project (and no maximum to stop on)
        return log_a.clone(), log_a.new_zeros(log_a.shape[:-2]), log_col
    log_row, log_col = common_mass(log_row, log_col)
    # Without autograd one scratch [..., m, n] buffer serves every logsumexp in place; the
    # out-of-place form allocates three such tensors per call, and large allocations come back
    # as fresh pages to fault in (measured 3x slower on the CPU at [10, 1024, 1024]).
    needs_graph = torch.is_grad_enabled() and any(
        x.requires_grad for x in (log_a, log_row, log_col)
    )
    scratch = None if needs_graph else torch.empty_like(log_a)
    # row_lse = logsumexp_j(log_a + g), starting from g = 0: the row update needs it, and with
    # the current f it also gives the current row sums (log Σ_j q_ij = f + row_lse), so the
    # convergence check costs no extra pass over the kernel.
    shift = _scaling_shift(log_a) if scratch is not None and g is None else None
    if shift is not None:
        return _scaled_iterations(
            log_a, log_row, log_col, n_iters, tol, check_every, scratch, shift
        )
    g = torch.zeros_like(log_col) if g is None else g
    row_lse = _logsumexp_shifted(log_a, g.unsqueeze(-2), -1, scratch)
    f = log_row - row_lse
    error = log_a.new_full(log_a.shape[:-2], math.inf)
    for done in range(1, n_iters + 1):
        f = log_row - row_lse
        g = log_col - _logsumexp_shifted(log_a, f.unsqueeze(-1), -2, scratch)
        row_lse = _logsumexp_shifted(log_a, g.unsqueeze(-2), -1, scratch)
        if done % check_every == 0 or done == n_iters:
            error = _row_error(f, row_lse, log_row)
            if error.max().item() <= tol:
                break
    if scratch is None:
        return log_a + f.unsqueeze(-1) + g.unsqueeze(-2), error, g
    # the scratch pages are already touched: the plan goes there instead of fresh memory
    return torch.add(log_a, f.unsqueeze(-1), out=scratch).add_(g.unsqueeze(-2)), error, g


def _scaling_shift(log_a: Tensor) -> Tensor | None:
    """Each slice's largest entry ``[..., 1, 1]`` when every slice spans at most
    ``SCALING_RANGE`` nats (float64), else None (a kernel with structural zeros spans
    infinitely many and stays in the log domain)."""
    if log_a.dtype != torch.float64:
        return None
    low, high = log_a.flatten(-2).aminmax(dim=-1)
    if not bool(((high - low) <= SCALING_RANGE).all()):
        return None
    return high[..., None, None]


def _scaled_iterations(
    log_a: Tensor,
    log_row: Tensor,
    log_col: Tensor,
    n_iters: int,
    tol: float,
    check_every: int,
    scratch: Tensor,
    shift: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The same iterations as scalings ``u = exp(f + shift)``, ``v = exp(g)`` of the kernel
    ``K = exp(log_a − shift)`` (``shift`` the slice's largest entry): two matrix-vector
    products per iteration instead of two logsumexp passes over ``[..., m, n]``. The entries
    of K lie in ``[exp(−SCALING_RANGE), 1]``, so neither K nor the scalings leave float64's
    range; the plan comes back in the log domain."""
    kernel = torch.sub(log_a, shift, out=scratch).exp_()
    row, col = log_row.exp(), log_col.exp()
    u, v = torch.ones_like(row), torch.ones_like(col)
    error = log_a.new_full(log_a.shape[:-2], math.inf)
    for done in range(1, n_iters + 1):
        u = row / (kernel @ v.unsqueeze(-1)).squeeze(-1)
        v = col / (u.unsqueeze(-2) @ kernel).squeeze(-2)  # uᵀK: faster than Kᵀu
        if done % check_every == 0 or done == n_iters:
            error = (u * (kernel @ v.unsqueeze(-1)).squeeze(-1) - row).abs().amax(dim=-1)
            if error.max().item() <= tol:
                break
    f, g = u.log() - shift[..., 0], v.log()
    return torch.add(log_a, f.unsqueeze(-1), out=scratch).add_(g.unsqueeze(-2)), error, g


def _logsumexp_shifted(log_a: Tensor, shift: Tensor, dim: int, scratch: Tensor | None) -> Tensor:
    """``logsumexp(log_a + shift, dim)``, ``shift`` broadcasting against ``log_a [..., m, n]``;
    computed inside ``scratch`` (``log_a``'s shape) when given, outside autograd."""
    if scratch is None:
        return torch.logsumexp(log_a + shift, dim=dim)
    torch.add(log_a, shift, out=scratch)
    # finite: every row and column has a finite entry and the shifts are finite
    top = scratch.amax(dim=dim, keepdim=True)
    return scratch.sub_(top).exp_().sum(dim=dim).log_().add_(top.squeeze(dim))


def _row_error(f: Tensor, row_lse: Tensor, log_row: Tensor) -> Tensor:
    """``max_i |exp(f_i + row_lse_i) − exp(log_row_i)|`` ``[...]``, outside autograd (a stopping
    test only: it must neither enter the graph nor keep tensors alive)."""
    with torch.no_grad():
        sums = (f.detach() + row_lse.detach()).exp()
        return (sums - log_row.detach().exp()).abs().amax(dim=-1)


def _validate(
    log_a: Tensor, log_row: Tensor, log_col: Tensor, n_iters: int, tol: float, check_every: int
) -> None:
    if n_iters < 1:
        raise ValueError(f"n_iters must be at least 1, got {n_iters}")
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")
    if not tol > 0:  # also rejects NaN
        raise ValueError(f"tol must be positive, got {tol}")
    if log_a.ndim < 2:
        raise ValueError(f"log_a must be [..., m, n], got shape {tuple(log_a.shape)}")
    *batch, m, n = log_a.shape
    if m < 1 or n < 1:
        raise ValueError(f"log_a must have non-empty rows and columns, got {tuple(log_a.shape)}")
    if tuple(log_row.shape) != (*batch, m) or tuple(log_col.shape) != (*batch, n):
        raise ValueError(
            f"log_a {tuple(log_a.shape)} needs log_row {(*batch, m)} and log_col "
            f"{(*batch, n)}, got log_row {tuple(log_row.shape)} and log_col "
            f"{tuple(log_col.shape)}"
        )
    if (
        not log_a.is_floating_point()
        or log_row.dtype != log_a.dtype
        or (log_col.dtype != log_a.dtype)
    ):
        raise ValueError(
            "log_a, log_row and log_col must share one floating dtype, got "
            f"{log_a.dtype}, {log_row.dtype}, {log_col.dtype}"
        )
    if log_row.device != log_a.device or log_col.device != log_a.device:
        raise ValueError(
            f"log_a, log_row and log_col must be on one device, got {log_a.device}, "
            f"{log_row.device}, {log_col.device}"
        )
    if log_a.numel() == 0:
        return
    with torch.no_grad():
        # amax propagates NaN, so one comparison rejects NaN and +inf alike
        if not log_a.amax() < math.inf:
            raise ValueError("log_a must not contain NaN or +inf (-inf marks a zero entry)")
        if not (torch.isfinite(log_row).all() and torch.isfinite(log_col).all()):
            raise ValueError("log_row and log_col must be finite (every target mass positive)")
        finite = log_a > -math.inf
        if not (finite.any(dim=-1).all() and finite.any(dim=-2).all()):
            raise ValueError(
                "every row and every column of log_a needs a finite entry (an all -inf row or "
                "column cannot carry its positive marginal)"
            )

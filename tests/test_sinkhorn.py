"""Sinkhorn projection: marginals, mass rescaling, diag(u)·A·diag(v) form, POT, gradients,
structural zeros, validation, running out of iterations."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from intermodal.estimators.sinkhorn import (
    SCALING_RANGE,
    common_mass,
    sinkhorn,
    sinkhorn_with_error,
)

DOUBLE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: threads only add overhead; restore the setting for later test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_problem(
    shape: tuple[int, ...],
    seed: int = 0,
    scale: float = 1.0,
    row_mass: float = 1.0,
    col_mass: float = 1.0,
    dtype: torch.dtype = DOUBLE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_a [*shape]`` (``scale``·N(0, 1)) and log marginals with the given total per slice."""
    generator = torch.Generator().manual_seed(seed)
    log_a = scale * torch.randn(shape, generator=generator, dtype=DOUBLE)
    row = torch.rand(shape[:-1], generator=generator, dtype=DOUBLE) + 0.1
    col = torch.rand((*shape[:-2], shape[-1]), generator=generator, dtype=DOUBLE) + 0.1
    row = row_mass * row / row.sum(-1, keepdim=True)
    col = col_mass * col / col.sum(-1, keepdim=True)
    return log_a.to(dtype), row.log().to(dtype), col.log().to(dtype)


def interaction(log_q: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """``d[i, j] − d[i, 0] − d[0, j] + d[0, 0]`` of ``d = log_q − log_a``: zero exactly when
    ``d`` is a row term plus a column term."""
    d = log_q - log_a
    return d - d[..., :, :1] - d[..., :1, :] + d[..., :1, :1]


def test_marginals_met_batched():
    log_a, log_row, log_col = random_problem((3, 4, 50, 60))
    log_q = sinkhorn(log_a, log_row, log_col)
    q = log_q.exp()
    assert log_q.shape == (3, 4, 50, 60)
    assert (q.sum(-1) - log_row.exp()).abs().max() <= 1e-6
    assert (q.sum(-2) - log_col.exp()).abs().max() <= 1e-6


def test_no_leading_dims_and_float32():
    log_a, log_row, log_col = random_problem((30, 40), seed=1, dtype=torch.float32)
    log_q, error = sinkhorn_with_error(log_a, log_row, log_col, tol=1e-6)
    assert log_q.dtype == torch.float32
    assert error.shape == ()
    assert error <= 1e-6
    assert (log_q.exp().sum(-2) - log_col.exp()).abs().max() <= 1e-6


def test_graph_and_no_graph_paths_agree():
    """Without autograd the iterations run in a scratch buffer; with it, out of place."""
    log_a, log_row, log_col = random_problem((2, 30, 20), seed=12, scale=3.0)
    plain, plain_error = sinkhorn_with_error(log_a, log_row, log_col, n_iters=7)
    leaf = log_a.clone().requires_grad_()
    tracked, tracked_error = sinkhorn_with_error(leaf, log_row, log_col, n_iters=7)
    assert tracked.requires_grad
    assert not plain.requires_grad
    torch.testing.assert_close(tracked.detach(), plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(tracked_error, plain_error, rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [1.0, 15.0, 300.0])
def test_scalings_and_logs_agree_from_narrow_to_wide_kernels(scale: float):
    """Without autograd a float64 kernel spanning at most SCALING_RANGE nats iterates on
    exp-domain scalings (scale 1 and 15 here); a wider one (scale 300: about 2000 nats) stays
    in the log domain. Both give the log-domain iterates (wide kernels converge slowly: the
    column marginals, updated last, are met anyway)."""
    log_a, log_row, log_col = random_problem((2, 30, 20), seed=13, scale=scale)
    span = float((log_a.flatten(-2).amax(-1) - log_a.flatten(-2).amin(-1)).max())
    assert (span <= SCALING_RANGE) == (scale < 100)
    plain, error = sinkhorn_with_error(log_a, log_row, log_col, n_iters=300, tol=1e-12)
    leaf = log_a.clone().requires_grad_()
    tracked, tracked_error = sinkhorn_with_error(leaf, log_row, log_col, n_iters=300, tol=1e-12)
    torch.testing.assert_close(tracked.detach(), plain, rtol=0, atol=1e-9)
    torch.testing.assert_close(tracked_error, error, rtol=1e-6, atol=1e-15)
    torch.testing.assert_close(plain.exp().sum(-2), log_col.exp(), rtol=0, atol=1e-12)


def test_empty_batch():
    log_a, log_row, log_col = random_problem((0, 3, 4))
    log_q, error = sinkhorn_with_error(log_a, log_row, log_col)
    assert log_q.shape == (0, 3, 4)
    assert error.shape == (0,)


def test_unequal_masses_meet_rescaled_targets():
    log_a, log_row, log_col = random_problem((2, 3, 20, 30), seed=2, row_mass=1.0, col_mass=2.0)
    # make the totals differ from slice to slice too
    log_row = log_row + torch.linspace(-1.0, 1.0, 6, dtype=DOUBLE).reshape(2, 3, 1)
    row_total = log_row.exp().sum(-1, keepdim=True)
    col_total = log_col.exp().sum(-1, keepdim=True)
    mean_mass = (row_total + col_total) / 2
    log_q = sinkhorn(log_a, log_row, log_col, tol=1e-13)
    q = log_q.exp()
    torch.testing.assert_close(q.sum(-1), log_row.exp() * mean_mass / row_total, rtol=0, atol=1e-8)
    torch.testing.assert_close(q.sum(-2), log_col.exp() * mean_mass / col_total, rtol=0, atol=1e-8)
    torch.testing.assert_close(q.sum((-2, -1)), mean_mass.squeeze(-1), rtol=0, atol=1e-8)


def test_common_mass():
    log_row = torch.tensor([[1.0, 3.0], [0.5, 0.5]], dtype=DOUBLE).log()
    log_col = torch.tensor([[2.0, 2.0, 4.0], [0.25, 0.25, 0.5]], dtype=DOUBLE).log()
    row, col = common_mass(log_row, log_col)
    # totals 4 and 8 → 6; 1 and 1 → 1 (unchanged)
    expected_row = torch.tensor([[1.5, 4.5], [0.5, 0.5]], dtype=DOUBLE)
    expected_col = torch.tensor([[1.5, 1.5, 3.0], [0.25, 0.25, 0.5]], dtype=DOUBLE)
    torch.testing.assert_close(row.exp(), expected_row)
    torch.testing.assert_close(col.exp(), expected_col)


def test_result_is_diagonal_scaling_of_kernel():
    log_a, log_row, log_col = random_problem((3, 15, 12), seed=3, scale=3.0)
    log_q = sinkhorn(log_a, log_row, log_col)
    assert interaction(log_q, log_a).abs().max() <= 1e-10


@pytest.mark.parametrize(("m", "n", "seed"), [(6, 6, 4), (5, 8, 5), (40, 30, 6), (25, 25, 7)])
def test_matches_pot(m: int, n: int, seed: int):
    log_a, log_row, log_col = random_problem((m, n), seed=seed, scale=2.0)
    log_q = sinkhorn(log_a, log_row, log_col, tol=1e-14)
    plan = ot.sinkhorn(
        log_row.exp().numpy(),
        log_col.exp().numpy(),
        -log_a.numpy(),
        reg=1.0,
        method="sinkhorn_log",
        numItermax=100_000,
        stopThr=1e-12,
    )
    np.testing.assert_allclose(log_q.exp().numpy(), plan, rtol=0, atol=1e-8)


def test_gradcheck():
    log_a, log_row, log_col = random_problem((2, 3, 4), seed=8)
    inputs = tuple(x.clone().requires_grad_() for x in (log_a, log_row, log_col))

    def project(log_a, log_row, log_col):
        # a tol below rounding: every evaluation runs the same 200 iterations (a smooth map)
        return sinkhorn(log_a, log_row, log_col, n_iters=200, tol=1e-300)

    assert torch.autograd.gradcheck(project, inputs)


def test_gradients_through_early_stop_match_finite_differences():
    log_a, log_row, log_col = random_problem((2, 6, 5), seed=9)
    weights = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)

    def loss(log_a: torch.Tensor) -> torch.Tensor:
        return (sinkhorn(log_a, log_row, log_col, tol=1e-14).exp() * weights).sum()

    leaf = log_a.clone().requires_grad_()
    loss(leaf).backward()
    grad = leaf.grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().max() > 1e-3
    direction = torch.randn(log_a.shape, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    step = 1e-5
    numeric = (loss(log_a + step * direction) - loss(log_a - step * direction)) / (2 * step)
    assert math.isclose(float(numeric), float((grad * direction).sum()), abs_tol=1e-7)


def test_gradients_from_the_converged_scaling_match_the_unrolled_ones():
    """``grad_iters``: the iterations run without autograd to convergence and only the last
    few are differentiated. The plan is the same; at the fixed point one differentiated
    iteration already gives nearly the unrolled gradient (what PID BATCH's training needs)."""
    log_a, log_row, log_col = random_problem((2, 8, 7), seed=10)
    weights = torch.randn(2, 8, 7, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)

    def plan_and_gradient(grad_iters: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = log_a.clone().requires_grad_()
        log_q = sinkhorn(leaf, log_row, log_col, tol=1e-12, grad_iters=grad_iters)
        (log_q.exp() * weights).sum().backward()
        assert leaf.grad is not None
        return log_q.detach(), leaf.grad

    unrolled_plan, unrolled = plan_and_gradient(None)
    for grad_iters in (1, 3):
        plan, gradient = plan_and_gradient(grad_iters)
        torch.testing.assert_close(plan, unrolled_plan, atol=1e-10, rtol=0)
        cosine = torch.nn.functional.cosine_similarity(gradient.flatten(), unrolled.flatten(), 0)
        assert cosine > 0.9
    # more differentiated iterations come closer to the unrolled gradient
    error = [(plan_and_gradient(k)[1] - unrolled).norm() for k in (1, 10)]
    assert error[1] < error[0]


def test_structural_zeros_stay_zero():
    log_a, log_row, log_col = random_problem((2, 5, 6), seed=10)
    zeros = torch.zeros_like(log_a, dtype=torch.bool)
    # away from row 0 and column 0, which `interaction` takes as references
    zeros[0, 2, 3] = zeros[0, 3, 1] = zeros[1, 4, 2] = zeros[1, 1, 5] = zeros[1, 1, 2] = True
    log_a = log_a.masked_fill(zeros, -math.inf).requires_grad_()
    log_q = sinkhorn(log_a, log_row, log_col)
    assert torch.isneginf(log_q[zeros]).all()
    assert torch.isfinite(log_q[~zeros]).all()
    q = log_q.exp()
    assert (q.sum(-1) - log_row.exp()).abs().max() <= 1e-8
    assert (q.sum(-2) - log_col.exp()).abs().max() <= 1e-8
    with torch.no_grad():
        log_q_finite, log_a_finite = log_q.masked_fill(zeros, 0), log_a.masked_fill(zeros, 0)
        assert interaction(log_q_finite, log_a_finite)[~zeros].abs().max() <= 1e-10
    (q * torch.arange(60, dtype=DOUBLE).reshape(2, 5, 6)).sum().backward()
    assert log_a.grad is not None
    assert torch.isfinite(log_a.grad).all()
    assert (log_a.grad[zeros] == 0).all()


def test_running_out_of_iterations_returns_last_iterate():
    log_a, log_row, log_col = random_problem((3, 20, 30), seed=11, scale=4.0)
    log_q, error = sinkhorn_with_error(log_a, log_row, log_col, n_iters=3, tol=1e-12)
    assert error.shape == (3,)
    assert error.max() > 1e-12
    # three plain iterations from g = 0, written out here
    f, g = torch.zeros_like(log_row), torch.zeros_like(log_col)
    for _ in range(3):
        f = log_row - torch.logsumexp(log_a + g[..., None, :], -1)
        g = log_col - torch.logsumexp(log_a + f[..., :, None], -2)
    expected = log_a + f[..., :, None] + g[..., None, :]
    torch.testing.assert_close(log_q, expected, rtol=0, atol=1e-12)
    # the reported error is the row error of that iterate; columns are exact
    q = log_q.exp()
    torch.testing.assert_close(error, (q.sum(-1) - log_row.exp()).abs().amax(-1))
    assert (q.sum(-2) - log_col.exp()).abs().max() <= 1e-12
    torch.testing.assert_close(sinkhorn(log_a, log_row, log_col, n_iters=3, tol=1e-12), log_q)


def test_errors():
    log_a, log_row, log_col = random_problem((2, 4, 5))
    bad_calls = [
        (log_a, log_row[..., :3], log_col, {}),
        (log_a, log_row, log_col[..., :4], {}),
        (log_a, log_row[:1], log_col, {}),
        (log_a[0, 0], log_row[0], log_col[0], {}),
        (log_a, log_row.float(), log_col, {}),
        (log_a, log_row, log_col, {"tol": 0.0}),
        (log_a, log_row, log_col, {"tol": -1e-6}),
        (log_a, log_row, log_col, {"tol": math.nan}),
        (log_a, log_row, log_col, {"n_iters": 0}),
        (log_a, log_row, log_col, {"check_every": 0}),
        (log_a.index_fill(-2, torch.tensor([1]), -math.inf), log_row, log_col, {}),
        (log_a.index_fill(-1, torch.tensor([2]), -math.inf), log_row, log_col, {}),
        (log_a.index_fill(-1, torch.tensor([2]), math.nan), log_row, log_col, {}),
        (log_a, log_row.index_fill(-1, torch.tensor([0]), -math.inf), log_col, {}),
    ]
    for log_a_, log_row_, log_col_, kwargs in bad_calls:
        with pytest.raises(ValueError):
            sinkhorn(log_a_, log_row_, log_col_, **kwargs)
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4\).*\(2, 5\).*\(2, 3\)"):
        sinkhorn(log_a, log_row[..., :3], log_col)

"""BATCH: PID of continuous modalities through a learned coupling (paper 003 §3.2, App. B.3).

On a block of ``m`` rows, encoders give per-label features ``f1 [m, C, d]``, ``f2 [m, C, d]`` and
the kernel ``A[y, i, j] = exp(f1[i, y] · f2[j, y] / √d)`` (eq. 26). Sinkhorn projects it onto
the marginal constraints of ``Δ_p``: rows ``q̃(x1_i, y) = p̂(y | x1_i) / m``, columns
``q̃(x2_j, y) = p̂(y | x2_j) / m`` with frozen classifiers ``p̂`` (the rows of the block stand for
``p(x)``). Training minimises ``I_q̃(Y; X1, X2)`` over the encoders (eqs. 21–25; equivalent to
maximising the co-information, the BROJA optimum). Readout, per block, in nats (eqs. 27–33,
written with the paper's symbols):

- ``I1 = I_p(Y; X1)``, ``I2 = I_p(Y; X2)``, ``I12 = I_p(Y; X1, X2)`` — each the plug-in mutual
  information of the block's rows under a classifier, ``mean_i Σ_y p̂(y | x_i) log(p̂(y | x_i) /
  p̄(y))`` with ``p̄`` the block mean of ``p̂``. ``I1`` is then exactly ``I_q̃(Y; X1)`` (q̃ has those
  marginals), which makes ``U1, U2 ≥ 0`` hold by construction;
- ``Iq = I_q̃(Y; X1, X2)`` of the projected coupling;
- ``R = I1 + I2 − Iq``, ``U1 = Iq − I2``, ``U2 = Iq − I1``, ``S = I12 − Iq``.

Shapes: ``C`` labels, ``m`` (rows) and ``n`` (columns) block rows; couplings ``[C, m, n]`` in the
log domain, normalised to total mass 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from intermodal.estimators.sinkhorn import sinkhorn
from intermodal.schemas.tables import PIDTerms

PROBABILITY_FLOOR = 1e-12  # clamp before logs of classifier probabilities


def log_kernel(features_1: Tensor, features_2: Tensor) -> Tensor:
    """``log A [C, m, n]`` from per-label features ``[m, C, d]`` and ``[n, C, d]`` (eq. 26)."""
    scale = math.sqrt(features_1.shape[-1])
    return torch.einsum("icd,jcd->cij", features_1, features_2) / scale


def coupling(
    log_a: Tensor,
    p_y_x1: Tensor,
    p_y_x2: Tensor,
    *,
    n_iters: int = 200,
    tol: float = 1e-6,
    grad_iters: int | None = None,
) -> Tensor:
    """``log q̃ [C, m, n]``: the kernel projected onto rows ``p̂(y | x1_i) / m`` and columns
    ``p̂(y | x2_j) / n`` (``p_y_x* [rows, C]``), renormalised to total mass 1."""
    log_row = torch.log(p_y_x1.clamp_min(PROBABILITY_FLOOR) / len(p_y_x1)).T
    log_col = torch.log(p_y_x2.clamp_min(PROBABILITY_FLOOR) / len(p_y_x2)).T
    log_q = sinkhorn(log_a, log_row, log_col, n_iters=n_iters, tol=tol, grad_iters=grad_iters)
    return log_q - torch.logsumexp(log_q.flatten(), dim=0)


def union_information(log_q: Tensor) -> Tensor:
    """``I_q̃(Y; X1, X2)`` (nats) of a normalised coupling ``log q̃ [C, m, n]``."""
    log_y_given_pair = log_q - torch.logsumexp(log_q, dim=0, keepdim=True)
    log_y = torch.logsumexp(log_q, dim=(1, 2), keepdim=True)
    return (log_q.exp() * (log_y_given_pair - log_y)).sum()


def plugin_information(p_y_x: Tensor) -> Tensor:
    """``mean_i Σ_y p̂(y | x_i) log(p̂(y | x_i) / p̄(y))`` (nats) of classifier outputs
    ``[rows, C]``, ``p̄`` their mean: the mutual information of the rows and the label under
    ``p̂``, each row weighted equally."""
    p = p_y_x.clamp_min(PROBABILITY_FLOOR)
    mean = p.mean(dim=0, keepdim=True)
    return (p * (p.log() - mean.log())).sum(dim=1).mean()


def batch_terms(iq: float, i1: float, i2: float, i12: float) -> PIDTerms:
    """``R, U1, U2, S`` from ``I_q̃(Y; X1, X2)`` and the three classifier informations."""
    return PIDTerms(R=i1 + i2 - iq, U1=iq - i2, U2=iq - i1, S=i12 - iq)


def block_pid(
    features_1: Tensor,
    features_2: Tensor,
    p_y_x1: Tensor,
    p_y_x2: Tensor,
    p_y_x12: Tensor,
    *,
    n_iters: int = 200,
    tol: float = 1e-6,
) -> PIDTerms:
    """BATCH PID (nats) of one block: features ``[m, C, d]``, classifier outputs ``[m, C]``."""
    log_q = coupling(log_kernel(features_1, features_2), p_y_x1, p_y_x2, n_iters=n_iters, tol=tol)
    informations = [union_information(log_q)] + [
        plugin_information(p) for p in (p_y_x1, p_y_x2, p_y_x12)
    ]
    return batch_terms(*(float(value) for value in informations))

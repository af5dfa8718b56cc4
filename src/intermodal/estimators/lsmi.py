"""LSMI: pointwise redundancy, uniqueness and synergy of one sample (paper 001 §3.2, eqs. 2–8).

Per sample, with ``h(x) = −log p(x)`` (entropy estimates), ``log p(y | ·)`` from classifiers and
``log p(y)`` from class frequencies, all in nats:

- pointwise information ``i(x; y) = log p(y | x) − log p(y)``;
- its split ``i = i⁺ − i⁻`` with ``i⁺ = h(x)`` and ``i⁻ = h(x | y) = h(x) − h(y) − log p(y | x)``
  ``= h(x) − i(x; y)`` (eqs. 4, 8);
- ``r⁺ = min(h(x1), h(x2))``, ``r⁻ = min(h(x1 | y), h(x2 | y))``, ``r = r⁺ − r⁻`` (eqs. 5–6);
- ``u1 = i(x1; y) − r``, ``u2 = i(x2; y) − r``, ``s = i(x1, x2; y) − r − u1 − u2`` (eq. 2).

So per sample ``r + u1 = i(x1; y)``, ``r + u2 = i(x2; y)`` and ``r + u1 + u2 + s = i(x1, x2; y)``
exactly. Arrays are ``[n]`` (any matching shapes), float64.

The dataset-level adjustment of the reference code shifts every sample by one constant ``a``
(``r + a, u1 − a, u2 − a, s + a``), which keeps all three identities in the mean; see
``adjustment``. Scores keep the raw values; dataset tables report both.
"""

from __future__ import annotations

import numpy as np

from intermodal.schemas.tables import PID_TERMS, PIDTerms

# how the dataset constant a shifts each term: R + a, U1 − a, U2 − a, S + a
SHIFT_SIGNS = PIDTerms(R=1.0, U1=-1.0, U2=-1.0, S=1.0)


def pointwise_information(logp_y_x: np.ndarray, logp_y: np.ndarray) -> np.ndarray:
    """``i(x; y) = log p(y | x) − log p(y)`` (nats)."""
    return np.asarray(logp_y_x, dtype=np.float64) - np.asarray(logp_y, dtype=np.float64)


def pointwise(
    h1: np.ndarray,
    h2: np.ndarray,
    logp_y_x1: np.ndarray,
    logp_y_x2: np.ndarray,
    logp_y_x12: np.ndarray,
    logp_y: np.ndarray,
) -> PIDTerms:
    """``R, U1, U2, S`` per sample (``[n]`` each, nats) from entropies ``h1, h2`` and the log
    probabilities of the observed label under each classifier and the prior (all ``[n]``)."""
    h1, h2 = np.asarray(h1, dtype=np.float64), np.asarray(h2, dtype=np.float64)
    i1 = pointwise_information(logp_y_x1, logp_y)
    i2 = pointwise_information(logp_y_x2, logp_y)
    i12 = pointwise_information(logp_y_x12, logp_y)
    redundancy = np.minimum(h1, h2) - np.minimum(h1 - i1, h2 - i2)
    unique_1, unique_2 = i1 - redundancy, i2 - redundancy
    return PIDTerms(
        R=redundancy, U1=unique_1, U2=unique_2, S=i12 - redundancy - unique_1 - unique_2
    )


def adjustment(r_mean: float, u1_mean: float, u2_mean: float, s_mean: float) -> float:
    """The reference code's dataset constant ``a`` (``RUS_adjustment``), applied as
    ``R + a, U1 − a, U2 − a, S + a``.

    First priority: when mean R or S is negative, ``a = −min(R, S)`` lifts both to ≥ 0 (U1, U2
    may then turn negative). Otherwise, when mean U1 or U2 is negative, ``a = min(U1, U2)``
    lifts both to ≥ 0 (R, S may then fall). Otherwise ``a = 0``. The shift moves information
    between the redundancy/synergy pair and the unique pair, which is exactly the one degree
    of freedom the identities of eq. 2 leave open; it is what makes the OR/AND values of
    paper 001 Table 1 (R 0.215, S 0.347 nats) come out of raw means R 0.389, U −0.173, S 0.520.
    """
    if r_mean < 0 or s_mean < 0:
        return float(-min(r_mean, s_mean))
    if u1_mean < 0 or u2_mean < 0:
        return float(min(u1_mean, u2_mean))
    return 0.0


def adjusted(means: PIDTerms, constant: float) -> PIDTerms:
    """Means of ``R, U1, U2, S`` shifted by the dataset constant ``a``."""
    return PIDTerms(
        *(float(m) + sign * constant for m, sign in zip(means, SHIFT_SIGNS, strict=True))
    )


def distillation_weights(terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Distillation weights (paper 001 §4.3.2): the adjusted terms clipped at 0 over their
    sum; 1/4 each where all clip to 0; NaN where a term is NaN."""
    clipped = np.clip(np.column_stack([terms[t] for t in PID_TERMS]), 0.0, None)
    total = clipped.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total > 0, clipped / total, 1.0 / len(PID_TERMS))
    weights[np.isnan(total[:, 0])] = np.nan
    return {term: weights[:, i] for i, term in enumerate(PID_TERMS)}

"""LSMI pointwise terms: the identities of eq. 2 and paper 001 Table 1 from exact probabilities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from intermodal.estimators.lsmi import adjusted, adjustment, pointwise
from intermodal.schemas.tables import PIDTerms

LN2 = float(np.log(2))


def exact_pointwise(rows: list[tuple[tuple, tuple, int, float]]) -> PIDTerms:
    """Means of R, U1, U2, S over a discrete joint given as rows ``(x1, x2, y, probability)``,
    every probability computed exactly from the joint (entropies ``h(x) = −log p(x)``)."""

    def marginal(key) -> dict:
        totals: dict = {}
        for row in rows:
            totals[key(row)] = totals.get(key(row), 0.0) + row[3]
        return totals

    p1, p2 = marginal(lambda r: r[0]), marginal(lambda r: r[1])
    p12, py = marginal(lambda r: (r[0], r[1])), marginal(lambda r: r[2])
    p1y, p2y = marginal(lambda r: (r[0], r[2])), marginal(lambda r: (r[1], r[2]))
    p12y = marginal(lambda r: (r[0], r[1], r[2]))
    x1, x2, y, weight = (list(column) for column in zip(*rows, strict=True))
    terms = pointwise(
        h1=np.array([-np.log(p1[a]) for a in x1]),
        h2=np.array([-np.log(p2[b]) for b in x2]),
        logp_y_x1=np.array([np.log(p1y[(a, c)] / p1[a]) for a, c in zip(x1, y, strict=True)]),
        logp_y_x2=np.array([np.log(p2y[(b, c)] / p2[b]) for b, c in zip(x2, y, strict=True)]),
        logp_y_x12=np.array(
            [np.log(p12y[(a, b, c)] / p12[(a, b)]) for a, b, c in zip(x1, x2, y, strict=True)]
        ),
        logp_y=np.array([np.log(py[c]) for c in y]),
    )
    return PIDTerms(*(float(np.dot(weight, values)) for values in terms))


def gate_rows(function, gate: str = "") -> list[tuple[tuple, tuple, int, float]]:
    bits = itertools.product((0, 1), repeat=2)
    return [((a, gate), (b, gate), function(a, b), 0.25) for a, b in bits]


def test_identities_hold_per_sample() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    h1, h2 = rng.normal(2, 3, n), rng.normal(1, 3, n)
    logp = np.log(rng.uniform(0.01, 1, (4, n)))
    terms = pointwise(h1, h2, logp[0], logp[1], logp[2], logp[3])
    i1, i2, i12 = logp[0] - logp[3], logp[1] - logp[3], logp[2] - logp[3]
    np.testing.assert_allclose(terms.R + terms.U1, i1, atol=1e-12)
    np.testing.assert_allclose(terms.R + terms.U2, i2, atol=1e-12)
    np.testing.assert_allclose(sum(terms), i12, atol=1e-12)
    # s − r depends only on the three informations
    np.testing.assert_allclose(terms.S - terms.R, i12 - i1 - i2, atol=1e-12)


def test_redundancy_is_min_of_the_two_components() -> None:
    terms = pointwise(
        h1=np.array([3.0]),
        h2=np.array([2.0]),
        logp_y_x1=np.log([0.9]),
        logp_y_x2=np.log([0.6]),
        logp_y_x12=np.log([0.95]),
        logp_y=np.log([0.5]),
    )
    i1, i2 = np.log(0.9 / 0.5), np.log(0.6 / 0.5)
    expected = min(3.0, 2.0) - min(3.0 - i1, 2.0 - i2)
    assert terms.R[0] == pytest.approx(expected, abs=1e-12)


def test_xor_is_pure_synergy() -> None:
    means = exact_pointwise(gate_rows(lambda a, b: a ^ b))
    assert means == pytest.approx(PIDTerms(R=0.0, U1=0.0, U2=0.0, S=LN2), abs=1e-12)
    assert adjustment(*means) == 0.0


def test_or_matches_table_1_after_the_adjustment() -> None:
    raw = exact_pointwise(gate_rows(lambda a, b: a | b))
    # the raw (unadjusted) values of paper 001's reference code for OR: R 0.389, U −0.173, S 0.520
    assert pytest.approx(0.389, abs=1e-3) == raw.R
    assert pytest.approx(-0.173, abs=1e-3) == raw.U1 and pytest.approx(raw.U1) == raw.U2
    assert pytest.approx(0.520, abs=1e-3) == raw.S
    shifted = adjusted(raw, adjustment(*raw))
    assert pytest.approx(0.75 * np.log(4 / 3), abs=1e-12) == shifted.R  # 0.215
    assert pytest.approx(0.0, abs=1e-12) == shifted.U1
    assert pytest.approx(LN2 / 2, abs=1e-12) == shifted.S  # 0.347


def test_xor_not_halves_match_table_1_after_the_adjustment() -> None:
    # the gate is visible in both modalities; each half carries half of the mass
    rows = [
        (x1, x2, y, p / 2)
        for half in (gate_rows(lambda a, b: a ^ b, "xor"), gate_rows(lambda a, b: 1 - b, "not"))
        for x1, x2, y, p in half
    ]
    raw = exact_pointwise(rows)
    shifted = adjusted(raw, adjustment(*raw))
    expected = PIDTerms(R=0.0, U1=0.0, U2=LN2 / 2, S=LN2 / 2)
    assert shifted == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("means", "constant"),
    [
        ((-0.1, 0.3, 0.2, 0.5), 0.1),  # R < 0: lift R and S
        ((0.2, 0.3, 0.2, -0.4), 0.4),  # S < 0
        ((0.4, -0.2, 0.1, 0.5), -0.2),  # U1 < 0 with R, S ≥ 0: lift the uniques
        ((0.1, 0.2, 0.3, 0.4), 0.0),  # nothing negative
    ],
)
def test_adjustment_priorities(means, constant: float) -> None:
    assert adjustment(*means) == pytest.approx(constant)
    shifted = adjusted(PIDTerms(*means), constant)
    # the three identities of eq. 2 survive the shift in the mean
    assert pytest.approx(means[0] + means[1]) == shifted.R + shifted.U1
    assert pytest.approx(means[0] + means[2]) == shifted.R + shifted.U2
    assert sum(shifted) == pytest.approx(sum(means))

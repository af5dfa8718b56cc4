"""Local and global InterSHAP (paper 000 eqs. 5–11)."""

from __future__ import annotations

import numpy as np
import pytest

from intermodal.estimators.intershap import (
    global_intershap,
    global_terms,
    local_intershap,
    summary_terms,
    symmetric_from_upper,
    upper_triangle_indices,
)


def test_local_is_the_off_diagonal_share_of_absolute_values() -> None:
    matrix = np.array([[0.1, -0.2], [-0.2, 0.3]])
    assert local_intershap(matrix) == pytest.approx(0.4 / 0.8)
    assert local_intershap(np.zeros((3, 3))) == 0.0  # no behaviour, nothing to attribute


def test_global_uses_the_signed_mean_so_opposite_interactions_cancel() -> None:
    plus = np.array([[0.5, 0.25], [0.25, 0.0]])
    minus = np.array([[0.5, -0.25], [-0.25, 0.0]])
    matrices = np.stack([plus, minus])
    assert global_intershap(matrices) == pytest.approx(0.0)
    assert local_intershap(matrices).mean() == pytest.approx(0.5 / 1.0)


def test_global_terms_and_modality_contributions() -> None:
    mean = np.array([[0.2, 0.1, 0.0], [0.1, -0.4, -0.05], [0.0, -0.05, 0.0]])
    terms = global_terms(mean)
    assert terms.behaviour == pytest.approx(0.9)
    assert terms.interactions == pytest.approx(0.3)
    assert terms.intershap == pytest.approx(1 / 3)
    np.testing.assert_allclose(terms.modality_contributions, [0.2 / 0.9, 0.4 / 0.9, 0.0])
    assert terms.intershap + terms.modality_contributions.sum() == pytest.approx(1.0)


def test_summary_terms_from_upper_triangle_match_direct_computation() -> None:
    rng = np.random.default_rng(0)
    matrices = rng.normal(size=(50, 3, 3))
    matrices = (matrices + matrices.transpose(0, 2, 1)) / 2
    rows, cols = upper_triangle_indices(3)
    upper = matrices[:, rows, cols]
    np.testing.assert_array_equal(symmetric_from_upper(upper, 3), matrices)
    local = local_intershap(matrices)
    terms = dict(
        (t, v)
        for t, v, _ in summary_terms(
            upper.mean(0), upper.std(0), float(local.mean()), 0.0, ["a", "b", "c"]
        )
    )
    assert terms["global"] == pytest.approx(global_intershap(matrices))
    assert terms["local_mean"] == pytest.approx(local.mean())
    assert terms["mean_interaction_a__c"] == pytest.approx(matrices[:, 0, 2].mean())

"""Mergeable partial statistics: merging any split equals one pass; empty is the identity."""

from __future__ import annotations

import numpy as np
import pytest

from intermodal.estimators.stats import JointCounts, Moments, grouped_moments, merge_grouped


def test_moments_merged_over_splits_equal_one_pass() -> None:
    rows = np.random.default_rng(1).normal(3.0, 2.0, size=(1000, 4))
    whole = Moments.of(rows)
    merged = Moments.empty(4)
    for part in np.array_split(rows, [0, 10, 11, 500, 500, 999]):
        merged = merged.merge(Moments.of(part))
    assert merged.count == whole.count == 1000
    np.testing.assert_allclose(merged.mean, rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-10)
    np.testing.assert_allclose(merged.stderr(), rows.std(0, ddof=1) / np.sqrt(1000), rtol=1e-10)
    assert Moments.empty(4).merge(whole) is whole  # empty is the identity
    assert np.isnan(Moments.of(rows[:1]).stderr()).all()


def test_grouped_moments_merge_like_one_pass() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(300, 2))
    groups = {"pred": rng.integers(0, 3, 300), "site": rng.choice(["x", "y"], 300)}
    whole = grouped_moments(rows, groups)
    merged: dict = {}
    for part in np.array_split(np.arange(300), 7):
        merged = merge_grouped(
            merged, grouped_moments(rows[part], {k: v[part] for k, v in groups.items()})
        )
    assert merged.keys() == whole.keys()
    assert ("pred", "2") in whole and ("site", "y") in whole and ("", "") in whole
    for key, moments in whole.items():
        assert merged[key].count == moments.count
        np.testing.assert_allclose(merged[key].mean, moments.mean, rtol=1e-12)
        np.testing.assert_allclose(merged[key].m2, moments.m2, rtol=1e-9)


def test_joint_counts_merged_over_splits_equal_one_pass() -> None:
    rng = np.random.default_rng(3)
    shape = (4, 3, 2)
    x1, x2, y = (rng.integers(0, k, 500) for k in shape)
    whole = JointCounts.of(x1, x2, y, shape)
    merged = JointCounts.empty(shape)
    for part in np.array_split(np.arange(500), [0, 7, 7, 300]):
        merged = merged.merge(JointCounts.of(x1[part], x2[part], y[part], shape))
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.total == 500 and whole.joint().sum() == pytest.approx(1.0)
    expected = np.zeros(shape, dtype=np.int64)
    np.add.at(expected, (x1, x2, y), 1)
    np.testing.assert_array_equal(whole.counts, expected)
    with pytest.raises(ValueError, match=r"x2 codes must lie in \[0, 3\)"):
        JointCounts.of([0], [3], [0], shape)
    with pytest.raises(ValueError, match="empty sample"):
        JointCounts.empty(shape).joint()

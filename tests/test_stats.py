"""Mergeable partial statistics: merging any split equals one pass; empty is the identity."""

from __future__ import annotations

import numpy as np
import pytest

from intermodal.estimators.stats import (
    Histogram,
    JointCounts,
    Moments,
    grouped_histograms,
    grouped_moments,
    merge_grouped,
)


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


def test_histogram_merged_over_splits_equals_one_pass_and_its_quantiles_numpys() -> None:
    rows = np.random.default_rng(3).beta(0.5, 2.0, size=(2000, 3))
    rows[0, 0], rows[1, 1] = 0.0, 1.0  # both ends of the closed range are counted
    whole = Histogram.of(rows, bins=1000)
    merged = Histogram.empty(3, bins=1000)
    for part in np.array_split(rows, [0, 7, 7, 1200]):
        merged = merged.merge(Histogram.of(part, bins=1000))
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert whole.counts.sum() == 6000
    q = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    expected = np.quantile(rows, q, axis=0).T
    assert np.abs(merged.quantiles(q) - expected).max() <= whole.bin_width
    # a histogram of few values recovers them to half a bin
    few = Histogram.of(np.array([[0.12], [0.5]]), bins=10)
    np.testing.assert_allclose(few.quantiles(np.array([0.0, 0.5, 1.0])), [[0.15, 0.35, 0.55]])


def test_histogram_refuses_values_outside_and_unlike_merges() -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\], got 1.5"):
        Histogram.of(np.array([[0.2], [1.5]]), bins=10)
    with pytest.raises(ValueError, match="must lie in"):
        Histogram.of(np.array([[np.nan]]), bins=10)
    with pytest.raises(ValueError, match="cannot merge"):
        Histogram.empty(1, 10).merge(Histogram.empty(1, 20))
    with pytest.raises(ValueError, match="empty sample"):
        Histogram.empty(1, 10).quantiles(np.array([0.5]))


def test_grouped_histograms_merge_like_one_pass() -> None:
    rng = np.random.default_rng(4)
    rows = rng.random((400, 2))
    groups = {"label": rng.integers(0, 2, 400)}
    whole = grouped_histograms(rows, groups, 50, 0.0, 1.0)
    merged: dict = {}
    for part in np.array_split(np.arange(400), 3):
        split = grouped_histograms(rows[part], {"label": groups["label"][part]}, 50, 0.0, 1.0)
        merged = merge_grouped(merged, split)
    assert merged.keys() == whole.keys() == {("", ""), ("label", "0"), ("label", "1")}
    for key, histogram in whole.items():
        np.testing.assert_array_equal(merged[key].counts, histogram.counts)

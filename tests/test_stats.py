"""Mergeable partial statistics: merging any split equals one pass; empty is the identity."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from intermodal.estimators.stats import (
    BlockEstimates,
    ColumnSummaries,
    JointCounts,
    Moments,
    QuantileSketch,
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


def test_block_estimates_count_a_block_split_across_parts_once() -> None:
    """Rows repeat their block's estimate; blocks of uneven sizes are cut at places that are
    not block boundaries (as score files cut a batch that spans two input shards), in any
    order: the moments over blocks equal those of one row per block."""
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 40, size=25)
    estimates = rng.normal(size=(25, 4))
    block_ids = np.repeat(rng.permutation(10_000)[:25], sizes)
    rows = np.repeat(estimates, sizes, axis=0)
    one_pass = Moments.of(np.column_stack([estimates, sizes]))
    cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=9, replace=False))
    parts = [BlockEstimates.of(block_ids[p], rows[p]) for p in np.split(np.arange(len(rows)), cuts)]
    merged = BlockEstimates()
    for part in reversed(parts):
        merged = merged.merge(part)
    assert len(merged.blocks) == 25
    moments = merged.moments()
    assert moments.count == 25
    np.testing.assert_allclose(moments.mean, one_pass.mean, rtol=1e-12)
    np.testing.assert_allclose(moments.m2, one_pass.m2, rtol=1e-10)
    # summing moments per part instead would count every cut block twice
    per_part = Moments.empty(5)
    for part in parts:
        per_part = per_part.merge(part.moments())
    assert per_part.count > 25
    assert BlockEstimates().merge(merged).blocks == merged.blocks


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


def test_quantile_sketch_is_exact_on_few_values_and_within_its_rank_error_on_many() -> None:
    few = np.array([0.12, 0.5, 0.31, 0.9])
    sketch = QuantileSketch.of(few[:2]).merge(QuantileSketch.of(few[2:]))
    # under SKETCH_K values a sketch keeps them all: each quantile is one of them
    assert sketch.quantiles([0.0, 0.5, 1.0]) == [0.12, 0.5, 0.9]
    # p50 of weights near 1e-5 reads a value near 1e-5, not a bin centre
    tiny = np.random.default_rng(2).uniform(0.5e-5, 1.5e-5, 10_000)
    assert abs(QuantileSketch.of(tiny).quantiles([0.5])[0] - np.median(tiny)) < 1e-6
    values = np.random.default_rng(3).normal(size=200_000)
    merged = QuantileSketch()
    for part in np.array_split(values, 7):
        merged = merged.merge(QuantileSketch.of(part))
    assert merged.count == len(values)
    ordered = np.sort(values)
    for level, value in zip([0.1, 0.5, 0.9], merged.quantiles([0.1, 0.5, 0.9]), strict=True):
        rank = np.searchsorted(ordered, value) / len(values)
        assert abs(rank - level) < 0.02  # KLL with k = 200: about 1.3 % normalised rank error
    with pytest.raises(ValueError, match="empty sample"):
        QuantileSketch().quantiles([0.5])


def test_quantile_sketch_survives_pickling() -> None:
    sketch = QuantileSketch.of(np.arange(1000, dtype=float))
    copy = pickle.loads(pickle.dumps(sketch))
    assert copy.count == 1000 and copy.quantiles([0.5]) == sketch.quantiles([0.5])


def test_column_summaries_merged_over_splits_equal_one_pass() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=150)
    values[::7] = np.nan  # missing values (a null score) are left out
    columns = {"x": values, "y": rng.random(150)}
    groups = {"label": rng.integers(0, 2, 150).astype(str)}
    whole = ColumnSummaries.of(columns, groups)
    merged = ColumnSummaries()
    for part in np.array_split(np.arange(150), [0, 40, 40, 100]):
        split = ColumnSummaries.of(
            {k: v[part] for k, v in columns.items()}, {"label": groups["label"][part]}
        )
        merged = merged.merge(split)
    assert merged.groups() == whole.groups() == [("", ""), ("label", "0"), ("label", "1")]
    for group in whole.groups():
        for name in columns:
            one, many = whole.get(name, group), merged.get(name, group)
            assert one is not None and many is not None
            assert one.count == many.count
            np.testing.assert_allclose(many.mean, one.mean)
            np.testing.assert_allclose(many.stderr, one.stderr)
            # under SKETCH_K values per group the sketches are exact, so they agree exactly
            assert many.sketch.quantiles([0.1, 0.5, 0.9]) == one.sketch.quantiles([0.1, 0.5, 0.9])
    known = values[~np.isnan(values)]
    overall = merged.get("x")
    assert overall is not None and overall.count == len(known)
    np.testing.assert_allclose(overall.mean, known.mean())
    np.testing.assert_allclose(overall.stderr, known.std(ddof=1) / np.sqrt(len(known)))

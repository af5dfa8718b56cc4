"""Streamed codebooks: blob recovery, batching invariance, reservoir bounds, histograms, I/O."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from intermodal.estimators.discretize import (
    MAX_BINS,
    Codebook,
    CodebookConfig,
    CodebookFitter,
    n_histogram_bins,
)


def blobs(n: int, k: int = 5, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[n, d]`` float32 rows around ``k`` centres ``20·e_i`` (unit noise) and their labels."""
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(k, d)
    labels = rng.integers(0, k, size=n)
    rows = centres[labels] + rng.normal(size=(n, d))
    return rows.astype(np.float32), labels


def fitted(rows: np.ndarray, config: CodebookConfig, n_batches: int, **kwargs) -> CodebookFitter:
    fitter = CodebookFitter(config, rows.shape[1], **kwargs)
    for batch in np.array_split(rows, n_batches):
        fitter.partial_fit(batch)
    return fitter


def assert_same(left: Codebook, right: Codebook) -> None:
    assert left.to_arrays().keys() == right.to_arrays().keys()
    for name, value in left.to_arrays().items():
        np.testing.assert_array_equal(value, right.to_arrays()[name], err_msg=name)


@pytest.mark.parametrize("standardize", [True, False])
def test_streamed_blobs_are_recovered(standardize):
    rows, labels = blobs(5000)
    config = CodebookConfig(n_clusters=5, standardize=standardize)
    codebook = fitted(rows, config, n_batches=10).finish()
    ids = codebook.assign(rows)
    assert codebook.kind == "kmeans" and codebook.n_codes == 5
    assert ids.dtype == np.int64 and ids.shape == (5000,)
    assert adjusted_rand_score(labels, ids) == 1.0


def test_batching_does_not_change_the_codebook():
    rows, _ = blobs(3000)
    config = CodebookConfig(n_clusters=5, pca_components=4, seed=3)
    streamed = fitted(rows, config, n_batches=7).finish()
    whole = fitted(rows, config, n_batches=1).finish()
    assert_same(streamed, whole)


def test_reservoir_is_bounded_uniform_and_seeded():
    n, max_rows = 20_000, 1000
    index = np.arange(n, dtype=np.float32)
    rows = np.stack([index, -index], axis=1)
    fitters = [
        fitted(rows, CodebookConfig(seed=seed), n_batches=13, max_rows=max_rows)
        for seed in (0, 0, 1)
    ]
    sample = fitters[0].sample
    assert fitters[0].n_seen == n
    assert sample.shape == (max_rows, 2)
    np.testing.assert_array_equal(sample, fitters[1].sample)
    assert not np.array_equal(sample, fitters[2].sample)
    # Distinct stream rows, spread over the whole stream: the mean index of a uniform sample
    # is n/2 with standard error n / sqrt(12 · max_rows) ≈ 183.
    assert len(np.unique(sample[:, 0])) == max_rows
    np.testing.assert_array_equal(sample[:, 1], -sample[:, 0])
    assert abs(sample[:, 0].mean() - n / 2) < 5 * n / np.sqrt(12 * max_rows)
    assert sample[:, 0].max() > 0.9 * n


def test_reservoir_codebook_is_deterministic_per_seed():
    rows, labels = blobs(6000)
    config = CodebookConfig(n_clusters=5, seed=7)
    first = fitted(rows, config, n_batches=6, max_rows=1500)
    second = fitted(rows, config, n_batches=6, max_rows=1500)
    assert len(first.sample) == 1500
    codebook = first.finish()
    assert_same(codebook, second.finish())
    assert adjusted_rand_score(labels, codebook.assign(rows)) == 1.0


@pytest.mark.parametrize("standardize", [True, False])
def test_pca_reduces_dimensions(standardize):
    rows, labels = blobs(2000)
    config = CodebookConfig(n_clusters=5, standardize=standardize, pca_components=4)
    codebook = fitted(rows, config, n_batches=4).finish()
    assert codebook.components.shape == (4, 8)
    assert codebook.centers.shape == (5, 4)
    assert codebook.transform(rows[:10]).shape == (10, 4)
    ids = codebook.assign(rows)
    assert ids.min() >= 0 and ids.max() < codebook.n_codes
    assert adjusted_rand_score(labels, ids) == 1.0
    np.testing.assert_allclose(codebook.components @ codebook.components.T, np.eye(4), atol=1e-12)


def test_constant_feature_is_standardised_without_nans():
    rows, _ = blobs(1000)
    rows[:, 2] = 4.0
    codebook = fitted(rows, CodebookConfig(n_clusters=5), n_batches=2).finish()
    assert codebook.scale[2] == 1.0
    assert np.all(np.isfinite(codebook.centers))


@pytest.mark.parametrize(
    ("n_rows", "n_clusters", "max_rows", "bins"),
    [(64, 100, 100_000, 8), (1000, 100, 100_000, 20), (1000, 12, 100_000, 12), (1000, 20, 10, 5)],
)
def test_histogram_bin_count_follows_the_rule(n_rows, n_clusters, max_rows, bins):
    values = np.random.default_rng(0).normal(size=(n_rows, 1)).astype(np.float32)
    fitter = fitted(values, CodebookConfig(n_clusters=n_clusters), n_batches=3, max_rows=max_rows)
    codebook = fitter.finish()
    assert codebook.kind == "histogram"
    assert codebook.n_codes == bins == n_histogram_bins(min(n_rows, max_rows), n_clusters)


def test_histogram_bins_are_capped():
    assert n_histogram_bins(200_000, 1000) == MAX_BINS
    assert n_histogram_bins(100_000, 1000) == 93
    assert n_histogram_bins(1, 20) == 2


def test_histogram_assignment_is_monotone_and_clipped():
    values = np.random.default_rng(1).uniform(-3, 5, size=(1000, 1)).astype(np.float32)
    codebook = fitted(values, CodebookConfig(n_clusters=100), n_batches=5).finish()
    low, high = codebook.edges[0], codebook.edges[-1]
    assert (low, high) == (values.min(), values.max())
    np.testing.assert_allclose(np.diff(codebook.edges), (high - low) / codebook.n_codes)
    probe = np.linspace(low - 10, high + 10, 5000)[:, None]
    ids = codebook.assign(probe)
    assert np.all(np.diff(ids) >= 0)
    assert ids[0] == 0 and ids[-1] == codebook.n_codes - 1
    np.testing.assert_array_equal(
        codebook.assign(np.array([[low], [high]])), [0, codebook.n_codes - 1]
    )
    # Same bins as np.histogram over the fitted edges.
    counts = np.bincount(codebook.assign(values), minlength=codebook.n_codes)
    np.testing.assert_array_equal(counts, np.histogram(values[:, 0], codebook.edges)[0])


def test_constant_scalar_gets_one_bin():
    codebook = fitted(np.full((50, 1), 2.5, np.float32), CodebookConfig(), n_batches=2).finish()
    assert codebook.n_codes == 1
    np.testing.assert_array_equal(codebook.assign(np.array([[-1.0], [2.5], [9.0]])), [0, 0, 0])


@pytest.mark.parametrize("pca_components", [None, 3])
def test_round_trip_through_npz(tmp_path, pca_components):
    rows, _ = blobs(1000)
    config = CodebookConfig(n_clusters=5, pca_components=pca_components)
    codebooks = [
        fitted(rows, config, n_batches=2).finish(),
        fitted(rows[:, :1], CodebookConfig(), n_batches=2).finish(),
    ]
    for codebook, features in zip(codebooks, [rows, rows[:, :1]], strict=True):
        path = tmp_path / f"{codebook.kind}.npz"
        np.savez(path, **codebook.to_arrays())
        with np.load(path, allow_pickle=False) as arrays:
            loaded = Codebook.from_arrays(arrays)
        assert_same(loaded, codebook)
        np.testing.assert_array_equal(loaded.assign(features), codebook.assign(features))


def test_chunked_assignment_equals_unchunked():
    rows, _ = blobs(2000)
    codebook = fitted(rows, CodebookConfig(n_clusters=5), n_batches=2).finish()
    noisy = rows + np.random.default_rng(2).normal(scale=8.0, size=rows.shape)
    whole = codebook.assign(noisy, chunk_rows=len(noisy))
    for chunk_rows in (1, 7, 256):
        np.testing.assert_array_equal(codebook.assign(noisy, chunk_rows=chunk_rows), whole)
    # Against explicit full distances in the transformed space.
    z = codebook.transform(noisy)
    full = ((z[:, None, :] - codebook.centers[None]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(whole, full.argmin(axis=1))
    assert codebook.assign(noisy[:0]).shape == (0,)


def test_bad_input_is_rejected():
    rows, _ = blobs(200)
    fitter = CodebookFitter(CodebookConfig(n_clusters=5), dim=8)
    with pytest.raises(ValueError, match=r"shape \[n, 8\]"):
        fitter.partial_fit(rows[:, :7])
    with pytest.raises(ValueError, match=r"shape \[n, 8\]"):
        fitter.partial_fit(rows[0])
    bad = rows.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitter.partial_fit(bad)
    with pytest.raises(ValueError, match="no rows"):
        fitter.finish()
    fitter.partial_fit(rows[:3])
    with pytest.raises(ValueError, match="at least n_clusters"):
        fitter.finish()
    fitter.partial_fit(rows)
    codebook = fitter.finish()
    with pytest.raises(ValueError, match=r"shape \[n, 8\]"):
        codebook.assign(rows[:, :3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        codebook.assign(np.where(np.arange(8) == 1, np.inf, rows))
    with pytest.raises(ValueError, match="pca_components"):
        CodebookFitter(CodebookConfig(pca_components=9), dim=8)
    with pytest.raises(ValueError, match="n_clusters"):
        CodebookConfig(n_clusters=0)
    with pytest.raises(ValueError, match="kind"):
        Codebook(kind="tree", centers=np.zeros((1, 1)))

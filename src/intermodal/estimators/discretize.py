"""Per-modality codebooks: continuous features ``[n, d]`` → discrete codes for the PID estimators.

Paper 003 (App. C.4) discretises real features with k-means (k = 20) and scalar features with
histograms (≤ 100 bins, ~cube-root rule), optionally after standardising and PCA.

Fitting is two passes over one bounded, uniform sample of the stream:

- ``CodebookFitter.partial_fit`` keeps the first ``max_rows`` rows (default 100,000) and then
  reservoir-samples (Algorithm R, seeded by ``CodebookConfig.seed``), so the sample is uniform
  over every row streamed and memory stays at ``max_rows × d`` float32 values. Under
  ``max_rows`` the sample is the stream itself, so batching does not change the codebook.
- ``CodebookFitter.finish`` fits everything on that sample, in order: the standardiser (mean and
  population std; zero-variance features keep scale 1), PCA (eigenvectors of the ``d × d``
  covariance of the standardised sample, signs fixed so the largest-magnitude loading is
  positive), then ``MiniBatchKMeans`` (k-means++, mini-batches of sklearn's default size) run
  to the end 3 times with seeds drawn from ``seed``, keeping the run of lowest inertia over the
  whole sample. Scaler statistics and components are thus fixed before k-means sees
  transformed rows; ``finish`` briefly holds a few float64 copies of the sample.
- Scalar features (``d == 1``) get a histogram instead, whatever ``standardize`` and
  ``pca_components`` say: equal-width bins over the sample's range, as many as the Rice rule
  ``⌈2·m^(1/3)⌉`` for ``m`` sampled rows gives, capped at 100 and at ``n_clusters``; a constant
  sample gets one bin. Bins are half-open ``[e_i, e_{i+1})`` except the last, which is closed
  (as ``np.histogram``); values outside the range fall into the first or last bin.

PID CVX's default codebooks (``models.pid_codes``) are k-means codebooks of the same kind in a
learned space: after the standardiser, an optional ReLU layer (``hidden_weight``,
``hidden_bias``) and a projection (``components``, then a trained encoder's matrix rather than
principal axes) map rows to the few values k-means clustered.

``Codebook.assign`` works through a batch in chunks of rows, so the ``[chunk, k]`` distance
block bounds its memory whatever the batch size. ``to_arrays``/``from_arrays`` give plain arrays
for ``np.savez`` (no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_ROWS = 100_000
MAX_BINS = 100
N_RESTARTS = 3
ASSIGN_CHUNK_ROWS = 65_536
KINDS = ("kmeans", "histogram")
ARRAY_FIELDS = ("mean", "scale", "components", "centers", "edges", "hidden_weight", "hidden_bias")


@dataclass(frozen=True)
class CodebookConfig:
    """How one modality is discretised (``n_clusters`` also caps the histogram's bins)."""

    n_clusters: int = 20
    standardize: bool = True
    pca_components: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_clusters < 1:
            raise ValueError(f"n_clusters must be at least 1, got {self.n_clusters}")
        if self.pca_components is not None and self.pca_components < 1:
            raise ValueError(f"pca_components must be at least 1, got {self.pca_components}")


def _checked(batch: np.ndarray, dim: int) -> np.ndarray:
    """``batch`` as an array ``[n, dim]`` of finite numbers, or a ``ValueError`` saying why not."""
    batch = np.asarray(batch)
    if batch.ndim != 2 or batch.shape[1] != dim:
        raise ValueError(f"batch must have shape [n, {dim}], got {batch.shape}")
    if not np.issubdtype(batch.dtype, np.number):
        raise ValueError(f"batch must be numeric, got dtype {batch.dtype}")
    if not np.all(np.isfinite(batch)):
        raise ValueError("batch has NaN or infinite values")
    return batch


def _projected(
    rows: np.ndarray,
    mean: np.ndarray | None,
    scale: np.ndarray | None,
    components: np.ndarray | None,
    hidden: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``rows [n, d]`` centred, scaled, passed through ``relu(rows @ W.T + b)`` for
    ``hidden = (W, b)`` and projected, by whichever of these are set."""
    rows = np.asarray(rows, dtype=np.float64)
    if mean is not None:
        rows = rows - mean
    if scale is not None:
        rows = rows / scale
    if hidden is not None:
        weight, bias = hidden
        rows = np.maximum(rows @ weight.T + bias, 0.0)
    if components is not None:
        rows = rows @ components.T
    return rows


@dataclass(frozen=True)
class Codebook:
    """A fitted codebook. ``kind == "kmeans"``: rows are centred by ``mean [d]`` (if set), divided
    by ``scale [d]`` (if set), mapped to ``relu(rows @ hidden_weight.T + hidden_bias)``
    ``[n, h]`` (if set), projected on ``components [p, d or h]`` (if set) and given the id of
    the nearest of ``centers [k, d']``. ``kind == "histogram"``: scalars get their bin in
    ``edges [bins + 1]``."""

    kind: str
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    components: np.ndarray | None = None
    centers: np.ndarray | None = None
    edges: np.ndarray | None = None
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if (self.hidden_weight is None) != (self.hidden_bias is None):
            raise ValueError("hidden_weight and hidden_bias come together")
        if self.kind == "kmeans" and self.centers is None:
            raise ValueError("a kmeans codebook needs centers")
        if self.kind == "histogram" and self.edges is None:
            raise ValueError("a histogram codebook needs edges")

    @property
    def n_codes(self) -> int:
        if self.kind == "histogram":
            return len(self.edges) - 1
        return len(self.centers)

    @property
    def dim(self) -> int:
        """Feature dimension ``d`` of the rows ``assign`` accepts."""
        if self.kind == "histogram":
            return 1
        if self.hidden_weight is not None:
            return self.hidden_weight.shape[1]
        if self.components is not None:
            return self.components.shape[1]
        return self.centers.shape[1]

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``[n, d]`` in the space of ``centers``, ``[n, d']`` float64."""
        hidden = None if self.hidden_weight is None else (self.hidden_weight, self.hidden_bias)
        return _projected(rows, self.mean, self.scale, self.components, hidden)

    def assign(self, batch: np.ndarray, chunk_rows: int = ASSIGN_CHUNK_ROWS) -> np.ndarray:
        """Code ids ``[n]`` int64 in ``[0, n_codes)`` of ``batch [n, d]``, ``chunk_rows`` rows at
        a time."""
        batch = _checked(batch, self.dim)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        if self.kind == "histogram":
            # Searching the inner edges only sends out-of-range values to the first/last bin.
            inner = self.edges[1:-1]
            return np.searchsorted(inner, batch[:, 0], side="right").astype(np.int64)
        ids = np.empty(len(batch), dtype=np.int64)
        # ||x||² is the same for every centre of a row, so it cannot change the argmin.
        center_norms = (self.centers**2).sum(axis=1)
        for start in range(0, len(batch), chunk_rows):
            z = self.transform(batch[start : start + chunk_rows])
            distances = center_norms - 2.0 * (z @ self.centers.T)
            ids[start : start + len(z)] = distances.argmin(axis=1)
        return ids

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The set fields as arrays (``kind`` as a 0-d string array), for ``np.savez``."""
        arrays = {"kind": np.array(self.kind)}
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Codebook:
        """Inverse of ``to_arrays``; accepts the ``NpzFile`` from ``np.load``."""

        def field(name: str) -> np.ndarray | None:
            return np.asarray(arrays[name]) if name in arrays else None

        return cls(
            kind=str(arrays["kind"]),
            mean=field("mean"),
            scale=field("scale"),
            components=field("components"),
            centers=field("centers"),
            edges=field("edges"),
            hidden_weight=field("hidden_weight"),
            hidden_bias=field("hidden_bias"),
        )


def n_histogram_bins(n_rows: int, n_clusters: int) -> int:
    """Rice rule ``⌈2·n^(1/3)⌉`` for ``n_rows`` samples, capped at ``MAX_BINS`` and
    ``n_clusters``."""
    return max(1, min(math.ceil(2.0 * float(np.cbrt(n_rows))), MAX_BINS, n_clusters))


def fit_histogram(values: np.ndarray, n_clusters: int) -> Codebook:
    """Equal-width histogram codebook over the range of ``values [m]``."""
    low, high = float(values.min()), float(values.max())
    bins = n_histogram_bins(len(values), n_clusters) if high > low else 1
    return Codebook(kind="histogram", edges=np.linspace(low, high, bins + 1))


def principal_components(rows: np.ndarray, n_components: int) -> np.ndarray:
    """Top ``n_components`` principal axes ``[p, d]`` of centred ``rows [m, d]``, each signed
    so its largest-magnitude loading is positive (eigenvector signs are arbitrary)."""
    covariance = rows.T @ rows / len(rows)
    _, vectors = np.linalg.eigh(covariance)
    components = vectors[:, ::-1][:, :n_components].T
    largest = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(len(components)), largest])
    return components * signs[:, None]


def best_of_restarts(rows: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Centres ``[k, d']`` of the ``N_RESTARTS`` seeded MiniBatchKMeans runs on ``rows [m, d']``
    with the lowest inertia over all of ``rows``."""
    from sklearn.cluster import MiniBatchKMeans  # 1.2 s to import: only k-means pays it

    # sklearn's own n_init only picks the best k-means++ start on a small subsample and then
    # runs once; whole runs recover separated clusters that a single run can merge and split.
    runs = [
        MiniBatchKMeans(n_clusters=n_clusters, n_init=1, random_state=int(run_seed)).fit(rows)
        for run_seed in np.random.SeedSequence(seed).generate_state(N_RESTARTS)
    ]
    best = min(runs, key=lambda run: run.inertia_)
    return best.cluster_centers_.astype(np.float64)


def fit_preprocessing(
    rows: np.ndarray, standardize: bool, pca_components: int | None
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Standardiser (mean, population std) then PCA fitted on ``rows [m, d]`` float64:
    ``(mean [d] | None, scale [d] | None, components [p, d] | None, transformed rows)``."""
    needs_centre = standardize or pca_components is not None
    mean = rows.mean(axis=0) if needs_centre else None
    scale = None
    if standardize:
        std = rows.std(axis=0)
        # A constant feature carries no information; scale 1 keeps it at zero instead of NaN.
        scale = np.where(std > 0, std, 1.0)
    rows = _projected(rows, mean, scale, None)
    components = None
    if pca_components is not None:
        components = principal_components(rows, pca_components)
        rows = rows @ components.T
    return mean, scale, components, rows


def fit_kmeans(sample: np.ndarray, config: CodebookConfig) -> Codebook:
    """Standardiser → PCA → MiniBatchKMeans codebook fitted on ``sample [m, d]``."""
    rows = sample.astype(np.float64)
    if len(rows) < config.n_clusters:
        raise ValueError(
            f"k-means needs at least n_clusters = {config.n_clusters} rows, got {len(rows)}"
        )
    mean, scale, components, rows = fit_preprocessing(
        rows, config.standardize, config.pca_components
    )
    return Codebook(
        kind="kmeans",
        mean=mean,
        scale=scale,
        components=components,
        centers=best_of_restarts(rows, config.n_clusters, config.seed),
    )


class CodebookFitter:
    """Streams batches ``[n, dim]`` into a uniform sample of at most ``max_rows`` rows (the first
    ``max_rows``, then seeded reservoir sampling; float32, so ``4 · max_rows · dim`` bytes) and
    fits the codebook on it in ``finish``."""

    def __init__(self, config: CodebookConfig, dim: int, max_rows: int = MAX_ROWS) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if config.pca_components is not None and config.pca_components > dim:
            raise ValueError(
                f"pca_components = {config.pca_components} exceeds the feature dimension {dim}"
            )
        self.config = config
        self.dim = dim
        self.max_rows = max_rows
        self.n_seen = 0
        self._chunks: list[np.ndarray] = []
        self._rng = np.random.default_rng(config.seed)

    @property
    def sample(self) -> np.ndarray:
        """The rows kept so far ``[min(n_seen, max_rows), dim]`` float32."""
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks or [np.empty((0, self.dim), np.float32)])]
        return self._chunks[0]

    def partial_fit(self, batch: np.ndarray) -> None:
        batch = _checked(batch, self.dim)
        room = max(self.max_rows - self.n_seen, 0)
        head, tail = batch[:room], batch[room:]
        if len(head):
            self._chunks.append(np.array(head, dtype=np.float32))
        if len(tail):
            reservoir = self.sample
            # Algorithm R: row t (0-based) replaces slot j ~ U{0..t} when j < max_rows. Draws
            # do not depend on the reservoir, so one vectorised draw per batch is exact once
            # each slot hit several times takes the last of its rows, as a row-by-row loop would.
            t = self.n_seen + len(head) + np.arange(len(tail))
            slots = self._rng.integers(0, t + 1)
            kept = np.flatnonzero(slots < self.max_rows)[::-1]
            targets, last = np.unique(slots[kept], return_index=True)
            reservoir[targets] = tail[kept[last]]
        self.n_seen += len(batch)

    def finish(self) -> Codebook:
        return fit_codebook(self.sample, self.config)


def fit_codebook(sample: np.ndarray, config: CodebookConfig) -> Codebook:
    """A histogram for scalar features (``d == 1``), else k-means, fitted on ``sample [m, d]``."""
    if len(sample) == 0:
        raise ValueError("no rows were streamed; cannot fit a codebook")
    if sample.shape[1] == 1:
        return fit_histogram(sample[:, 0].astype(np.float64), config.n_clusters)
    return fit_kmeans(sample, config)

"""Mergeable partial statistics per group: count, mean and M2 (sum of squared deviations), and
joint count tensors of discrete codes; fixed-bin histograms for streamed quantiles.

Blocks are summarised independently and merged in any order (Chan et al.'s parallel update),
so a dataset-level mean and its standard error never need the rows in one place. The empty
value is the identity of ``merge``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

import numpy as np


class Mergeable(Protocol):
    def merge(self, other: Self) -> Self: ...


Statistic = TypeVar("Statistic", bound=Mergeable)


@dataclass(frozen=True)
class Moments:
    """Running count, mean and M2 of a vector-valued quantity ``[P]``."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Moments:
        return cls(0, np.zeros(size), np.zeros(size))

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        """Moments of ``rows [n, P]``."""
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            return cls.empty(rows.shape[1])
        mean = rows.mean(axis=0)
        return cls(len(rows), mean, ((rows - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / count)
        return Moments(count, mean, m2)

    def stderr(self) -> np.ndarray:
        """Standard error of the mean (sample variance / n); NaN below two samples."""
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        return np.sqrt(self.m2 / (self.count - 1) / self.count)


GroupKey = tuple[str, str]  # (group_by column or "" for all rows, group value as text)
GroupedMoments = dict[GroupKey, Moments]


def _grouped(
    summarise: Callable[[slice | np.ndarray], Statistic], groups: Mapping[str, np.ndarray]
) -> dict[GroupKey, Statistic]:
    """``summarise(rows)`` of all rows (key ``("", "")``) and of each value's rows for every
    grouping column in ``groups`` (name → ``[n]`` values, compared as text)."""
    result = {("", ""): summarise(slice(None))}
    for name, values in groups.items():
        labels = np.asarray(values).astype(str)
        for value in np.unique(labels):
            result[(name, str(value))] = summarise(labels == value)
    return result


def grouped_moments(rows: np.ndarray, groups: Mapping[str, np.ndarray]) -> GroupedMoments:
    """Moments of ``rows [n, P]`` over all rows and per group (``_grouped``)."""
    return _grouped(lambda selected: Moments.of(rows[selected]), groups)


def merge_grouped(
    left: dict[GroupKey, Statistic], right: dict[GroupKey, Statistic]
) -> dict[GroupKey, Statistic]:
    """Union of two grouped statistics, merging the values of keys present in both."""
    merged = dict(left)
    for key, moments in right.items():
        merged[key] = merged[key].merge(moments) if key in merged else moments
    return merged


@dataclass(frozen=True)
class JointCounts:
    """Counts of discrete triples ``(x1, x2, y)`` in a ``[k1, k2, ky]`` tensor: the mergeable
    sufficient statistic of a discrete joint (PID on codebook ids)."""

    counts: np.ndarray  # [k1, k2, ky] int64

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> JointCounts:
        return cls(np.zeros(shape, dtype=np.int64))

    @classmethod
    def of(
        cls, x1: np.ndarray, x2: np.ndarray, y: np.ndarray, shape: tuple[int, int, int]
    ) -> JointCounts:
        """Counts of ``[n]`` integer codes with ``0 <= x1 < k1`` etc.; raises on codes outside."""
        codes = [np.asarray(v, dtype=np.int64) for v in (x1, x2, y)]
        for name, values, size in zip(("x1", "x2", "y"), codes, shape, strict=True):
            if len(values) and (values.min() < 0 or values.max() >= size):
                raise ValueError(
                    f"{name} codes must lie in [0, {size}), got [{values.min()}, {values.max()}]"
                )
        flat = np.ravel_multi_index(codes, shape)
        return cls(np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape))

    def merge(self, other: JointCounts) -> JointCounts:
        if self.counts.shape != other.counts.shape:
            raise ValueError(
                f"cannot merge counts of shapes {self.counts.shape} and {other.counts.shape}"
            )
        return JointCounts(self.counts + other.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def joint(self) -> np.ndarray:
        """The empirical joint ``[k1, k2, ky]`` (probabilities); needs at least one count."""
        if self.total == 0:
            raise ValueError("no counts: the joint of an empty sample is undefined")
        return self.counts / self.total


GroupedCounts = dict[GroupKey, JointCounts]


def grouped_counts(
    x1: np.ndarray,
    x2: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int, int],
    groups: Mapping[str, np.ndarray],
) -> GroupedCounts:
    """``JointCounts`` of codes ``[n]`` over all rows and per group (``_grouped``)."""
    return _grouped(
        lambda selected: JointCounts.of(x1[selected], x2[selected], y[selected], shape), groups
    )


@dataclass(frozen=True)
class Histogram:
    """Counts of each column of ``[n, P]`` values in ``bins`` equal-width bins on
    ``[low, high]`` (the last bin closed): the mergeable sketch behind streamed quantiles, exact
    to one bin width (Ray's exact quantile would hold the whole column)."""

    counts: np.ndarray  # [P, bins] int64
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def empty(cls, columns: int, bins: int, low: float = 0.0, high: float = 1.0) -> Histogram:
        return cls(np.zeros((columns, bins), dtype=np.int64), low, high)

    @classmethod
    def of(cls, rows: np.ndarray, bins: int, low: float = 0.0, high: float = 1.0) -> Histogram:
        """Counts of ``rows [n, P]``; raises on values outside ``[low, high]`` (or NaN)."""
        rows = np.asarray(rows, dtype=np.float64)
        inside = (rows >= low) & (rows <= high)
        if not inside.all():
            bad = rows[~inside][0]
            raise ValueError(f"histogram values must lie in [{low}, {high}], got {bad}")
        index = np.minimum(((rows - low) / (high - low) * bins).astype(np.int64), bins - 1)
        columns = rows.shape[1]
        flat = (index + np.arange(columns) * bins).ravel()
        counts = np.bincount(flat, minlength=columns * bins).reshape(columns, bins)
        return cls(counts, low, high)

    def merge(self, other: Histogram) -> Histogram:
        if (self.counts.shape, self.low, self.high) != (other.counts.shape, other.low, other.high):
            raise ValueError(
                f"cannot merge histograms of shapes {self.counts.shape} on "
                f"[{self.low}, {self.high}] and {other.counts.shape} on "
                f"[{other.low}, {other.high}]"
            )
        return Histogram(self.counts + other.counts, self.low, self.high)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / self.counts.shape[1]

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """``[P, len(q)]`` quantiles as numpy's default (linear between the order statistics
        around ``q (n − 1)``), each order statistic read as its bin's midpoint: within half a
        bin width of numpy's value."""
        q = np.asarray(q, dtype=np.float64)
        total = int(self.counts[0].sum()) if len(self.counts) else 0
        if total == 0:
            raise ValueError("no counts: the quantiles of an empty sample are undefined")
        position = q * (total - 1)
        below, above = np.floor(position).astype(np.int64), np.ceil(position).astype(np.int64)
        cumulative = self.counts.cumsum(axis=1)  # [P, bins]
        midpoints = self.low + (np.arange(self.counts.shape[1]) + 0.5) * self.bin_width
        result = np.empty((len(self.counts), len(q)))
        for column, running in enumerate(cumulative):
            # the bin holding order statistic k (0-based) is the first with running count > k
            low_value = midpoints[np.searchsorted(running, below, side="right")]
            high_value = midpoints[np.searchsorted(running, above, side="right")]
            result[column] = low_value + (position - below) * (high_value - low_value)
        return result


GroupedHistograms = dict[GroupKey, Histogram]


def grouped_histograms(
    rows: np.ndarray, groups: Mapping[str, np.ndarray], bins: int, low: float, high: float
) -> GroupedHistograms:
    """``Histogram`` of ``rows [n, P]`` over all rows and per group (``_grouped``)."""
    return _grouped(lambda selected: Histogram.of(rows[selected], bins, low, high), groups)

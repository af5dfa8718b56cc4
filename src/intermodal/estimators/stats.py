"""Mergeable partial statistics per group: count, mean and M2 (sum of squared deviations), and
joint count tensors of discrete codes.

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

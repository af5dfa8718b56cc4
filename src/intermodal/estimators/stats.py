"""Mergeable partial statistics per group: count, mean and M2 (sum of squared deviations), joint
count tensors of discrete codes, and per-column summaries (moments and a KLL quantile sketch).

Blocks are summarised independently and merged in any order (Chan et al.'s parallel update),
so a dataset-level mean and its standard error never need the rows in one place. The empty
value is the identity of ``merge``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

import numpy as np
from datasketches import kll_doubles_sketch


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


# KLL's accuracy parameter: normalised rank error about 1.3 % (datasketches' default); a
# sketch holds every value exactly until it has seen this many
SKETCH_K = 200


class QuantileSketch:
    """A mergeable KLL sketch of a stream of floats (Apache DataSketches): quantiles within
    ``SKETCH_K``'s rank error in a few kB, whatever the stream's length. Pickles through the
    sketch's own serialisation, so it travels between Ray workers."""

    def __init__(self, sketch: kll_doubles_sketch | None = None) -> None:
        self.sketch = sketch if sketch is not None else kll_doubles_sketch(SKETCH_K)

    @classmethod
    def of(cls, values: np.ndarray) -> QuantileSketch:
        result = cls()
        if len(values):
            result.sketch.update(np.ascontiguousarray(values, dtype=np.float64))
        return result

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        merged = kll_doubles_sketch.deserialize(self.sketch.serialize())
        merged.merge(other.sketch)
        return QuantileSketch(merged)

    @property
    def count(self) -> int:
        return int(self.sketch.n)

    def quantiles(self, levels: list[float]) -> list[float]:
        """Values at the given rank fractions (each one of the values seen); needs a value."""
        if self.sketch.is_empty():
            raise ValueError("no values: the quantiles of an empty sample are undefined")
        return [float(v) for v in self.sketch.get_quantiles(levels)]

    def __getstate__(self) -> bytes:
        return self.sketch.serialize()

    def __setstate__(self, state: bytes) -> None:
        self.sketch = kll_doubles_sketch.deserialize(state)


@dataclass(frozen=True)
class ColumnSummary:
    """Moments and a quantile sketch of one column's non-NaN values."""

    moments: Moments  # of size 1
    sketch: QuantileSketch

    @classmethod
    def of(cls, values: np.ndarray) -> ColumnSummary:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        return cls(Moments.of(values[:, None]), QuantileSketch.of(values))

    def merge(self, other: ColumnSummary) -> ColumnSummary:
        return ColumnSummary(self.moments.merge(other.moments), self.sketch.merge(other.sketch))

    @property
    def count(self) -> int:
        return self.moments.count

    @property
    def mean(self) -> float:
        return float(self.moments.mean[0])

    @property
    def stderr(self) -> float:
        return float(self.moments.stderr()[0])


@dataclass(frozen=True)
class ColumnSummaries:
    """``ColumnSummary`` of each float score column, over all rows and per group: the generic
    partial statistics every per-sample column gets. ``ColumnSummaries()`` is the identity of
    ``merge``."""

    by_group: dict[GroupKey, dict[str, ColumnSummary]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, columns: Mapping[str, np.ndarray], groups: Mapping[str, np.ndarray]
    ) -> ColumnSummaries:
        """Summaries of ``columns`` (name → ``[n]`` floats, NaN for missing) per group."""
        return cls(
            _grouped(
                lambda rows: {name: ColumnSummary.of(v[rows]) for name, v in columns.items()},
                groups,
            )
        )

    def merge(self, other: ColumnSummaries) -> ColumnSummaries:
        merged = {key: dict(columns) for key, columns in self.by_group.items()}
        for key, columns in other.by_group.items():
            mine = merged.setdefault(key, {})
            for name, summary in columns.items():
                mine[name] = mine[name].merge(summary) if name in mine else summary
        return ColumnSummaries(merged)

    def groups(self) -> list[GroupKey]:
        """Group keys, the whole dataset (``("", "")``) first, then sorted."""
        return sorted(self.by_group, key=lambda key: (key != ("", ""), key))

    def get(self, column: str, group: GroupKey = ("", "")) -> ColumnSummary | None:
        return self.by_group.get(group, {}).get(column)


@dataclass(frozen=True)
class BlockEstimates:
    """Estimates made per block of rows and repeated on every row of it (PID BATCH's block
    PID ``[P]``), kept by block id so that a block whose rows lie in several score files counts
    once: ``block id → (values [P], rows)``. ``merge`` adds the rows of a block both sides
    hold; ``moments`` are over blocks. ``BlockEstimates()`` is the identity."""

    blocks: dict = field(default_factory=dict)

    @classmethod
    def of(cls, block_ids: np.ndarray, values: np.ndarray) -> BlockEstimates:
        """From rows: their block ids ``[n]`` and the estimates each repeats ``[n, P]``."""
        ids, first, rows = np.unique(block_ids, return_index=True, return_counts=True)
        values = np.asarray(values, dtype=np.float64)
        return cls(
            {
                block.item(): (values[index], int(count))
                for block, index, count in zip(ids, first, rows, strict=True)
            }
        )

    def merge(self, other: BlockEstimates) -> BlockEstimates:
        merged = dict(self.blocks)
        for block, (values, rows) in other.blocks.items():
            merged[block] = (values, merged[block][1] + rows) if block in merged else (values, rows)
        return BlockEstimates(merged)

    def moments(self) -> Moments:
        """Moments over blocks of ``[values..., rows]`` ``[P + 1]`` (in block-id order, so any
        split of the rows gives the same numbers)."""
        if not self.blocks:
            return Moments.empty(0)
        return Moments.of(
            np.array([[*self.blocks[b][0], self.blocks[b][1]] for b in sorted(self.blocks)])
        )


@dataclass(frozen=True)
class Keyed:
    """Mergeable statistics by key (any hashable: a pair, a target, a group): ``merge`` keeps
    every key and merges the values of keys both sides have. ``Keyed()`` is the identity."""

    items: dict = field(default_factory=dict)

    def merge(self, other: Keyed) -> Keyed:
        return Keyed(merge_grouped(self.items, other.items))

"""Writing a bench's input: N rows as Parquet shards of a fixed size, each shard's rows made by
the bench script."""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from intermodal.synthetic.hdxor import ROW_GROUP_SIZE

# (shard index, first row, one past the last row) → the shard's table
ShardRows = Callable[[int, int, int], pa.Table]


def write_shards(uri: Path, n_rows: int, shard_rows: int, make: ShardRows) -> int:
    """Replace ``uri`` by ``ceil(n_rows / shard_rows)`` shards of near-equal size; returns how
    many."""
    shutil.rmtree(uri, ignore_errors=True)
    uri.mkdir(parents=True)
    n_shards = max(1, math.ceil(n_rows / shard_rows))
    bounds = np.linspace(0, n_rows, n_shards + 1).round().astype(int)
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        table = make(index, int(start), int(stop))
        pq.write_table(table, uri / f"part-{index:05d}.parquet", row_group_size=ROW_GROUP_SIZE)
    return n_shards


def row_ids(start: int, stop: int) -> pa.Array:
    return pa.array(np.arange(start, stop, dtype=np.int64))


def repeating(block: pa.Table) -> ShardRows:
    """Shards that repeat ``block``'s first rows under fresh ids (``sample_id``), so generating a
    large input costs one block."""

    def make(_: int, start: int, stop: int) -> pa.Table:
        return block.slice(0, stop - start).add_column(0, "sample_id", row_ids(start, stop))

    return make

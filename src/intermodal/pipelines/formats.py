"""The file formats an input can come in, each read the same way: a list of shards, each with
its schema, row count and row groups (the unit a read task validates and a sample reads).

- ``parquet``: a file, a folder of ``*.parquet`` or a glob (fsspec); a row group is Parquet's.
- ``arrow``: Arrow IPC files, stream or file format (what Hugging Face ``datasets`` writes with
  ``save_to_disk``: ``data-*.arrow`` beside ``state.json``); a row group is a record batch.
- ``lance``: a Lance dataset (``pylance``, the ``lance`` extra); a shard is a fragment
  (``<uri>#<fragment id>``), read in groups of ``LANCE_GROUP_ROWS`` rows.

``auto`` (the config's default) picks lance for a folder with ``_versions/`` or a name ending
in ``.lance``, arrow for ``*.arrow`` files, and parquet otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from intermodal import storage

LANCE_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class ShardFacts:
    schema: pa.Schema
    num_rows: int
    group_rows: tuple[int, ...]  # rows of each row group, in order
    version: str  # changes when the shard's content does (size, or a dataset version)


class ShardFormat(Protocol):
    title: str  # how messages name the format

    def shards(self, uri: str) -> list[str]: ...

    def facts(self, shard: str) -> ShardFacts: ...

    def read_groups(self, shard: str, groups: list[int], columns: list[str]) -> pa.Table: ...

    def iter_groups(self, shard: str) -> Iterator[pa.Table]: ...


class ParquetFormat:
    title = "Parquet"

    def shards(self, uri: str) -> list[str]:
        return storage.list_parquet(uri)

    def facts(self, shard: str) -> ShardFacts:
        metadata = storage.parquet_file(shard).metadata
        groups = tuple(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups))
        fs, path = storage.filesystem(shard)
        return ShardFacts(
            metadata.schema.to_arrow_schema(), metadata.num_rows, groups, str(fs.size(path))
        )

    def read_groups(self, shard: str, groups: list[int], columns: list[str]) -> pa.Table:
        return storage.parquet_file(shard).read_row_groups(groups, columns=columns)

    def iter_groups(self, shard: str) -> Iterator[pa.Table]:
        parquet = storage.parquet_file(shard)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)


class ArrowFormat:
    title = "Arrow IPC"

    def shards(self, uri: str) -> list[str]:
        fs, path = storage.filesystem(uri)
        if fs.isdir(path):
            paths = sorted(p for p in fs.find(path) if p.endswith(".arrow"))
        elif any(char in path for char in "*?["):
            paths = sorted(fs.glob(path))
        elif fs.exists(path):
            paths = [path]
        else:
            raise FileNotFoundError(f"{uri}: no such file or directory")
        return [fs.unstrip_protocol(p) for p in paths]

    def _batches(self, shard: str) -> tuple[pa.Schema, list[pa.RecordBatch]]:
        fs, path = storage.filesystem(shard)
        with fs.open(path, "rb") as handle:
            data = pa.py_buffer(handle.read())
        try:
            reader = pa.ipc.open_stream(data)
            return reader.schema, list(reader)
        except pa.ArrowInvalid:
            file_reader = pa.ipc.open_file(data)
            batches = [file_reader.get_batch(i) for i in range(file_reader.num_record_batches)]
            return file_reader.schema, batches

    def facts(self, shard: str) -> ShardFacts:
        schema, batches = self._batches(shard)
        groups = tuple(batch.num_rows for batch in batches)
        fs, path = storage.filesystem(shard)
        return ShardFacts(schema, sum(groups), groups, str(fs.size(path)))

    def read_groups(self, shard: str, groups: list[int], columns: list[str]) -> pa.Table:
        schema, batches = self._batches(shard)
        table = pa.Table.from_batches([batches[g] for g in groups], schema=schema)
        return table.select(columns)

    def iter_groups(self, shard: str) -> Iterator[pa.Table]:
        schema, batches = self._batches(shard)
        for batch in batches:
            yield pa.Table.from_batches([batch], schema=schema)


def _lance():  # imported where used: an optional extra
    try:
        import lance
    except ImportError as error:
        raise ImportError("Lance input needs pylance: pip install 'intermodal[lance]'") from error
    return lance


class LanceFormat:
    title = "Lance"

    def shards(self, uri: str) -> list[str]:
        dataset = _lance().dataset(uri)
        return [f"{uri}#{fragment.fragment_id}" for fragment in dataset.get_fragments()]

    def _fragment(self, shard: str):
        uri, _, fragment_id = shard.rpartition("#")
        dataset = _lance().dataset(uri)
        return dataset, dataset.get_fragment(int(fragment_id))

    def facts(self, shard: str) -> ShardFacts:
        dataset, fragment = self._fragment(shard)
        rows = fragment.count_rows()
        full, rest = divmod(rows, LANCE_GROUP_ROWS)
        groups = (LANCE_GROUP_ROWS,) * full + ((rest,) if rest else ())
        return ShardFacts(dataset.schema, rows, groups, f"version {dataset.version}")

    def read_groups(self, shard: str, groups: list[int], columns: list[str]) -> pa.Table:
        _, fragment = self._fragment(shard)
        return pa.concat_tables(
            fragment.to_table(columns=columns, offset=g * LANCE_GROUP_ROWS, limit=LANCE_GROUP_ROWS)
            for g in groups
        )

    def iter_groups(self, shard: str) -> Iterator[pa.Table]:
        _, fragment = self._fragment(shard)
        for offset in range(0, fragment.count_rows(), LANCE_GROUP_ROWS):
            yield fragment.to_table(offset=offset, limit=LANCE_GROUP_ROWS)


FORMATS: dict[str, ShardFormat] = {
    "parquet": ParquetFormat(),
    "arrow": ArrowFormat(),
    "lance": LanceFormat(),
}


def detect_format(uri: str) -> str:
    """The format of an input URI (see the module's docstring)."""
    fs, path = storage.filesystem(uri)
    if path.rstrip("/").endswith(".lance") or fs.isdir(f"{path.rstrip('/')}/_versions"):
        return "lance"
    if path.endswith(".arrow"):
        return "arrow"
    if fs.isdir(path) and any(p.endswith(".arrow") for p in fs.find(path)):
        return "arrow"
    return "parquet"

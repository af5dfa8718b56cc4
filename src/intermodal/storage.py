"""Files through fsspec: local paths, ``file://``, ``memory://``, ``s3://`` (with s3fs), ...

A leaf module (imports nothing of ours) so every layer reads and writes the same way.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem of ``uri`` and the path within it."""
    return fsspec.core.url_to_fs(str(uri))


def arrow_filesystem(fs: AbstractFileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def holds_files(uri: str) -> bool:
    """Whether ``uri`` is a directory with something in it (an output a rerun would replace)."""
    fs, path = filesystem(uri)
    return fs.isdir(path) and bool(fs.ls(path))


def list_parquet(uri: str, missing_ok: bool = False) -> list[str]:
    """Parquet files named by ``uri``: one file, every ``*.parquet`` below a directory, or a
    glob; sorted, spelled as full URIs. A missing ``uri`` is an error unless ``missing_ok``
    (then: no files)."""
    fs, path = filesystem(uri)
    if any(char in path for char in "*?["):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if p.endswith(".parquet")]
    elif fs.exists(path):
        paths = [path]
    elif missing_ok:
        paths = []
    else:
        raise FileNotFoundError(f"{uri}: no such file or directory")
    return [fs.unstrip_protocol(p) for p in sorted(paths)]


def parquet_file(uri: str) -> pq.ParquetFile:
    fs, path = filesystem(uri)
    return pq.ParquetFile(fs.open(path, "rb"))


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri)
    return pq.read_table(path, columns=columns, filesystem=arrow_filesystem(fs))


def write_table(table: pa.Table, uri: str, row_group_size: int | None = None) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(table, path, filesystem=arrow_filesystem(fs), row_group_size=row_group_size)


def remove(uri: str) -> None:
    """Delete a file or directory tree if it exists."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_json(data: Any, uri: str) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)


def read_json(uri: str) -> Any:
    with fsspec.open(uri, "r") as handle:
        return json.load(handle)


def read_json_files(uri: str) -> list[Any]:
    """Every ``*.json`` file directly in the folder ``uri``, in name order; none when it is
    missing."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    return [read_json(fs.unstrip_protocol(name)) for name in names]


def write_arrays(arrays: dict[str, np.ndarray], uri: str) -> None:
    """Named arrays as one ``.npz`` file (plain arrays: read back without pickle)."""
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        np.savez(handle, **arrays)


def read_arrays(uri: str) -> dict[str, np.ndarray]:
    with fsspec.open(uri, "rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}

"""Resumable scoring: score files are filed by input shard, so a run killed part-way restarts
from the shards it had not finished.

A shard is finished when its score rows plus its rejected rows equal its input rows, counted
from Parquet footers alone; that count, not a log the killed driver may not have written, is
the record of what was done. Files are written under a temporary name and renamed, and named
after their content (shard, first id, rows), so a half-written file is never read as scores
and a retried write task replaces its file instead of adding a copy.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block
from ray.data.datasource import Datasink

from intermodal import storage
from intermodal.pipelines.inputs import Shard, shard_file_prefix
from intermodal.rundir import RunPaths
from intermodal.schemas.tables import SAMPLE_ID, SOURCE_SHARD

TEMPORARY_MARK = ".partial-"
# compute settings that change how fast a run goes, not what it writes: a run may resume
# with others (e.g. more actors on a bigger machine)
_RESOURCE_KEYS = ("actors", "score_on", "cpus_per_actor", "gpus_per_actor", "torch_threads")


def score_file_name(shard_index: int, first_id: object, n_rows: int) -> str:
    digest = hashlib.blake2b(repr(first_id).encode(), digest_size=8).hexdigest()
    return f"{shard_file_prefix(shard_index)}{digest}-{n_rows}.parquet"


def scored_rows(scores_uri: str) -> int:
    """Rows in the finished score files under ``scores_uri``, from their names (no reads)."""
    files = storage.list_parquet(scores_uri, missing_ok=True)
    return sum(int(uri.rsplit("-", 1)[1].split(".")[0]) for uri in files)


def write_atomically(table: pa.Table, uri: str) -> None:
    """Write ``table`` to ``uri`` through a temporary name, so readers see all of it or none."""
    fs, path = storage.filesystem(uri)
    temporary = f"{path}{TEMPORARY_MARK}{uuid.uuid4().hex}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(table, temporary, filesystem=storage.arrow_filesystem(fs))
    fs.mv(temporary, path)


class ScoreSink(Datasink[None]):
    """Writes score blocks to ``scores/``, one file per block and shard, without the internal
    ``SOURCE_SHARD`` column."""

    def __init__(self, scores_uri: str) -> None:
        self.scores_uri = scores_uri

    def write(self, blocks: Iterable[Block], ctx: object) -> None:
        for block in blocks:
            if block.num_rows == 0:  # Ray hands on empty blocks, with no columns, as they are
                continue
            for shard_index in pc.unique(block.column(SOURCE_SHARD)).to_pylist():
                rows = block.filter(pc.equal(block.column(SOURCE_SHARD), shard_index))
                rows = rows.drop_columns([SOURCE_SHARD])
                first_id = rows.column(SAMPLE_ID)[0].as_py()
                name = score_file_name(shard_index, first_id, rows.num_rows)
                write_atomically(rows, storage.join(self.scores_uri, name))


def resume_key(config_data: dict, input_fingerprint: str, version: str) -> dict:
    """What a run's output depends on: a recorded run resumes only when this is unchanged."""
    settings = {**config_data, "compute": dict(config_data["compute"])}
    for key in _RESOURCE_KEYS:
        settings["compute"].pop(key, None)
    return {"config": settings, "input": input_fingerprint, "intermodal": version}


def _rows_by_shard(uri: str) -> tuple[dict[int, int], set[int]]:
    """Rows of the Parquet files under ``uri`` per shard index of their names, and the shards
    with a file whose footer cannot be read (torn: such a shard is unfinished)."""
    counts: dict[int, int] = {}
    torn: set[int] = set()
    for file_uri in storage.list_parquet(uri, missing_ok=True):
        shard_index = int(file_uri.rsplit("/", 1)[1].split("-")[1])
        try:
            n_rows = storage.parquet_file(file_uri).metadata.num_rows
        except Exception:  # pyarrow raises several types for a torn file
            torn.add(shard_index)
            continue
        counts[shard_index] = counts.get(shard_index, 0) + n_rows
    return counts, torn


@dataclass(frozen=True)
class ShardProgress:
    finished: list[Shard]
    pending: list[Shard]


def shard_progress(paths: RunPaths, shards: list[Shard]) -> ShardProgress:
    """Which shards are finished (score + reject rows = input rows); every file of an
    unfinished shard, and any temporary file, is removed so the shard is scored afresh."""
    (scored, torn_scores), (rejected, torn_rejects) = map(
        _rows_by_shard, (paths.scores, paths.rejects)
    )
    finished, pending = [], []
    for shard in shards:
        rows = scored.get(shard.index, 0) + rejected.get(shard.index, 0)
        done = rows == shard.num_rows and shard.index not in torn_scores | torn_rejects
        (finished if done else pending).append(shard)
    for folder in (paths.scores, paths.rejects):
        if not storage.exists(folder):
            continue
        fs, path = storage.filesystem(folder)
        for file_path in fs.ls(path, detail=False):
            name = file_path.rsplit("/", 1)[1]
            mine = any(name.startswith(shard_file_prefix(s.index)) for s in pending)
            if mine or TEMPORARY_MARK in name:
                fs.rm(file_path)
    return ShardProgress(finished, pending)

"""Reading the input: shard checks before any work, duplicate ids, background rows, and the
streamed read-and-validate stage that sends bad rows to ``rejects/``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from intermodal import storage
from intermodal.entrypoints import import_entrypoint
from intermodal.pipelines.formats import FORMATS, ShardFormat, detect_format
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, SOURCE_SHARD, modality_arrays
from intermodal.schemas.validation import (
    InputSchemaError,
    Preprocess,
    schema_problems,
    validate_rows,
)

# Driver threads for per-shard footer and id reads (I/O bound, object stores like many).
_IO_THREADS = 16


class NoValidRows(InputSchemaError):
    """Every row of the sampled input failed validation."""


def job_preprocess(job: JobConfig) -> Preprocess | None:
    """The job's ``model.preprocess`` with its kwargs bound (imported once per process), or
    None."""
    if job.model is None or job.model.preprocess is None:
        return None
    return _preprocess(job.model.preprocess, json.dumps(job.model.preprocess_kwargs))


@cache
def _preprocess(entrypoint: str, kwargs: str) -> Preprocess:
    function = import_entrypoint(entrypoint, "model.preprocess")
    return partial(function, **json.loads(kwargs)) if kwargs != "{}" else function


@dataclass(frozen=True)
class Shard:
    index: int
    uri: str
    num_rows: int
    row_group_rows: tuple[int, ...]
    format: str = "parquet"  # a key of ``formats.FORMATS``
    version: str = ""  # changes with the shard's content (``ShardFacts.version``)

    @property
    def reader(self) -> ShardFormat:
        return FORMATS[self.format]


def inspect_shards(config: JobConfig, uri: str | None = None) -> list[Shard]:
    """Every shard's schema checked against the config before any work; raises
    :class:`InputSchemaError` naming each bad file and column."""
    uri = uri or config.input
    kind_of_input = detect_format(uri) if config.input_format == "auto" else config.input_format
    reader = FORMATS[kind_of_input]
    try:
        uris = reader.shards(uri)
    except FileNotFoundError as error:
        raise InputSchemaError(f"input {error}") from None
    if not uris:
        raise InputSchemaError(f"input {uri}: no {reader.title} files found")

    def inspect(index_uri: tuple[int, str]) -> tuple[Shard, list[str], str]:
        index, shard_uri = index_uri
        try:
            facts = reader.facts(shard_uri)
        except Exception as error:  # pyarrow raises several types for corrupt files
            problem = f"cannot be read as {reader.title}: {error}"
            return Shard(index, shard_uri, 0, (), kind_of_input), [problem], ""
        problems = schema_problems(facts.schema, config)
        kind = ""  # a shard with problems is reported with them
        if not problems:
            id_type = facts.schema.field(config.id_column).type
            kind = "integer" if pa.types.is_integer(id_type) else str(id_type)
        shard = Shard(
            index, shard_uri, facts.num_rows, facts.group_rows, kind_of_input, facts.version
        )
        return shard, problems, kind

    with ThreadPoolExecutor(_IO_THREADS) as pool:
        results = list(pool.map(inspect, enumerate(uris)))
    messages = [f"{shard.uri}: {p}" for shard, problems, _ in results for p in problems]
    if messages:
        raise InputSchemaError("input does not match the config:\n  " + "\n  ".join(messages))
    _check_id_types(config, {shard.uri: kind for shard, _, kind in results})
    return [shard for shard, _, _ in results]


def _check_id_types(config: JobConfig, id_kinds: dict[str, str]) -> None:
    """Every shard's id column holds integers, or every shard's holds text: ids of both kinds
    cannot be compared for duplicates or written as one column."""
    kinds: dict[str, list[str]] = {}
    for uri, kind in id_kinds.items():
        kinds.setdefault(kind, []).append(uri)
    if len(kinds) > 1:
        listed = "; ".join(
            f"{kind} in {len(files)} file(s), e.g. {files[0]}" for kind, files in kinds.items()
        )
        raise InputSchemaError(
            f"input: id column '{config.id_column}' has different types across shards ({listed});"
            " write it with one type in every file"
        )


def fingerprint(shards: list[Shard]) -> str:
    """Identity of the input: shard names, row counts and versions (sizes)."""
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.uri}\0{shard.num_rows}\0{shard.version}\n".encode())
    return digest.hexdigest()


def duplicate_ids(config: JobConfig, shards: list[Shard]) -> pa.Array:
    """Ids that occur more than once anywhere in the input.

    Reads only the id column; the counting is on the driver (pyarrow hash counts), which holds
    one id per row: fine for hundreds of millions of integer ids."""

    def ids(shard: Shard) -> pa.ChunkedArray:
        groups = list(range(len(shard.row_group_rows)))
        return shard.reader.read_groups(shard.uri, groups, [config.id_column]).column(0)

    with ThreadPoolExecutor(_IO_THREADS) as pool:
        chunks = [chunk for column in pool.map(ids, shards) for chunk in column.chunks]
    if not chunks:
        return pa.array([], pa.int64())
    counts = pc.value_counts(pa.chunked_array(chunks).drop_null())
    return counts.field("values").filter(pc.greater(counts.field("counts"), 1))


def _read_rows(shard: Shard, rows: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows (sorted, within the shard) of a shard, reading only the row groups that hold them."""
    starts = np.cumsum((0, *shard.row_group_rows))
    groups = sorted(set(np.searchsorted(starts, rows, side="right") - 1))
    table = shard.reader.read_groups(shard.uri, groups, columns)
    offsets = {g: int(sum(shard.row_group_rows[h] for h in groups if h < g)) for g in groups}
    group_of = np.searchsorted(starts, rows, side="right") - 1
    local = [offsets[g] + int(r - starts[g]) for g, r in zip(group_of, rows, strict=True)]
    return table.take(pa.array(local, pa.int64()))


def sample_table(
    config: JobConfig, shards: list[Shard], n_rows: int, seed: int, duplicates: pa.Array
) -> pa.Table:
    """Up to ``n_rows`` valid rows drawn uniformly without replacement from the shards, in the
    normalised layout (``schemas.tables.normalised_input_schema``); invalid draws are replaced
    by further draws. Raises ``NoValidRows`` when there is none."""
    total = sum(shard.num_rows for shard in shards)
    order = np.random.default_rng(seed).permutation(total)
    starts = np.cumsum([0, *(shard.num_rows for shard in shards)])
    label = [config.label_column] if config.label_column else []
    modalities = [m.source_column for m in config.modalities]
    # a column may serve twice (e.g. as a modality and a group): read it once
    columns = list(dict.fromkeys([config.id_column, *label, *config.group_columns, *modalities]))
    collected: list[pa.Table] = []
    have, position = 0, 0
    while have < n_rows and position < total:
        # draw only what is missing, so invalid rows are replaced without biasing the sample
        draw = np.sort(order[position : position + n_rows - have])
        position += len(draw)
        within = [draw[(draw >= start) & (draw < end)] - start for start, end in pairwise(starts)]
        reads = [(shard, rows) for shard, rows in zip(shards, within, strict=True) if len(rows)]
        for valid in _valid_rows(config, reads, columns, duplicates):
            collected.append(valid)
            have += valid.num_rows
    if have == 0:
        raise NoValidRows("no valid row to draw a sample from")
    return pa.concat_tables(collected)


def _read_valid(
    config: JobConfig, shard: Shard, rows: np.ndarray, columns: list[str], duplicates: pa.Array
) -> pa.Table:
    raw = _read_rows(shard, rows, columns)
    return validate_rows(raw, config, duplicates, shard.uri, 0, job_preprocess(config))[0]


def _valid_rows(
    config: JobConfig, reads: list[tuple[Shard, np.ndarray]], columns: list[str], duplicates
) -> list[pa.Table]:
    """The valid rows of each (shard, rows) read. With ``model.preprocess`` and Ray up, each
    read is a Ray task: the user's preprocessing (decoding, tokenizing) runs on the cluster,
    not on the driver (before Ray starts, the preflight's few rows do run here)."""
    if job_preprocess(config) is None or not ray.is_initialized():
        return [_read_valid(config, shard, rows, columns, duplicates) for shard, rows in reads]
    task, reading = ray.remote(_read_valid), config.without_sections()
    return ray.get(
        [task.remote(reading, shard, rows, columns, duplicates) for shard, rows in reads]
    )


def labelled_sample(
    config: JobConfig,
    shards: list[Shard],
    n_rows: int,
    seed: int,
    duplicates: pa.Array,
    minimum: int,
    purpose: str,
) -> pa.Table:
    """``sample_table``'s rows that have a label; ValueError naming ``purpose`` when fewer than
    ``minimum`` remain."""
    table = sample_table(config, shards, n_rows, seed, duplicates)
    table = table.filter(pc.is_valid(table.column(LABEL)))
    if table.num_rows < minimum:
        raise ValueError(
            f"{purpose} needs at least {minimum} labelled rows to fit on: {table.num_rows} in "
            f"a sample of {n_rows}"
        )
    return table


def sample_rows(
    config: JobConfig, shards: list[Shard], n_rows: int, seed: int, duplicates: pa.Array
) -> dict[str, np.ndarray]:
    """``sample_table``'s modality values, ``{modality: [n, size] float32}``."""
    rows = sample_table(config, shards, n_rows, seed, duplicates)
    return modality_arrays(config, rows)


def shard_file_prefix(shard_index: int) -> str:
    """The start of the names of a shard's reject and score files (``resume`` finds them by it)."""
    return f"shard-{shard_index:06d}-"


def read_shard(
    shard: Shard, job: JobConfig, duplicates: pa.Array, rejects_uri: str
) -> Iterator[pa.Table]:
    """Stream one shard by row group: write each group's bad rows to ``rejects/`` (one file per
    group, named by shard and group so a retried task overwrites rather than duplicates) and
    yield its valid rows with the shard's index in ``SOURCE_SHARD`` (the score writer files
    rows by shard, which is what ``resume`` counts)."""
    first_row = 0
    for group, raw in enumerate(shard.reader.iter_groups(shard.uri)):
        valid, rejects = validate_rows(
            raw, job, duplicates, shard.uri, first_row, job_preprocess(job)
        )
        first_row += raw.num_rows
        if rejects.num_rows:
            name = f"{shard_file_prefix(shard.index)}group-{group:06d}.parquet"
            storage.write_table(rejects, storage.join(rejects_uri, name))
        if valid.num_rows:
            shard_index = pa.array(np.full(valid.num_rows, shard.index, np.int32))
            yield valid.append_column(SOURCE_SHARD, shard_index)


class _ShardTasks(Datasource):
    """A Ray Data source of one read task per shard, ``read(shard)`` yielding its tables."""

    def __init__(self, shards: list[Shard]) -> None:
        self.shards = shards

    def read(self, shard: Shard) -> Iterator[pa.Table]:
        raise NotImplementedError

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                partial(self.read, shard),
                BlockMetadata(
                    num_rows=shard.num_rows,
                    size_bytes=None,
                    exec_stats=None,
                    input_files=(shard.uri,),
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for shard in self.shards
        ]


class InputSource(_ShardTasks):
    """The input's rows as they are, unvalidated (``partition --with-input`` joins them to
    the scores), in any of the input formats."""

    def read(self, shard: Shard) -> Iterator[pa.Table]:
        return shard.reader.iter_groups(shard.uri)


class ShardSource(_ShardTasks):
    """The input as a Ray Data source: one read task per shard (``read_shard``).

    One task per shard keeps the unit of work, of retry and of resumption the shard: score
    tasks fuse into it (one task reads, scores and writes a shard), and score actors get
    one shard per actor task (a shard list mapped with ``map_batches`` reached the actor
    pool as a single bundle: one task, one busy actor)."""

    def __init__(
        self, shards: list[Shard], job: JobConfig, duplicates: pa.Array, rejects_uri: str
    ) -> None:
        super().__init__(shards)
        # the validated config without the measures' sections: reading needs none of them, and
        # a read task then imports no measure (nor torch)
        self.job = job.without_sections()
        self.duplicates = duplicates
        self.rejects_uri = rejects_uri

    def read(self, shard: Shard) -> Iterator[pa.Table]:
        return read_shard(shard, self.job, self.duplicates, self.rejects_uri)

"""``partition``: split a run's samples by a score column (exact quantile cuts or thresholds), or
by a category rule a measure offers (the dominant LSMI term, the leading I2MoE expert: each
row in the category of its largest column), into Parquet of ``sample_id`` per partition,
streamed with Ray Data.

Quantile cuts are exact, without holding the column: rows are ordered by the key
``(value, id)`` (the id breaks ties, so the order is strict and every requested size is met to
the row), and the key at each cut rank is found by a radix search over the key's 128 bits,
16 bits a pass; once the candidates of a cut fit ``collect_limit`` they are collected and
sorted on the driver instead. Each pass reads the two columns of every score file in a Ray
task and returns counts or candidates, never the column.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.measures import MEASURES, parse_config
from intermodal.measures.base import CategoryRule
from intermodal.pipelines.inputs import InputSource, inspect_shards
from intermodal.progress import Progress, print_progress
from intermodal.rundir import RunPaths
from intermodal.schemas.tables import SAMPLE_ID

PARTITION = "partition"
NULL_PARTITION = "null"  # rows whose value is null or NaN (e.g. LSMI of an unlabelled row)
SUMMARY_FILE = "partitions.json"
DIGIT_BITS = 16
KEY_DIGITS = 8  # 4 digits of the value's bits, then 4 of the id's
DIGIT_MASK = (1 << DIGIT_BITS) - 1


def category_names() -> dict[str, str]:
    """``--by`` values that name a measure's category rule → that measure's name."""
    return {by: m.name for m in MEASURES.values() for by in m.partition_names}


@dataclass(frozen=True)
class Rule:
    """What splits the rows: ``by`` a score column with ``quantiles`` or ``thresholds``, or
    ``by`` a measure's category rule (``category_names``; ``pair`` picks the pair of a rule on
    modality pairs), resolved for a run into ``category``."""

    by: str
    quantiles: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    pair: tuple[str, str] | None = None
    category: CategoryRule | None = None

    def __post_init__(self) -> None:
        if self.by in category_names():
            if self.quantiles or self.thresholds:
                raise ValueError(f"--by {self.by} takes neither --quantiles nor --threshold")
            return
        if bool(self.quantiles) == bool(self.thresholds):
            raise ValueError(f"--by {self.by}: give either --quantiles or --threshold")
        cuts = self.quantiles or self.thresholds
        if list(cuts) != sorted(set(cuts)):
            raise ValueError(f"cuts must be strictly increasing, got {list(cuts)}")
        if any(not 0 < q < 1 for q in self.quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {list(self.quantiles)}")


def cut_names(n_cuts: int) -> list[str]:
    """Partition names, lowest values first: ``low``/``high`` for one cut, else ``p0``..."""
    return ["low", "high"] if n_cuts == 1 else [f"p{i}" for i in range(n_cuts + 1)]


def cut_rank(quantile: float, n: int) -> int:
    """0-based rank of the first row above the cut: the lowest ⌊q·n⌋ rows lie below it
    (q taken as the decimal it is written as, so 0.29 · 100 is 29, not 28.999...)."""
    return math.floor(Fraction(repr(quantile)) * n)


# --- sort keys -----------------------------------------------------------------------------


def value_bits(values: np.ndarray) -> np.ndarray:
    """float64 → uint64 whose unsigned order is the float order (-0.0 taken as 0.0)."""
    bits = (values.astype(np.float64) + 0.0).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def id_bits(ids: pa.Array) -> np.ndarray:
    """uint64 tie-breaker per id: integer ids in their own order, other ids by a 64-bit
    BLAKE2b hash of their text (deterministic; distinct ids collide with odds ~n²/2⁶⁵)."""
    if pa.types.is_integer(ids.type):
        signed = ids.cast(pa.int64()).to_numpy(zero_copy_only=False)
        return signed.view(np.uint64) ^ np.uint64(1 << 63)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest())
            for v in ids.to_pylist()
        ],
        dtype=np.uint64,
    )


def sort_keys(
    values: pa.ChunkedArray | pa.Array, ids: pa.ChunkedArray | pa.Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(valid, hi, lo)``: rows with a value (not null, not NaN) and their 128-bit keys."""
    values = pa.chunked_array([values]) if isinstance(values, pa.Array) else values
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    numbers = values.cast(pa.float64()).to_numpy()  # nulls become NaN
    valid = ~np.isnan(numbers)
    return valid, value_bits(numbers[valid]), id_bits(ids.filter(pa.array(valid)))


# --- exact search for the key at a rank ------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """The key at ``rank`` among rows whose first ``level`` digits equal those of
    ``(hi, lo)``; ``bucket`` such rows exist."""

    rank: int
    bucket: int
    level: int = 0
    hi: int = 0
    lo: int = 0

    @property
    def done(self) -> bool:
        return self.level == KEY_DIGITS


def _in_bucket(hi: np.ndarray, lo: np.ndarray, search: Search) -> np.ndarray:
    half = KEY_DIGITS // 2
    if search.level == 0:
        return np.ones(len(hi), dtype=bool)
    if search.level <= half:
        shift = np.uint64(64 - DIGIT_BITS * search.level)
        return (hi >> shift) == (np.uint64(search.hi) >> shift)
    shift = np.uint64(64 - DIGIT_BITS * (search.level - half))
    return (hi == np.uint64(search.hi)) & ((lo >> shift) == (np.uint64(search.lo) >> shift))


def _digit(hi: np.ndarray, lo: np.ndarray, level: int) -> np.ndarray:
    word, position = (hi, level) if level < KEY_DIGITS // 2 else (lo, level - KEY_DIGITS // 2)
    shift = np.uint64(64 - DIGIT_BITS * (position + 1))
    return ((word >> shift) & np.uint64(DIGIT_MASK)).astype(np.int64)


def _descend(search: Search, counts: np.ndarray) -> Search:
    """The search one digit further down, into the bucket that holds its rank."""
    cumulative = np.cumsum(counts)
    digit = int(np.searchsorted(cumulative, search.rank, side="right"))
    below = int(cumulative[digit - 1]) if digit else 0
    half = KEY_DIGITS // 2
    if search.level < half:
        hi, lo = search.hi | digit << (64 - DIGIT_BITS * (search.level + 1)), search.lo
    else:
        hi, lo = search.hi, search.lo | digit << (64 - DIGIT_BITS * (search.level - half + 1))
    return Search(search.rank - below, int(counts[digit]), search.level + 1, hi, lo)


SEARCH_SCHEMA = pa.schema(
    [
        ("search", pa.int64()),
        ("counts", pa.list_(pa.int64())),  # digit histogram of the bucket (histogram passes)
        ("hi", pa.list_(pa.uint64())),  # the bucket's keys (collect passes)
        ("lo", pa.list_(pa.uint64())),
    ]
)


def search_stage(batch: pa.Table, by: str, searches: list[dict], collect_limit: int) -> pa.Table:
    """Ray Data stage over score files (``uri``): per search, the histogram of the next digit
    within its bucket, or, once the bucket fits ``collect_limit``, the bucket's keys."""
    plans = [Search(**search) for search in searches]
    counts = [np.zeros(1 << DIGIT_BITS, dtype=np.int64) for _ in plans]
    keys: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in plans]
    for uri in batch.column("uri").to_pylist():
        for rows in storage.parquet_file(uri).iter_batches(columns=[by, SAMPLE_ID]):
            _, hi, lo = sort_keys(rows.column(by), rows.column(SAMPLE_ID))
            for i, search in enumerate(plans):
                inside = _in_bucket(hi, lo, search)
                if search.bucket <= collect_limit:
                    keys[i].append((hi[inside], lo[inside]))
                else:
                    digits = _digit(hi[inside], lo[inside], search.level)
                    counts[i] += np.bincount(digits, minlength=1 << DIGIT_BITS)
    records = []
    for i, search in enumerate(plans):
        collected = search.bucket <= collect_limit
        his = [h for h, _ in keys[i]]
        los = [lo for _, lo in keys[i]]
        records.append(
            {
                "search": i,
                "counts": [] if collected else counts[i],
                "hi": np.concatenate(his) if collected and his else [],
                "lo": np.concatenate(los) if collected and los else [],
            }
        )
    return pa.Table.from_pylist(records, schema=SEARCH_SCHEMA)


def _run_searches(
    files: list[str], by: str, searches: list[Search], collect_limit: int
) -> list[dict]:
    """One pass over every file: per search, summed counts or concatenated keys."""
    dataset = ray.data.from_items([{"uri": f} for f in files], override_num_blocks=len(files))
    payload = [vars(search) for search in searches]
    merged: list[dict] = [
        {"counts": np.zeros(1 << DIGIT_BITS, dtype=np.int64), "hi": [], "lo": []} for _ in searches
    ]
    stage_kwargs = {"by": by, "searches": payload, "collect_limit": collect_limit}
    rows = dataset.map_batches(
        search_stage, batch_size=1, batch_format="pyarrow", fn_kwargs=stage_kwargs
    ).iter_rows()
    for row in rows:
        into = merged[row["search"]]
        if len(row["counts"]):
            into["counts"] += np.asarray(row["counts"], dtype=np.int64)
        into["hi"].append(np.asarray(row["hi"], dtype=np.uint64))
        into["lo"].append(np.asarray(row["lo"], dtype=np.uint64))
    return merged


def exact_cut_keys(
    files: list[str],
    by: str,
    quantiles: Sequence[float],
    collect_limit: int = 1 << 16,
    progress: Progress = print_progress,
) -> tuple[int, list[tuple[int, int]]]:
    """The number of rows with a value and the ``(hi, lo)`` key of the first row above each
    quantile cut, exactly (see the module docstring)."""
    # the first pass histograms the top digit of every row (a bucket over the limit), which
    # also counts the rows with a value
    root = _run_searches(files, by, [Search(rank=0, bucket=collect_limit + 1)], collect_limit)
    n = int(root[0]["counts"].sum())
    if n == 0:
        return 0, []
    searches = [_descend(Search(cut_rank(q, n), n), root[0]["counts"]) for q in quantiles]
    passes = 1
    while pending := [i for i, s in enumerate(searches) if not s.done]:
        largest = max(searches[i].bucket for i in pending)
        progress(f"[partition] pass {passes + 1}: {len(pending)} cut(s), buckets ≤ {largest} rows")
        results = _run_searches(files, by, [searches[i] for i in pending], collect_limit)
        for i, result in zip(pending, results, strict=True):
            search = searches[i]
            if search.bucket <= collect_limit:
                hi, lo = np.concatenate(result["hi"]), np.concatenate(result["lo"])
                order = np.lexsort((lo, hi))[search.rank]
                searches[i] = replace(
                    search, level=KEY_DIGITS, hi=int(hi[order]), lo=int(lo[order])
                )
            else:
                searches[i] = _descend(search, result["counts"])
        passes += 1
    progress(f"[partition] exact cuts of {n} rows in {passes} passes over {by}")
    return n, [(s.hi, s.lo) for s in searches]


# --- assigning rows --------------------------------------------------------------------------


def _cut_partitions(
    values: pa.ChunkedArray, ids: pa.ChunkedArray, rule: Rule, keys: list[tuple[int, int]]
) -> np.ndarray:
    names = np.array([*cut_names(len(rule.quantiles or rule.thresholds)), NULL_PARTITION])
    valid, hi, lo = sort_keys(values, ids)
    index = np.full(len(valid), len(names) - 1)
    if rule.quantiles:
        above = [
            (hi > np.uint64(key_hi)) | ((hi == np.uint64(key_hi)) & (lo >= np.uint64(key_lo)))
            for key_hi, key_lo in keys
        ]
    else:
        numbers = values.cast(pa.float64()).to_numpy()[valid]
        above = [numbers >= threshold for threshold in rule.thresholds]
    index[valid] = np.sum(above, axis=0) if above else 0
    return names[index]


def assign_stage(batch: pa.Table, rule: Rule, keys: list) -> pa.Table:
    """Ray Data stage over score rows: the ``partition`` name of every row."""
    if rule.category is not None:
        names = rule.category.assign(batch, NULL_PARTITION)
    else:
        names = _cut_partitions(batch.column(rule.by), batch.column(SAMPLE_ID), rule, keys)
    return batch.append_column(PARTITION, pa.array(names, pa.string()))


# --- the job ---------------------------------------------------------------------------------


def _check_column(files: list[str], column: str) -> None:
    """The ``--by`` column must be a numeric score column (checked on the first file)."""
    schema = storage.parquet_file(files[0]).schema_arrow
    numeric = [
        f.name
        for f in schema
        if f.name != SAMPLE_ID and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    ]
    if column not in schema.names:
        raise ValueError(
            f"--by {column}: no such column in {files[0]}; numeric score columns: "
            + ", ".join(numeric)
        )
    if column not in numeric:
        raise ValueError(
            f"--by {column}: {files[0]} has it as {schema.field(column).type}, not a number"
        )


def _prepare_out(out: str) -> None:
    """Reruns replace an earlier partition output; any other non-empty directory is refused."""
    if storage.holds_files(out):
        if not storage.exists(storage.join(out, SUMMARY_FILE)):
            raise ValueError(f"--out {out}: not empty and not a partition output; choose another")
        storage.remove(out)


def _read(uri: str, columns: list[str] | None = None) -> ray.data.Dataset:
    fs, path = storage.filesystem(uri)
    dataset = ray.data.read_parquet(path, filesystem=storage.arrow_filesystem(fs))
    return dataset if columns is None else dataset.select_columns(columns)


def join_stage(batch: pa.Table, lookup: pa.Table, id_column: str) -> pa.Table:
    """Ray Data stage over input rows: the rows that were scored, with their partition and
    ``by`` value from ``lookup`` (a broadcast hash join; rejected rows drop out)."""
    ids = batch.column(id_column).cast(lookup.schema.field(SAMPLE_ID).type)
    index = pc.index_in(ids, value_set=lookup.column(SAMPLE_ID))
    scored = pc.is_valid(index)
    rows = batch.filter(scored).drop_columns([id_column])
    matched = lookup.take(index.filter(scored))
    for name in reversed(matched.column_names):
        column = f"{name}_score" if name in rows.column_names else name
        rows = rows.add_column(0, column, matched.column(name))
    return rows


def _with_input(rows: ray.data.Dataset, run_dir: str) -> ray.data.Dataset:
    """The input rows of the partitioned samples. The assignment (id, partition, value) is
    collected on the driver and broadcast to the tasks reading the input: about 20 bytes a
    row, where Ray's hash-shuffle join crashed its workers on a 2-CPU machine."""
    manifest = RunPaths(run_dir).manifest
    config = parse_config(storage.read_json(manifest)["config"], manifest)
    lookup = pa.concat_tables(ray.get(rows.to_arrow_refs()))
    return ray.data.read_datasource(InputSource(inspect_shards(config))).map_batches(
        join_stage,
        batch_format="pyarrow",
        fn_kwargs={"lookup": lookup, "id_column": config.id_column},
    )


def partition_sizes(out: str) -> dict[str, int]:
    """Rows per partition of a written output, from the Parquet footers."""
    sizes: dict[str, int] = {}
    for uri in storage.list_parquet(out):
        name = uri.rsplit(f"{PARTITION}=", 1)[1].split("/", 1)[0]
        sizes[name] = sizes.get(name, 0) + storage.parquet_file(uri).metadata.num_rows
    return sizes


def _descriptions(rule: Rule, n_valid: int, cut_values: list[float]) -> dict[str, dict]:
    """Per partition name: its definition (and for quantiles, the rows it must hold)."""
    if rule.category is not None:
        category = rule.category
        return {
            name: {"rule": text}
            for name, text in zip(category.names, category.descriptions, strict=True)
        }
    cuts = list(rule.quantiles or rule.thresholds)
    names = cut_names(len(cuts))
    edges = [None, *cuts, None]
    described = {}
    for i, name in enumerate(names):
        low, high = edges[i], edges[i + 1]
        if rule.quantiles:
            first = cut_rank(low, n_valid) if low is not None else 0
            last = cut_rank(high, n_valid) if high is not None else n_valid
            known = bool(cut_values)  # no cut values when every row is null
            values = [
                cut_values[i - 1] if known and low is not None else None,
                cut_values[i] if known and high is not None else None,
            ]
            described[name] = {
                "rule": f"quantiles [{low or 0}, {high or 1}) of {rule.by} (ties by sample_id)",
                "expected_rows": last - first,
                "value_from": values[0],
                "value_to": values[1],
            }
        else:
            parts = ([f"{low} <= {rule.by}"] if low is not None else []) + (
                [f"{rule.by} < {high}"] if high is not None else []
            )
            described[name] = {"rule": " and ".join(parts)}
    return described


def run_partition(
    run_dir: str,
    out: str,
    rule: Rule,
    with_input: bool = False,
    collect_limit: int = 1 << 16,
    progress: Progress = print_progress,
) -> pl.DataFrame:
    """Write ``OUT/partition=<name>/*.parquet`` (``sample_id``, the ``by`` column, and the
    input row's columns ``with_input``) and ``OUT/partitions.json``; returns the summary."""
    paths = RunPaths(run_dir)
    files = storage.list_parquet(paths.scores)
    if not files:
        raise ValueError(f"{paths.scores}: no score files to partition")
    keys, n_valid, cut_values = [], 0, []
    categories = category_names()
    if rule.by in categories:
        measure = MEASURES[categories[rule.by]]
        category = measure.partition_rule(rule.by, run_dir, files[0], rule.pair)
        rule = replace(rule, category=category)
        columns = [SAMPLE_ID, *category.columns]
    else:
        _check_column(files, rule.by)
        columns = [SAMPLE_ID, rule.by]
    _prepare_out(out)  # every check before Ray starts or any pass runs
    ensure_ray()
    if rule.quantiles:
        n_valid, keys = exact_cut_keys(files, rule.by, rule.quantiles, collect_limit, progress)
        cut_values = [key_value(hi) for hi, _ in keys]
    progress(f"[partition] writing {len(files)} score file(s) → {out}")
    rows = _read(paths.scores, columns).map_batches(
        assign_stage,
        batch_format="pyarrow",
        fn_kwargs={"rule": rule, "keys": keys},
    )
    if with_input:
        rows = _with_input(rows, run_dir)
    fs, path = storage.filesystem(out)
    rows.write_parquet(path, filesystem=storage.arrow_filesystem(fs), partition_cols=[PARTITION])
    sizes = partition_sizes(out)
    described = _descriptions(rule, n_valid, cut_values)
    if sizes.get(NULL_PARTITION):
        missing = rule.category.missing if rule.category is not None else rule.by
        described[NULL_PARTITION] = {"rule": f"{missing} null or NaN (e.g. no label)"}
    total = max(sum(sizes.values()), 1)
    summary = [
        {"partition": name, "rows": sizes.get(name, 0), "fraction": sizes.get(name, 0) / total, **d}
        for name, d in described.items()
    ]
    storage.write_json(
        {"run_dir": run_dir, "rule": rule_facts(rule), "partitions": summary},
        storage.join(out, SUMMARY_FILE),
    )
    return pl.DataFrame(summary)


def rule_facts(rule: Rule) -> dict:
    """The rule as ``partitions.json`` records it."""
    facts = {k: v for k, v in vars(rule).items() if k != "category"}
    if rule.category is not None:
        facts["columns"] = list(rule.category.columns)
        facts["categories"] = list(rule.category.names)
    return facts


def key_value(hi: int) -> float:
    """The float64 value of a key's high word (the inverse of ``value_bits``)."""
    bits = np.array([hi], dtype=np.uint64)
    negative = not bits[0] >> np.uint64(63)
    raw = ~bits if negative else bits ^ np.uint64(1 << 63)
    return float(raw.view(np.float64)[0])

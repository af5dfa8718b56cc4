"""PID over score files: per-file joint count tensors of codebook cells, merged, then solved.

For every pair of modalities ``(a, b)`` (``a`` before ``b`` in the config) and every target
(``pid_cvx``: the label; ``pid_cvx_model``: the model's prediction) one ``[k_a, k_b, C]`` count
tensor is kept over all rows and per configured group value. Counts merge by addition, so
the driver never holds rows; rows whose target is null are left out of that target's counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from intermodal import storage
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.estimators.stats import GroupedCounts, JointCounts, grouped_counts, merge_grouped
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import GLOBAL_SCHEMA, LABEL, PRED, code_column

DATA_MEASURE = "pid_cvx"  # PID of (x_a, x_b, label)
MODEL_MEASURE = "pid_cvx_model"  # PID of (x_a, x_b, prediction)

# (measure, pair "a,b") → grouped counts
PairCounts = dict[tuple[str, str], GroupedCounts]


def pid_targets(config: JobConfig) -> dict[str, str]:
    """Measure → score column of its target: the label when there is one, the prediction
    when there is a model."""
    targets = {}
    if config.label_column is not None:
        targets[DATA_MEASURE] = LABEL
    if config.model is not None:
        targets[MODEL_MEASURE] = PRED
    return targets


def pid_pairs(config: JobConfig) -> list[tuple[str, str]]:
    return list(combinations(config.modality_names, 2))


def pid_term(term: str, pair: tuple[str, str]) -> str:
    """Term name of one pair in ``global/``: ``R[a,b]``, ``U1[a,b]`` (unique to a), ..."""
    return f"{term}[{pair[0]},{pair[1]}]"


def group_text(table: pa.Table | pa.RecordBatch, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Group columns as text, nulls as "null" (the whole dataset's group is "")."""
    return {
        name: pc.cast(table.column(name), pa.string())
        .fill_null("null")
        .to_numpy(zero_copy_only=False)
        for name in names
    }


def file_counts(uri: str, config: JobConfig, codes: dict[str, int]) -> PairCounts:
    """Count tensors of one score file, read by row group; ``codes`` is each modality's
    number of codebook cells."""
    merged: PairCounts = {}
    for scores in storage.parquet_file(uri).iter_batches():
        for measure, target in pid_targets(config).items():
            known = pc.is_valid(scores.column(target))
            rows = scores.filter(known) if pc.sum(known).as_py() < scores.num_rows else scores
            y = rows.column(target).to_numpy(zero_copy_only=False)
            groups = group_text(rows, config.group_columns)
            for a, b in pid_pairs(config):
                shape = (codes[a], codes[b], config.num_classes)
                counts = grouped_counts(
                    rows.column(code_column(a)).to_numpy(),
                    rows.column(code_column(b)).to_numpy(),
                    y,
                    shape,
                    groups,
                )
                key = (measure, f"{a},{b}")
                merged[key] = merge_grouped(merged.get(key, {}), counts)
    return merged


def partial_counts(batch: pa.Table, config: dict, codes: dict[str, int]) -> pa.Table:
    """Ray Data stage over score files (``uri``): one row per (measure, pair, group) with its
    flattened count tensor."""
    job = JobConfig.model_validate(config)
    records = [
        {
            "measure": measure,
            "pair": pair,
            "group_by": group_by,
            "group": group,
            "counts": counts.counts.ravel().tolist(),
        }
        for uri in batch.column("uri").to_pylist()
        for (measure, pair), grouped in file_counts(uri, job, codes).items()
        for (group_by, group), counts in grouped.items()
    ]
    return pa.Table.from_pylist(records)


def merge_partial_counts(
    rows: Iterator[dict], config: JobConfig, codes: dict[str, int]
) -> PairCounts:
    """Sum the stage's rows as they stream in (one file's worth held at a time)."""
    merged: PairCounts = {}
    for row in rows:
        a, b = row["pair"].split(",")
        shape = (codes[a], codes[b], config.num_classes)
        counts = JointCounts(np.asarray(row["counts"], dtype=np.int64).reshape(shape))
        key = (row["measure"], row["pair"])
        merged[key] = merge_grouped(merged.get(key, {}), {(row["group_by"], row["group"]): counts})
    return merged


def pid_global_table(merged: PairCounts) -> pa.Table:
    """One ``global/`` row per measure, pair, group and term (bits; ``n`` rows counted)."""
    records = []
    for (measure, pair_text), grouped in sorted(merged.items()):
        pair = tuple(pair_text.split(","))
        for (group_by, group), counts in sorted(grouped.items()):
            if counts.total == 0:
                continue
            result = pid_from_joint(counts.joint(), base=2)
            values = {
                "R": result.redundancy,
                "U1": result.unique_1,
                "U2": result.unique_2,
                "S": result.synergy,
                "I": result.mutual_information,
            }
            records += [
                {
                    "measure": measure,
                    "term": pid_term(term, pair),
                    "group_by": group_by,
                    "group": group,
                    "value": value,
                    "n": counts.total,
                    "stderr": None,
                }
                for term, value in values.items()
            ]
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)

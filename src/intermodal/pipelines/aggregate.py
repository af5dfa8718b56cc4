"""``aggregate``: scores/ → per-file partial statistics → merged on the driver as they stream in →
global/ (long tables, one file per measure family)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.intershap import summary_terms
from intermodal.estimators.stats import GroupedMoments, Moments, grouped_moments, merge_grouped
from intermodal.pipelines.aggregate_pid import (
    DATA_MEASURE,
    group_text,
    merge_partial_counts,
    partial_counts,
    pid_global_table,
)
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import (
    GLOBAL_SCHEMA,
    LABEL,
    PRED,
    interaction_column,
    interaction_pairs,
    target_suffixes,
)

MEASURE = "intershap"


def _statistic_columns(config: JobConfig, suffix: str) -> list[str]:
    names = config.modality_names
    pairs = [interaction_column(names[i], names[j], suffix) for i, j in interaction_pairs(names)]
    return [*pairs, f"intershap_local{suffix}"]


def group_columns(config: JobConfig) -> list[str]:
    """Columns the global table is broken down by: prediction, label, configured groups."""
    return [PRED, *([LABEL] if config.label_column else []), *config.group_columns]


def partial_statistics(batch: pa.Table, config: dict) -> pa.Table:
    """Ray Data stage over score files (``uri``): one row of moments per explained output and
    group, for merging on the driver. Files are streamed by row group."""
    job = JobConfig.model_validate(config)
    suffixes = target_suffixes(job.intershap.target, job.num_classes)
    merged: dict[str, GroupedMoments] = {suffix: {} for suffix in suffixes}
    for uri in batch.column("uri").to_pylist():
        for scores in storage.parquet_file(uri).iter_batches():
            groups = group_text(scores, group_columns(job))
            for suffix in suffixes:
                rows = np.column_stack(
                    [scores.column(c).to_numpy() for c in _statistic_columns(job, suffix)]
                )
                merged[suffix] = merge_grouped(merged[suffix], grouped_moments(rows, groups))
    records = [
        {
            "suffix": suffix,
            "group_by": group_by,
            "group": group,
            "count": moments.count,
            "mean": moments.mean.tolist(),
            "m2": moments.m2.tolist(),
        }
        for suffix, grouped in merged.items()
        for (group_by, group), moments in grouped.items()
    ]
    return pa.Table.from_pylist(records)


def merge_partials(rows: Iterable[dict]) -> dict[str, GroupedMoments]:
    merged: dict[str, GroupedMoments] = {}
    for row in rows:
        moments = Moments(int(row["count"]), np.asarray(row["mean"]), np.asarray(row["m2"]))
        key = (row["group_by"], row["group"])
        merged[row["suffix"]] = merge_grouped(merged.get(row["suffix"], {}), {key: moments})
    return merged


def global_table(config: JobConfig, merged: dict[str, GroupedMoments]) -> pa.Table:
    records = []
    for suffix, grouped in merged.items():
        for (group_by, group), moments in sorted(grouped.items()):
            stderr = moments.stderr()
            terms = summary_terms(
                moments.mean[:-1],
                stderr[:-1],
                float(moments.mean[-1]),
                float(stderr[-1]),
                config.modality_names,
            )
            for term, value, term_stderr in terms:
                records.append(
                    {
                        "measure": MEASURE,
                        "term": term + suffix,
                        "group_by": group_by,
                        "group": group,
                        "value": value,
                        "n": moments.count,
                        "stderr": None
                        if term_stderr is None or np.isnan(term_stderr)
                        else term_stderr,
                    }
                )
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


def _partials(files: list[str], stage: Callable, **kwargs: object) -> Iterator[dict]:
    """Rows of a per-file statistics stage, streamed to the driver as they are produced."""
    dataset = ray.data.from_items([{"uri": f} for f in files], override_num_blocks=len(files))
    return dataset.map_batches(
        stage, batch_size=1, batch_format="pyarrow", fn_kwargs=kwargs
    ).iter_rows()


def run_aggregate(run_dir: str, progress: Progress = print) -> pa.Table:
    """Merge the run's scores into ``global/<measure>.parquet`` (``intershap``, ``pid_cvx``);
    returns all of them as one table."""
    paths = RunPaths(run_dir)
    manifest = storage.read_json(paths.manifest)
    config = JobConfig.model_validate(manifest["config"])
    fs, scores_path = storage.filesystem(paths.scores)
    files = storage.list_parquet(paths.scores) if fs.exists(scores_path) else []
    if files:  # every row rejected: no scores, empty global tables
        ensure_ray()
    tables = []
    if "intershap" in config.measures:
        rows = _partials(files, partial_statistics, config=manifest["config"]) if files else []
        tables.append((MEASURE, global_table(config, merge_partials(rows))))
    if "pid_cvx" in config.measures:
        codes = {name: book["codes"] for name, book in manifest["codebooks"].items()}
        rows = (
            _partials(files, partial_counts, config=manifest["config"], codes=codes)
            if files
            else iter([])
        )
        progress("[aggregate] solving PID per pair and group")
        tables.append((DATA_MEASURE, pid_global_table(merge_partial_counts(rows, config, codes))))
    for name, table in tables:
        storage.write_table(table, storage.join(paths.global_, f"{name}.parquet"))
    combined = pa.concat_tables([table for _, table in tables])
    progress(f"[aggregate] {combined.num_rows} statistics → {paths.global_}")
    return combined

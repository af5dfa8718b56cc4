"""``aggregate``: scores/ → per-file partial statistics (a Ray task per file) → merged on the
driver as they stream in → global/<measure>.parquet.

Per file and measure two mergeable values: the column summaries of every float score column
the measure writes (count, mean, M2 and a KLL quantile sketch, per group) and the measure's
own partial statistics, if it keeps any (PID count tensors, per-block BATCH estimates). The
driver merges them and asks each measure for its global rows; every float column adds its
``mean`` (with its standard error) and ``p10``/``p50``/``p90``, labelled with the facts the
measure set on its field (``measures.base.score_field``: term, modalities, target).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.stats import ColumnSummaries
from intermodal.measures import Measure, job_measures, parse_config
from intermodal.measures.base import column_facts, global_record, global_table
from intermodal.pipelines.run import ship_measures
from intermodal.progress import Progress, print_progress
from intermodal.rundir import RunPaths
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, PRED

QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
# per measure: (column summaries, its own partial statistics or None)
MeasureState = dict[str, tuple[ColumnSummaries, Any]]


def group_columns(config: JobConfig) -> list[str]:
    """Columns the global table is broken down by: prediction, label, configured groups."""
    prediction = [PRED] if config.model is not None else []
    return [*prediction, *([LABEL] if config.label_column else []), *config.group_columns]


def group_text(table: pa.Table, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Group columns as text, nulls as "null" (the whole dataset's group is "")."""
    return {
        name: pc.cast(table.column(name), pa.string())
        .fill_null("null")
        .to_numpy(zero_copy_only=False)
        for name in names
    }


def float_fields(config: JobConfig, measure: Measure) -> list[pa.Field]:
    """The measure's per-sample float columns: each gets a column summary."""
    return [f for f in measure.fields(config) if pa.types.is_floating(f.type)]


def float_columns(config: JobConfig, measure: Measure) -> list[str]:
    return [f.name for f in float_fields(config, measure)]


def merge_states(left: MeasureState, right: MeasureState) -> MeasureState:
    merged = dict(left)
    for name, (summaries, own) in right.items():
        if name not in merged:
            merged[name] = (summaries, own)
            continue
        mine, mine_own = merged[name]
        own = own if mine_own is None else mine_own if own is None else mine_own.merge(own)
        merged[name] = (mine.merge(summaries), own)
    return merged


def file_state(uri: str, config: JobConfig, measures: list[Measure]) -> MeasureState:
    """Every measure's statistics of one score file (a file holds at most a few MiB of rows:
    the score stage writes small blocks)."""
    scores = storage.read_table(uri)
    state: MeasureState = {}
    if scores.num_rows == 0:  # the schema-bearing file of a run that scored no row
        return state
    groups = group_text(scores, group_columns(config))
    for measure in measures:
        columns = {
            name: scores.column(name).cast(pa.float64()).to_numpy()  # nulls become NaN
            for name in float_columns(config, measure)
        }
        state[measure.name] = (
            ColumnSummaries.of(columns, groups),
            measure.partial(config, scores, groups),
        )
    return state


def statistics_stage(batch: pa.Table, config: JobConfig, measures: list[Measure]) -> pa.Table:
    """Ray Data stage over score files (``uri``): their merged statistics, pickled."""
    state: MeasureState = {}
    for uri in batch.column("uri").to_pylist():
        state = merge_states(state, file_state(uri, config, measures))
    return pa.table({"state": [pickle.dumps(state)]})


def _file_states(files: list[str], config: JobConfig, measures: list[Measure]) -> Iterator[dict]:
    """Rows of the per-file statistics stage, streamed to the driver as they are produced
    (nothing when every row was rejected and there are no score files)."""
    if not files:
        return iter([])
    ship_measures(measures)
    dataset = ray.data.from_items([{"uri": f} for f in files], override_num_blocks=len(files))
    return dataset.map_batches(
        statistics_stage,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"config": config, "measures": measures},
    ).iter_rows()


def summary_records(measure: str, fields: list[pa.Field], summaries: ColumnSummaries) -> list[dict]:
    """Per group and float column: statistic ``mean`` with its standard error and the
    ``p10``/``p50``/``p90`` quantiles from the KLL sketch (one of the values seen, within the
    sketch's rank error); ``n`` is the column's non-null rows. Each row names its ``column``
    and carries the column's facts (``column_facts``: term, modalities, target)."""
    records = []
    for group in summaries.groups():
        for field in fields:
            summary = summaries.get(field.name, group)
            if summary is None or summary.count == 0:
                continue
            facts = column_facts(field)
            labels = {
                "term": facts.term,
                "modalities": facts.modalities,
                "target": facts.target,
                "column": field.name,
            }
            n = summary.count
            records.append(
                global_record(measure, "mean", summary.mean, n, summary.stderr, group, **labels)
            )
            values = summary.sketch.quantiles(list(QUANTILES.values()))
            records += [
                global_record(measure, name, value, n, None, group, **labels)
                for name, value in zip(QUANTILES, values, strict=True)
            ]
    return records


def run_aggregate(run_dir: str, progress: Progress = print_progress) -> pa.Table:
    """Merge the run's scores into ``global/<measure>.parquet``, one file per measure of the
    job; returns all of them as one table."""
    paths = RunPaths(run_dir)
    config = parse_config(storage.read_json(paths.manifest)["config"], paths.manifest)
    measures = job_measures(config)
    fs, scores_path = storage.filesystem(paths.scores)
    files = storage.list_parquet(paths.scores) if fs.exists(scores_path) else []
    if files:  # every row rejected: no scores, empty global tables
        ensure_ray()
    state: MeasureState = {}
    for row in _file_states(files, config, measures):
        state = merge_states(state, pickle.loads(row["state"]))
    progress("[aggregate] merging per-file statistics; finalising each measure")
    tables = []
    for measure in measures:
        summaries, own = state.get(measure.name, (ColumnSummaries(), None))
        records = measure.finalize(config, own, summaries)
        records += summary_records(measure.name, float_fields(config, measure), summaries)
        table = global_table(records)
        storage.write_table(table, storage.join(paths.global_, f"{measure.name}.parquet"))
        tables.append(table)
    combined = pa.concat_tables(tables)
    progress(f"[aggregate] {combined.num_rows} statistics → {paths.global_}")
    return combined

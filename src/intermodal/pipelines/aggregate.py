"""``aggregate``: scores/ → per-file partial statistics → merged on the driver as they stream in →
global/ (long tables, one file per measure family)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import combinations

import numpy as np
import polars as pl
import pyarrow as pa
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.intershap import summary_terms
from intermodal.estimators.lsmi import adjusted, adjustment
from intermodal.estimators.stats import (
    GroupedHistograms,
    GroupedMoments,
    Histogram,
    Moments,
    grouped_histograms,
    grouped_moments,
    merge_grouped,
)
from intermodal.models.fusion_artifacts import load_fusion_model
from intermodal.operators.columns import i2moe_experts, intense_terms
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
    BATCH_BLOCK,
    BATCH_TERMS,
    GLOBAL_SCHEMA,
    LABEL,
    LSMI_TERMS,
    PRED,
    batch_column,
    i2moe_weight_column,
    intense_contribution_column,
    interaction_column,
    interaction_pairs,
    lsmi_column,
    target_suffixes,
)

MEASURE = "intershap"


def _statistic_columns(config: JobConfig, suffix: str) -> list[str]:
    names = config.modality_names
    pairs = [interaction_column(names[i], names[j], suffix) for i, j in interaction_pairs(names)]
    return [*pairs, f"intershap_local{suffix}"]


def group_columns(config: JobConfig) -> list[str]:
    """Columns the global table is broken down by: prediction, label, configured groups."""
    prediction = [PRED] if config.model is not None else []
    return [*prediction, *([LABEL] if config.label_column else []), *config.group_columns]


def moment_columns(config: JobConfig, measure: str) -> dict[str, list[str]]:
    """Key → score columns whose moments are kept together: per explained output for
    InterSHAP (the interaction terms, then local InterSHAP), per pair for LSMI (r, u1, u2, s),
    the expert weights for I2MoE, the block contributions for InTense."""
    if measure == MEASURE:
        suffixes = target_suffixes(config.intershap.target, config.num_classes)
        return {suffix: _statistic_columns(config, suffix) for suffix in suffixes}
    if measure == I2MOE_MEASURE:
        return {I2MOE_MEASURE: i2moe_weight_columns(config)}
    if measure == INTENSE_MEASURE:
        return {INTENSE_MEASURE: intense_contribution_columns(config)}
    return {
        f"{a},{b}": [lsmi_column(term, a, b) for term in LSMI_TERMS]
        for a, b in combinations(config.modality_names, 2)
    }


def partial_statistics(batch: pa.Table, config: dict, measure: str) -> pa.Table:
    """Ray Data stage over score files (``uri``): one row of moments per key (``moment_columns``)
    and group, for merging on the driver. Files are streamed by row group; rows with a null in
    a key's columns (LSMI without a label) are left out of that key."""
    job = JobConfig.model_validate(config)
    keys = moment_columns(job, measure)
    merged: dict[str, GroupedMoments] = {key: {} for key in keys}
    for uri in batch.column("uri").to_pylist():
        for scores in storage.parquet_file(uri).iter_batches():
            groups = group_text(scores, group_columns(job))
            for key, columns in keys.items():
                rows = np.column_stack(
                    [scores.column(c).to_numpy(zero_copy_only=False) for c in columns]
                ).astype(np.float64)
                known = ~np.isnan(rows).any(axis=1)
                kept = {name: values[known] for name, values in groups.items()}
                merged[key] = merge_grouped(merged[key], grouped_moments(rows[known], kept))
    records = [
        {
            "key": key,
            "group_by": group_by,
            "group": group,
            "count": moments.count,
            "mean": moments.mean.tolist(),
            "m2": moments.m2.tolist(),
        }
        for key, grouped in merged.items()
        for (group_by, group), moments in grouped.items()
    ]
    return pa.Table.from_pylist(records)


def merge_partials(rows: Iterable[dict]) -> dict[str, GroupedMoments]:
    merged: dict[str, GroupedMoments] = {}
    for row in rows:
        moments = Moments(int(row["count"]), np.asarray(row["mean"]), np.asarray(row["m2"]))
        key = (row["group_by"], row["group"])
        merged[row["key"]] = merge_grouped(merged.get(row["key"], {}), {key: moments})
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
    """Rows of a per-file statistics stage, streamed to the driver as they are produced
    (nothing when every row was rejected and there are no score files)."""
    if not files:
        return iter([])
    dataset = ray.data.from_items([{"uri": f} for f in files], override_num_blocks=len(files))
    return dataset.map_batches(
        stage, batch_size=1, batch_format="pyarrow", fn_kwargs=kwargs
    ).iter_rows()


BATCH_MEASURE = "pid_batch"
# BATCH target → measure in global/pid_batch.parquet
BATCH_MEASURES = {"label": BATCH_MEASURE, "pred": "pid_batch_model"}


def batch_partial_statistics(batch: pa.Table, config: dict) -> pa.Table:
    """Ray Data stage over score files (``uri``): per target and pair, the moments over the
    file's scoring blocks of the block estimates (R, U1, U2, S) and the block size (rows share
    their block's estimate; a block is never split across files)."""
    job = JobConfig.model_validate(config)
    keys = [
        (target, a, b)
        for target in BATCH_MEASURES
        if target == "label" or job.model is not None
        for a, b in combinations(job.modality_names, 2)
    ]
    records = []
    for uri in batch.column("uri").to_pylist():
        columns = [batch_column(t, a, b, target) for target, a, b in keys for t in BATCH_TERMS]
        scores = pl.from_arrow(storage.parquet_file(uri).read(columns=[BATCH_BLOCK, *columns]))
        per_block = scores.group_by(BATCH_BLOCK).agg(
            pl.len().alias("rows"), *(pl.col(c).first() for c in columns)
        )
        for target, a, b in keys:
            values = per_block.select(
                *(batch_column(t, a, b, target) for t in BATCH_TERMS), "rows"
            ).to_numpy()
            moments = Moments.of(values.astype(np.float64))
            records.append(
                {
                    "key": f"{target}:{a},{b}",
                    "group_by": "",
                    "group": "",
                    "count": moments.count,
                    "mean": moments.mean.tolist(),
                    "m2": moments.m2.tolist(),
                }
            )
    return pa.Table.from_pylist(records)


def batch_global_table(merged: dict[str, GroupedMoments]) -> pa.Table:
    """Per target and pair ``a,b``: ``R[a,b]``, ``U1[a,b]``, ``U2[a,b]``, ``S[a,b]`` in bits —
    the mean of the block estimates with its standard error across blocks; ``n`` is the rows
    scored. Measure ``pid_batch`` for the labels, ``pid_batch_model`` for the predictions."""
    records = []
    for key, grouped in sorted(merged.items()):
        target, pair = key.split(":")
        moments = grouped[("", "")]
        stderr = moments.stderr()
        rows = round(float(moments.mean[-1]) * moments.count)
        for index, term in enumerate(BATCH_TERMS):
            error = float(stderr[index])
            records.append(
                {
                    "measure": BATCH_MEASURES[target],
                    "term": f"{term}[{pair}]",
                    "group_by": "",
                    "group": "",
                    "value": float(moments.mean[index]),
                    "n": rows,
                    "stderr": None if np.isnan(error) else error,
                }
            )
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


LSMI_MEASURE = "lsmi"
# score column term → global term
LSMI_GLOBAL_TERMS = {"r": "R", "u1": "U1", "u2": "U2", "s": "S"}


def lsmi_global_table(merged: dict[str, GroupedMoments]) -> pa.Table:
    """Per pair ``a,b`` and group: the raw means ``R[a,b]``, ``U1[a,b]``, ``U2[a,b]``,
    ``S[a,b]`` (nats, with standard errors), the same shifted by the pair's dataset-level
    constant (``R_adjusted[a,b]``, ...; one constant for every group, from the whole dataset's
    means) and the constant itself (``adjustment[a,b]``, whole dataset only)."""
    records = []

    def record(term: str, pair: str, key: tuple[str, str], value: float, n: int, stderr):
        group_by, group = key
        records.append(
            {
                "measure": LSMI_MEASURE,
                "term": f"{term}[{pair}]",
                "group_by": group_by,
                "group": group,
                "value": value,
                "n": n,
                "stderr": None if stderr is None or np.isnan(stderr) else float(stderr),
            }
        )

    for pair, grouped in sorted(merged.items()):
        overall = grouped[("", "")]
        constant = adjustment(*overall.mean)
        record("adjustment", pair, ("", ""), constant, overall.count, None)
        for key, moments in sorted(grouped.items()):
            means = dict(zip(LSMI_TERMS, moments.mean, strict=True))
            errors = dict(zip(LSMI_TERMS, moments.stderr(), strict=True))
            shifted = adjusted(means, constant)
            for term, name in LSMI_GLOBAL_TERMS.items():
                record(name, pair, key, float(means[term]), moments.count, errors[term])
                record(f"{name}_adjusted", pair, key, shifted[term], moments.count, errors[term])
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


I2MOE_MEASURE = "i2moe"
INTENSE_MEASURE = "intense"
# I2MoE weights lie in [0, 1]: quantiles from 1000 bins are exact to 0.001
WEIGHT_BINS = 1000
WEIGHT_QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}


def i2moe_weight_columns(config: JobConfig) -> list[str]:
    return [i2moe_weight_column(expert) for expert in i2moe_experts(config)]


def intense_contribution_columns(config: JobConfig) -> list[str]:
    return [intense_contribution_column(term) for term in intense_terms(config)]


def histogram_partial_statistics(batch: pa.Table, config: dict) -> pa.Table:
    """Ray Data stage over score files (``uri``): per group, the ``WEIGHT_BINS``-bin histogram
    on [0, 1] of every I2MoE expert weight (counts flattened expert-major)."""
    job = JobConfig.model_validate(config)
    columns = i2moe_weight_columns(job)
    merged: GroupedHistograms = {}
    for uri in batch.column("uri").to_pylist():
        for scores in storage.parquet_file(uri).iter_batches():
            weights = np.column_stack([scores.column(c).to_numpy() for c in columns])
            groups = group_text(scores, group_columns(job))
            merged = merge_grouped(
                merged, grouped_histograms(weights, groups, WEIGHT_BINS, 0.0, 1.0)
            )
    records = [
        {"group_by": group_by, "group": group, "counts": histogram.counts.ravel().tolist()}
        for (group_by, group), histogram in merged.items()
    ]
    return pa.Table.from_pylist(records)


def merge_histograms(rows: Iterable[dict], experts: int) -> GroupedHistograms:
    merged: GroupedHistograms = {}
    for row in rows:
        counts = np.asarray(row["counts"], dtype=np.int64).reshape(experts, WEIGHT_BINS)
        merged = merge_grouped(merged, {(row["group_by"], row["group"]): Histogram(counts)})
    return merged


def _global_record(
    measure: str, term: str, key: tuple[str, str], value: float, n: int, stderr: float | None
) -> dict:
    group_by, group = key
    return {
        "measure": measure,
        "term": term,
        "group_by": group_by,
        "group": group,
        "value": value,
        "n": n,
        "stderr": None if stderr is None or np.isnan(stderr) else float(stderr),
    }


def i2moe_global_table(
    experts: list[str], moments: GroupedMoments, histograms: GroupedHistograms
) -> pa.Table:
    """Per expert and group: ``weight[<expert>]`` (mean weight, with its standard error) and
    ``weight_p10[<expert>]``, ``weight_p50[...]``, ``weight_p90[...]`` (quantiles of the
    weight, to one histogram bin)."""
    records = []
    quantile_levels = np.array(list(WEIGHT_QUANTILES.values()))
    for key, grouped in sorted(moments.items()):
        errors = grouped.stderr()
        quantiles = histograms[key].quantiles(quantile_levels)  # [experts, quantiles]
        for index, expert in enumerate(experts):
            mean = float(grouped.mean[index])
            records.append(
                _global_record(
                    I2MOE_MEASURE, f"weight[{expert}]", key, mean, grouped.count, errors[index]
                )
            )
            for column, name in enumerate(WEIGHT_QUANTILES):
                value = float(quantiles[index, column])
                term = f"weight_{name}[{expert}]"
                records.append(_global_record(I2MOE_MEASURE, term, key, value, grouped.count, None))
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


def intense_global_table(
    terms: list[str], relevance: np.ndarray | None, moments: GroupedMoments
) -> pa.Table:
    """``relevance[<term>]`` per block (the trained model's β_I, whole dataset, ``n`` the rows
    scored, no standard error; absent when no model was trained because no row was valid) and
    per block and group ``contribution[<term>]``: the mean contribution to the predicted
    class's logit, with its standard error."""
    records = []
    scored = moments[("", "")].count if moments else 0
    for index, term in enumerate(terms if relevance is not None else []):
        value = float(relevance[index])
        records.append(
            _global_record(INTENSE_MEASURE, f"relevance[{term}]", ("", ""), value, scored, None)
        )
    for key, grouped in sorted(moments.items()):
        errors = grouped.stderr()
        for index, term in enumerate(terms):
            mean = float(grouped.mean[index])
            records.append(
                _global_record(
                    INTENSE_MEASURE,
                    f"contribution[{term}]",
                    key,
                    mean,
                    grouped.count,
                    errors[index],
                )
            )
    return pa.Table.from_pylist(records, schema=GLOBAL_SCHEMA)


def intense_relevance(config: JobConfig) -> np.ndarray:
    """β_I of every block of the run's trained InTense (``artifacts/intense/``)."""
    return load_fusion_model(config, "intense").relevance().numpy()


def run_aggregate(run_dir: str, progress: Progress = print) -> pa.Table:
    """Merge the run's scores into ``global/<measure>.parquet`` (``intershap``, ``lsmi``,
    ``i2moe``, ``intense``, ``pid_batch``, ``pid_cvx``); returns all of them as one table."""
    paths = RunPaths(run_dir)
    manifest = storage.read_json(paths.manifest)
    config = JobConfig.model_validate(manifest["config"])
    fs, scores_path = storage.filesystem(paths.scores)
    files = storage.list_parquet(paths.scores) if fs.exists(scores_path) else []
    if files:  # every row rejected: no scores, empty global tables
        ensure_ray()
    tables = []
    for measure, to_table in [
        (MEASURE, lambda merged: global_table(config, merged)),
        (LSMI_MEASURE, lsmi_global_table),
    ]:
        if measure in config.measures:
            rows = _partials(files, partial_statistics, config=manifest["config"], measure=measure)
            tables.append((measure, to_table(merge_partials(rows))))
    if I2MOE_MEASURE in config.measures:
        moments = merge_partials(
            _partials(files, partial_statistics, config=manifest["config"], measure=I2MOE_MEASURE)
        ).get(I2MOE_MEASURE, {})
        experts = i2moe_experts(config)
        rows = _partials(files, histogram_partial_statistics, config=manifest["config"])
        histograms = merge_histograms(rows, len(experts))
        tables.append((I2MOE_MEASURE, i2moe_global_table(experts, moments, histograms)))
    if INTENSE_MEASURE in config.measures:
        moments = merge_partials(
            _partials(files, partial_statistics, config=manifest["config"], measure=INTENSE_MEASURE)
        ).get(INTENSE_MEASURE, {})
        relevance = intense_relevance(config) if moments else None  # no rows: no model
        table = intense_global_table(intense_terms(config), relevance, moments)
        tables.append((INTENSE_MEASURE, table))
    if BATCH_MEASURE in config.measures:
        rows = _partials(files, batch_partial_statistics, config=manifest["config"])
        tables.append((BATCH_MEASURE, batch_global_table(merge_partials(rows))))
    if "pid_cvx" in config.measures:
        codes = {name: book["codes"] for name, book in manifest["codebooks"].items()}
        rows = _partials(files, partial_counts, config=manifest["config"], codes=codes)
        progress("[aggregate] solving PID per pair and group")
        tables.append((DATA_MEASURE, pid_global_table(merge_partial_counts(rows, config, codes))))
    for name, table in tables:
        storage.write_table(table, storage.join(paths.global_, f"{name}.parquet"))
    combined = pa.concat_tables([table for _, table in tables])
    progress(f"[aggregate] {combined.num_rows} statistics → {paths.global_}")
    return combined

"""Exports for the next job: per-sample distillation weights from LSMI (paper 001 §4.3.2) and
InterSHAP as a ``shap.Explanation`` (paper 000 §4.3).

Distillation weights. Per sample and modality pair ``(a, b)`` the four LSMI terms are taken
adjusted by the pair's dataset constant ``c`` (``global/lsmi.parquet``, statistic
``adjustment`` of the pair): ``R + c, U1 − c, U2 − c, S + c``, the scale on which the run
reports its means. Negative pointwise terms (information the sample's modalities mislead
about) carry no knowledge to distil and are clipped to 0; the clipped terms are divided by
their sum, so the four weights are ≥ 0 and sum to 1 per sample. A sample whose clipped terms
are all 0 gets 1/4 each (no term to prefer); a sample without a label (null LSMI terms) gets
null weights.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.estimators.lsmi import distillation_weights
from intermodal.measures.intershap import to_shap_explanation
from intermodal.measures.lsmi import adjusted_lsmi, pair_constant, score_pairs
from intermodal.rundir import RunPaths
from intermodal.schemas.tables import PID_TERMS, SAMPLE_ID, lsmi_column

SUMMARY_SUFFIX = ".distill_weights.json"  # the summary file beside the output folder


def summary_uri(out: str) -> str:
    """``OUT.distill_weights.json``: beside ``OUT``, so that ``OUT`` holds only Parquet and
    ``pl.read_parquet(OUT)`` reads it whole."""
    return out.rstrip("/") + SUMMARY_SUFFIX


__all__ = ["run_distill_weights", "to_shap_explanation"]


def weight_column(term: str, first: str, second: str) -> str:
    """Output column of one distillation weight: ``w_<term>_<a>__<b>`` (terms as in scores)."""
    return f"w_{term}_{first}__{second}"


def weights_stage(batch: pa.Table, constants: dict[str, float]) -> pa.Table:
    """Ray Data stage over score rows: ``sample_id`` and the weights of every pair."""
    columns: dict[str, pa.Array] = {SAMPLE_ID: batch.column(SAMPLE_ID)}
    for key, constant in constants.items():
        pair = tuple(key.split(","))
        weights = distillation_weights(adjusted_lsmi(batch, pair, constant))  # type: ignore[arg-type]
        for term, values in weights.items():
            columns[weight_column(term, *pair)] = pa.array(values, pa.float64(), from_pandas=True)
    return pa.table(columns)


def run_distill_weights(
    run_dir: str, out: str, progress: Callable[[str], None] = print
) -> pl.DataFrame:
    """Write ``OUT/*.parquet`` (``sample_id``, ``w_<term>_<a>__<b>`` per LSMI pair) and
    ``OUT.distill_weights.json`` beside it; returns the mean weight per pair and term."""
    paths = RunPaths(run_dir)
    files = storage.list_parquet(paths.scores)
    if not files:
        raise ValueError(f"{paths.scores}: no score files")
    pairs = score_pairs(files[0])
    constants = {f"{a},{b}": pair_constant(run_dir, (a, b)) for a, b in pairs}
    if storage.holds_files(out):
        if not storage.exists(summary_uri(out)):
            raise ValueError(f"--out {out}: not empty and not a distill-weights output")
        storage.remove(out)
    ensure_ray()
    progress(f"[export] distillation weights of {len(pairs)} pair(s) → {out}")
    columns = [SAMPLE_ID, *(lsmi_column(t, a, b) for a, b in pairs for t in PID_TERMS)]
    scores_fs, scores_path = storage.filesystem(paths.scores)
    rows = (
        ray.data.read_parquet(scores_path, filesystem=storage.arrow_filesystem(scores_fs))
        .select_columns(columns)
        .map_batches(weights_stage, batch_format="pyarrow", fn_kwargs={"constants": constants})
    )
    fs, path = storage.filesystem(out)
    rows.write_parquet(path, filesystem=storage.arrow_filesystem(fs))
    sums, counts, total = written_sums(out)
    summary = pl.DataFrame(
        [
            {
                "pair": f"{a},{b}",
                "adjustment": constants[f"{a},{b}"],
                **{
                    f"mean_w_{t}": sums[weight_column(t, a, b)]
                    / max(counts[weight_column(t, a, b)], 1)
                    for t in PID_TERMS
                },
                "rows": total,
                "null_rows": total - counts[weight_column(PID_TERMS[0], a, b)],
            }
            for a, b in pairs
        ]
    )
    storage.write_json(
        {
            "run_dir": run_dir,
            "normalisation": "max(adjusted term, 0) / sum over R, U1, U2, S; 1/4 each when all "
            "are 0; null without a label (see intermodal.export)",
            "adjustment": constants,
        },
        summary_uri(out),
    )
    return summary


def written_sums(out: str) -> tuple[dict[str, float], dict[str, int], int]:
    """Per weight column of the written files: the sum and count of non-null values, and the
    rows; one record batch at a time."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    rows = 0
    for uri in storage.list_parquet(out):
        for batch in storage.parquet_file(uri).iter_batches():
            rows += batch.num_rows
            for name in batch.schema.names:
                if name.startswith("w_"):
                    column = batch.column(name)
                    sums[name] = sums.get(name, 0.0) + (pc.sum(column).as_py() or 0.0)
                    counts[name] = counts.get(name, 0) + len(column) - column.null_count
    return sums, counts, rows

"""Per-sample tables for later jobs, each offered by a measure (``Measure.export_names``):
``intermodal export <name> RUN --out OUT`` reads the score columns the export names, applies its
batch function on Ray Data and writes ``OUT/*.parquet`` (``sample_id`` and the export's
columns), with ``OUT.<name>.json`` beside the folder: the run, the export's facts, and per
written float column its mean and null rows. Which exports exist, and their formulas, is the
measures' business (``docs/schema.md`` lists them)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.measures import MEASURES, Measure
from intermodal.progress import Progress, print_progress
from intermodal.rundir import RunPaths
from intermodal.schemas.tables import SAMPLE_ID


def export_names() -> dict[str, Measure]:
    """Every export a registered measure offers, and the measure."""
    return {name: measure for measure in MEASURES.values() for name in measure.export_names}


def summary_uri(out: str, name: str) -> str:
    """``OUT.<name>.json`` (``-`` as ``_``): beside ``OUT``, so that ``OUT`` holds only Parquet
    and ``pl.read_parquet(OUT)`` reads it whole."""
    return f"{out.rstrip('/')}.{name.replace('-', '_')}.json"


def run_export(
    name: str,
    run_dirs: str | Sequence[str],
    out: str,
    progress: Progress = print_progress,
    reads: Sequence[Sequence[str]] = (),
) -> pl.DataFrame:
    """Write export ``name`` of the run(s) at ``run_dirs`` to ``OUT`` and its summary beside
    it (``reads``: the modalities each run's model reads, for exports of several runs);
    returns the summary's table (per written float column: mean, rows, null rows)."""
    offered = export_names()
    if name not in offered:
        raise ValueError(f"no export '{name}'; the measures offer: {', '.join(offered)}")
    runs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    first_files = []
    for run_dir in runs:
        files = storage.list_parquet(RunPaths(run_dir).scores)
        if not files:
            raise ValueError(f"{RunPaths(run_dir).scores}: no score files")
        first_files.append(files[0])
    export = offered[name].export(name, runs, first_files, reads)
    if storage.holds_files(out):
        if not storage.exists(summary_uri(out, name)):
            raise ValueError(f"--out {out}: not empty and not a {name} output")
        storage.remove(out)
    ensure_ray()
    progress(f"[export] {name} of {', '.join(runs)} → {out}")
    if export.rows is not None:
        source = ray.data.from_arrow(export.rows)
    else:
        scores_fs, scores_path = storage.filesystem(RunPaths(runs[0]).scores)
        source = ray.data.read_parquet(
            scores_path, filesystem=storage.arrow_filesystem(scores_fs)
        ).select_columns([SAMPLE_ID, *export.columns])
    rows = source.map_batches(export.transform, batch_format="pyarrow", fn_args=(export.options,))
    fs, path = storage.filesystem(out)
    rows.write_parquet(path, filesystem=storage.arrow_filesystem(fs))
    summary = written_summary(out)
    where = {"run_dir": runs[0]} if len(runs) == 1 else {"run_dirs": runs}
    storage.write_json(
        {"export": name, **where, **export.facts, "columns": summary.to_dicts()},
        summary_uri(out, name),
    )
    return summary


def written_summary(out: str) -> pl.DataFrame:
    """Per float column of the written files: its mean over non-null rows, the rows and the
    null rows; one record batch at a time."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    rows = 0
    for uri in storage.list_parquet(out):
        for batch in storage.parquet_file(uri).iter_batches():
            rows += batch.num_rows
            for field in batch.schema:
                if pa.types.is_floating(field.type):
                    column = batch.column(field.name)
                    sums[field.name] = sums.get(field.name, 0.0) + (pc.sum(column).as_py() or 0.0)
                    counts[field.name] = counts.get(field.name, 0) + len(column) - column.null_count
    return pl.DataFrame(
        [
            {
                "column": name,
                "mean": sums[name] / counts[name] if counts[name] else None,
                "rows": rows,
                "null_rows": rows - counts[name],
            }
            for name in sums
        ],
        schema={"column": pl.String, "mean": pl.Float64, "rows": pl.Int64, "null_rows": pl.Int64},
    )

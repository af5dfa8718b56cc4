"""The report's sections that belong to no measure: the run's facts, its global tables and the
model selection made for it.
Each measure draws its own section (``Measure.report``)."""

from __future__ import annotations

import html

import polars as pl

from intermodal import storage
from intermodal.charts.html import Section, html_table, paragraph
from intermodal.charts.run import RunData
from intermodal.rundir import RunPaths


def overview(run: RunData) -> Section:
    manifest, config = run.manifest, run.config
    shapes = ", ".join(f"{m['name']} {tuple(m['shape'])}" for m in config["modalities"])
    facts = {
        "dataset": manifest.get("dataset"),
        "model": manifest.get("model"),
        "measures": ", ".join(run.measures),
        "modalities": shapes,
        "classes": config.get("num_classes"),
        "input": manifest.get("input", {}).get("uri"),
        "rows scored": manifest.get("rows", {}).get("scored"),
        "rows rejected": manifest.get("rows", {}).get("rejected"),
        "background rows": manifest.get("background_rows"),
        "seconds": ", ".join(f"{k} {v}" for k, v in manifest.get("seconds", {}).items()),
        "versions": ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()),
        "run directory": run.root,
    }
    frame = pl.DataFrame(
        {"": list(facts), "value": ["" if v is None else str(v) for v in facts.values()]}
    )
    return Section("Run", html_table(frame))


# what a global table shows of each statistic (the modalities joined by ",")
STATISTIC_COLUMNS = ("target", "statistic", "term", "modalities", "column")


def readable(rows: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """``rows``' ``columns``, then value, n and stderr, modalities as text (``a,b``)."""
    return rows.with_columns(pl.col("modalities").list.join(",")).select(
        *columns, "value", "n", "stderr"
    )


def global_tables(run: RunData) -> Section | None:
    if run.global_.is_empty():
        return None
    parts = [paragraph("Whole-dataset statistics per measure; per-group rows under each table.")]
    for measure in run.global_["measure"].unique(maintain_order=True).to_list():
        overall = readable(run.rows(measure), STATISTIC_COLUMNS)
        grouped = run.rows(measure, None).filter(pl.col("group_by") != "")
        parts.append(f"<h4>{html.escape(measure)}</h4>{html_table(overall)}")
        if not grouped.is_empty():
            columns = readable(grouped, ("group_by", "group", *STATISTIC_COLUMNS))
            parts.append(
                f"<details><summary>{grouped.height} per-group rows</summary>"
                f"{html_table(columns)}</details>"
            )
    return Section("Global tables", "".join(parts))


def model_selection(run: RunData) -> Section | None:
    """What ``intermodal select`` wrote for the run (``selection.json``), when it ran."""
    uri = RunPaths(run.root).selection
    if not storage.exists(uri):
        return None
    chosen = storage.read_json(uri)
    shares = pl.DataFrame([chosen["normalised_pid"]])
    parts = [
        paragraph(
            f"Normalised PID of the labels of {','.join(chosen['pair'])} ({chosen['estimator']}); "
            f"largest interaction {chosen['largest']}."
        ),
        html_table(shares),
    ]
    if chosen["library"] is None:
        rules = pl.DataFrame(
            {"interaction": list(chosen["rules"]), "rule of thumb": list(chosen["rules"].values())}
        )
        parts += [paragraph("No library: paper 003's rules of thumb."), html_table(rules)]
    else:
        parts += [
            paragraph(
                f"Closest dataset of the library {chosen['library']}: {chosen['closest']}; its "
                "most accurate families (held-out accuracy, PID agreement alpha):"
            ),
            html_table(pl.DataFrame(chosen["recommended"])),
            paragraph("Distance to every library dataset (sum of |share differences|):"),
            html_table(pl.DataFrame(chosen["distances"])),
        ]
    return Section("Model selection", "".join(parts))

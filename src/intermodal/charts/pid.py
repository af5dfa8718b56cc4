"""Figures of PID-style terms (R, U1, U2, S per pair of modalities) that PID CVX, PID BATCH and
LSMI draw alike."""

from __future__ import annotations

import numpy as np
import polars as pl

from intermodal.charts.figures import TERM_COLOURS, stacked_bars
from intermodal.charts.html import group_label, html_table, paragraph
from intermodal.charts.run import RunData
from intermodal.schemas.tables import PID_TARGETS, PID_TERMS

# how the bars name each target
TARGET_NAMES = {"label": "labels", "pred": "model"}


def pid_bars(
    run: RunData, measure: str, unit: str, statistic: str = "pid", title_note: str = ""
) -> list[str]:
    """Stacked R/U1/U2/S bars per pair: one bar per group and target (labels, model), from the
    global rows of ``statistic`` of ``measure``; ``title_note`` ends each title."""
    figures = []
    for_pairs: dict[tuple[str, str], tuple[list[str], dict[str, list[float]]]] = {}
    targets = [t for t in PID_TARGETS if run.groups(measure, statistic, t)]
    for target in targets:
        for group_by, group in run.groups(measure, statistic, target):
            terms = run.pairs(measure, statistic, group_by, group, target)
            for pair, values in terms.items():
                labels, segments = for_pairs.setdefault(pair, ([], {t: [] for t in PID_TERMS}))
                # name the target only where there are two to tell apart
                shown = f" · {TARGET_NAMES[target]}" if len(targets) > 1 else ""
                labels.append(group_label(group_by, group) + shown)
                for term in PID_TERMS:
                    segments[term].append(values.get(term, np.nan))
    for (a, b), (labels, segments) in for_pairs.items():
        title = f"{measure} of ({a}, {b}){title_note}"
        figures.append(stacked_bars(labels, segments, title, unit, TERM_COLOURS))
    return figures


def agreement_table(run: RunData, measure: str, statistic: str) -> str:
    """The PID agreement rows (``statistic`` of ``measure``, paper 003 eq. 6) of the whole
    dataset as a table, one row per pair: α of each term and their sum; ``""`` without any."""
    rows = run.rows(measure, "", statistic)
    if rows.is_empty():
        return ""
    table = (
        rows.with_columns(
            pl.col("modalities").list.join(", ").alias("pair"),
            ("α " + pl.col("term")).alias("term"),
        )
        .pivot(on="term", index="pair", values="value")
        .sort("pair")
    )
    text = (
        "PID agreement of the model with the dataset (paper 003 eq. 6): each term of the "
        "model's PID weighted by that term's share of the labels' PID, α_I = Î_label · I_model, "
        "and their sum α (α total); higher where the model carries the interactions the "
        "labels need."
    )
    return paragraph(text) + html_table(table)

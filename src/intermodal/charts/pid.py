"""Figures of PID-style terms (R, U1, U2, S per pair of modalities) that PID CVX, PID BATCH and
LSMI draw alike."""

from __future__ import annotations

import numpy as np

from intermodal.charts.figures import TERM_COLOURS, stacked_bars
from intermodal.charts.html import group_label
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

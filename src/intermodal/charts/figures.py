"""Figures for the report: matplotlib figures rendered to PNG (no display, no pyplot), each
returned as an ``<img>`` with the PNG embedded as base64, so the page needs no other file and
no network. matplotlib is imported when the first figure is drawn: measures import these
helpers, and every Ray worker that loads a measure would otherwise pay the 0.4 s import."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH = 7.5  # inches; at DPI this fills the page's 900-pixel column
DPI = 110
TERM_COLOURS = {"R": "#4C72B0", "U1": "#DD8452", "U2": "#55A868", "S": "#C44E52"}
INTERACTION_COLOUR = "#8172B3"
HISTOGRAM_BINS = 50


def subplots(*grid: int, **options: Any) -> tuple[Figure, Any]:
    """A new figure and its axes (``Figure.subplots``; ``figsize``/``layout`` go to the
    figure)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=options.pop("figsize"), layout=options.pop("layout", None))
    return figure, figure.subplots(*grid, **options)


def embed(figure: Figure, alt: str) -> str:
    """The figure as an ``<img>`` with an embedded PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def stacked_bars(
    categories: Sequence[str],
    segments: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    colours: Mapping[str, str] | None = None,
) -> str:
    """Horizontal bars, one per category, stacked from the segments in order: positive values
    grow right from 0 and negative ones left, so a negative term is visible, not hidden
    under the others."""
    figure, axes = subplots(figsize=(WIDTH, 0.9 + 0.42 * len(categories)))
    y = np.arange(len(categories))
    right, left = np.zeros(len(categories)), np.zeros(len(categories))
    for name, values in segments.items():
        values = np.nan_to_num(np.asarray(values, dtype=float))
        start = np.where(values >= 0, right, left)
        colour = (colours or {}).get(name)
        axes.barh(y, values, left=start, height=0.65, label=name, color=colour)
        right += np.clip(values, 0, None)
        left += np.clip(values, None, 0)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(y, list(categories))
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes.grid(axis="x", alpha=0.3)
    return embed(figure, title)


def heatmap(matrix: np.ndarray, names: Sequence[str], title: str) -> str:
    """A symmetric matrix with its values written in the cells, centred on 0."""
    size = min(WIDTH, 2.5 + 0.8 * len(names))
    figure, axes = subplots(figsize=(size, size * 0.85))
    limit = float(np.abs(matrix).max()) or 1.0
    image = axes.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes.set_xticks(range(len(names)), list(names), rotation=45, ha="right")
    axes.set_yticks(range(len(names)), list(names))
    for (i, j), value in np.ndenumerate(matrix):
        shade = "white" if abs(value) > 0.6 * limit else "black"
        axes.text(j, i, f"{value:.3f}", ha="center", va="center", color=shade, fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_title(title)
    return embed(figure, title)


def _bins(values: np.ndarray) -> int:
    """HISTOGRAM_BINS, or one bin for a (nearly) constant column: numpy cannot cut a range of
    a few ulps (v(all) = 1 ± 1e-16 on every sample) into 50 finite bins."""
    if values.size == 0:
        return 1
    scale = max(1.0, float(np.abs(values).max()))
    return HISTOGRAM_BINS if float(np.ptp(values)) > 1e-9 * scale else 1


def histograms(columns: Mapping[str, np.ndarray], title: str, per_row: int = 3) -> str:
    """One small histogram per column (nulls and NaN left out), in a grid."""
    rows = -(-len(columns) // per_row)
    figure, grid = subplots(
        rows, per_row, figsize=(WIDTH, 2.1 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for axes, (name, values) in zip(grid.flat, columns.items(), strict=False):
        finite = values[np.isfinite(values)]
        # one filled outline, not a patch per bin: the same picture, drawn in 0.6 of the time
        axes.hist(finite, bins=_bins(finite), color="#4C72B0", histtype="stepfilled")
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=8)
    for axes in list(grid.flat)[len(columns) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    return embed(figure, title)


def waterfall(base: float, contributions: Mapping[str, float], title: str, xlabel: str) -> str:
    """From ``base`` through each contribution to their sum, as in shap's waterfall plot:
    red bars push the output up, blue ones down."""
    names = list(contributions)
    figure, axes = subplots(figsize=(WIDTH, 1.2 + 0.45 * (len(names) + 2)))
    position = base
    labels = [f"v(∅) = {base:.3f}"]
    axes.barh(0, base, color="#999999", height=0.6)
    for row, name in enumerate(names, start=1):
        value = contributions[name]
        axes.barh(
            row, value, left=position, height=0.6, color="#C44E52" if value >= 0 else "#4C72B0"
        )
        labels.append(f"{name}  {value:+.3f}")
        position += value
    axes.barh(len(names) + 1, position, color="#333333", height=0.6)
    labels.append(f"v(all) = {position:.3f}")
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return embed(figure, title)


def grouped_bars(
    categories: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    title: str,
    ylabel: str,
    colours: Mapping[str, str] | None = None,
) -> str:
    """Vertical bars side by side per category, one per series ``name → (values, stderr)``."""
    figure, axes = subplots(figsize=(WIDTH, 3.4))
    x = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for i, (name, (values, errors)) in enumerate(series.items()):
        yerr = np.array([np.nan if e is None else e for e in errors], dtype=float)
        axes.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.asarray(values, dtype=float),
            width,
            # no error bars at all (not zero-length ones with caps) when none is known
            yerr=None if np.isnan(yerr).all() else np.nan_to_num(yerr),
            capsize=3,
            label=name,
            color=(colours or {}).get(name),
        )
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(x, list(categories))
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return embed(figure, title)


def box_plots(panels: Mapping[str, Mapping[str, np.ndarray]], title: str, ylabel: str) -> str:
    """One panel per ``name → {box label → values}``, side by side with a shared y axis: the
    distribution of each box's values (NaN left out), whiskers at 1.5 IQR, no outlier marks
    (millions of rows would print as a solid bar)."""
    figure, grid = subplots(
        1, len(panels), figsize=(WIDTH, 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    for axes, (name, boxes) in zip(grid.flat, panels.items(), strict=True):
        values = [v[np.isfinite(v)] for v in boxes.values()]
        axes.boxplot(values, showfliers=False)
        axes.set_xticks(range(1, len(boxes) + 1), list(boxes), rotation=45, fontsize=8)
        axes.set_title(name, fontsize=9)
        axes.grid(axis="y", alpha=0.3)
    grid.flat[0].set_ylabel(ylabel)
    figure.suptitle(title)
    return embed(figure, title)

"""One function per part of the report. Each takes a run and returns a ``Section``, or None
when the run has nothing for it (a measure it did not score), so adding a measure is adding
one function to ``SECTIONS``."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl

from intermodal.report.figures import (
    INTERACTION_COLOUR,
    TERM_COLOURS,
    box_plots,
    grouped_bars,
    heatmap,
    histograms,
    stacked_bars,
    waterfall,
)
from intermodal.report.run import RunData, pair_terms
from intermodal.schemas.tables import (
    LABEL,
    LSMI_TERMS,
    i2moe_weight_column,
    interaction_column,
    lsmi_column,
    shapley_column,
    target_suffixes,
)

PID_TERMS = ("R", "U1", "U2", "S")
TARGETS = {"labels": "", "model": "_model"}  # global measure suffix of the PID of each target


@dataclass(frozen=True)
class Section:
    title: str
    body: str  # HTML


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def html_table(frame: pl.DataFrame) -> str:
    """A table with every cell escaped; floats to 4 significant digits."""

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def class_label(suffix: str) -> str:
    """``"__class1"`` (a ``target: all`` column suffix) → ``" (class 1)"``; ``""`` → ``""``."""
    return f" (class {suffix.removeprefix('__class')})" if suffix else ""


def group_label(group_by: str, group: str) -> str:
    return "all samples" if not group_by else f"{group_by} = {group}"


# --- the run ---------------------------------------------------------------------------------


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


def global_tables(run: RunData) -> Section | None:
    if run.global_.is_empty():
        return None
    parts = [paragraph("Whole-dataset statistics per measure; per-group rows under each table.")]
    for measure in run.global_["measure"].unique(maintain_order=True).to_list():
        overall = run.rows(measure).select("term", "value", "n", "stderr")
        grouped = run.rows(measure, None).filter(pl.col("group_by") != "")
        parts.append(f"<h4>{html.escape(measure)}</h4>{html_table(overall)}")
        if not grouped.is_empty():
            columns = grouped.select("group_by", "group", "term", "value", "n", "stderr")
            parts.append(
                f"<details><summary>{grouped.height} per-group rows</summary>"
                f"{html_table(columns)}</details>"
            )
    return Section("Global tables", "".join(parts))


# --- InterSHAP -------------------------------------------------------------------------------


def _intershap_breakdown(run: RunData, suffix: str) -> str:
    """Fractions of the behaviour from each modality and from interactions (eq. 9), for the
    whole dataset and per predicted class."""
    groups = [g for g in run.groups("intershap") if g[0] in ("", "pred")]
    segments: dict[str, list[float]] = {m: [] for m in run.modalities}
    segments["interactions"] = []
    for group_by, group in groups:
        terms = run.terms("intershap", group_by, group)
        for m in run.modalities:
            segments[m].append(terms.get(f"modality_{m}{suffix}", np.nan))
        segments["interactions"].append(terms.get(f"global{suffix}", np.nan))
    colours = {"interactions": INTERACTION_COLOUR}
    return stacked_bars(
        [group_label(*g) for g in groups],
        segments,
        f"InterSHAP breakdown{class_label(suffix)}: modalities vs interactions",
        "fraction of the model's behaviour",
        colours,
    )


def _mean_matrix(run: RunData, suffix: str) -> np.ndarray:
    names = run.modalities
    terms = run.terms("intershap")
    matrix = np.zeros((len(names), len(names)))
    for i, j in combinations(range(len(names)), 2):
        matrix[i, j] = matrix[j, i] = terms[
            f"mean_{interaction_column(names[i], names[j])}{suffix}"
        ]
    for i, name in enumerate(names):
        matrix[i, i] = terms[f"mean_{interaction_column(name, name)}{suffix}"]
    return matrix


def _mean_waterfall(run: RunData, suffix: str) -> str:
    """Paper 000 Fig. 2: the mean prediction built from v(∅), each modality's main effect and
    the interactions (means over samples of the per-sample decomposition)."""
    names = run.modalities
    matrix = _mean_matrix(run, suffix)
    empty = run.scores([f"intershap_value_empty{suffix}"])[f"intershap_value_empty{suffix}"]
    contributions = {m: float(matrix[i, i]) for i, m in enumerate(names)}
    contributions["interactions"] = float(matrix.sum() - np.trace(matrix))
    return waterfall(
        float(np.mean(empty)),
        contributions,
        f"Mean decomposition of the explained probability{class_label(suffix)}",
        "probability of the explained class",
    )


def intershap(run: RunData) -> Section | None:
    if "intershap" not in run.measures or run.rows("intershap").is_empty():
        return None
    config = run.config
    parts = [
        paragraph(
            "InterSHAP (paper 000): the share of the model's behaviour (the absolute mean "
            "Shapley interaction matrix) that comes from each modality alone and from "
            "cross-modal interactions, for all samples and per predicted class; the mean "
            "interaction matrix; the mean prediction as a waterfall; per-sample scores."
        )
    ]
    for suffix in target_suffixes(config["intershap"]["target"], config["num_classes"]):
        columns = [
            f"intershap_local{suffix}",
            f"intershap_value_full{suffix}",
            *(shapley_column(m, suffix) for m in run.modalities),
        ]
        parts += [
            _intershap_breakdown(run, suffix),
            heatmap(
                _mean_matrix(run, suffix),
                run.modalities,
                f"Mean interaction matrix{class_label(suffix)}",
            ),
            _mean_waterfall(run, suffix),
            histograms(run.scores(columns), f"Per-sample InterSHAP scores{class_label(suffix)}"),
        ]
    return Section("InterSHAP", "".join(parts))


# --- PID and LSMI ----------------------------------------------------------------------------


def _pid_bars(run: RunData, measure: str, unit: str, adjusted: bool = False) -> list[str]:
    """Stacked R/U1/U2/S bars per pair: one bar per group and target (labels, model)."""
    figures = []
    suffix = "_adjusted" if adjusted else ""
    for_pairs: dict[tuple[str, str], tuple[list[str], dict[str, list[float]]]] = {}
    targets = [(t, s) for t, s in TARGETS.items() if run.groups(measure + s)]
    for target, target_suffix in targets:
        for group_by, group in run.groups(measure + target_suffix):
            terms = pair_terms(run.terms(measure + target_suffix, group_by, group))
            for pair, values in terms.items():
                labels, segments = for_pairs.setdefault(pair, ([], {t: [] for t in PID_TERMS}))
                # name the target only where there are two to tell apart
                shown = f" · {target}" if len(targets) > 1 else ""
                labels.append(group_label(group_by, group) + shown)
                for term in PID_TERMS:
                    segments[term].append(values.get(term + suffix, np.nan))
    for (a, b), (labels, segments) in for_pairs.items():
        title = f"{measure} of ({a}, {b}){' adjusted' if adjusted else ''}"
        figures.append(stacked_bars(labels, segments, title, unit, TERM_COLOURS))
    return figures


def pid_cvx(run: RunData) -> Section | None:
    if run.rows("pid_cvx", None).is_empty() and run.rows("pid_cvx_model", None).is_empty():
        return None
    text = (
        "Exact PID (paper 003, CVX) of each modality pair with the labels and with the "
        "model's predictions (data vs model), for the whole dataset and per group column."
    )
    return Section("PID (CVX)", paragraph(text) + "".join(_pid_bars(run, "pid_cvx", "bits")))


def pid_batch(run: RunData) -> Section | None:
    if run.rows("pid_batch", None).is_empty():
        return None
    parts = [
        paragraph(
            "PID BATCH (paper 003): the mean over scoring blocks of the block estimates, with "
            "the standard error across blocks, of the labels and (with a model) predictions."
        )
    ]
    series_by_pair: dict[tuple[str, str], dict[str, tuple[list[float], list[float | None]]]] = {}
    for target, target_suffix in TARGETS.items():
        rows = run.rows("pid_batch" + target_suffix)
        if rows.is_empty():
            continue
        errors = dict(zip(rows["term"].to_list(), rows["stderr"].to_list(), strict=True))
        for pair, values in pair_terms(run.terms("pid_batch" + target_suffix)).items():
            label = "[" + ",".join(pair) + "]"
            series_by_pair.setdefault(pair, {})[target] = (
                [values[t] for t in PID_TERMS],
                [errors[f"{t}{label}"] for t in PID_TERMS],
            )
    for (a, b), series in series_by_pair.items():
        parts.append(grouped_bars(PID_TERMS, series, f"PID BATCH of ({a}, {b})", "bits"))
    return Section("PID (BATCH)", "".join(parts))


def lsmi(run: RunData) -> Section | None:
    if run.rows("lsmi").is_empty():
        return None
    parts = [
        paragraph(
            "LSMI (paper 001): mean pointwise redundancy, uniqueness and synergy, adjusted by "
            "the dataset constant (global/lsmi.parquet), for all samples, per label, per "
            "predicted class and per group; then the raw per-sample terms."
        ),
        *_pid_bars(run, "lsmi", "nats", adjusted=True),
    ]
    for a, b in pair_terms(run.terms("lsmi")):
        columns = [lsmi_column(term, a, b) for term in LSMI_TERMS]
        parts.append(histograms(run.scores(columns), f"Per-sample LSMI of ({a}, {b}), raw", 4))
    return Section("LSMI", "".join(parts))


# --- I2MoE and InTense -----------------------------------------------------------------------


def _bracketed(terms: dict[str, float], name: str) -> dict[str, float]:
    """``{"weight[syn]": v, ...}`` → ``{"syn": v, ...}`` for the terms named ``name``."""
    prefix = f"{name}["
    return {t[len(prefix) : -1]: v for t, v in terms.items() if t.startswith(prefix)}


def _leader_shares(
    panels: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, tuple[list[float], list[None]]]:
    """Per panel, the share of its samples whose largest weight is each expert's (as
    ``grouped_bars`` series, without error bars)."""
    shares = {}
    for name, weights in panels.items():
        stacked = np.column_stack(list(weights.values()))
        stacked = stacked[np.isfinite(stacked).all(axis=1)]
        leaders = np.bincount(stacked.argmax(axis=1), minlength=stacked.shape[1])
        shares[name] = ((leaders / max(len(stacked), 1)).tolist(), [None] * len(leaders))
    return shares


def i2moe(run: RunData) -> Section | None:
    experts = list(_bracketed(run.terms("i2moe"), "weight"))
    if not experts:
        return None
    weights = run.scores([i2moe_weight_column(expert) for expert in experts])
    panels = {"all samples": dict(zip(experts, weights.values(), strict=True))}
    labels = run.scores([LABEL]).get(LABEL)
    if labels is not None:
        for label in np.unique(labels[np.isfinite(labels)]):
            rows = labels == label
            panels[f"label = {label:g}"] = {
                expert: values[rows]
                for expert, values in zip(experts, weights.values(), strict=True)
            }
    text = (
        "I2MoE (paper 002): each sample's weights of the uniqueness (uni_<modality>), synergy "
        "and redundancy experts; they sum to 1. The bars count the samples each expert leads "
        "(has the largest weight); the box plots show the weights themselves. Mean weights "
        "and p10/p50/p90 per group are in global/i2moe.parquet. The model was trained on a "
        "sample of the rows, which are scored in-sample."
    )
    shares = _leader_shares(panels)
    leaders = grouped_bars(experts, shares, "I2MoE: share of samples each expert leads", "share")
    figure = box_plots(panels, "I2MoE expert weights per sample", "weight")
    return Section("I2MoE", paragraph(text) + leaders + figure)


def intense(run: RunData) -> Section | None:
    relevance = _bracketed(run.terms("intense"), "relevance")
    if not relevance:
        return None
    rows = run.rows("intense").filter(pl.col("term").str.starts_with("contribution["))
    contributions = _bracketed(run.terms("intense"), "contribution")
    errors = dict(zip(rows["term"].to_list(), rows["stderr"].to_list(), strict=True))
    terms = list(relevance)
    text = (
        "InTense (paper 004): the relevance β of each modality and interaction block "
        "(‖β‖_p = 1), and each block's mean contribution to the logit of the predicted class "
        "with its standard error."
    )
    figures = [
        grouped_bars(
            terms,
            {"relevance": (list(relevance.values()), [None] * len(terms))},
            "InTense relevance per term",
            "relevance β",
        ),
        grouped_bars(
            terms,
            {
                "mean contribution": (
                    [contributions[t] for t in terms],
                    [errors[f"contribution[{t}]"] for t in terms],
                )
            },
            "InTense mean contribution to the predicted logit",
            "logit",
        ),
    ]
    return Section("InTense", paragraph(text) + "".join(figures))


SECTIONS: tuple[Callable[[RunData], Section | None], ...] = (
    overview,
    global_tables,
    intershap,
    pid_cvx,
    lsmi,
    pid_batch,
    i2moe,
    intense,
)

"""``intermodal select``: which model families to try on a scored dataset (paper 003 §4.4,
App. C.8 and D).

With a library: the run's normalised PID of its labels, its distance to every library
dataset, the closest one and the three families most accurate there. Without one: the
paper's rules of thumb, and the run's largest interaction. Either way ``selection.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from intermodal import storage
from intermodal.estimators.model_selection import pid_distance, ranked_families
from intermodal.estimators.pid_agreement import normalised_pid, pid_agreement
from intermodal.rundir import RunPaths
from intermodal.schemas.tables import LABEL, PID_TERMS, PRED
from intermodal.selection.library import Library, pid_terms, read_library

PID_ESTIMATORS = ("pid_cvx", "pid_batch")
TOP_FAMILIES = 3
# paper 003 App. D, in our words: which interactions favour which kind of model
RULES = {
    "U1": "most of the information is in the first modality alone: a model of that modality "
    "may be all that is needed",
    "U2": "most of the information is in the second modality alone: a model of that modality "
    "may be all that is needed",
    "R": "the modalities mostly say the same thing: models that make them agree or align "
    "(agreement or alignment objectives, ensembles, co-training) are the ones to try",
    "S": "the label needs both modalities together: spend on fusion that models complex "
    "cross-modal interactions (tensor or multiplicative fusion, attention)",
}


@dataclass(frozen=True)
class RunPID:
    """The PIDs of one pair in a run: of its labels (bits, [4]) and of its model's
    predictions when it has a model."""

    run: str
    estimator: str
    pair: tuple[str, str]
    labels: np.ndarray
    predictions: np.ndarray | None


def read_run_pid(
    run_dir: str, estimator: str | None = None, pair: tuple[str, str] | None = None
) -> RunPID:
    """The whole-dataset PID rows of a run (``estimator``: ``pid_cvx`` or ``pid_batch``, default
    the first the run has; ``pair``: needed when the run has several); ValueError (one line)
    when it has none of the labels."""
    candidates = [estimator] if estimator else list(PID_ESTIMATORS)
    tables = [
        (name, storage.join(RunPaths(run_dir).global_, f"{name}.parquet")) for name in candidates
    ]
    found = [(name, uri) for name, uri in tables if storage.exists(uri)]
    if not found:
        raise ValueError(
            f"{run_dir}: no PID in global/ ({' or '.join(candidates)}); score the dataset "
            "with measures: [pid_cvx] and its labels, then aggregate"
        )
    name, uri = found[0]
    frame = pl.DataFrame(pl.from_arrow(storage.read_table(uri)))
    pid_rows = frame.filter(pl.col("statistic") == "pid")
    pairs = sorted({tuple(m) for m in pid_rows["modalities"].to_list()})
    if pair is None:
        if len(pairs) > 1:
            listed = " ".join(",".join(p) for p in pairs)
            raise ValueError(f"{run_dir}: PID of several pairs ({listed}); name one with --pair")
        pair = pairs[0] if pairs else ("", "")
    labels = pid_terms(frame, LABEL, pair, name)
    predictions = pid_terms(frame, PRED, pair, name)
    if labels is None:
        only = " (only of the model's predictions)" if predictions is not None else ""
        raise ValueError(
            f"{run_dir}: {name} has no PID of the labels of {','.join(pair)}{only}; select "
            "compares datasets by the PID of their labels: score with label_column set"
        )
    if not np.sum(labels) > 0:
        raise ValueError(f"{run_dir}: the labels' PID is 0: the modalities say nothing about them")
    return RunPID(run_dir, name, pair, labels, predictions)


def _terms(values: np.ndarray) -> dict[str, float]:
    return dict(zip(PID_TERMS, map(float, values), strict=True))


def largest_interaction(terms: np.ndarray) -> str:
    return PID_TERMS[int(np.argmax(terms))]


def selection(run: RunPID, library: Library | None) -> dict:
    """What ``selection.json`` holds (docs/schema.md)."""
    shares = normalised_pid(run.labels)
    result: dict = {
        "run": run.run,
        "estimator": run.estimator,
        "pair": list(run.pair),
        "pid": _terms(run.labels),
        "normalised_pid": _terms(shares),
        "largest": largest_interaction(run.labels),
        "model_alpha": (
            None
            if run.predictions is None
            else float(pid_agreement(run.labels, run.predictions)[-1])
        ),
    }
    if library is None:
        return {**result, "library": None, "rules": RULES}
    if library.estimator != run.estimator:
        raise ValueError(
            f"{run.run}: PID by {run.estimator}, library {library.uri} by {library.estimator}; "
            "distances need the same estimator"
        )
    distances = pid_distance(run.labels[None, :], library.terms)
    order = np.argsort(distances, kind="stable")
    closest = int(order[0])
    ranked = ranked_families(library.accuracy[closest])[:TOP_FAMILIES]
    return {
        **result,
        "library": library.uri,
        "distances": [
            {"dataset": library.datasets[i], "distance": float(distances[i])} for i in order
        ],
        "closest": library.datasets[closest],
        "recommended": [
            {
                "family": library.families[f],
                "accuracy": float(library.accuracy[closest, f]),
                "alpha": float(library.alpha[closest, f]),
            }
            for f in ranked
        ],
    }


def run_select(
    run_dir: str,
    library: str | None = None,
    out: str | None = None,
    pair: tuple[str, str] | None = None,
) -> tuple[dict, str]:
    """Select for the run at ``run_dir``; writes ``selection.json`` (default in the run
    directory) and returns it and its URI."""
    read = read_library(library) if library else None
    run = read_run_pid(run_dir, read.estimator if read else None, pair)
    chosen = selection(run, read)
    uri = out or RunPaths(run_dir).selection
    storage.write_json(chosen, uri)
    return chosen, uri

"""The rows every validation suite writes: ``suite, experiment, term, estimate, truth,
abs_error`` (truth and error null where no truth is known; a pass/fail check is estimate 1 or 0
against truth 1), and ``OUT/validation.parquet``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import polars as pl

from intermodal import storage


def validation_row(
    suite: str, experiment: str, term: str, estimate: float, truth: float | None = None
) -> dict:
    """One estimate against its truth (None: no known truth)."""
    return {
        "suite": suite,
        "experiment": experiment,
        "term": term,
        "estimate": estimate,
        "truth": truth,
        "abs_error": None if truth is None else abs(estimate - truth),
    }


def check_row(suite: str, experiment: str, term: str, passed: bool) -> dict:
    """A pass/fail row: estimate 1 or 0 against truth 1."""
    return validation_row(suite, experiment, term, float(passed), 1.0)


def chosen_experiments(experiments: list[str] | None, known: list[str]) -> list[str]:
    """The experiments to run (all ``known`` ones by default); unknown names are an error."""
    chosen = experiments or known
    unknown = set(chosen) - set(known)
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; known: {known}")
    return chosen


def write_validation(out: str, rows: list[dict]) -> pl.DataFrame:
    """``out/validation.parquet`` of a suite's rows; returns the table."""
    table = pl.DataFrame(rows, schema_overrides={"truth": pl.Float64, "abs_error": pl.Float64})
    fs, path = storage.filesystem(out)
    fs.makedirs(path, exist_ok=True)
    storage.write_table(table.to_arrow(), storage.join(out, "validation.parquet"))
    return table


def monotone(
    values: Sequence[float], increasing: bool = True, strict: bool = True, margin: float = 0.0
) -> bool:
    """Whether ``values`` (in the order the claim lists them) rise (``increasing``) or fall
    at every step: by more than ``margin`` (``strict``; a margin keeps numerical noise from
    counting as a rise), or by at least ``-margin`` when ``strict`` is False (ties and dips
    within the margin allowed). One value: True."""
    steps = [b - a if increasing else a - b for a, b in itertools.pairwise(values)]
    return all(step > margin if strict else step >= -margin for step in steps)


def spread(values: Sequence[float]) -> float:
    """``max − min`` of ``values``: how far from flat a quantity is across settings."""
    return float(max(values) - min(values))

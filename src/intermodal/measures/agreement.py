"""What the PID measures (CVX, BATCH) share: the agreement rows (paper 003 eq. 6,
``estimators.pid_agreement``) of a job that decomposes both the labels and the model's
predictions, from the measure's own ``pid`` rows."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from intermodal.estimators.pid_agreement import pid_agreement
from intermodal.schemas.tables import LABEL, PID_TERMS, PRED, global_record

AGREEMENT = "alpha"  # statistic: α_I per term, and their sum
AGREEMENT_TOTAL = "total"  # term of the sum α
PID_STATISTIC = "pid"


def agreement_records(measure: str, records: Iterable[dict]) -> list[dict]:
    """Per pair and group that has the ``pid`` terms R, U1, U2, S of both the labels and the
    predictions, statistic ``alpha`` (target ``pred``) with terms R, U1, U2, S and ``total``;
    ``n`` the fewer of the two PIDs' rows, no standard error. None where the labels' terms sum
    to ≤ 0 (no shares to weigh the model's terms by)."""
    found: dict[tuple, dict[str, dict[str, float]]] = {}
    counts: dict[tuple, int] = {}
    for row in records:
        if row["statistic"] != PID_STATISTIC or row["term"] not in PID_TERMS:
            continue
        key = (tuple(row["modalities"]), row["group_by"], row["group"])
        found.setdefault(key, {}).setdefault(row["target"], {})[row["term"]] = row["value"]
        counts[key] = min(counts.get(key, row["n"]), row["n"])
    agreement = []
    for (pair, group_by, group), targets in found.items():
        if not all(len(targets.get(target, {})) == len(PID_TERMS) for target in (LABEL, PRED)):
            continue
        values = pid_agreement(
            np.array([targets[LABEL][t] for t in PID_TERMS]),
            np.array([targets[PRED][t] for t in PID_TERMS]),
        )
        if np.isnan(values).any():
            continue
        agreement += [
            global_record(
                measure,
                AGREEMENT,
                value,
                counts[pair, group_by, group],
                None,
                (group_by, group),
                term=term,
                modalities=pair,
                target=PRED,
            )
            for term, value in zip((*PID_TERMS, AGREEMENT_TOTAL), values, strict=True)
        ]
    return agreement

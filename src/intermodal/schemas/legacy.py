"""Global tables written before the typed columns (``measure, term, group_by, group, value,
n, stderr``, the pair, column, statistic and target spelled inside ``term``) upgraded to
``tables.GLOBAL_SCHEMA``, so runs aggregated by the previous release stay readable.
``intermodal aggregate RUN`` rewrites a run's tables in the new form.

Kept for one release: this module goes away in the next one. It is the only place that parses
the old term strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from intermodal.schemas.tables import LABEL, PID_TERMS, PRED, global_record, global_table

LEGACY_COLUMNS = ("measure", "term", "group_by", "group", "value", "n", "stderr")
# the old measure names of the PID of the model's predictions
LEGACY_MODEL_MEASURES = {"pid_cvx_model": "pid_cvx", "pid_batch_model": "pid_batch"}

SUMMARY = re.compile(r"^(?P<statistic>mean|p10|p50|p90)\[(?P<column>.+)\]$")
PAIR = re.compile(r"^(?P<term>\w+?)(?P<adjusted>_adjusted)?\[(?P<a>[^,\]]+),(?P<b>[^\]]+)\]$")
ADJUSTMENT = re.compile(r"^adjustment\[(?P<a>[^,\]]+),(?P<b>[^\]]+)\]$")
BRACKETED = re.compile(r"^(?P<name>weight|contribution|relevance)\[(?P<inner>.+)\]$")
CLASS_SUFFIX = re.compile(r"^(?P<base>.+?)__class(?P<k>\d+)$")
INTERSHAP_DUPLICATES = re.compile(r"^(local_mean|mean_interaction_.+)$")
INTERSHAP_TERMS = ("global", "modalities", "interactions", "behaviour")
PID_COLUMN = re.compile(
    r"^(?P<prefix>lsmi|pid_batch_model|pid_batch)_(?P<term>R|U1|U2|S)_(?P<pair>.+)$"
)


def is_legacy_global(table: pa.Table) -> bool:
    """Whether ``table`` is a global table of the old form."""
    return "statistic" not in table.column_names and "term" in table.column_names


def upgrade_legacy_global(table: pa.Table, config: Mapping[str, Any] | None = None) -> pa.Table:
    """``table`` in the form of ``GLOBAL_SCHEMA`` (returned as it is when it already is).

    ``config``: the run's job config (``manifest.json``'s ``config``), for the modality names
    (to split InTense blocks such as ``M1xM2``) and InterSHAP's ``target`` setting (the
    explained output of unsuffixed InterSHAP rows: ``predicted`` without it). Rows that only
    repeated another row's value (LSMI's ``R[a,b]``, I2MoE's ``weight[e]``, InTense's
    ``contribution[t]``, InterSHAP's ``local_mean`` and ``mean_interaction_<a>__<b>``: each
    the ``mean`` of a score column) are dropped, as the new form writes them once."""
    if not is_legacy_global(table):
        return table
    config = config or {}
    modalities = [m["name"] for m in config.get("modalities", [])]
    explained = config.get("intershap", {}).get("target", "predicted")
    records = []
    for row in table.select(list(LEGACY_COLUMNS)).to_pylist():
        facts = _facts(row["measure"], row["term"], modalities, explained)
        if facts is not None:
            group = (row["group_by"], row["group"])
            records.append(
                global_record(
                    **facts, value=row["value"], n=row["n"], stderr=row["stderr"], group=group
                )
            )
    return global_table(records)


def _row(
    measure: str,
    statistic: str,
    term: str = "",
    modalities: Sequence[str] = (),
    column: str = "",
    target: str = "",
) -> dict:
    """The keyword arguments of ``global_record`` that say what a row is."""
    return {
        "measure": measure,
        "statistic": statistic,
        "term": term,
        "modalities": modalities,
        "column": column,
        "target": target,
    }


def _facts(measure: str, term: str, modalities: list[str], explained: str) -> dict | None:
    """The typed columns of one old row; None for a row the new form does not repeat."""
    target = LABEL
    if measure in LEGACY_MODEL_MEASURES:
        measure, target = LEGACY_MODEL_MEASURES[measure], PRED
    if summary := SUMMARY.match(term):
        column = summary["column"]
        facts = column_facts(column, modalities, explained)
        return _row(measure, summary["statistic"], column=column, **facts)
    if adjustment := ADJUSTMENT.match(term):
        return _row(measure, "adjustment", "", (adjustment["a"], adjustment["b"]), "", LABEL)
    if (pair := PAIR.match(term)) and pair["term"] in (*PID_TERMS, "I"):
        modality_pair = (pair["a"], pair["b"])
        if measure != "lsmi":  # pid_cvx, pid_batch
            return _row(measure, "pid", pair["term"], modality_pair, "", target)
        if not pair["adjusted"]:  # the mean of lsmi_<T>_<a>__<b>
            return None
        column = "lsmi_{}_{}__{}".format(pair["term"], *modality_pair)  # the LSMI score column
        return _row(measure, "adjusted_mean", pair["term"], modality_pair, column, LABEL)
    if bracketed := BRACKETED.match(term):
        if bracketed["name"] != "relevance":  # I2MoE weights, InTense contributions: means
            return None
        block = bracketed["inner"]
        return _row(measure, "relevance", block, split_block(block, modalities))
    if measure == "intershap":
        return _intershap(term, modalities, explained)
    return _row(measure, term)  # a term of no known measure: kept whole as its statistic


def _explained_target(name: str, explained: str) -> tuple[str, str]:
    """``(name without the class suffix, its target)``."""
    if suffixed := CLASS_SUFFIX.match(name):
        return suffixed["base"], f"class{suffixed['k']}"
    return name, explained


def _intershap(term: str, modalities: list[str], explained: str) -> dict | None:
    base, target = _explained_target(term, explained)
    if INTERSHAP_DUPLICATES.match(base):
        return None
    if base in INTERSHAP_TERMS:
        return _row("intershap", "intershap", base, (), "", target)
    if base.startswith("modality_"):
        return _row("intershap", "intershap", "modality", [base[len("modality_") :]], "", target)
    return _row("intershap", term)


def split_block(block: str, modalities: Sequence[str]) -> list[str]:
    """An InTense block name (members joined by ``x``) as its modalities, matched against
    ``modalities`` when given (names may contain ``x``), else split at every ``x``."""

    def members(rest: str) -> list[str] | None:
        for name in modalities:
            if rest == name:
                return [name]
            if rest.startswith(name + "x") and (tail := members(rest[len(name) + 1 :])):
                return [name, *tail]
        return None

    return (members(block) if modalities else None) or block.split("x")


def column_facts(column: str, modalities: Sequence[str], explained: str) -> dict:
    """``term``, ``modalities`` and ``target`` of an old ``mean[<column>]`` row's column, as
    the measures now annotate their score columns."""
    if pid := PID_COLUMN.match(column):
        a, b = pid["pair"].split("__", 1)
        target = PRED if pid["prefix"] == "pid_batch_model" else LABEL
        return {"term": pid["term"], "modalities": [a, b], "target": target}
    if column.startswith("i2moe_w_"):
        expert = column[len("i2moe_w_") :]
        own = [expert[len("uni_") :]] if expert.startswith("uni_") else []
        return {"term": expert, "modalities": own, "target": ""}
    if column.startswith("intense_c_"):
        block = column[len("intense_c_") :]
        return {"term": block, "modalities": split_block(block, modalities), "target": ""}
    if column == "intense_bias":
        return {"term": "bias", "modalities": [], "target": ""}
    base, target = _explained_target(column, explained)
    if base in ("intershap_local", "intershap_value_full", "intershap_value_empty"):
        return {"term": base.removeprefix("intershap_"), "modalities": [], "target": target}
    if base.startswith("shapley_"):
        return {"term": "shapley", "modalities": [base[len("shapley_") :]], "target": target}
    if base.startswith("interaction_"):
        a, b = base[len("interaction_") :].split("__", 1)
        return {"term": "interaction", "modalities": [a, b], "target": target}
    return {"term": "", "modalities": [], "target": ""}

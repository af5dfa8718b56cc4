"""What the report reads of a run directory: manifest, global tables, score columns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa

from intermodal import storage

PAIR_TERM = re.compile(r"^(?P<term>\w+)\[(?P<a>[^,\]]+),(?P<b>[^\]]+)\]$")


def _exists(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    return fs.exists(path)


@dataclass(frozen=True)
class RunData:
    root: str

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @cached_property
    def manifest(self) -> dict:
        uri = storage.join(self.root, "manifest.json")
        if not _exists(uri):
            raise FileNotFoundError(f"{uri}: missing; is {self.root} a run directory?")
        return storage.read_json(uri)

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def measures(self) -> list[str]:
        return list(self.config["measures"])

    @property
    def modalities(self) -> list[str]:
        return [m["name"] for m in self.config["modalities"]]

    @cached_property
    def global_(self) -> pl.DataFrame:
        """Every ``global/*.parquet`` table, one long table (empty when not aggregated)."""
        uri = storage.join(self.root, "global")
        files = storage.list_parquet(uri) if _exists(uri) else []
        tables = [storage.read_table(f) for f in files]
        return pl.DataFrame(pl.from_arrow(pa.concat_tables(tables))) if tables else pl.DataFrame()

    @cached_property
    def score_files(self) -> list[str]:
        uri = storage.join(self.root, "scores")
        return storage.list_parquet(uri) if _exists(uri) else []

    @cached_property
    def score_columns(self) -> list[str]:
        if not self.score_files:
            return []
        return storage.parquet_file(self.score_files[0]).schema_arrow.names

    def scores(self, columns: list[str]) -> dict[str, np.ndarray]:
        """The named score columns as float arrays (null → NaN), reading only those columns."""
        present = [c for c in columns if c in self.score_columns]
        if not present:
            return {}
        table = storage.read_table(storage.join(self.root, "scores"), columns=present)
        return {c: table.column(c).cast(pa.float64()).to_numpy() for c in present}

    def rows(self, measure: str, group_by: str | None = "") -> pl.DataFrame:
        """Global rows of ``measure``; of one ``group_by`` (``""``: the whole dataset) or all."""
        if self.global_.is_empty():
            return self.global_
        selected = self.global_.filter(pl.col("measure") == measure)
        return selected if group_by is None else selected.filter(pl.col("group_by") == group_by)

    def terms(self, measure: str, group_by: str = "", group: str = "") -> dict[str, float]:
        rows = self.rows(measure, group_by)
        if rows.is_empty():
            return {}
        rows = rows.filter(pl.col("group") == group)
        return dict(zip(rows["term"].to_list(), rows["value"].to_list(), strict=True))

    def groups(self, measure: str) -> list[tuple[str, str]]:
        """``(group_by, group)`` of a measure's rows, whole dataset first, in table order."""
        rows = self.rows(measure, None)
        if rows.is_empty():
            return []
        return rows.select("group_by", "group").unique(maintain_order=True).rows()


def pair_terms(terms: dict[str, float]) -> dict[tuple[str, str], dict[str, float]]:
    """``{"R[a,b]": v, ...}`` → ``{(a, b): {"R": v, ...}}``, in term order."""
    pairs: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in terms.items():
        match = PAIR_TERM.match(name)
        if match:
            pairs.setdefault((match["a"], match["b"]), {})[match["term"]] = value
    return pairs


def bracketed(terms: dict[str, float], name: str) -> dict[str, float]:
    """``{"weight[syn]": v, ...}`` → ``{"syn": v, ...}`` for the terms named ``name``."""
    prefix = f"{name}["
    return {t[len(prefix) : -1]: v for t, v in terms.items() if t.startswith(prefix)}

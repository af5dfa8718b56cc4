"""What the report reads of a run directory: manifest, global tables, score columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa

from intermodal import storage
from intermodal.schemas.legacy import is_legacy_global, upgrade_legacy_global
from intermodal.schemas.tables import GLOBAL_SCHEMA


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
        """Every ``global/*.parquet`` table, one long table of ``GLOBAL_SCHEMA`` (no rows when
        not aggregated); tables of the previous release are upgraded (``schemas.legacy``)."""
        uri = storage.join(self.root, "global")
        files = storage.list_parquet(uri) if _exists(uri) else []
        tables = [GLOBAL_SCHEMA.empty_table()]
        for file in files:
            table = storage.read_table(file)
            if is_legacy_global(table):
                table = upgrade_legacy_global(table, self.config)
            tables.append(table.select(GLOBAL_SCHEMA.names).cast(GLOBAL_SCHEMA))
        return pl.DataFrame(pl.from_arrow(pa.concat_tables(tables)))

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

    def rows(
        self,
        measure: str,
        group_by: str | None = "",
        statistic: str | None = None,
        target: str | None = None,
    ) -> pl.DataFrame:
        """Global rows of ``measure``; of one ``group_by`` (``""``: the whole dataset) or all
        (None); of one ``statistic`` and ``target`` when given."""
        selected = self.global_.filter(pl.col("measure") == measure)
        for name, value in (("group_by", group_by), ("statistic", statistic), ("target", target)):
            if value is not None:
                selected = selected.filter(pl.col(name) == value)
        return selected

    def terms(
        self,
        measure: str,
        statistic: str,
        group_by: str = "",
        group: str = "",
        target: str | None = None,
        modalities: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """``term → value`` of one statistic of one group (and ``target``, ``modalities`` when
        given), in table order; ValueError where two of its rows share a term (name the
        target or the modalities)."""
        rows = self.rows(measure, group_by, statistic, target).filter(pl.col("group") == group)
        if modalities is not None:
            rows = rows.filter(pl.col("modalities") == modalities_literal(modalities))
        terms = rows["term"].to_list()
        if len(set(terms)) != len(terms):
            raise ValueError(
                f"{measure} {statistic}: several rows per term {terms}; name the target or "
                "the modalities"
            )
        return dict(zip(terms, rows["value"].to_list(), strict=True))

    def values(
        self,
        measure: str,
        statistic: str,
        group_by: str = "",
        group: str = "",
        target: str | None = None,
    ) -> dict[tuple[str, tuple[str, ...]], float]:
        """``(term, modalities) → value`` of one statistic of one group (and ``target``)."""
        rows = self.rows(measure, group_by, statistic, target).filter(pl.col("group") == group)
        return {
            (term, tuple(modalities)): value
            for term, modalities, value in rows.select("term", "modalities", "value").iter_rows()
        }

    def pairs(
        self,
        measure: str,
        statistic: str,
        group_by: str = "",
        group: str = "",
        target: str | None = None,
        field: str = "value",
    ) -> dict[tuple[str, str], dict[str, float]]:
        """``(a, b) → term → value`` (or another ``field``, ``stderr``) of one statistic's
        rows about a pair of modalities, of one group (and ``target``), in table order."""
        rows = self.rows(measure, group_by, statistic, target).filter(
            (pl.col("group") == group) & (pl.col("modalities").list.len() == 2)
        )
        pairs: dict[tuple[str, str], dict[str, float]] = {}
        for term, (a, b), value in rows.select("term", "modalities", field).iter_rows():
            pairs.setdefault((a, b), {})[term] = value
        return pairs

    def groups(
        self, measure: str, statistic: str | None = None, target: str | None = None
    ) -> list[tuple[str, str]]:
        """``(group_by, group)`` of a measure's rows (of one statistic and target when
        given), whole dataset first, in table order."""
        rows = self.rows(measure, None, statistic, target)
        return rows.select("group_by", "group").unique(maintain_order=True).rows()


def modalities_literal(modalities: Sequence[str]) -> pl.Expr:
    """A ``modalities`` value to compare the column with (``[]`` included)."""
    return pl.lit(list(modalities), dtype=pl.List(pl.String))

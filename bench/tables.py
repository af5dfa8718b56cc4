"""Printing bench results: one titled polars table and its footnotes."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def show(title: str, table: pl.DataFrame, notes: Sequence[str], float_precision: int = 2) -> None:
    with pl.Config(
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_cols=20,
        tbl_rows=200,
        tbl_width_chars=200,
        float_precision=float_precision,
        thousands_separator=True,
    ):
        print(f"\n{title}\n{table}")
    for note in notes:
        print(f"  {note}")

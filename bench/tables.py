"""Printing bench results: one titled polars table and its footnotes."""

from __future__ import annotations

import os
import time
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


def print_finished(started: float, load_before: float) -> None:
    """The bench's wall time (from ``time.perf_counter()`` at ``started``) and the machine's
    1-minute load average at its start and now: a busy machine explains slow figures."""
    print(
        f"\nbench finished in {time.perf_counter() - started:.0f} s; 1-min load average "
        f"{load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)"
    )

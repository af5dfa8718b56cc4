"""HTML pieces of a report section: every value escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass

import polars as pl


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

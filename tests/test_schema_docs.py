"""docs/schema.md describes exactly the score columns the measures write: every column of a job
with every measure matches a documented pattern, and every documented pattern matches a
column."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from intermodal.measures import MEASURES, parse_config
from intermodal.pipelines.score_stage import scores_schema

SCHEMA_DOC = Path(__file__).parents[1] / "docs" / "schema.md"


def documented_patterns() -> list[str]:
    """The backticked names in the first cell of each row of the scores/ table."""
    text = SCHEMA_DOC.read_text().split("## scores/", 1)[1].split("\n## ", 1)[0]
    patterns = []
    for line in text.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            patterns += re.findall(r"`([^`]+)`", first_cell)
    return patterns


def as_regex(pattern: str) -> re.Pattern:
    """``shapley_<m>`` → ``shapley_\\w+?``: each ``<...>`` stands for a name or term."""
    parts = re.split(r"<[^>]+>", pattern)
    return re.compile(r"[A-Za-z0-9_]+?".join(re.escape(part) for part in parts) + r"(__class\d+)?")


@pytest.mark.parametrize("target", ["predicted", "all"])
def test_every_score_column_is_documented_and_every_documented_column_exists(target) -> None:
    job = parse_config(
        {
            "dataset": "docs",
            "input": "unused",
            "output": "unused",
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": "a", "shape": [2]}, {"name": "b", "shape": [3]}],
            "measures": list(MEASURES),
            "model": {"name": "m", "factory": "intermodal.models.fcnn:build_fcnn"},
            "intershap": {"target": target},
            # the model's coalitions: lsmi then also writes the columns an ensemble reads
            "lsmi": {"classifiers": "model"},
        }
    )
    fields = scores_schema(
        job, list(MEASURES.values()), pa.int64(), [pa.field("site", pa.string())]
    )
    columns = [name for name in fields.names if name != "site"]
    patterns = {p: as_regex(p) for p in documented_patterns() if p not in ("sample_id",)}
    undocumented = [
        c
        for c in columns
        if c != "sample_id" and not any(r.fullmatch(c) for r in patterns.values())
    ]
    assert not undocumented, f"score columns missing from docs/schema.md: {undocumented}"
    if target == "predicted":  # explained_class exists only then
        stale = [p for p, r in patterns.items() if not any(r.fullmatch(c) for c in columns)]
        assert not stale, f"docs/schema.md documents columns no measure writes: {stale}"

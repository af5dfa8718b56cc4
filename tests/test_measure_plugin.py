"""A seventh measure, written and registered here through the public API only, flows through
score, aggregate and report: the per-sample L2 norm of each modality, with its mean in
global/ (the column summaries every float score column gets) and a section of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intermodal.charts.html import Section, html_table
from intermodal.charts.run import RunData
from intermodal.measures import MEASURES, Measure, parse_config, register, unregister
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.score import run_score
from intermodal.report import write_report
from intermodal.schemas.config import JobConfig

pytestmark = pytest.mark.usefixtures("ray_session")
SIZES = {"audio": 3, "text": 5}


class ModalityNorm(Measure):
    name = "modality_norm"
    title = "Modality norms"

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [pa.field(f"norm_{m}", pa.float64(), nullable=False) for m in job.modality_names]

    def operator(self, job: JobConfig, shared: SharedModel):
        def score(context: BatchContext) -> dict[str, Any]:
            return {f"norm_{m}": np.linalg.norm(v, axis=1) for m, v in context.values.items()}

        return score

    def report(self, run: RunData) -> Section | None:
        rows = run.rows(self.name, statistic="mean")
        return Section("Modality norms", html_table(rows.select("column", "value", "n")))


@pytest.fixture
def norm_measure():
    measure = register(ModalityNorm())
    yield measure
    unregister(measure.name)


def _write_input(path: Path, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    values = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in SIZES.items()}
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(n), pa.int64()),
            "label": pa.array(rng.integers(0, 2, n), pa.int64()),
            **{m: pa.array(list(v), pa.list_(pa.float32(), SIZES[m])) for m, v in values.items()},
        }
    )
    pq.write_table(table, path)
    return values


def test_a_registered_measure_flows_through_score_aggregate_and_report(
    tmp_path, norm_measure
) -> None:
    values = _write_input(tmp_path / "input.parquet", 300)
    job = parse_config(
        {
            "dataset": "norms",
            "input": str(tmp_path / "input.parquet"),
            "output": str(tmp_path / "run"),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [d]} for m, d in SIZES.items()],
            "measures": ["modality_norm"],
            "compute": {"batch_size": 64},
        }
    )
    assert "modality_norm" in MEASURES
    run_score(job, progress=lambda _: None)
    scores = pq.read_table(tmp_path / "run" / "scores").sort_by("sample_id")
    assert scores.column_names == ["sample_id", "label", "norm_audio", "norm_text"]
    for modality, rows in values.items():
        expected = np.linalg.norm(rows, axis=1)
        np.testing.assert_allclose(scores.column(f"norm_{modality}").to_numpy(), expected, 1e-6)

    table = pl.from_arrow(run_aggregate(str(tmp_path / "run"), progress=lambda _: None))
    overall = table.filter((pl.col("measure") == "modality_norm") & (pl.col("group_by") == ""))
    # plain fields: the column summaries name the column, with no term, modalities or target
    assert set(overall["term"]) == {""} and set(overall["target"]) == {""}
    assert overall["modalities"].list.len().max() == 0
    terms = {
        (statistic, column): value
        for statistic, column, value in overall.select("statistic", "column", "value").iter_rows()
    }
    for modality, rows in values.items():
        norms = np.linalg.norm(rows.astype(np.float64), axis=1)
        assert terms["mean", f"norm_{modality}"] == pytest.approx(norms.mean(), rel=1e-6)
        assert terms["p50", f"norm_{modality}"] == pytest.approx(np.median(norms), rel=0.05)
    per_label = table.filter(
        (pl.col("measure") == "modality_norm") & (pl.col("group_by") == "label")
    )
    assert set(per_label["group"]) == {"0", "1"}

    page = Path(write_report(str(tmp_path / "run"))).read_text()
    assert "Modality norms" in page and "<td>norm_audio</td>" in page

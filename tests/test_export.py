"""Distillation weights against an independent computation; InterSHAP as a shap.Explanation
whose base value plus values is v(all), drawn by shap's waterfall and force plots."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
import pytest
from scored_runs import NULL_LABELS, all_measures_run  # tests/scored_runs.py

from intermodal.estimators.lsmi import distillation_weights
from intermodal.export import run_export
from intermodal.measures.intershap import to_shap_explanation

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("ray_session")
TERMS = ("R", "U1", "U2", "S")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return all_measures_run(tmp_path_factory)


def test_weights_clip_and_normalise() -> None:
    terms = {
        "R": np.array([1.0, -1.0, 0.0, np.nan]),
        "U1": np.array([1.0, 3.0, -2.0, 1.0]),
        "U2": np.array([0.0, 1.0, 0.0, 1.0]),
        "S": np.array([2.0, 0.0, -1.0, 1.0]),
    }
    weights = distillation_weights(terms)
    np.testing.assert_allclose([weights[t][0] for t in TERMS], [0.25, 0.25, 0.0, 0.5])
    np.testing.assert_allclose([weights[t][1] for t in TERMS], [0.0, 0.75, 0.25, 0.0])
    np.testing.assert_allclose([weights[t][2] for t in TERMS], [0.25] * 4)  # nothing positive
    assert all(np.isnan(weights[t][3]) for t in TERMS)  # no label


def test_distill_weights_equal_an_independent_computation(run, tmp_path) -> None:
    out = tmp_path / "weights"
    summary = run_export("distill-weights", run, str(out), progress=lambda _: None)
    written = pl.read_parquet(f"{out}/*.parquet").sort("sample_id")
    scores = pl.read_parquet(f"{run}/scores").sort("sample_id")
    lsmi = pl.read_parquet(f"{run}/global/lsmi.parquet")
    redundancy = lsmi.filter(
        (pl.col("group_by") == "")
        & (pl.col("term") == "R")
        & (pl.col("modalities") == ["x1", "x2"])
    )
    # the constant, from the adjusted and raw global means rather than the adjustment row
    c = (
        redundancy.filter(pl.col("statistic") == "adjusted_mean")["value"].item()
        - redundancy.filter(pl.col("statistic") == "mean")["value"].item()
    )
    shifted = scores.select(
        "sample_id",
        (pl.col("lsmi_R_x1__x2") + c).clip(lower_bound=0).alias("R"),
        (pl.col("lsmi_U1_x1__x2") - c).clip(lower_bound=0).alias("U1"),
        (pl.col("lsmi_U2_x1__x2") - c).clip(lower_bound=0).alias("U2"),
        (pl.col("lsmi_S_x1__x2") + c).clip(lower_bound=0).alias("S"),
    ).with_columns(total=pl.sum_horizontal("R", "U1", "U2", "S"))
    assert written["sample_id"].equals(shifted["sample_id"])
    for term in TERMS:
        expected = shifted.select(
            pl.when(pl.col(term).is_null())
            .then(None)
            .when(pl.col("total") > 0)
            .then(pl.col(term) / pl.col("total"))
            .otherwise(0.25)
        ).to_series()
        column = written[f"w_{term}_x1__x2"]
        assert column.null_count() == NULL_LABELS
        np.testing.assert_allclose(column.drop_nulls(), expected.drop_nulls(), atol=1e-12)
    totals = written.select(pl.sum_horizontal(pl.col("^w_.*$"))).to_series().drop_nulls()
    np.testing.assert_allclose(totals.filter(totals > 0), 1.0, atol=1e-12)
    assert summary["column"].to_list() == [f"w_{t}_x1__x2" for t in TERMS]
    assert (summary["null_rows"] == NULL_LABELS).all()
    assert Path(f"{out}.distill_weights.json").exists()  # beside: out holds only Parquet
    assert {p.suffix for p in out.iterdir()} == {".parquet"}
    assert pl.read_parquet(out).height == written.height


def test_distill_weights_need_lsmi(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    pl.DataFrame({"sample_id": [1, 2], "intershap_local": [0.1, 0.2]}).write_parquet(
        run / "scores" / "part.parquet"
    )
    with pytest.raises(ValueError, match=r"no LSMI columns"):
        run_export("distill-weights", str(run), str(tmp_path / "out"))


def test_shap_explanation_adds_up_to_the_model_output(run) -> None:
    explanation = to_shap_explanation(run)
    scores = pl.read_parquet(f"{run}/scores").sort("sample_id")
    assert explanation.values.shape == (scores.height, 3)
    assert list(explanation.feature_names) == ["x1", "x2", "interactions"]
    total = explanation.base_values + explanation.values.sum(axis=1)
    np.testing.assert_allclose(total, scores["intershap_value_full"].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(explanation.values[:, 0], scores["interaction_x1__x1"].to_numpy())
    np.testing.assert_allclose(
        explanation.values[:, 2], 2 * scores["interaction_x1__x2"].to_numpy()
    )


def test_shap_plots_draw_the_explanation(run) -> None:
    import matplotlib.pyplot as plt
    import shap

    explanation = to_shap_explanation(run, sample_ids=[5, 7, 11])
    assert explanation.values.shape == (3, 3)
    shap.plots.waterfall(explanation[0], show=False)
    labels = [t.get_text() for t in plt.gca().get_yticklabels()]
    assert any("interactions" in label for label in labels)
    plt.close("all")
    shap.plots.force(explanation[1], matplotlib=True, show=False)
    plt.close("all")


def test_missing_shap_names_the_extra(run, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap now raises ImportError
    with pytest.raises(ImportError, match=r"intermodal\[shap\]"):
        to_shap_explanation(run)


def test_an_export_no_measure_offers_is_refused_with_those_that_exist(tmp_path) -> None:
    with pytest.raises(
        ValueError, match="no export 'weights'; the measures offer: distill-weights"
    ):
        run_export("weights", str(tmp_path), str(tmp_path / "out"))

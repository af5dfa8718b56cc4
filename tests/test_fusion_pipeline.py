"""I2MoE and InTense through fit → score → aggregate on local Ray with real Parquet shards."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from devices import assert_operators_keep_to_the_device  # tests/devices.py

from intermodal.measures import parse_config
from intermodal.models.i2moe import I2MoE
from intermodal.models.intense import InTense
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.fit import run_fit
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, sample_table
from intermodal.pipelines.score import run_score
from intermodal.report import write_report
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.synthgene import SynthGeneTriSpec, generate_synthgene_tri

pytestmark = pytest.mark.usefixtures("ray_session")

ROWS = 600
NULL_LABELS = 10  # unlabelled rows are scored too: the models need no label to score
NAMES = ["M1", "M2", "M3"]
SIZE = 80  # SynthGene-Tri: 20 letters one-hot


def _data(root: Path) -> tuple[str, pa.Table]:
    table = generate_synthgene_tri(SynthGeneTriSpec(n_samples=ROWS, seed=1))
    labels = table.column("label").to_pylist()
    labels[:NULL_LABELS] = [None] * NULL_LABELS
    sites = np.where(np.random.default_rng(0).random(ROWS) < 0.4, "north", "south")
    table = table.set_column(1, "label", pa.array(labels, pa.int64()))
    table = table.append_column("site", pa.array(sites))
    uri = str(root / "data")
    write_table_shards(table, uri, n_shards=3)
    return uri, table


def _job(data: str, out: str, intense_epochs: int = 2) -> JobConfig:
    return parse_config(
        {
            "dataset": "synthgene_tri_unit",
            "input": data,
            "output": out,
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": m, "shape": [SIZE]} for m in NAMES],
            "measures": ["i2moe", "intense"],
            "i2moe": {"epochs": 2, "warmup_epochs": 1, "hidden_dim": 8, "fit_rows": 400},
            "intense": {"epochs": intense_epochs, "hidden_dim": 8, "fit_rows": 400},
            "compute": {"batch_size": 250},
        }
    )


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> tuple[JobConfig, pa.Table, pl.DataFrame]:
    root = tmp_path_factory.mktemp("fusion")
    data, table = _data(root)
    config = _job(data, str(root / "run"))
    run_score(config, progress=lambda _: None)
    scores = pl.read_parquet(Path(config.output) / "scores").sort("sample_id")
    return config, table, scores


def _inputs(table: pa.Table, ids: list[int]) -> dict[str, torch.Tensor]:
    """The input rows of ``ids`` in that order, float64, as the models take them."""
    rows = table.take(pa.array(np.searchsorted(table.column("sample_id").to_numpy(), ids)))
    return {
        m: torch.tensor(modality_values(rows.column(m), SIZE), dtype=torch.float64) for m in NAMES
    }


def _fresh(model: torch.nn.Module, state: Path) -> torch.nn.Module:
    """``model`` with the saved state_dict loaded, in float64 eval mode."""
    model.load_state_dict(torch.load(state, weights_only=True))
    return model.double().eval()


def test_every_row_is_scored_with_weights_summing_to_one(scored_run) -> None:
    _, _, scores = scored_run
    assert len(scores) == ROWS
    weights = scores.select(pl.col("^i2moe_w_.*$"))
    assert weights.columns == [f"i2moe_w_{e}" for e in ("uni_M1", "uni_M2", "uni_M3", "syn", "red")]
    values = weights.to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert scores.schema["i2moe_pred"] == pl.Int64 and scores.schema["intense_pred"] == pl.Int64
    assert scores["label"].null_count() == NULL_LABELS


def test_weights_and_contributions_match_the_saved_models_recomputed(scored_run) -> None:
    config, table, scores = scored_run
    artifacts = Path(config.output) / "artifacts"
    inputs = _inputs(table, scores["sample_id"].to_list())
    moe = _fresh(I2MoE(NAMES, [SIZE] * 3, hidden_dim=8), artifacts / "i2moe" / "model.pt")
    intense = _fresh(InTense(NAMES, [SIZE] * 3, hidden_dim=8), artifacts / "intense" / "model.pt")
    with torch.no_grad():
        interpreted = moe.interpret(inputs)
        logits = intense(inputs).numpy()
    weights = scores.select(pl.col("^i2moe_w_.*$")).to_numpy()
    np.testing.assert_allclose(weights, interpreted["weights"].numpy(), rtol=0, atol=1e-9)
    expert_classes = interpreted["expert_logits"].argmax(dim=-1).numpy()
    for index, expert in enumerate(["uni_M1", "uni_M2", "uni_M3", "syn", "red"]):
        np.testing.assert_array_equal(scores[f"i2moe_pred_{expert}"], expert_classes[:, index])
    predicted = logits.argmax(axis=1)
    np.testing.assert_array_equal(scores["intense_pred"].to_numpy(), predicted)
    terms = ["M1", "M2", "M3", "M1xM2", "M1xM3", "M2xM3"]
    contributions = scores.select(f"intense_c_{t}" for t in terms).to_numpy()
    total = contributions.sum(axis=1) + scores["intense_bias"].to_numpy()
    np.testing.assert_allclose(total, logits[np.arange(ROWS), predicted], rtol=0, atol=1e-9)


def test_the_fusion_operators_keep_to_the_actors_device(scored_run) -> None:
    config, _, _ = scored_run
    shards = inspect_shards(config)
    batch = sample_table(config, shards, 100, 0, duplicate_ids(config, shards))
    assert_operators_keep_to_the_device(config, batch)


def test_artifacts_are_reused_and_refitted_when_a_setting_changes(scored_run) -> None:
    config, _, _ = scored_run
    artifacts = Path(config.output) / "artifacts"
    saved = {m: (artifacts / m / "model.pt").read_bytes() for m in ("i2moe", "intense")}
    messages: list[str] = []
    run_score(config, progress=messages.append)
    assert any("I2MoE fitted on this input and settings: reused" in m for m in messages)
    assert any("InTense fitted on this input and settings: reused" in m for m in messages)
    assert not any("training on" in m for m in messages)
    changed = _job(config.input, config.output, intense_epochs=3)
    messages.clear()
    run_score(changed, progress=messages.append)
    assert any(m.startswith("[intense] training on") for m in messages), messages
    assert any("I2MoE fitted on this input and settings: reused" in m for m in messages)
    assert any("epoch 3/3" in m for m in messages)
    assert (artifacts / "i2moe" / "model.pt").read_bytes() == saved["i2moe"]
    assert (artifacts / "intense" / "model.pt").read_bytes() != saved["intense"]
    messages.clear()
    run_fit(changed, progress=messages.append)  # `intermodal fit` retrains whatever matches
    # the two fits run side by side: their lines come in either order
    assert sorted(m.split(" on ")[0] for m in messages if " training on " in m) == [
        "[i2moe] training",
        "[intense] training",
    ]


def _global_value(
    table: pl.DataFrame, statistic: str, column: str, group_by: str = "", group: str = ""
) -> dict:
    """The one row of ``statistic`` of score ``column`` in one group."""
    row = table.filter(
        (pl.col("statistic") == statistic)
        & (pl.col("column") == column)
        & (pl.col("group_by") == group_by)
        & (pl.col("group") == group)
    )
    assert row.height == 1
    return row.row(0, named=True)


def _groups(scores: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    """Every (group_by, group, rows) the global tables break down by, from the scores."""
    groups = [("", "", scores)]
    for column in ("label", "site"):
        text = scores[column].cast(pl.String).fill_null("null")
        groups += [(column, value, scores.filter(text == value)) for value in text.unique()]
    return groups


def test_aggregate_equals_one_pass_over_the_scores(scored_run) -> None:
    config, _, _ = scored_run
    run_score(config, progress=lambda _: None)  # back to the module's settings after a refit
    scores = pl.read_parquet(Path(config.output) / "scores")
    table = pl.from_arrow(run_aggregate(config.output, progress=lambda _: None))
    assert set(table["measure"]) == {"i2moe", "intense"}
    assert np.isfinite(table["value"].to_numpy()).all()
    assert (Path(config.output) / "global" / "i2moe.parquet").exists()
    experts = ["uni_M1", "uni_M2", "uni_M3", "syn", "red"]
    for group_by, group, rows in _groups(scores):
        for expert in experts:
            weights = rows[f"i2moe_w_{expert}"].to_numpy()
            row = _global_value(table, "mean", f"i2moe_w_{expert}", group_by, group)
            modalities = [expert.removeprefix("uni_")] if expert.startswith("uni_") else []
            assert (row["term"], row["modalities"], row["target"]) == (expert, modalities, "")
            assert row["n"] == len(rows)
            assert row["value"] == pytest.approx(weights.mean(), abs=1e-12)
            stderr = weights.std(ddof=1) / np.sqrt(len(weights))
            assert row["stderr"] == pytest.approx(stderr, rel=1e-9)
            ordered = np.sort(weights)
            for name, q in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
                quantile = _global_value(table, name, f"i2moe_w_{expert}", group_by, group)
                assert quantile["value"] in weights  # a KLL quantile is one of the values
                # ... whose rank is within the sketch's rank error (about 1.3 % at k = 200)
                below = np.searchsorted(ordered, quantile["value"], side="left")
                above = np.searchsorted(ordered, quantile["value"], side="right")
                assert below / len(weights) - 0.02 <= q <= above / len(weights) + 0.02
        for term in ["M1", "M2", "M3", "M1xM2", "M1xM3", "M2xM3"]:
            values = rows[f"intense_c_{term}"].to_numpy()
            row = _global_value(table, "mean", f"intense_c_{term}", group_by, group)
            assert (row["term"], row["modalities"]) == (term, term.split("x"))
            assert row["n"] == len(rows)
            assert row["value"] == pytest.approx(values.mean(), abs=1e-12)
        labelled = rows.filter(pl.col("label").is_not_null())
        label = labelled["label"].to_numpy()
        analysis = table.filter(
            pl.col("statistic").is_in(["expert_accuracy", "accuracy", "expert_agreement"])
            & (pl.col("group_by") == group_by)
            & (pl.col("group") == group)
        )
        if not len(label):  # the group of rows without a label has no expert analysis
            assert analysis.is_empty()
            continue
        experts_right = np.column_stack([labelled[f"i2moe_pred_{e}"] == label for e in experts])
        classes = np.column_stack([labelled[f"i2moe_pred_{e}"] for e in experts])
        agree = (classes == classes[:, :1]).all(axis=1)
        right = labelled["i2moe_pred"].to_numpy() == label
        expected = {
            ("expert_accuracy", e): experts_right[:, k].mean() for k, e in enumerate(experts)
        }
        expected[("accuracy", "")] = right.mean()
        for cell, mask in zip(
            ("agree_correct", "agree_wrong", "disagree_correct", "disagree_wrong"),
            (agree & right, agree & ~right, ~agree & right, ~agree & ~right),
            strict=True,
        ):
            expected[("expert_agreement", cell)] = mask.mean()
        assert analysis.height == len(expected)
        for (statistic, term), value in expected.items():
            row = analysis.filter(
                (pl.col("statistic") == statistic) & (pl.col("term") == term)
            ).row(0, named=True)
            assert (row["measure"], row["target"], row["n"]) == ("i2moe", "label", len(label))
            assert row["value"] == pytest.approx(value, abs=1e-12)
        shares = analysis.filter(pl.col("statistic") == "expert_agreement")["value"]
        assert shares.sum() == pytest.approx(1.0, abs=1e-12)
    artifacts = Path(config.output) / "artifacts" / "intense" / "model.pt"
    intense = _fresh(InTense(NAMES, [SIZE] * 3, hidden_dim=8), artifacts)
    relevance = table.filter(pl.col("statistic") == "relevance")
    blocks = ["M1", "M2", "M3", "M1xM2", "M1xM3", "M2xM3"]
    assert relevance["term"].to_list() == blocks
    assert relevance["modalities"].to_list() == [block.split("x") for block in blocks]
    expected = intense.relevance().numpy()
    np.testing.assert_allclose(relevance["value"].to_numpy(), expected, rtol=1e-5)
    assert set(relevance["n"]) == {ROWS} and relevance["stderr"].null_count() == 6


def test_intershap_explains_the_fitted_i2moe_named_as_the_model(scored_run, tmp_path) -> None:
    """The fitted I2MoE, named by factory and kwargs with its saved weights, is a model like any
    other: InterSHAP explains it, and v(all) is that model's probability of its prediction."""
    config, table, _ = scored_run
    weights = Path(config.output) / "artifacts" / "i2moe" / "model.pt"
    kwargs = {"modalities": NAMES, "input_dims": [SIZE] * 3, "hidden_dim": 8}
    job = config.model_dump(mode="json") | {
        "output": str(tmp_path / "explained"),
        "measures": ["intershap"],
        "model": {
            "name": "i2moe",
            "factory": "intermodal.models.i2moe:I2MoE",
            "kwargs": kwargs,
            "weights": str(weights),
        },
    }
    run_score(parse_config(job), progress=lambda _: None)
    scores = pl.read_parquet(tmp_path / "explained" / "scores").sort("sample_id")
    assert len(scores) == ROWS
    moe = _fresh(I2MoE(**kwargs), weights)
    with torch.no_grad():
        probabilities = moe(_inputs(table, scores["sample_id"].to_list())).softmax(-1).numpy()
    full = scores["intershap_value_full"].to_numpy()
    np.testing.assert_allclose(full, probabilities.max(axis=1), rtol=0, atol=1e-5)
    shapley = scores.select(f"shapley_{m}" for m in NAMES).to_numpy().sum(axis=1)
    efficiency = full - scores["intershap_value_empty"].to_numpy()
    np.testing.assert_allclose(shapley, efficiency, rtol=0, atol=1e-9)


def test_report_draws_the_expert_weights_and_the_relevance(scored_run) -> None:
    config, _, _ = scored_run
    run_score(config, progress=lambda _: None)  # the module's settings, whatever ran before
    run_aggregate(config.output, progress=lambda _: None)
    page = Path(write_report(config.output)).read_text()
    sections = re.findall(r"<h[23] id=\"[^\"]+\">([^<]+)</h[23]>", page)
    assert sections == ["Run", "Global tables", "I2MoE", "InTense"]
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', page)
    assert [alt for _, alt in images] == [
        "I2MoE: share of samples each expert leads",
        "I2MoE expert weights per sample",
        "I2MoE: accuracy of each expert alone and of the mixture (labelled rows)",
        "InTense relevance per term",
        "InTense mean contribution to the predicted logit",
    ]
    for data, _ in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Experts agree on a row when every expert predicts the same class" in page

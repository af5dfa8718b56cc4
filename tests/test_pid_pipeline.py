"""PID through fit → score → aggregate on local Ray with real Parquet shards."""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.measures import MEASURES, parse_config
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.fit import run_fit
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.pid_data import BitwiseSpec, generate_bitwise

pytestmark = pytest.mark.usefixtures("ray_session")

DIMS = {"x1": 4, "x2": 4, "x3": 1}
TERMS = ("R", "U1", "U2", "S", "I")


def _data(tmp_path, n: int = 6000, null_labels: int = 0) -> str:
    """XOR of two noisy 4-d bits, a scalar noise modality x3, a site group; 3 shards."""
    table = generate_bitwise(BitwiseSpec(op="xor", n_samples=n, dims=4, noise=0.05, seed=3))
    rng = np.random.default_rng(0)
    labels = table.column("label").to_numpy().astype(object)
    labels[:null_labels] = None
    table = (
        table.select(["sample_id", "x1", "x2"])
        .append_column("x3", pa.array([[v] for v in rng.normal(size=n)], pa.list_(pa.float32(), 1)))
        .append_column("label", pa.array(list(labels), pa.int64()))
        .append_column("site", pa.array(np.where(rng.random(n) < 0.3, "north", "south")))
    )
    uri = str(tmp_path / "data")
    write_table_shards(table, uri, n_shards=3)
    return uri


def _weights(tmp_path) -> str:
    torch.manual_seed(0)
    model = build_fcnn(list(DIMS), list(DIMS.values()), 2, "early")
    path = tmp_path / "fcnn.pt"
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    path.write_bytes(buffer.getvalue())
    return str(path)


def _job(data: str, out: str, measures: list[str], weights: str | None, **extra) -> JobConfig:
    model = {
        "name": "fcnn",
        "factory": "intermodal.models.fcnn:build_fcnn",
        "kwargs": {"modalities": list(DIMS), "dims": list(DIMS.values()), "num_classes": 2},
        "weights": weights,
    }
    return parse_config(
        {
            "dataset": "pid_unit",
            "input": data,
            "output": out,
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": m, "shape": [d]} for m, d in DIMS.items()],
            "measures": measures,
            **({"model": model} if weights else {}),
            "intershap": {"background_size": 8},
            # short patience: these tests are about the pipeline, not the encoders' fit
            "pid_cvx": {"n_clusters": 6, "fit_rows": 2000, "encoders": {"patience": 2}},
            "compute": {"batch_size": 500},
            **extra,
        }
    )


def _scores(out: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(f"{out}/scores"))


def _expected(scores: pl.DataFrame, target: str, pair: tuple[str, str], site: str | None):
    """PID (bits) and row count from the score rows themselves, in one pass."""
    rows = scores.filter(pl.col(target).is_not_null())
    if site is not None:
        rows = rows.filter(pl.col("site") == site)
    a, b = (rows[f"pid_code_{m}"].to_numpy() for m in pair)
    y = rows[target].to_numpy()
    counts = np.zeros((a.max() + 1, b.max() + 1, 2))
    np.add.at(counts, (a, b, y), 1)
    result = pid_from_joint(counts / counts.sum())
    values = list(result.terms)
    return dict(zip(TERMS, [*values, result.mutual_information], strict=True)), len(rows)


def _global(out: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(f"{out}/global/pid_cvx.parquet"))


def test_global_pid_equals_one_pass_over_the_scores(tmp_path) -> None:
    data, out = _data(tmp_path, null_labels=40), str(tmp_path / "run")
    config = _job(data, out, ["intershap", "pid_cvx"], _weights(tmp_path))
    run_score(config, progress=lambda _: None)
    run_aggregate(out, progress=lambda _: None)
    scores = _scores(out)
    assert scores["pid_code_x1"].dtype == pl.Int32
    assert "intershap_local" in scores.columns and "pred" in scores.columns
    everything = _global(out)
    assert set(everything["measure"]) == {"pid_cvx"}
    assert set(everything["statistic"]) == {
        "pid",
        "codes_information",
        "feature_information",
        "alpha",
    }
    table = everything.filter(pl.col("statistic") == "pid")
    assert set(table["target"]) == {"label", "pred"}
    checked = 0
    for target in ("label", "pred"):
        for pair in combinations(DIMS, 2):
            for site in (None, "north", "south"):
                expected, n = _expected(scores, target, pair, site)
                rows = table.filter(
                    (pl.col("target") == target)
                    & (pl.col("modalities") == list(pair))
                    & (pl.col("group_by") == ("" if site is None else "site"))
                    & (pl.col("group") == (site or ""))
                )
                for term in TERMS:
                    row = rows.filter(pl.col("term") == term)
                    assert row["value"].item() == pytest.approx(expected[term], abs=1e-7)
                    assert row["n"].item() == n
                    checked += 1
    assert checked == 2 * 3 * 3 * len(TERMS)
    # null labels count for the model's PID, not for the data's
    label_n = table.filter((pl.col("target") == "label") & (pl.col("group_by") == ""))["n"]
    model_n = table.filter((pl.col("target") == "pred") & (pl.col("group_by") == ""))
    assert set(label_n) == {6000 - 40} and set(model_n["n"]) == {6000}
    # I of the codes beside it, per group; a classifier's I of the features, whole data only
    codes = everything.filter(pl.col("statistic") == "codes_information")
    assert codes.height == 2 * 3 * 3
    for row in codes.iter_rows(named=True):
        same = table.filter(
            (pl.col("target") == row["target"])
            & (pl.col("modalities") == row["modalities"])
            & (pl.col("group") == row["group"])
            & (pl.col("term") == "I")
        )
        assert row["value"] == same["value"].item() and row["n"] == same["n"].item()
    features = everything.filter(pl.col("statistic") == "feature_information")
    assert features.height == 2 * 3 and set(features["group_by"]) == {""}
    # a fifth of the labelled rows of the 2,000 sampled (40 of the 6,000 rows have no label)
    (held_out,) = set(features["n"])
    assert round(0.2 * (2000 - 40)) <= held_out <= round(0.2 * 2000)
    assert features["stderr"].is_not_null().all()


def test_codes_are_the_saved_codebooks_cells(tmp_path) -> None:
    data, out = _data(tmp_path), str(tmp_path / "run")
    config = _job(data, out, ["pid_cvx"], None)
    run_score(config, progress=lambda _: None)
    codebooks = MEASURES["pid_cvx"].codebooks(config)
    assert codebooks is not None
    assert codebooks["x3"].kind == "histogram" and codebooks["x1"].kind == "kmeans"
    inputs = pq.read_table(data).sort_by("sample_id")
    scores = pq.read_table(f"{out}/scores").sort_by("sample_id")
    assert scores.column_names == ["sample_id", "label", "site", *(f"pid_code_{m}" for m in DIMS)]
    for name, size in DIMS.items():
        expected = codebooks[name].assign(modality_values(inputs.column(name), size))
        np.testing.assert_array_equal(scores.column(f"pid_code_{name}").to_numpy(), expected)


def test_pid_without_a_model_finds_xor_synergy(tmp_path) -> None:
    data, out = _data(tmp_path, n=20_000), str(tmp_path / "run")
    run_score(_job(data, out, ["pid_cvx"], None), progress=lambda _: None)
    table = run_aggregate(out, progress=lambda _: None)
    overall = pl.from_arrow(table).filter(pl.col("group_by") == "")
    assert set(overall["measure"]) == {"pid_cvx"} and set(overall["target"]) == {"label"}
    overall = overall.filter(pl.col("statistic") == "pid")
    values = {
        (term, tuple(pair)): value
        for term, pair, value in overall.select("term", "modalities", "value").iter_rows()
    }
    assert values["S", ("x1", "x2")] == pytest.approx(1.0, abs=0.02)
    for term in ("R", "U1", "U2"):
        assert values[term, ("x1", "x2")] == pytest.approx(0.0, abs=0.02)
    # x3 is noise: nothing about the label with either bit alone
    assert values["I", ("x1", "x3")] < 0.02 and values["I", ("x2", "x3")] < 0.02


def test_model_pid_without_intershap_uses_the_models_prediction(tmp_path) -> None:
    data, out = _data(tmp_path), str(tmp_path / "run")
    weights = _weights(tmp_path)
    run_score(_job(data, out, ["pid_cvx"], weights), progress=lambda _: None)
    scores = pq.read_table(f"{out}/scores").sort_by("sample_id")
    assert "intershap_local" not in scores.column_names
    model = build_fcnn(list(DIMS), list(DIMS.values()), 2, "early")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    inputs = pq.read_table(data).sort_by("sample_id")
    with torch.no_grad():
        logits = model(
            {m: torch.from_numpy(modality_values(inputs.column(m), d)) for m, d in DIMS.items()}
        )
    np.testing.assert_array_equal(scores.column("pred").to_numpy(), logits.argmax(-1).numpy())


def _codebook_lines(messages: list[str]) -> int:
    return sum(message.startswith("[fit]") and " codes from " in message for message in messages)


def test_codebooks_are_reused_until_their_settings_change(tmp_path) -> None:
    data, out = _data(tmp_path), str(tmp_path / "run")
    messages: list[str] = []
    run_fit(_job(data, out, ["pid_cvx"], None), progress=messages.append)
    assert _codebook_lines(messages) == 3
    messages.clear()
    run_score(_job(data, out, ["pid_cvx"], None), progress=messages.append)
    assert any("reused" in message for message in messages)
    assert not any(message.startswith("[fit]") for message in messages)
    messages.clear()
    changed = {"n_clusters": 5, "fit_rows": 2000, "encoders": {"patience": 2}}
    refit = _job(data, out, ["pid_cvx"], None, pid_cvx=changed)
    run_score(refit, progress=messages.append)
    assert _codebook_lines(messages) == 3
    assert pq.read_table(f"{out}/scores").column("pid_code_x1").to_numpy().max() < 5

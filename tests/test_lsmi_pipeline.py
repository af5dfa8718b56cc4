"""LSMI through fit → score → aggregate on local Ray with real Parquet shards."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from intermodal.measures import MEASURES, parse_config
from intermodal.models.classifiers import fold_of, log_proba_of_labels
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.fit import run_fit
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, sample_table
from intermodal.pipelines.score import background_inputs, run_score
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

pytestmark = pytest.mark.usefixtures("ray_session")

DIMS = {"x1": 8, "x2": 8, "x3": 3}
NULL_LABELS = 25
TERMS = ("R", "U1", "U2", "S")


def _data(tmp_path, n: int = 3000) -> str:
    """OR circuit in x1, x2, noise in x3, a site group, a few unlabelled rows; 3 shards."""
    table = generate_circuit(CircuitSpec(op="or", n_samples=n, dims=8, noise=0.1, seed=1))
    rng = np.random.default_rng(0)
    labels = table.column("label").to_pylist()
    labels[:NULL_LABELS] = [None] * NULL_LABELS
    noise = rng.normal(size=n * 3).astype(np.float32)
    table = pa.table(
        {
            "sample_id": table.column("sample_id"),
            "label": pa.array(labels, pa.int64()),
            "site": pa.array(np.where(rng.random(n) < 0.4, "north", "south")),
            "x1": table.column("x1"),
            "x2": table.column("x2"),
            "x3": pa.FixedSizeListArray.from_arrays(pa.array(noise), 3),
        }
    )
    uri = str(tmp_path / "data")
    write_table_shards(table, uri, n_shards=3)
    return uri


def _job(data: str, out: str) -> JobConfig:
    return parse_config(
        {
            "dataset": "lsmi_unit",
            "input": data,
            "output": out,
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": m, "shape": [d]} for m, d in DIMS.items()],
            "measures": ["lsmi"],
            "lsmi": {
                "folds": 3,
                "fit_rows": 2000,
                "classifier": {"hidden": 16, "epochs": 4, "lr": 1e-2},
                "entropy": {"n_components": 2, "epochs": 3, "lr": 1e-2},
            },
            "compute": {"batch_size": 700},
        }
    )


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> tuple[JobConfig, str, pl.DataFrame]:
    root = tmp_path_factory.mktemp("lsmi")
    data, out = _data(root), str(root / "run")
    config = _job(data, out)
    messages: list[str] = []
    run_score(config, progress=messages.append)
    assert any("out-of-fold accuracy" in message for message in messages)
    table = pl.from_arrow(run_aggregate(out, progress=lambda _: None))
    return config, data, table


def test_scores_equal_an_independent_recomputation(scored_run) -> None:
    config, data, _ = scored_run
    artifacts = MEASURES["lsmi"].load(config)
    inputs = pq.read_table(data).sort_by("sample_id")
    scores = pq.read_table(f"{config.output}/scores").sort_by("sample_id")
    assert scores.num_rows == inputs.num_rows
    x = {m: modality_values(inputs.column(m), d) for m, d in DIMS.items()}
    labelled = np.array([v is not None for v in inputs.column("label").to_pylist()])
    y = np.array([v or 0 for v in inputs.column("label").to_pylist()])
    folds = fold_of(inputs.column("sample_id"), 3, seed=0)
    h = {m: artifacts.entropy[m].entropy(x[m]) for m in DIMS}
    prior = artifacts.log_prior[y]

    def information(*names: str) -> np.ndarray:
        features = np.concatenate([x[m] for m in names], axis=1)
        model = artifacts.classifiers["__".join(names)]
        return log_proba_of_labels(model, features, folds, y) - prior

    for a, b in combinations(DIMS, 2):
        i_a, i_b, i_ab = information(a), information(b), information(a, b)
        r = np.minimum(h[a], h[b]) - np.minimum(h[a] - i_a, h[b] - i_b)
        expected = {"R": r, "U1": i_a - r, "U2": i_b - r, "S": i_ab - i_a - i_b + r}
        for term in TERMS:
            column = scores.column(f"lsmi_{term}_{a}__{b}")
            assert column.null_count == NULL_LABELS
            values = column.to_numpy(zero_copy_only=False)
            assert np.isnan(values[~labelled]).all()
            np.testing.assert_allclose(values[labelled], expected[term][labelled], atol=1e-9)


def test_global_means_equal_one_pass_over_the_scores(scored_run) -> None:
    config, _, table = scored_run
    scores = pl.read_parquet(f"{config.output}/scores").filter(pl.col("label").is_not_null())
    lsmi = table.filter(pl.col("measure") == "lsmi")
    for a, b in combinations(DIMS, 2):
        columns = [f"lsmi_{t}_{a}__{b}" for t in TERMS]
        overall = scores.select(columns).mean().row(0)
        shift = -min(overall[0], overall[3]) if min(overall[0], overall[3]) < 0 else 0.0
        if shift == 0.0 and min(overall[1], overall[2]) < 0:
            shift = min(overall[1], overall[2])
        pair = lsmi.filter(pl.col("modalities") == [a, b])
        constant = pair.filter(pl.col("statistic") == "adjustment")
        assert constant["value"].item() == pytest.approx(shift, abs=1e-12)
        for group_by, group in [("", ""), ("site", "north"), ("label", "1")]:
            rows = scores if not group_by else scores.filter(pl.col(group_by).cast(str) == group)
            signs = (1, -1, -1, 1)  # adjusted: r + a, u1 − a, u2 − a, s + a
            for term, column, sign in zip(("R", "U1", "U2", "S"), columns, signs, strict=True):
                selected = pair.filter(
                    (pl.col("group_by") == group_by)
                    & (pl.col("group") == group)
                    & (pl.col("term") == term)
                    & (pl.col("target") == "label")
                    & (pl.col("column") == column)
                )
                raw = selected.filter(pl.col("statistic") == "mean")
                shifted = selected.filter(pl.col("statistic") == "adjusted_mean")
                values = rows[column].to_numpy()
                assert raw["value"].item() == pytest.approx(values.mean(), abs=1e-10)
                assert raw["n"].item() == len(values) == shifted["n"].item()
                stderr = values.std(ddof=1) / np.sqrt(len(values))
                assert raw["stderr"].item() == pytest.approx(stderr, rel=1e-9)
                expected = values.mean() + sign * shift
                assert shifted["value"].item() == pytest.approx(expected, abs=1e-10)


def test_artifacts_are_reused_until_settings_change(scored_run) -> None:
    config, _, _ = scored_run
    messages: list[str] = []
    run_score(config, progress=messages.append)
    assert any("LSMI fitted on this input and settings: reused" in m for m in messages)
    changed = config.model_copy(update={"lsmi": config.lsmi.model_copy(update={"seed": 1})})
    messages.clear()
    run_score(changed, progress=messages.append)
    assert any(message.startswith("[lsmi] fitting on") for message in messages)


def test_model_coalitions_as_classifiers_find_xor_synergy(tmp_path) -> None:
    """lsmi.classifiers: model reads p(y | x_S) from the XOR function's masked coalitions."""
    spec = HDXORSpec(setting="synergy", n_modalities=2, n_samples=2000, seed=0)
    data = str(tmp_path / "data")
    write_table_shards(generate(spec).select(["sample_id", "label", "m0_bits", "m1_bits"]), data)
    config = parse_config(
        {
            "dataset": "xor_coalitions",
            "input": data,
            "output": str(tmp_path / "run"),
            "num_classes": 2,
            "modalities": [{"name": m, "column": f"{m}_bits", "shape": [1]} for m in ("m0", "m1")],
            "measures": ["lsmi"],
            "model": {
                "name": "xor_function",
                "factory": "intermodal.synthetic.hdxor:xor_function_model",
                "kwargs": {"setting": "synergy", "n_modalities": 2},
            },
            "intershap": {"background_size": 512},  # masking noise shrinks with K
            "lsmi": {"classifiers": "model", "entropy": {"n_components": 2, "epochs": 2}},
        }
    )
    messages: list[str] = []
    run_score(config, progress=messages.append)
    # no cross-fitted classifier of its own: the model's coalitions stand in for them (only
    # the per-modality posteriors the entropies are taken on are trained)
    assert not any("out-of-fold" in message for message in messages)
    table = pl.from_arrow(run_aggregate(config.output, progress=lambda _: None))
    overall = table.filter(
        (pl.col("group_by") == "")
        & (pl.col("statistic") == "adjusted_mean")
        & (pl.col("modalities") == ["m0", "m1"])
    )
    values = dict(zip(overall["term"], overall["value"], strict=True))
    assert values["S"] == pytest.approx(np.log(2), abs=0.02)
    for term in ("R", "U1", "U2"):
        assert values[term] == pytest.approx(0.0, abs=0.02)

    # with InterSHAP too, one model and one coalition pass per batch serve both measures
    both = parse_config({**config.model_dump(), "measures": ["intershap", "lsmi"]})
    shards = inspect_shards(both)
    batch = sample_table(both, shards, 64, 0, duplicate_ids(both, shards))
    background = background_inputs(both, shards, duplicate_ids(both, shards))
    operator = ScoreOperator(both, background=background)
    passes = CountingCalls(operator.shared.coalition_values)
    operator.shared.coalition_values = passes
    scores = operator(batch)
    assert passes.calls == 1
    assert {"intershap_local", "lsmi_S_m0__m1"} <= set(scores.column_names)
    alone = ScoreOperator(config, background=background)(batch)
    np.testing.assert_array_equal(
        scores.column("lsmi_S_m0__m1").to_numpy(), alone.column("lsmi_S_m0__m1").to_numpy()
    )


class CountingCalls:
    """Counts the calls of the wrapped callable (here: the actor's coalition pass)."""

    def __init__(self, wrapped) -> None:
        self.wrapped, self.calls = wrapped, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.wrapped(*args, **kwargs)


def test_encoder_features_feed_the_entropy_models_and_classifiers(tmp_path) -> None:
    """lsmi.features: encoder fits on the model's encode(name, x) outputs (8 → 4 here)."""
    torch.manual_seed(0)
    model = build_fcnn(["x1", "x2"], [8, 8], 2, "intermediate")
    weights = tmp_path / "fcnn.pt"
    torch.save(model.state_dict(), weights)
    table = generate_circuit(CircuitSpec(op="xor", n_samples=600, dims=8, seed=2))
    data = str(tmp_path / "data")
    write_table_shards(table.select(["sample_id", "label", "x1", "x2"]), data, n_shards=1)
    config = parse_config(
        {
            "dataset": "encoder",
            "input": data,
            "output": str(tmp_path / "run"),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [8]} for m in ("x1", "x2")],
            "measures": ["lsmi"],
            "model": {
                "name": "fcnn",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": {"modalities": ["x1", "x2"], "dims": [8, 8], "fusion": "intermediate"},
                "weights": str(weights),
            },
            "lsmi": {
                "features": "encoder",
                "folds": 3,
                "classifier": {"hidden": 8, "epochs": 2},
                "entropy": {"n_components": 2, "epochs": 2},
            },
        }
    )
    run_fit(config, progress=lambda _: None)
    artifacts = MEASURES["lsmi"].load(config)
    assert {m: artifacts.entropy[m].dim for m in ("x1", "x2")} == {"x1": 4, "x2": 4}
    batch = pq.read_table(data).slice(0, 50)
    batch = pa.table(
        {
            "sample_id": batch.column("sample_id"),
            "label": batch.column("label"),
            "x1": batch.column("x1"),
            "x2": batch.column("x2"),
        }
    )
    out = ScoreOperator(config)(batch)
    values = out.column("lsmi_S_x1__x2").to_numpy()
    assert values.shape == (50,) and np.isfinite(values).all()

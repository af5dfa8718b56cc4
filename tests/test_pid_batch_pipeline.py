"""PID BATCH through fit → score → aggregate on local Ray with real Parquet shards."""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from intermodal.estimators.pid_batch import block_pid
from intermodal.measures import MEASURES, parse_config
from intermodal.models.classifiers import fold_of, own_fold_probabilities
from intermodal.models.fcnn import build_fcnn
from intermodal.models.training import TrainConfig, train_classifier
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.score import run_score
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.pid_data import BitwiseSpec, generate_bitwise

pytestmark = pytest.mark.usefixtures("ray_session")

DIMS = {"x1": 8, "x2": 8, "x3": 2}
TERMS = ("R", "U1", "U2", "S")
SHARDS = ((0, 700), (700, 1300), (2000, 1000))  # (first row, rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pid_batch")
    n = 3000
    table = generate_bitwise(BitwiseSpec(op="xor", n_samples=n, dims=8, noise=0.1, seed=4))
    noise = np.random.default_rng(1).normal(size=n * 2).astype(np.float32)
    table = table.select(["sample_id", "label", "x1", "x2"]).append_column(
        "x3", pa.FixedSizeListArray.from_arrays(pa.array(noise), 2)
    )
    data = str(root / "data")
    (root / "data").mkdir()
    # shards of 700, 1300 and 1000 rows: not multiples of the batch (500) or block (128) size
    for index, (start, rows) in enumerate(SHARDS):
        pq.write_table(table.slice(start, rows), f"{data}/part-{index}.parquet")
    config = parse_config(
        {
            "dataset": "batch_unit",
            "input": data,
            "output": str(root / "run"),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [d]} for m, d in DIMS.items()],
            "measures": ["pid_batch"],
            "pid_batch": {
                "block_size": 128,
                "epochs": 2,
                "folds": 3,
                "classifier": {"hidden": 16, "epochs": 4, "lr": 1e-2},
            },
            "compute": {"batch_size": 500},
        }
    )
    messages: list[str] = []
    run_score(config, progress=messages.append)
    assert any(message.startswith("[pid_batch] label: encoders x1, x2") for message in messages)
    table = pl.from_arrow(run_aggregate(config.output, progress=lambda _: None))
    return config, data, table


def test_rows_of_a_block_share_its_estimate(run) -> None:
    config, _, _ = run
    scores = pl.read_parquet(f"{config.output}/scores")
    columns = [f"pid_batch_{t}_{a}__{b}" for a, b in combinations(DIMS, 2) for t in TERMS]
    per_block = scores.group_by("pid_batch_block").agg(
        pl.len().alias("rows"), *(pl.col(c).n_unique().alias(c) for c in columns)
    )
    assert (per_block.select(columns).to_numpy() == 1).all()
    # blocks of 128 rows; the tail of a 500-row batch joins the block before it
    assert per_block["rows"].min() >= 64 and per_block["rows"].max() < 192
    assert per_block["rows"].sum() == 3000


def test_global_is_the_mean_over_blocks(run) -> None:
    config, _, table = run
    scores = pl.read_parquet(f"{config.output}/scores")
    blocks = scores.group_by("pid_batch_block").agg(pl.all().first())
    for a, b in combinations(DIMS, 2):
        for term in TERMS:
            values = blocks[f"pid_batch_{term}_{a}__{b}"].to_numpy()
            row = table.filter(
                (pl.col("statistic") == "pid")
                & (pl.col("target") == "label")
                & (pl.col("term") == term)
                & (pl.col("modalities") == [a, b])
            )
            assert row["measure"].item() == "pid_batch" and row["n"].item() == 3000
            assert row["value"].item() == pytest.approx(values.mean(), abs=1e-12)
            stderr = values.std(ddof=1) / np.sqrt(len(values))
            assert row["stderr"].item() == pytest.approx(stderr, rel=1e-9)
            assert np.isfinite(values).all()


def test_a_block_estimate_equals_an_independent_recomputation(run) -> None:
    config, data, _ = run
    fitted = MEASURES["pid_batch"].load(config)
    scores = pq.read_table(f"{config.output}/scores")
    block = scores.column("pid_batch_block")[0].as_py()
    members = scores.filter(pa.compute.equal(scores.column("pid_batch_block"), block))
    inputs = pq.read_table(data)
    order = {v: i for i, v in enumerate(inputs.column("sample_id").to_pylist())}
    rows = inputs.take([order[v] for v in members.column("sample_id").to_pylist()])
    x = {m: modality_values(rows.column(m), d) for m, d in DIMS.items()}
    folds = fold_of(rows.column("sample_id"), 3, seed=0)

    def probabilities(*names: str) -> torch.Tensor:
        features = np.concatenate([x[m] for m in names], axis=1)
        model = fitted["label"].classifiers["__".join(names)]
        return torch.from_numpy(own_fold_probabilities(model, features, folds))

    encoders = fitted["label"].encoders["x1__x2"]
    with torch.no_grad():
        expected = block_pid(
            encoders[0](torch.from_numpy(x["x1"])).double(),
            encoders[1](torch.from_numpy(x["x2"])).double(),
            probabilities("x1"),
            probabilities("x2"),
            probabilities("x1", "x2"),
        )
    for term in TERMS:
        stored = members.column(f"pid_batch_{term}_x1__x2")[0].as_py()
        assert stored == pytest.approx(getattr(expected, term) / np.log(2), abs=1e-9)


def test_model_pid_decomposes_the_predictions(tmp_path) -> None:
    """With a model, BATCH is fitted a second time on its predictions (target pred). The
    model here is trained to predict x1's bit, so its predictions carry about one bit unique
    to x1 while the labels (XOR) are all synergy."""
    n = 1500
    table = generate_bitwise(BitwiseSpec(op="xor", n_samples=n, dims=4, noise=0.1, seed=5))
    data = str(tmp_path / "data")
    write_table_shards(table.select(["sample_id", "label", "x1", "x2"]), data, n_shards=1)
    torch.manual_seed(0)  # the initialisation, whatever ran before in this process
    model = build_fcnn(["x1", "x2"], [4, 4], 2, "intermediate")
    inputs = {m: modality_values(table.column(m), 4) for m in ("x1", "x2")}
    trained = train_classifier(
        model,
        inputs,
        table.column("x1_bits").to_numpy(),
        TrainConfig(epochs=20, lr=1e-2),
        progress=lambda _: None,
    )
    assert trained.validation_accuracy > 0.95  # the premise: predictions follow x1's bit
    weights = tmp_path / "fcnn.pt"
    torch.save(model.state_dict(), weights)
    config = parse_config(
        {
            "dataset": "batch_model",
            "input": data,
            "output": str(tmp_path / "run"),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [4]} for m in ("x1", "x2")],
            "measures": ["pid_batch"],
            "model": {
                "name": "fcnn",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": {"modalities": ["x1", "x2"], "dims": [4, 4], "fusion": "intermediate"},
                "weights": str(weights),
            },
            "pid_batch": {
                "block_size": 128,
                "epochs": 2,
                "folds": 3,
                "classifier": {"hidden": 16, "epochs": 6, "lr": 1e-2},
            },
        }
    )
    run_score(config, progress=lambda _: None)
    table = pl.from_arrow(run_aggregate(config.output, progress=lambda _: None))
    model_terms = table.filter(
        (pl.col("measure") == "pid_batch")
        & (pl.col("statistic") == "pid")
        & (pl.col("target") == "pred")
    )
    assert set(model_terms["modalities"].list.join(",")) == {"x1,x2"}
    values = dict(zip(model_terms["term"], model_terms["value"], strict=True))
    assert set(values) == set(TERMS)
    assert set(model_terms["n"]) == {n}
    # the predictions come from x1 alone: U1 carries them, U2 and R vanish
    assert values["U1"] > 0.8
    assert abs(values["U2"]) < 0.1 and abs(values["R"]) < 0.1


def test_a_block_split_across_score_files_counts_once(run, tmp_path) -> None:
    """A batch spanning two input shards is written to two score files, cutting a block in
    two. Every score file of the run is cut inside a block, and the cut run aggregates to the
    same global rows as the run itself (the one-pass value)."""
    config, _, table = run
    cut = tmp_path / "cut"
    (cut / "scores").mkdir(parents=True)
    shutil.copy(Path(config.output) / "manifest.json", cut / "manifest.json")
    split_blocks = 0
    for index, path in enumerate(sorted((Path(config.output) / "scores").glob("*.parquet"))):
        scores = pq.read_table(path)
        at = 37  # inside the file's first block (blocks hold 64 to 191 rows)
        first, second = scores.slice(0, at), scores.slice(at)
        pq.write_table(first, cut / "scores" / f"shard-{index:06d}-a-{first.num_rows}.parquet")
        pq.write_table(second, cut / "scores" / f"shard-{index:06d}-b-{second.num_rows}.parquet")
        shared = set(first.column("pid_batch_block").to_pylist())
        split_blocks += len(shared & set(second.column("pid_batch_block").to_pylist()))
    assert split_blocks >= 3
    again = pl.from_arrow(run_aggregate(str(cut), progress=lambda _: None))
    pid = pl.col("statistic") == "pid"
    expected, got = (t.filter(pid).sort("target", "modalities", "term") for t in (table, again))
    assert got["n"].to_list() == expected["n"].to_list()
    np.testing.assert_allclose(got["value"], expected["value"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["stderr"], expected["stderr"], rtol=1e-9)

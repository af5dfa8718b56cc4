"""score and aggregate on local Ray with real Parquet shards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle as cloudpickle
from jobs import xor_function_job  # tests/jobs.py
from polars.testing import assert_frame_equal

from intermodal.estimators.intershap import global_intershap, local_intershap
from intermodal.measures import parse_config
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.inputs import ShardSource, duplicate_ids, inspect_shards, sample_rows
from intermodal.pipelines.resume import ScoreSink
from intermodal.pipelines.score import background_inputs, run_score
from intermodal.schemas.validation import InputSchemaError

pytestmark = pytest.mark.usefixtures("ray_session")


def _job(input_uri: str, output: str, **extra) -> object:
    settings = {
        "group_columns": ["site"],
        "intershap": {"background_size": 16},
        "compute": {"batch_size": 64},
        **extra,
    }
    return parse_config(xor_function_job(input_uri, output, **settings))


ONE_BIT = pa.list_(pa.float32(), 1)


def _shard(ids, bits0, bits1, labels) -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(ids, pa.int64()),
            "label": pa.array(labels, pa.int64()),
            "site": pa.array(["north" if i % 2 else "south" for i in range(len(ids))]),
            "m0_bits": pa.array([None if b is None else [b] for b in bits0], ONE_BIT),
            "m1_bits": pa.array(bits1, pa.list_(pa.float32())),  # variable length: checked per row
        }
    )


def _clean_bits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)


def test_every_row_ends_in_scores_or_rejects_exactly_once(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    a, b = _clean_bits(300, 0)
    rows0 = [
        list(range(0, 150)),
        list(a[:150]),
        [[x] for x in b[:150]],
        list((a[:150] != b[:150]).astype(int)),
    ]
    rows1 = [
        list(range(150, 300)),
        list(a[150:]),
        [[x] for x in b[150:]],
        list((a[150:] != b[150:]).astype(int)),
    ]
    rows0[1][3] = float("nan")  # NaN
    rows0[2][4] = [1.0, 0.0]  # wrong vector length
    rows0[1][5] = None  # missing modality value
    rows0[3][6] = 7  # label out of range
    rows1[0][10] = 20  # duplicate of an id in the other shard
    pq.write_table(_shard(*rows0), data / "part-0.parquet", row_group_size=64)
    pq.write_table(_shard(*rows1), data / "part-1.parquet", row_group_size=64)
    pq.write_table(_shard([], [], [], []), data / "part-2.parquet")  # an empty shard

    manifest = run_score(_job(str(data), str(tmp_path / "run")), progress=lambda _: None)
    scores = pl.read_parquet(tmp_path / "run" / "scores")
    rejects = pl.read_parquet(tmp_path / "run" / "rejects")
    reasons = dict(zip(rejects["row_index"].to_list(), rejects["reason"].to_list(), strict=True))

    assert manifest["rows"] == {"scored": 294, "rejected": 6}
    assert scores["sample_id"].is_unique().all()
    # id 160 was overwritten with 20: both copies of 20 are rejected
    assert sorted(scores["sample_id"]) == sorted(set(range(300)) - {3, 4, 5, 6, 20, 160})
    assert reasons == {
        3: "1 NaN/inf values",
        4: "expected 1 values, got 2",
        5: "value is null",
        6: "label 7 outside [0, 2)",
        20: "duplicate sample_id (every copy rejected)",
        10: "duplicate sample_id (every copy rejected)",
    }
    assert (
        rejects.filter(pl.col("row_index") == 10)["source_file"].item().endswith("part-1.parquet")
    )
    assert set(scores.columns) >= {
        "sample_id",
        "label",
        "site",
        "pred",
        "shapley_m0",
        "interaction_m0__m1",
        "intershap_local",
    }


def test_schema_problems_stop_before_any_work(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    a, b = _clean_bits(10, 1)
    good = _shard(list(range(10)), list(a), [[x] for x in b], [0] * 10)
    pq.write_table(good, data / "part-0.parquet")
    pq.write_table(good.drop_columns(["m1_bits"]), data / "part-1.parquet")
    run = tmp_path / "run"
    with pytest.raises(InputSchemaError) as error:
        run_score(_job(str(data), str(run)), progress=lambda _: None)
    assert "part-1.parquet: column 'm1_bits' (modality 'm1') is missing" in str(error.value)
    assert not run.exists()
    (data / "part-2.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputSchemaError, match=r"part-2\.parquet: cannot be read as Parquet"):
        run_score(_job(str(data), str(run)), progress=lambda _: None)


def test_aggregate_equals_one_pass_over_the_scores(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for shard in range(3):  # blocks of different sizes
        n = 40 + 50 * shard
        a, b = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
        ids = list(range(1000 * shard, 1000 * shard + n))
        labels = list((a != b).astype(int))
        pq.write_table(_shard(ids, list(a), [[x] for x in b], labels), data / f"p{shard}.parquet")
    job = _job(
        str(data), str(tmp_path / "run"), intershap={"background_size": 8, "masking": "mean"}
    )
    run_score(job, progress=lambda _: None)
    table = pl.from_arrow(run_aggregate(str(tmp_path / "run"), progress=lambda _: None))
    scores = pl.read_parquet(tmp_path / "run" / "scores")

    def matrices(frame: pl.DataFrame) -> np.ndarray:
        upper = frame.select(
            "interaction_m0__m0", "interaction_m0__m1", "interaction_m1__m1"
        ).to_numpy()
        return np.stack(
            [np.stack([upper[:, 0], upper[:, 1]], 1), np.stack([upper[:, 1], upper[:, 2]], 1)], 1
        )

    def value(
        term: str, group_by: str = "", group: str = "", statistic: str = "intershap"
    ) -> tuple[float, int]:
        row = table.filter(
            (pl.col("statistic") == statistic)
            & (pl.col("term") == term)
            & (pl.col("group_by") == group_by)
            & (pl.col("group") == group)
        )
        return row["value"].item(), row["n"].item()

    assert value("global") == (pytest.approx(global_intershap(matrices(scores))), 270)
    local_mean = value("local", statistic="mean")[0]  # the mean of intershap_local
    assert local_mean == pytest.approx(local_intershap(matrices(scores)).mean())
    for site in ("north", "south"):
        subset = scores.filter(pl.col("site") == site)
        assert value("global", "site", site) == (
            pytest.approx(global_intershap(matrices(subset))),
            len(subset),
        )
    assert {"pred", "label", "site", ""} == set(table["group_by"])
    assert table.null_count()["value"].item() == 0


def test_background_rows_are_distinct_valid_draws_from_every_shard(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(4):
        ids = list(range(100 * shard, 100 * shard + 100))
        bits = [float(i) for i in ids]  # the bit column carries the id: rows are traceable
        bits[::2] = [float("nan")] * 50  # half the rows are invalid
        table = _shard(ids, bits, [[0.0]] * 100, [0] * 100)
        pq.write_table(table, data / f"p{shard}.parquet", row_group_size=16)
    config = _job(str(data), str(tmp_path / "run"))
    shards = inspect_shards(config)
    rows = sample_rows(config, shards, 120, seed=5, duplicates=pa.array([], pa.int64()))
    drawn = rows["m0"][:, 0]
    assert len(drawn) == 120 and np.isfinite(drawn).all()
    assert len(set(drawn)) == 120  # without replacement
    assert {int(i) // 100 for i in drawn} == {0, 1, 2, 3}
    with pytest.raises(InputSchemaError, match="no valid row"):
        sample_rows(config, shards[:1], 60, seed=0, duplicates=pa.array(range(100), pa.int64()))


@pytest.mark.parametrize("masking", ["background", "mean", "zeros"])
def test_masking_modes_give_their_baseline_rows(tmp_path, masking) -> None:
    data = tmp_path / "data"
    data.mkdir()
    a, b = _clean_bits(200, 4)
    pq.write_table(
        _shard(list(range(200)), list(a), [[x] for x in b], [0] * 200), data / "p.parquet"
    )
    config = _job(
        str(data), str(tmp_path / "run"), intershap={"masking": masking, "background_size": 50}
    )
    shards = inspect_shards(config)
    rows = background_inputs(config, shards, pa.array([], pa.int64()))
    drawn = sample_rows(config, shards, 50, seed=0, duplicates=pa.array([], pa.int64()))
    expected = {
        "background": drawn,
        "mean": {m: x.mean(axis=0, keepdims=True) for m, x in drawn.items()},
        "zeros": {m: np.zeros((1, 1), np.float32) for m in drawn},
    }[masking]
    for name in ("m0", "m1"):
        np.testing.assert_allclose(rows[name], expected[name], rtol=1e-6)


def test_all_rows_rejected_and_null_labels(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    nan = float("nan")
    pq.write_table(_shard([1, 2], [nan, nan], [[0.0], [1.0]], [0, 1]), data / "bad.parquet")
    run = tmp_path / "run"
    manifest = run_score(_job(str(data), str(run)), progress=lambda _: None)
    assert manifest["rows"] == {"scored": 0, "rejected": 2}
    assert run_aggregate(str(run), progress=lambda _: None).num_rows == 0

    a, b = _clean_bits(40, 7)
    labels = [
        None if i % 4 == 0 else int(x != y) for i, (x, y) in enumerate(zip(a, b, strict=True))
    ]
    pq.write_table(_shard(list(range(40)), list(a), [[x] for x in b], labels), data / "bad.parquet")
    run_score(_job(str(data), str(run)), progress=lambda _: None)
    table = pl.from_arrow(run_aggregate(str(run), progress=lambda _: None))
    by_label = table.filter(
        (pl.col("group_by") == "label")
        & (pl.col("statistic") == "intershap")
        & (pl.col("term") == "global")
    )
    assert sorted(by_label["group"]) == ["0", "1", "null"]
    assert by_label.filter(pl.col("group") == "null")["n"].item() == 10


READ_IN_A_FRESH_PROCESS = """
import sys
import ray.cloudpickle as cloudpickle
read_task, sink = cloudpickle.loads(open(sys.argv[1], "rb").read())
rows = sum(block.num_rows for block in read_task())
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("intermodal.measures"))
print(rows, heavy)
"""


def test_read_tasks_and_the_score_writer_import_no_measure_and_no_torch(tmp_path) -> None:
    """A read task's worker imports Ray Data and the input checks, not the measures (whose
    settings the job carries) nor torch: those cost seconds in every fresh worker."""
    bits0, bits1 = _clean_bits(40, seed=3)
    shard = _shard(list(range(40)), bits0, [[b] for b in bits1], [0, 1] * 20)
    pq.write_table(shard, tmp_path / "part-0.parquet")
    job = _job(str(tmp_path), str(tmp_path / "run"), measures=["intershap", "pid_cvx"])
    shards = inspect_shards(job)
    source = ShardSource(shards, job, duplicate_ids(job, shards), str(tmp_path / "rejects"))
    payload = tmp_path / "read_task.pkl"
    payload.write_bytes(cloudpickle.dumps((source.get_read_tasks(1)[0], ScoreSink("unused"))))
    done = subprocess.run(
        [sys.executable, "-c", READ_IN_A_FRESH_PROCESS, str(payload)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split("\n")[0] == "40 []"


def _scores(run: str) -> pl.DataFrame:
    return pl.read_parquet(f"{run}/scores").sort("sample_id")


def test_tasks_score_as_actors_do_and_never_with_an_earlier_runs_operator(tmp_path) -> None:
    """``score_on: tasks`` keeps each worker process's operator for the run's later shards:
    it must give the actors' scores, build far fewer operators than there are shards, and
    never score a run with the operator of an earlier one (here: other background rows in
    the same run directory, which a stale operator would still hold)."""
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(8):
        a, b = _clean_bits(60, seed=shard)
        ids = list(range(shard * 60, (shard + 1) * 60))
        pq.write_table(
            _shard(ids, list(a), [[x] for x in b], [0, 1] * 30), data / f"{shard}.parquet"
        )

    lines: list[str] = []

    def run(compute: dict, seed: int, output: str) -> pl.DataFrame:
        intershap = {"background_size": 3, "seed": seed}
        job = _job(str(data), output, intershap=intershap, compute=compute)
        manifest = run_score(job, progress=lines.append, restart=True)
        if job.compute.scores_on_tasks:  # every process built its operator once for 8 shards
            assert 1 <= manifest["actors"]["started"] <= 4
        return _scores(output)

    shared = str(tmp_path / "tasks")
    first = run({"actors": 2}, 0, shared)  # auto, no GPU: tasks, which a pool size does not size
    assert any("compute.actors = 2 sizes score actors" in line for line in lines)
    second = run({"score_on": "tasks"}, 1, shared)  # same directory, other background rows
    on_actors = run({"score_on": "actors"}, 1, str(tmp_path / "actors"))
    assert first.height == second.height == 480
    assert not first.equals(second)  # the background rows matter to these scores
    assert_frame_equal(second, on_actors, rel_tol=1e-6, abs_tol=1e-7)

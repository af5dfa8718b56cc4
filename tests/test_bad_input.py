"""Bad input through score on local Ray: every input row ends in exactly one of scores/ and
rejects/, with the reason of its defect; problems of the config or of whole files stop the
job before any work, naming the file and the column."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobs import QUICK_ENCODERS  # tests/jobs.py

from intermodal.measures import parse_config
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import ConfigError
from intermodal.schemas.validation import InputSchemaError

pytestmark = pytest.mark.usefixtures("ray_session")

DIMS = 3
VALUES = pa.list_(pa.float32())  # variable length, so a wrong length is a row defect
# defect → the reason written to rejects/
DEFECTS = {
    "nan": "1 NaN/inf values",
    "inf": "1 NaN/inf values",
    "minus_inf": "1 NaN/inf values",
    "short": f"expected {DIMS} values, got {DIMS - 1}",
    "null_value": "value is null",
    "label": "label 5 outside [0, 2)",
    "duplicate": "duplicate sample_id (every copy rejected)",
}


def _job(data, run, **extra) -> object:
    return parse_config(
        {
            "dataset": "bad-input",
            "input": str(data),
            "output": str(run),
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": "a", "shape": [DIMS]}, {"name": "b", "shape": [DIMS]}],
            "measures": ["pid_cvx"],
            "pid_cvx": {"n_clusters": 3, "encoders": QUICK_ENCODERS},
            "compute": {"batch_size": 32},
            **extra,
        }
    )


def _corrupt(rng: np.random.Generator, n_rows: int, first_id: int) -> tuple[dict, dict[int, str]]:
    """Columns of ``n_rows`` rows, about a third of them with one random defect, and the
    expected reason per defective id (duplicates: ids of an earlier row, reason on both)."""
    ids = list(range(first_id, first_id + n_rows))
    a = rng.standard_normal((n_rows, DIMS)).astype(np.float32).tolist()
    b = rng.standard_normal((n_rows, DIMS)).astype(np.float32).tolist()
    labels = rng.integers(0, 2, n_rows).tolist()
    expected: dict[int, str] = {}
    for row in np.flatnonzero(rng.random(n_rows) < 0.35):
        defect = str(rng.choice(list(DEFECTS)))
        if defect == "duplicate" and row == 0:
            continue
        if defect in {"nan", "inf", "minus_inf"}:
            a[row][1] = {"nan": np.nan, "inf": np.inf, "minus_inf": -np.inf}[defect]
        elif defect == "short":
            b[row] = b[row][:-1]
        elif defect == "null_value":
            b[row] = None
        elif defect == "label":
            labels[row] = 5
        else:
            ids[row] = ids[int(rng.integers(0, row))]
            expected[ids[row]] = DEFECTS["duplicate"]
            continue
        expected[ids[row]] = DEFECTS[defect]
    columns = {
        "sample_id": pa.array(ids, pa.int64()),
        "label": pa.array(labels, pa.int64()),
        "site": pa.array(rng.choice(["x", "y"], n_rows)),
        "a": pa.array(a, VALUES),
        "b": pa.array(b, VALUES),
    }
    return columns, expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_input_row_is_scored_or_rejected_exactly_once(tmp_path, seed) -> None:
    """Property over random defects, shard sizes and row groups (including an empty shard)."""
    rng = np.random.default_rng(seed)
    data = tmp_path / "data"
    data.mkdir()
    all_ids: list[int] = []
    expected: dict[int, str] = {}
    first_id = 0
    for shard, n_rows in enumerate([*rng.integers(40, 160, 3), 0]):
        columns, defects = _corrupt(rng, int(n_rows), first_id)
        table = pa.table(columns)
        pq.write_table(
            table, data / f"part-{shard}.parquet", row_group_size=int(rng.integers(16, 64))
        )
        all_ids += table.column("sample_id").to_pylist()
        expected |= defects
        first_id += int(n_rows)
    # an id duplicated across shards is rejected wherever it occurs
    duplicated = {i for i in all_ids if all_ids.count(i) > 1}

    manifest = run_score(_job(data, tmp_path / "run"), progress=lambda _: None)

    scores = pl.read_parquet(tmp_path / "run" / "scores")
    rejects = pl.read_parquet(tmp_path / "run" / "rejects")
    scored_ids = scores["sample_id"].to_list()
    rejected_ids = [int(i) for i in rejects["sample_id"].to_list()]
    assert sorted(scored_ids + rejected_ids) == sorted(all_ids)  # each row exactly once
    assert len(set(scored_ids)) == len(scored_ids)
    assert set(rejected_ids) == set(expected) | duplicated
    for sample_id, reason in zip(rejected_ids, rejects["reason"].to_list(), strict=True):
        assert expected.get(sample_id, DEFECTS["duplicate"]) in reason
    assert manifest["rows"] == {"scored": len(scored_ids), "rejected": len(rejected_ids)}


def test_config_naming_an_unknown_column_stops_before_any_work(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    columns, _ = _corrupt(np.random.default_rng(0), 0, 0)
    pq.write_table(pa.table(columns), data / "part-0.parquet")
    run = tmp_path / "run"
    with pytest.raises(InputSchemaError) as error:
        run_score(_job(data, run, group_columns=["centre"]), progress=lambda _: None)
    assert "part-0.parquet: column 'centre' (group_columns) is missing" in str(error.value)
    assert not run.exists()


def test_memory_uris_are_refused_by_the_config(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"input: .*memory:// lives inside one process"):
        _job("memory://data", tmp_path / "run")

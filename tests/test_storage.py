"""Storage through fsspec URIs: ``memory://`` for the helpers every layer uses (it lives in
one process, so jobs refuse it), ``file://`` through a whole score run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from jobs import QUICK_ENCODERS, xor_function_job  # tests/jobs.py

from intermodal import storage
from intermodal.measures import load_config, parse_config
from intermodal.models.artifacts import load_state, save_state
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import dump_config
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards


def test_memory_uris_round_trip_tables_json_arrays_and_states() -> None:
    root = "memory://storage-test"
    table = pa.table({"sample_id": [3, 1, 2], "x": [0.5, 1.5, 2.5]})
    storage.write_table(table, storage.join(root, "t", "part-1.parquet"))
    storage.write_table(table.slice(1), storage.join(root, "t", "part-0.parquet"))
    listed = storage.list_parquet(storage.join(root, "t"))  # fsspec spells memory:///...
    assert [uri.rsplit("/", 1)[1] for uri in listed] == ["part-0.parquet", "part-1.parquet"]
    assert all(uri.startswith("memory://") for uri in listed)
    assert storage.read_table(f"{root}/t/part-1.parquet").equals(table)
    assert storage.parquet_file(f"{root}/t/part-0.parquet").metadata.num_rows == 2

    storage.write_json({"a": [1, 2]}, f"{root}/m.json")
    assert storage.read_json(f"{root}/m.json") == {"a": [1, 2]}
    arrays = {"centres": np.arange(6.0).reshape(2, 3)}
    storage.write_arrays(arrays, f"{root}/c.npz")
    np.testing.assert_array_equal(
        storage.read_arrays(f"{root}/c.npz")["centres"], arrays["centres"]
    )
    state = {"layer": {"weight": torch.ones(2, 2)}}
    save_state(state, f"{root}/model.pt")
    torch.testing.assert_close(load_state(f"{root}/model.pt")["layer"]["weight"], torch.ones(2, 2))

    storage.remove(storage.join(root, "t"))
    with pytest.raises(FileNotFoundError):
        storage.list_parquet(storage.join(root, "t"))


def _job(data: str, run: str) -> dict:
    return xor_function_job(
        data, run, measures=["pid_cvx"], pid_cvx={"fit_rows": 500, "encoders": QUICK_ENCODERS}
    )


def test_a_config_is_read_from_a_memory_uri(tmp_path) -> None:
    config = parse_config(_job(str(tmp_path / "data"), str(tmp_path / "run")))
    with storage.filesystem("memory://configs")[0].open("/configs/job.yaml", "w") as handle:
        handle.write(dump_config(config))
    assert load_config("memory://configs/job.yaml") == config


@pytest.mark.usefixtures("ray_session")
def test_file_uris_through_a_score_run(tmp_path) -> None:
    write_table_shards(generate(HDXORSpec(n_samples=600, seed=2)), f"file://{tmp_path}/data", 2)
    config = parse_config(_job(f"file://{tmp_path}/data", f"file://{tmp_path}/run"))
    manifest = run_score(config, progress=lambda _: None)
    assert manifest["rows"] == {"scored": 600, "rejected": 0}
    assert sorted(pl.read_parquet(tmp_path / "run" / "scores")["sample_id"]) == list(range(600))

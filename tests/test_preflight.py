"""Mistakes a new user makes fail at once on the driver, before any Ray work, with a few lines
that name the key or file; a run that scores nothing exits non-zero."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from jobs import xor_function_job  # tests/jobs.py

from intermodal.cli import main
from intermodal.cluster.resources import (
    ClusterReach,
    NodeType,
    Pool,
    actor_pool,
    check_compute,
    launcher_node_types,
)
from intermodal.models.fcnn import build_fcnn
from intermodal.pipelines import score
from intermodal.schemas.config import ComputeConfig
from intermodal.schemas.tables import REJECT_SCHEMA

ROWS = 64
FCNN_KWARGS = {"modalities": ["m0", "m1"], "dims": [1, 1], "num_classes": 2}


def _write_input(
    directory: Path, ids: list | None = None, name: str = "part.parquet", size: int | None = 1
) -> Path:
    """HD-XOR-like bits; ``size`` None writes variable-length lists (checked row by row)."""
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (ROWS, 2)).astype(np.float32)
    pq.write_table(
        pa.table(
            {
                "sample_id": pa.array(ids if ids is not None else list(range(ROWS))),
                "label": pa.array((bits[:, 0] != bits[:, 1]).astype(np.int64)),
                "m0_bits": pa.array([[b] for b in bits[:, 0]], pa.list_(pa.float32(), size or -1)),
                "m1_bits": pa.array([[b] for b in bits[:, 1]], pa.list_(pa.float32(), size or -1)),
            }
        ),
        directory / name,
    )
    return directory


def _fcnn_job(tmp_path: Path, **model: object) -> dict:
    settings = {"name": "fcnn", "factory": "intermodal.models.fcnn:build_fcnn"}
    settings["kwargs"] = dict(FCNN_KWARGS)
    settings.update(model)
    return xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run", model=settings)


def _run(tmp_path: Path, job: dict, capsys) -> tuple[int, list[str]]:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    code = main(["score", str(path), "--no-aggregate"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, errors


def _fails_early(tmp_path: Path, job: dict, capsys, *needles: str) -> None:
    code, errors = _run(tmp_path, job, capsys)
    assert code != 0
    assert 1 <= len(errors) <= 10, errors
    for needle in needles:
        assert needle in "\n".join(errors), errors
    assert not (tmp_path / "run" / "scores").exists()  # failed before any scoring


def test_a_model_module_that_does_not_import(tmp_path, capsys) -> None:
    job = _fcnn_job(tmp_path, factory="no_such_package.models:build")
    _fails_early(tmp_path, job, capsys, "model.factory", "no_such_package", "PYTHONPATH")


@pytest.mark.usefixtures("ray_session")
def test_a_model_module_importable_only_from_the_current_directory(
    tmp_path, capsys, monkeypatch
) -> None:
    """It imports on the driver (a relative PYTHONPATH entry) but not on the workers, which
    run elsewhere: one worker is asked before any work, instead of every actor failing."""
    modules = tmp_path / "models"
    modules.mkdir()
    (modules / "cwd_only_model.py").write_text(
        "from intermodal.synthetic.hdxor import xor_function_model as build\n"
    )
    monkeypatch.chdir(modules)
    monkeypatch.syspath_prepend(".")
    job = xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run")
    job["model"]["factory"] = "cwd_only_model:build"
    _fails_early(tmp_path, job, capsys, "imports here but not on Ray's workers", "PYTHONPATH")


def test_missing_weights(tmp_path, capsys) -> None:
    job = _fcnn_job(tmp_path, weights=str(tmp_path / "missing.pt"))
    _fails_early(tmp_path, job, capsys, "model.weights", "missing.pt", "no such file")


def test_a_pickled_whole_module_as_weights(tmp_path, capsys) -> None:
    weights = tmp_path / "whole.pt"
    torch.save(build_fcnn(**FCNN_KWARGS), weights)  # the module, not its state_dict
    job = _fcnn_job(tmp_path, weights=str(weights))
    _fails_early(tmp_path, job, capsys, "model.weights", "not a state_dict")


def test_wrong_kwargs(tmp_path, capsys) -> None:
    job = _fcnn_job(tmp_path, kwargs={**FCNN_KWARGS, "width": 3})
    _fails_early(tmp_path, job, capsys, "model.kwargs", "width")


def test_a_state_dict_of_another_shape(tmp_path, capsys) -> None:
    weights = tmp_path / "other.pt"
    other = build_fcnn(["m0", "m1"], [4, 4], num_classes=2)
    torch.save(other.state_dict(), weights)
    job = _fcnn_job(tmp_path, weights=str(weights))
    _fails_early(tmp_path, job, capsys, "model.weights", "do not fit", "size mismatch")


def test_num_classes_wider_than_the_models_output(tmp_path, capsys) -> None:
    job = {**_fcnn_job(tmp_path), "num_classes": 3}
    _fails_early(tmp_path, job, capsys, "num_classes is 3", "(4, 2)")


def test_a_setting_wider_than_a_modality(tmp_path, capsys) -> None:
    job = {**_fcnn_job(tmp_path), "measures": ["pid_cvx"], "pid_cvx": {"pca_components": 8}}
    _fails_early(tmp_path, job, capsys, "pid_cvx.pca_components = 8")


def test_shards_with_int_and_string_ids(tmp_path, capsys) -> None:
    data = _write_input(tmp_path / "data")
    _write_input(data, ids=[f"s{i}" for i in range(ROWS)], name="text_ids.parquet")
    job = xor_function_job(data, tmp_path / "run")
    _fails_early(tmp_path, job, capsys, "'sample_id' has different types", "text_ids.parquet")


@pytest.mark.usefixtures("ray_session")
def test_a_run_that_rejects_every_row_exits_non_zero(tmp_path, capsys) -> None:
    """A declared shape that no row matches used to reject every row and exit 0."""
    job = xor_function_job(_write_input(tmp_path / "data", size=None), tmp_path / "run")
    job["modalities"][0]["shape"] = [2]  # every row holds one value
    code, errors = _run(tmp_path, job, capsys)
    assert code == 1
    # the last line: Ray Data's own log lines may come before it in this shared Ray session
    assert errors[-1] == (
        f"intermodal score: error: every one of the {ROWS} input rows was rejected (see rejects/)"
    )
    # scores/ exists too, as an empty table with its columns
    scores = pl.read_parquet(tmp_path / "run" / "scores")
    assert scores.height == 0 and scores.columns[:3] == ["sample_id", "label", "pred"]
    assert pl.read_parquet(tmp_path / "run" / "rejects").height == ROWS


@pytest.mark.usefixtures("ray_session")
def test_a_run_without_rejects_still_has_a_rejects_table(tmp_path, capsys) -> None:
    job = xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run")
    code, _ = _run(tmp_path, job, capsys)
    assert code == 0
    rejects = pl.read_parquet(tmp_path / "run" / "rejects")
    assert rejects.height == 0 and rejects.columns == REJECT_SCHEMA.names
    assert pl.read_parquet(tmp_path / "run" / "scores").height == ROWS


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize(
    ("compute", "needle"),
    [
        ({"gpus_per_actor": 1}, "compute.gpus_per_actor = 1: this cluster has none"),
        ({"cpus_per_actor": 4}, "compute.cpus_per_actor = 4: the largest node has 2 CPUs"),
        (
            {"actors": 2, "cpus_per_actor": 1, "score_on": "actors"},
            "would leave fewer than 1 for reading and writing",
        ),
        ({"fit": {"gpus": 1}}, "compute.fit.gpus = 1: this cluster has none; set it to 0 to fit"),
        ({"fit": {"cpus": 3}}, "compute.fit.cpus = 3: the largest node has 2 CPUs"),
    ],
)
def test_resources_the_cluster_cannot_give_are_refused_at_once(
    tmp_path, capsys, compute, needle
) -> None:
    """These used to wait forever (GPUs on a CPU machine) or hang (actors holding every CPU)."""
    job = xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run", compute=compute)
    _fails_early(tmp_path, job, capsys, needle)


def _closed_port() -> int:
    """A port that was free a moment ago: nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("failure", ["nothing answers at the address", "local Ray cannot start"])
def test_a_ray_that_cannot_start_or_be_reached_is_one_line(tmp_path, failure: str) -> None:
    """``ray.init`` retried a dead address for minutes and printed 20-line tracebacks."""
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run"))
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if failure == "nothing answers at the address":
        env["RAY_ADDRESS"] = address = f"127.0.0.1:{_closed_port()}"
        needle = f"nothing answers at RAY_ADDRESS={address}"
    else:
        env["RAY_TMPDIR"] = "/dev/null/ray"  # Ray cannot make its session folder there
        needle = "could not start Ray ([Errno 20] Not a directory"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "intermodal.cli", "score", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and time.monotonic() - started < 60
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert 1 <= len(errors) <= 10, errors
    assert needle in done.stderr, done.stderr


@pytest.mark.usefixtures("ray_session")
def test_the_actor_pool_follows_the_cluster() -> None:
    """The session's Ray has 2 CPUs and no GPU; one CPU stays free for reads and writes."""
    assert actor_pool(ComputeConfig()) == Pool(1, 1, 1)  # auto, one CPU per actor
    assert actor_pool(ComputeConfig(cpus_per_actor=0.5)) == Pool(1, 2, 1)
    assert actor_pool(ComputeConfig(actors={"min": 1, "max": 3})) == Pool(1, 3, 1)
    assert actor_pool(ComputeConfig(actors=2)) == Pool(2, 2, 2)
    on_actors = {"score_on": "actors", "cpus_per_actor": 0.5}
    check_compute(ComputeConfig(actors={"min": 1, "max": 2}, **on_actors))
    with pytest.raises(ValueError, match=r"compute.actors \(at most\)"):
        check_compute(ComputeConfig(actors={"min": 1, "max": 3}, **on_actors))
    # score tasks read and write their own shards: as many as Ray runs at once starve nothing
    check_compute(ComputeConfig(actors={"min": 1, "max": 3}, cpus_per_actor=0.5))
    assert ComputeConfig().scores_on_tasks and not ComputeConfig(gpus_per_actor=1).scores_on_tasks


@pytest.mark.usefixtures("ray_session")
def test_an_elastic_pool_scores_every_row(tmp_path, capsys) -> None:
    compute = {
        "actors": {"min": 1, "max": 2},
        "cpus_per_actor": 0.5,
        "torch_threads": 1,
        "score_on": "actors",
    }
    job = xor_function_job(_write_input(tmp_path / "data"), tmp_path / "run", compute=compute)
    code, _ = _run(tmp_path, job, capsys)
    assert code == 0
    assert pl.read_parquet(tmp_path / "run" / "scores").height == ROWS


@pytest.mark.usefixtures("ray_session")
def test_ray_datas_no_available_cpus_warning_is_dropped(caplog) -> None:
    """Printed when a stage starts while the last one gives its CPUs back: it never hangs."""
    logger = logging.getLogger("ray.data.dataset")
    with caplog.at_level(logging.WARNING, logger="ray.data.dataset"):
        logger.warning(
            "Warning: The Ray cluster currently does not have any available CPUs. The Dataset "
            "job will hang unless more CPUs are freed up."
        )
        logger.warning("any other warning")
    assert [record.getMessage() for record in caplog.records] == ["any other warning"]


def test_without_a_terminal_scoring_logs_a_line_of_rows_scored(tmp_path, monkeypatch) -> None:
    """In a job's log Ray Data's progress blocks are silenced; `score` says instead, every
    LOG_SECONDS, how many rows the finished score files hold."""
    monkeypatch.setattr(score, "LOG_SECONDS", 0.05)
    monkeypatch.setattr(score.sys.stdout, "isatty", lambda: False)
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "shard-0-aaaa-300.parquet").write_bytes(b"")
    lines: list[str] = []
    with score.ScoringHeartbeat(str(scores), 1000, lines.append):
        (scores / "shard-1-bbbb-200.parquet").write_bytes(b"")
        (scores / "shard-2-cccc-999.parquet.partial-0123").write_bytes(b"")  # being written
        time.sleep(0.4)
    assert lines and lines[-1].startswith("[score] 500 of 1,000 rows scored (50%), ")
    assert lines[-1].endswith(" rows/s")


@pytest.mark.usefixtures("ray_session")
def test_an_elastic_pool_starts_at_its_initial_size() -> None:
    pool = actor_pool(ComputeConfig(actors={"min": 1, "max": 4, "initial": 3}))
    assert pool == Pool(1, 4, 3)
    with pytest.raises(ValueError, match=r"initial \(5\) must lie between min \(1\) and max"):
        ComputeConfig(actors={"min": 1, "max": 4, "initial": 5})


def test_node_types_come_from_the_cluster_launchers_config(tmp_path) -> None:
    """The autoscaler's own YAML: worker types with their resources and maximum counts, the
    head type left out (it is alive), and the cluster's max_workers capping every type."""
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "max_workers: 3\nhead_node_type: head\navailable_node_types:\n"
        "  head: {resources: {CPU: 2}, max_workers: 0}\n"
        "  gpu: {resources: {CPU: 4, GPU: 1}, min_workers: 0, max_workers: 8}\n"
    )
    (gpu,) = launcher_node_types(config)
    assert gpu == NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, 3.0)
    reach = ClusterReach([{"CPU": 2.0, "node:__internal_head__": 1.0}], [gpu], autoscaling=True)
    assert reach.total("CPU") == 14 and reach.total("GPU") == 3
    pool = actor_pool(ComputeConfig(gpus_per_actor=1), reach)
    # auto: as many as the GPUs the cluster can grow to, started at that size (a pool started
    # at one actor never asks the autoscaler for a second GPU node)
    assert pool == Pool(1, 3, 3)
    check_compute(ComputeConfig(gpus_per_actor=1, actors=3), reach)
    with pytest.raises(ValueError, match=r"compute.gpus_per_actor = 2: no node of this cluster"):
        check_compute(ComputeConfig(gpus_per_actor=2), reach)
    with pytest.raises(ValueError, match=r"compute.fit.cpus = 8: no node"):
        check_compute(ComputeConfig(fit={"cpus": 8}), reach)

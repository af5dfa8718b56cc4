"""intermodal submit against a real Ray cluster started here on loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from jobs import QUICK_ENCODERS, free_port, ray_head_command, xor_function_job  # tests/jobs.py

from intermodal.cli import main
from intermodal.measures import parse_config
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import dump_config
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


@pytest.fixture
def head(tmp_path):
    """A one-node Ray cluster (``ray start --head --block`` in its own process group, killed
    with the group afterwards: ``ray stop`` would stop every Ray on the machine, the test
    session's own included). Yields the dashboard address."""
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-head-", dir="/tmp")
    # the job's `python` is the first on the cluster's PATH: this environment's, which has
    # intermodal's dependencies (a real cluster's image provides them)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "", "PATH": path}
    options = ("--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}")
    command = ray_head_command(free_port(), temp_dir, *options)
    log = (tmp_path / "head.log").open("w")
    cluster = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or cluster.poll() is not None:
                    raise AssertionError((tmp_path / "head.log").read_text()) from None
                time.sleep(0.5)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died on its own
            os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _job(data: Path, run: Path) -> dict:
    return xor_function_job(
        data,
        run,
        measures=["intershap", "pid_cvx"],
        intershap={"background_size": 16},
        pid_cvx={"fit_rows": 1000, "encoders": QUICK_ENCODERS},
    )


def test_a_submitted_job_scores_as_a_local_run(head, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_table_shards(generate(HDXORSpec(n_samples=2_000, seed=5)), str(data), 3)
    local = tmp_path / "local"
    run_score(parse_config(_job(data, local)), progress=lambda _: None)

    config_file = tmp_path / "job.yaml"
    config_file.write_text(dump_config(parse_config(_job(data, tmp_path / "cluster"))))
    assert main(["submit", str(config_file), "--address", head]) == 0

    log = capsys.readouterr().out
    assert "SUCCEEDED" in log and "2000 rows scored, 0 rejected" in log
    cluster_scores = pl.read_parquet(tmp_path / "cluster" / "scores").sort("sample_id")
    assert cluster_scores.equals(pl.read_parquet(local / "scores").sort("sample_id"))
    assert (tmp_path / "cluster" / "global" / "intershap.parquet").exists()


MODEL_MODULE = """
from intermodal.synthetic.hdxor import xor_function_model


def make(**kwargs):
    return xor_function_model(**kwargs)
"""


def test_a_model_module_travels_in_the_working_dir(head, tmp_path, capsys) -> None:
    """The model's module exists only in ``--working-dir`` (not on this process's path nor the
    cluster's): the job's preflight imports it on the driver and on a worker, and scores."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer_model.py").write_text(MODEL_MODULE)
    data = tmp_path / "data"
    write_table_shards(generate(HDXORSpec(n_samples=400, seed=5)), str(data), 2)
    job = xor_function_job(
        data, tmp_path / "run", measures=["intershap"], intershap={"background_size": 8}
    )
    job["model"]["factory"] = "scorer_model:make"
    config_file = tmp_path / "job.yaml"
    config_file.write_text(dump_config(parse_config(job)))
    arguments = ["submit", str(config_file), "--address", head, "--no-aggregate"]
    assert main([*arguments, "--working-dir", str(code), "--env", "INTERMODAL_TEST=1"]) == 0
    assert "400 rows scored, 0 rejected" in capsys.readouterr().out
    assert pl.read_parquet(tmp_path / "run" / "scores").height == 400


def test_a_bad_config_is_refused_before_submission(tmp_path, capsys) -> None:
    config_file = tmp_path / "job.yaml"
    config_file.write_text("dataset: x\nnum_classes: 1\n")
    # no cluster at this address: the config must fail first
    assert main(["submit", str(config_file), "--address", "http://127.0.0.1:9"]) == 2
    assert "num_classes" in capsys.readouterr().err

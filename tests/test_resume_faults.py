"""Production runs: a killed driver resumes without losing or duplicating rows, and a killed
score actor or score task leaves the output exactly as an undisturbed run writes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from jobs import xor_function_job  # tests/jobs.py

from intermodal.measures import parse_config
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import JobConfig, dump_config
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

N_SHARDS = 8
ROWS = 8_000


def _job(data: Path, run: Path, score_on: str = "auto") -> JobConfig:
    """InterSHAP of the exact XOR function with many background rows: cheap to set up, slow
    enough per shard that a kill lands while shards are still being scored."""
    compute = {"batch_size": 64, "score_on": score_on}
    job = xor_function_job(data, run, intershap={"background_size": 1024}, compute=compute)
    return parse_config(job)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "data"
    write_table_shards(generate(HDXORSpec(n_samples=ROWS, seed=3)), str(folder), N_SHARDS)
    return folder


def _score_files(run: Path) -> list[Path]:
    folder = run / "scores"
    return sorted(folder.glob("*.parquet")) if folder.exists() else []


def _wait_for_scores(run: Path, timeout: float = 240) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = _score_files(run)
        if files:
            return files
        time.sleep(0.02)
    raise AssertionError(f"no score file under {run} after {timeout} s")


def _sorted_scores(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "scores").sort("sample_id")


def test_a_killed_driver_resumes_where_it_stopped(data, tmp_path) -> None:
    run = tmp_path / "run"
    config = _job(data, run)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(dump_config(config))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    driver = subprocess.Popen(
        [sys.executable, "-m", "intermodal.cli", "score", str(config_file), "--no-aggregate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the driver and the Ray it started
    )
    try:
        _wait_for_scores(run)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    kept = {path.name: path.stat().st_mtime_ns for path in _score_files(run)}
    assert 0 < len(kept) < N_SHARDS, "the kill must land while shards are still being scored"

    messages: list[str] = []
    manifest = run_score(config, progress=messages.append)

    resumed = [m for m in messages if m.startswith("[score] resuming")]
    assert resumed and f"of {N_SHARDS} shards done" in resumed[0]
    for name, mtime in kept.items():  # finished shards were neither rescored nor rewritten
        assert (run / "scores" / name).stat().st_mtime_ns == mtime
    ids = _sorted_scores(run)["sample_id"]
    assert ids.is_unique().all() and ids.to_list() == list(range(ROWS))
    assert manifest["status"] == "complete"
    assert manifest["rows"] == {"scored": ROWS, "rejected": 0}
    assert all(shard["finished"] for shard in manifest["input"]["shards"])


def _parent(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def _descends_from_this_process(pid: int) -> bool:
    """This test's Ray (started by this process) is the only one whose actors we may kill."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


# what the command line of a process that scores shows (Ray names its workers by their work)
SCORING = {"actors": b"ScoreOperator", "tasks": b"score_shard_blocks"}


def _scoring_pids(score_on: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            scoring = SCORING[score_on] in cmdline.read_bytes()
            if scoring and _descends_from_this_process(pid):
                pids.append(pid)
        except OSError:  # the process ended while we looked
            continue
    return pids


@pytest.fixture(scope="module")
def undisturbed(data, tmp_path_factory) -> pl.DataFrame:
    run = tmp_path_factory.mktemp("undisturbed")
    run_score(_job(data, run), progress=lambda _: None)
    return _sorted_scores(run)


@pytest.mark.parametrize("score_on", ["actors", "tasks"])
def test_a_killed_scoring_process_changes_nothing_in_the_output(
    data, undisturbed, tmp_path, score_on
) -> None:
    """A score actor killed (Ray restarts it) or a worker killed in a score task (Ray runs
    the task again, whose shard's files are written again under the same names)."""
    disturbed = tmp_path / "disturbed"
    killed: dict[str, object] = {}

    def kill_the_scorers_once_scores_appear() -> None:
        _wait_for_scores(disturbed)
        deadline = time.monotonic() + 60
        # a task worker shows its work only while it runs a task: wait for one that does
        while not (pids := _scoring_pids(score_on)) and time.monotonic() < deadline:
            time.sleep(0.005)
        files = _score_files(disturbed)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.update(pids=pids, files=len(files))

    killer = threading.Thread(target=kill_the_scorers_once_scores_appear)
    killer.start()
    manifest = run_score(_job(data, disturbed, score_on), progress=lambda _: None)
    killer.join()

    assert killed["pids"], "no scoring process was found to kill"
    assert killed["files"] < N_SHARDS, "the kill must land while shards are still being scored"
    assert set(_scoring_pids(score_on)).isdisjoint(killed["pids"])
    assert manifest["rows"] == {"scored": ROWS, "rejected": 0}
    assert _sorted_scores(disturbed).equals(undisturbed)

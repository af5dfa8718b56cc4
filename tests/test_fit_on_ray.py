"""Fits run as Ray work: each measure's fit a task and its parts (one model per modality, pair
or target) tasks of ``compute.fit``'s resources. The artifacts equal those of the same fit in
one process, part after part, the parts' progress reaches the driver's callback, and a part
two measures need (LSMI's and PID BATCH's classifiers) runs once; the fit task runs the first
part of each round, and those beyond what the CPUs run at once, itself."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from intermodal import storage
from intermodal.measures import Measure, job_measures, parse_config, register, unregister
from intermodal.measures.base import BatchOperator, FitSample, FitWorkers, InlineWorkers
from intermodal.models.artifacts import load_state
from intermodal.models.classifiers import CLASSIFIER_INDEX, load_classifier_states
from intermodal.pipelines.artifacts import RELAY_NAME
from intermodal.pipelines.fit import run_fit
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, labelled_sample
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

ROWS, DIMS = 600, 4
STATE_FILES = {"lsmi": ["entropy.pt"], "pid_batch": ["encoders.pt"]}


def quiet(_: str) -> None:
    """Progress not shown."""


def _job(data: str, out: str) -> JobConfig:
    small = {"epochs": 3, "hidden": 8}
    return parse_config(
        {
            "dataset": "fit_on_ray",
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [DIMS]} for m in ("x1", "x2")],
            "measures": ["lsmi", "pid_batch"],
            "lsmi": {"fit_rows": ROWS, "folds": 3, "classifier": small, "entropy": {"epochs": 2}},
            "pid_batch": {"fit_rows": ROWS, "folds": 3, "epochs": 2, "classifier": small},
        }
    )


def _fit_in_process(job: JobConfig) -> None:
    """Every measure's fit in this process, on the sample the Ray task draws."""
    shards = inspect_shards(job)
    duplicates = duplicate_ids(job, shards)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray parts (compute.fit.cpus = 1)
    try:
        for measure in job_measures(job):
            plan = measure.fit_sample(job)
            assert plan is not None
            sample = labelled_sample(
                job, shards, plan.rows, plan.seed, duplicates, plan.minimum, plan.purpose
            )
            measure.fit(job, sample, quiet, InlineWorkers(quiet))
    finally:
        torch.set_num_threads(threads)


def _index(root, run: str, measure: str) -> dict[str, str]:
    return storage.read_json(f"{root}/{run}/artifacts/{measure}/{CLASSIFIER_INDEX}")


def _classifiers(root, run: str, measure: str) -> dict[str, dict]:
    return load_classifier_states(
        f"{root}/{run}", f"{root}/{run}/artifacts/{measure}/{CLASSIFIER_INDEX}"
    )


@pytest.mark.usefixtures("ray_session")
def test_fits_on_ray_equal_fits_in_one_process(tmp_path) -> None:
    table = generate_circuit(CircuitSpec(op="xor", n_samples=ROWS, dims=DIMS, seed=0))
    data = str(tmp_path / "data")
    write_table_shards(table.select(["sample_id", "label", "x1", "x2"]), data, 2)
    runs = ("ray", "local")
    on_ray, in_process = (_job(data, str(tmp_path / run)) for run in runs)
    lines: list[str] = []
    run_fit(on_ray, progress=lines.append)
    _fit_in_process(in_process)

    # the parts' lines came back through the driver's callback; LSMI and PID BATCH ask for the
    # same three classifiers (same rows, folds and settings): each was trained once
    assert sum("out-of-fold accuracy" in line for line in lines) == 3
    assert "[fit] 3 of 6 shared parts were reused, not refit" in lines
    assert any(line.startswith("[knife]") for line in lines)
    assert any("encoders x1, x2" in line for line in lines)
    for measure, files in STATE_FILES.items():
        for ray_state, local_state in [
            *(
                (load_state(f"{tmp_path}/{run}/artifacts/{measure}/{name}") for run in runs)
                for name in files
            ),
            (_classifiers(tmp_path, run, measure) for run in runs),
        ]:
            assert ray_state.keys() == local_state.keys()
            for key, value in ray_state.items():
                for tensor_name, tensor in value.items():
                    torch.testing.assert_close(
                        tensor, local_state[key][tensor_name], atol=1e-5, rtol=1e-5
                    )
    # one artifact per shared classifier: both measures' indexes name the same three files
    lsmi, pid_batch = (_index(tmp_path, "ray", m) for m in ("lsmi", "pid_batch"))
    assert lsmi == {name.removeprefix("label/"): d for name, d in pid_batch.items()}
    assert len(list((tmp_path / "ray" / "artifacts" / "classifiers").iterdir())) == 3
    prior = np.load(f"{tmp_path}/ray/artifacts/lsmi/prior.npz")
    assert np.isfinite(prior["log_prior"]).all()


def _process_of_part(index: int) -> int:
    return os.getpid()


class PartProcesses(Measure):
    """Records the process of its fit task and of each part of two submit-and-gather rounds."""

    name = "part_processes"

    def fit_sample(self, job: JobConfig) -> FitSample:
        return FitSample(10, 0, 1, "part processes", labelled=False)

    def fit(self, job: JobConfig, sample: pa.Table, progress: Any, workers: FitWorkers) -> None:
        rounds = [
            workers.gather([workers.submit(_process_of_part, i) for i in range(size)])
            for size in (3, 2)
        ]
        record = {"fit": os.getpid(), "rounds": rounds}
        storage.write_json(record, storage.join(self.folder(job), "processes.json"))
        progress(f"[part_processes] {len(rounds)} rounds in process {os.getpid()}")

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return []

    def operator(self, job: JobConfig, shared: Any) -> BatchOperator:
        return lambda context: {}


@pytest.mark.usefixtures("ray_session")
def test_the_fit_task_runs_the_parts_the_cpus_have_no_room_for_itself(tmp_path) -> None:
    """Its CPU would otherwise idle while it waits, and every part in a task of its own made
    Ray start worker processes beyond the CPUs (seconds of imports each)."""
    table = generate_circuit(CircuitSpec(op="xor", n_samples=40, dims=DIMS, seed=0))
    data = str(tmp_path / "data")
    write_table_shards(table.select(["sample_id", "label", "x1", "x2"]), data, 1)
    register(PartProcesses())
    try:
        job = _job(data, str(tmp_path / "run")).model_copy(update={"measures": ["part_processes"]})
        run_fit(job, progress=quiet)
    finally:
        unregister(PartProcesses.name)
    record = storage.read_json(str(tmp_path / "run/artifacts/part_processes/processes.json"))
    # the session's Ray has 2 CPUs: two parts at once, the fit task's and one task; the rest
    # of a round in the fit task too, after its first
    in_fit = [[pid == record["fit"] for pid in parts] for parts in record["rounds"]]
    assert in_fit == [[True, False, True], [True, False]]


@pytest.mark.usefixtures("ray_session")
def test_the_fits_of_one_driver_share_one_progress_relay(tmp_path) -> None:
    """Each fit started a queue actor of its own before: a fresh process of seconds a fit."""
    table = generate_circuit(CircuitSpec(op="xor", n_samples=40, dims=DIMS, seed=0))
    data = str(tmp_path / "data")
    write_table_shards(table.select(["sample_id", "label", "x1", "x2"]), data, 1)
    register(PartProcesses())
    relays, lines = [], []
    try:
        for run in ("first", "second"):
            job = _job(data, str(tmp_path / run)).model_copy(
                update={"measures": ["part_processes"]}
            )
            run_fit(job, progress=lines.append)
            relays.append(ray.get_actor(RELAY_NAME)._actor_id)
    finally:
        unregister(PartProcesses.name)
    assert relays[0] == relays[1]
    # each run's fit line reached its own callback, once
    assert sum(line.startswith("[part_processes] 2 rounds") for line in lines) == 2

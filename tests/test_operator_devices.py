"""Every operator runs its model and its batch tensors on the actor's device.

CI has only the CPU, so the device is torch's ``meta`` stand-in (``tests/devices.py``): the
operators take the path a CUDA device takes, and every op that would mix devices or leave the
work on the CPU is caught."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from devices import STAND_IN, OnStandInDevice, assert_operators_keep_to_the_device
from scored_runs import all_measures_run  # tests/scored_runs.py
from torch import nn

from intermodal import storage
from intermodal.measures import parse_config
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards, sample_table


def test_intershap_pid_lsmi_and_pid_batch_operators_keep_to_the_device(tmp_path_factory) -> None:
    run = Path(all_measures_run(tmp_path_factory))
    job = parse_config(storage.read_json(str(run / "manifest.json"))["config"])
    shards = inspect_shards(job)
    batch = sample_table(job, shards, 300, 0, duplicate_ids(job, shards))
    background = str(run / "artifacts" / "background.npz")  # what the run's actors read
    assert_operators_keep_to_the_device(job, batch, background, numpy_only=("pid_cvx",))


@pytest.mark.parametrize("stray", ["weights on the CPU", "input on the CPU", "work on the CPU"])
def test_the_stand_in_device_catches_what_a_gpu_would_fail_on(stray: str) -> None:
    model = nn.Linear(4, 2)
    # torch itself refuses two of them on the stand-in, as CUDA would
    with OnStandInDevice() as mode, contextlib.suppress(RuntimeError):
        if stray == "weights on the CPU":
            model(torch.zeros(3, 4, device=STAND_IN))
        elif stray == "input on the CPU":
            model.to(STAND_IN)(torch.zeros(3, 4))
        else:
            model(torch.zeros(3, 4))
    assert mode.strays


def test_values_leave_the_stand_in_device_as_zeros_of_their_shape() -> None:
    model = nn.Linear(4, 2).to(STAND_IN)
    with OnStandInDevice() as mode:
        out = model(torch.ones(3, 4).to(STAND_IN)).double().cpu().numpy()
        peak = float(model.weight.abs().max())
    assert mode.strays == [] and mode.device_ops > 0
    assert out.shape == (3, 2) and out.dtype == "float64" and not out.any() and peak == 0.0

"""Jobs on Ray's fake autoscaling cluster (``tests/autoscaling_job.py``, in a process of its
own): a CPU head with no GPU and a GPU worker type scaling from 0 to 2 nodes. A job asking
for more GPUs than any node type has is refused at once in one line; a GPU pool of
``actors: auto`` waits for the nodes the autoscaler adds, grows past the nodes alive at its
start, lands on GPU nodes (the manifest says where) and scores or rejects every row once."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobs import script_result  # tests/jobs.py

SCRIPT = Path(__file__).with_name("autoscaling_job.py")


@pytest.mark.slow
def test_a_gpu_pool_waits_for_the_autoscaler_and_grows_with_it(tmp_path) -> None:
    result = script_result(SCRIPT, tmp_path, timeout=400)
    refusal = result["refusal"]
    errors = [line for line in refusal["lines"] if line.startswith("intermodal score: error:")]
    assert refusal["code"] == 2 and refusal["seconds"] < 10
    assert len(errors) == 1 and "compute.gpus_per_actor = 2: no node" in errors[0]
    assert all(line.startswith("[score]") for line in refusal["lines"] if line not in errors)
    assert result["gpus_at_start"] == 0
    assert result["waited"] and "waiting for nodes with a GPU" in result["waited"][0]
    actors = result["actors"]
    # the nodes alive at the start (2 CPUs, no GPU) would have held one actor at most; on a
    # busy machine Ray Data may retire an idle actor and start another: each start counts
    assert actors["started"] == actors["with_gpus"] >= 2 == result["gpu_nodes"]
    assert sorted(actors["nodes"]) == result["actor_nodes_with_gpu"]
    assert result["rows"] == result["distinct"] == result["input_rows"]

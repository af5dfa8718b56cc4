"""Jobs on a 3-node local Ray cluster (``tests/cluster_job.py``, in a process of its own): fit
parts and score actors land on more than one node, the scores equal a single-process fit and
score of the same job, a fit that loses a worker node while its parts run finishes with its
parts run again on other nodes and LSMI's scores exactly those of the undisturbed fit, and a
run that loses a worker node part-way still ends with every input row exactly once in
scores/ ∪ rejects/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("cluster_job.py")


@pytest.mark.slow
def test_a_cluster_run_spreads_equals_one_process_and_survives_lost_nodes(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fit_part_nodes"] > 1
    assert result["score_actor_nodes"] > 1
    assert result["rows"] == 2400 and result["ids"]
    assert result["lsmi_columns"] > 0
    assert result["largest_difference"] < 1e-4
    assert result["killed_while_fitting"] and result["finished_after_the_fit_kill"]
    assert result["error_after_the_fit_kill"] is None
    assert result["fit_nodes"] == 2  # the fit ran again on another node
    assert result["parts_on_the_killed_node"] > 0
    assert result["parts_finished_elsewhere"] == result["parts_on_the_killed_node"]
    assert result["refit_difference"] == 0.0
    assert result["killed_while_scoring"] and result["finished_after_the_kill"]
    assert result["error_after_the_kill"] is None
    assert result["rows_after_the_kill"] == result["distinct_ids_after_the_kill"] == 2400

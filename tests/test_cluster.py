"""A job on a 3-node local Ray cluster (``tests/cluster_job.py``, in a process of its own):
fit parts and score actors land on more than one node, and the scores equal a single-process
fit and score of the same job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("cluster_job.py")


@pytest.mark.slow
def test_fits_and_scoring_spread_over_nodes_and_equal_one_process(tmp_path) -> None:
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

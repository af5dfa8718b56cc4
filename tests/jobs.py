"""Job configs shared by the pipeline tests: the exact XOR function on HD-XOR's bit columns
(``m<i>_bits``), cheap to build and deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def xor_function_job(input_uri: str | Path, output: str | Path, **settings: Any) -> dict:
    """A config mapping explaining the XOR function of two one-bit modalities; ``settings``
    replace or add top-level keys."""
    return {
        "dataset": "unit",
        "input": str(input_uri),
        "output": str(output),
        "num_classes": 2,
        "modalities": [
            {"name": "m0", "column": "m0_bits", "shape": [1]},
            {"name": "m1", "column": "m1_bits", "shape": [1]},
        ],
        "model": {
            "name": "xor_function",
            "factory": "intermodal.synthetic.hdxor:xor_function_model",
            "kwargs": {"setting": "synergy", "n_modalities": 2},
        },
        **settings,
    }


def script_result(script: Path, work: Path, timeout: int) -> dict[str, Any]:
    """Run a test script (a cluster of its own needs a process of its own) with ``work`` as
    its folder; the JSON of its last line of output."""
    done = subprocess.run(
        [sys.executable, str(script), str(work)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

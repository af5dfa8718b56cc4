"""Job configs shared by the pipeline tests: the exact XOR function on HD-XOR's bit columns
(``m<i>_bits``), cheap to build and deterministic."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# the joint PID encoders of tests whose subject is not the codebooks: they stop 100 updates
# after their best held-out loss instead of 1,600 (a second or two less per pid_cvx fit)
QUICK_ENCODERS = {"eval_every": 50, "patience": 2}


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# every port a head listens on besides its GCS port: the defaults (52365, 10001, ...) may be
# held by another Ray on this machine, such as the test session's own
HEAD_PORT_OPTIONS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
)


def ray_head_command(port: int, temp_dir: str, *options: str) -> list[str]:
    """``ray start --head --block`` on 127.0.0.1 with its GCS on ``port``, every other port a
    free one, 2 CPUs and ``temp_dir`` (short: Ray's socket paths must fit in 107 bytes); run it
    in its own process group and kill the group afterwards (``ray stop`` would stop every Ray
    on the machine)."""
    return [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        *(f"--{name}={free_port()}" for name in HEAD_PORT_OPTIONS),
        "--num-cpus=2",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *options,
    ]

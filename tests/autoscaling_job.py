"""Jobs on Ray's fake autoscaling cluster (the provider ``ray.cluster_utils.AutoscalingCluster``
uses: a CPU head with no GPU, a worker type with ``GPU: 1`` and 0 to 2 nodes), run by
``tests/test_autoscaling.py`` in a process of its own. Prints one JSON line.

``AutoscalingCluster`` itself is not used: its ``start`` runs ``ray stop --force`` (which
stops every Ray on the machine, the test session's own included), its head takes the default
ports, and the wheel lacks the ``example.yaml`` it builds its config from. This starts the same
head (``ray start --head --autoscaling-config``, ``RAY_FAKE_CLUSTER=1``) on free ports in a
process group of its own, killed afterwards with every node the autoscaler added.

    python tests/autoscaling_job.py WORK_DIR
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from jobs import free_port, ray_head_command  # tests/jobs.py (this script runs from tests/)

from intermodal import storage
from intermodal.cli import main as cli
from intermodal.measures import parse_config, register
from intermodal.measures.base import BatchOperator, Measure
from intermodal.pipelines.score import run_score
from intermodal.schemas.config import JobConfig, dump_config
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

ROWS, DIMS = 600, 4
BATCH_SECONDS = 0.3  # a score batch takes a while, so the pool has reason to grow
GPU_TYPE = {
    "resources": {"CPU": 1, "GPU": 1},
    "node_config": {},
    "min_workers": 0,
    "max_workers": 2,
}


def autoscaler_config(gcs_port: int) -> dict[str, Any]:
    """The fake provider's cluster config (the keys of Ray's fake_multi_node example.yaml)."""
    return {
        "cluster_name": "fake_multinode",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",  # the provider's nodes join this head
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": 2, "GPU": 0},
                "node_config": {},
                "max_workers": 0,
            },
            "gpu": GPU_TYPE,
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "docker": {},
        **{
            key: []
            for key in (
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
            )
        },
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


@contextlib.contextmanager
def autoscaling_head(work: Path):
    """The fake autoscaling cluster's head; yields its GCS address and config file."""
    port = free_port()
    config = work / "autoscaler.yaml"
    config.write_text(json.dumps(autoscaler_config(port)))
    temp_dir = tempfile.mkdtemp(prefix="ray-as-", dir="/tmp")  # short: socket paths
    command = ray_head_command(
        port,
        temp_dir,
        "--num-gpus=0",
        f"--autoscaling-config={config}",
        "--include-dashboard=false",
    )
    env = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": "",
    }
    log = (work / "head.log").open("w")
    head = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield f"127.0.0.1:{port}", config
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the monitor's nodes are in its group
        head.wait()
        log.close()


class Slow(Measure):
    """A score column per row after a pause per batch, so the pool has reason to grow."""

    name = "slow"

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [pa.field("slow_rows", pa.int64())]

    def operator(self, job: JobConfig, shared: Any) -> BatchOperator:
        def score(context: Any) -> dict[str, Any]:
            time.sleep(BATCH_SECONDS)
            return {"slow_rows": pa.array([context.batch.num_rows] * context.batch.num_rows)}

        return score


def job(data: str, out: str, autoscaler: Path, **compute: Any) -> JobConfig:
    return parse_config(
        {
            "dataset": "autoscaling",
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [DIMS]} for m in ("x1", "x2")],
            "measures": ["slow"],
            "compute": {
                "batch_size": 25,
                "cpus_per_actor": 1,
                "autoscaler_config": str(autoscaler),
                "wait_for_nodes_seconds": 120,
                **compute,
            },
        }
    )


def every_row_once(out: str) -> dict[str, int]:
    ids = np.concatenate(
        [
            storage.read_table(str(Path(out) / folder), columns=["sample_id"])
            .column("sample_id")
            .cast(pa.string())
            .to_numpy(zero_copy_only=False)
            for folder in ("scores", "rejects")
        ]
    )
    return {"rows": len(ids), "distinct": len(np.unique(ids))}


def main(work: Path) -> None:
    register(Slow())
    table = generate_circuit(CircuitSpec(op="xor", n_samples=ROWS, dims=DIMS, seed=0))
    table = table.select(["sample_id", "label", "x1", "x2"])
    # a few rows that fail validation, so rejects/ holds some
    x1 = table.column("x1").to_pylist()
    for row in range(0, ROWS, 100):
        x1[row] = [float("nan")] * DIMS
    table = table.set_column(
        table.schema.get_field_index("x1"), "x1", pa.array(x1, table.schema.field("x1").type)
    )
    data = str(work / "data")
    write_table_shards(table, data, 6)
    lines: list[str] = []
    with autoscaling_head(work) as (address, autoscaler):
        ray.init(address=address, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        gpus_at_start = sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"])
        started = time.monotonic()
        refused = io.StringIO()
        config_file = work / "impossible.yaml"
        config_file.write_text(
            dump_config(job(data, str(work / "impossible"), autoscaler, gpus_per_actor=2))
        )
        with contextlib.redirect_stderr(refused):
            code = cli(["score", str(config_file)])
        refusal = {
            "code": code,
            "lines": refused.getvalue().strip().splitlines(),
            "seconds": time.monotonic() - started,
        }
        out = str(work / "gpu")
        manifest = run_score(
            job(data, out, autoscaler, gpus_per_actor=1, actors="auto"), progress=lines.append
        )
        gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
        result = {
            "gpus_at_start": gpus_at_start,
            "refusal": refusal,
            "actors": manifest["actors"],
            "actor_nodes_with_gpu": sorted(set(manifest["actors"]["nodes"]) & gpu_nodes),
            "gpu_nodes": len(gpu_nodes),
            "waited": [line for line in lines if "waiting for" in line][:2],
            "input_rows": ROWS,
            **every_row_once(out),
        }
        ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

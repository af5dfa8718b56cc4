"""``intermodal submit``: run ``intermodal score`` on a Ray cluster through Ray Job Submission.

The job's runtime environment carries this package (``py_modules``: the installed
``intermodal`` directory, so a src-layout checkout, an editable install and a wheel ship
alike) and a working directory holding the validated config as ``job.yaml``. The cluster's
Python must already have the dependencies (``pip install intermodal`` in the image); what is
shipped is this version of our code and the job's config.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ray.job_submission import JobSubmissionClient

import intermodal
from intermodal.schemas.config import JobConfig, dump_config

JOB_CONFIG = "job.yaml"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_NOT_READY = "No available agent to submit job"


def _absolute(uri: str) -> str:
    """Local relative paths resolved here: on the cluster the job runs in a temporary folder."""
    return uri if "://" in uri or Path(uri).is_absolute() else str(Path(uri).resolve())


def cluster_config(config: JobConfig) -> JobConfig:
    """``config`` with its local relative paths made absolute."""
    return config.model_copy(
        update={"input": _absolute(config.input), "output": _absolute(config.output)}
    )


def runtime_env(working_dir: str) -> dict:
    return {
        "working_dir": working_dir,
        "py_modules": [str(Path(intermodal.__file__).parent)],
    }


def _submit_when_ready(
    client: JobSubmissionClient,
    entrypoint: str,
    environment: dict,
    echo: Callable[[str], None],
    patience_seconds: float = 60,
) -> str:
    """Submit, waiting while a freshly started cluster's job agent is not up yet."""
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=environment)
        except RuntimeError as error:
            if AGENT_NOT_READY not in str(error) or time.monotonic() > deadline:
                raise
            echo("[submit] the cluster's job agent is not up yet; retrying")
            time.sleep(2)


def submit(
    config: JobConfig,
    address: str,
    *,
    wait: bool = True,
    aggregate: bool = True,
    echo: Callable[[str], None] = print,
    poll_seconds: float = 1.0,
) -> tuple[str, str]:
    """Submit ``intermodal score`` of ``config`` to the cluster at ``address`` (the dashboard's
    HTTP address, e.g. ``http://127.0.0.1:8265``); returns ``(job id, status)``. With ``wait``
    the job's log is echoed as it grows until the job ends."""
    client = JobSubmissionClient(address)
    entrypoint = f"python -m intermodal.cli score {JOB_CONFIG}"
    if not aggregate:
        entrypoint += " --no-aggregate"
    with tempfile.TemporaryDirectory(prefix="intermodal-job-") as folder:
        (Path(folder) / JOB_CONFIG).write_text(dump_config(cluster_config(config)))
        job_id = _submit_when_ready(client, entrypoint, runtime_env(folder), echo)
    echo(f"[submit] job {job_id} submitted to {address}")
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    shown = 0
    while True:
        status = str(client.get_job_status(job_id))
        logs = client.get_job_logs(job_id)
        for line in logs[shown:].splitlines():
            echo(line)
        shown = len(logs)
        if status in TERMINAL:
            echo(f"[submit] job {job_id}: {status}")
            return job_id, status
        time.sleep(poll_seconds)

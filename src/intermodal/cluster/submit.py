"""``intermodal submit``: run ``intermodal score`` on a Ray cluster through Ray Job Submission.

The job's runtime environment carries this package (``py_modules``: the installed
``intermodal`` directory, so a src-layout checkout, an editable install and a wheel ship
alike) and a working directory holding the validated config as ``intermodal-job.yaml``. The
user's code and dependencies travel in the same environment (``JobEnvironment``): a working
directory (copied next to the config), more ``py_modules``, pip packages, environment
variables, or a runtime-env file in Ray's own keys. The cluster's Python must already have
intermodal's dependencies (``pip install intermodal`` in the image).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ray.job_submission import JobSubmissionClient

import intermodal
from intermodal.schemas.config import JobConfig, dump_config

JOB_CONFIG = "intermodal-job.yaml"  # a name the user's working directory is unlikely to hold
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


@dataclass(frozen=True)
class JobEnvironment:
    """What the user's job needs on the cluster beyond intermodal: ``runtime_env`` holds Ray's
    own keys (a runtime-env file's content); the others add to it."""

    runtime_env: Mapping = field(default_factory=dict)
    working_dir: str | None = None
    py_modules: Sequence[str] = ()
    pip: Sequence[str] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_file(
        cls,
        path: str | None,
        *,
        working_dir: str | None = None,
        py_modules: Sequence[str] = (),
        pip: Sequence[str] = (),
        env_vars: Mapping[str, str] | None = None,
    ) -> JobEnvironment:
        """The options over a runtime-env file (YAML or JSON; None: none)."""
        loaded = yaml.safe_load(Path(path).read_text()) if path else {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a runtime environment is a mapping of Ray's keys")
        return cls(loaded, working_dir, tuple(py_modules), tuple(pip), dict(env_vars or {}))

    def user_working_dir(self) -> Path | None:
        folder = self.working_dir or self.runtime_env.get("working_dir")
        if folder is None:
            return None
        if "://" in str(folder) or not Path(folder).is_dir():
            raise ValueError(
                f"working directory {folder}: a local directory is shipped with the job "
                "(the config travels in it); for code in an object store use --py-modules"
            )
        return Path(folder)


def runtime_env(job_folder: str, environment: JobEnvironment | None = None) -> dict:
    """Ray's runtime environment of the job: the user's, with the job's folder as the working
    directory and this package among the ``py_modules``."""
    environment = environment or JobEnvironment()
    env = dict(environment.runtime_env)
    env["working_dir"] = job_folder
    modules = [*env.get("py_modules", []), *environment.py_modules]
    env["py_modules"] = [_absolute(m) for m in modules] + [str(Path(intermodal.__file__).parent)]
    if environment.pip:
        pip = env.get("pip", [])
        packages = pip.get("packages", []) if isinstance(pip, dict) else list(pip)
        packages = [*packages, *environment.pip]
        env["pip"] = {**pip, "packages": packages} if isinstance(pip, dict) else packages
    if environment.env_vars:
        env["env_vars"] = {**env.get("env_vars", {}), **environment.env_vars}
    return env


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
    environment: JobEnvironment | None = None,
) -> tuple[str, str]:
    """Submit ``intermodal score`` of ``config`` to the cluster at ``address`` (the dashboard's
    HTTP address, e.g. ``http://127.0.0.1:8265``) in ``environment`` (the user's code and
    dependencies); returns ``(job id, status)``. With ``wait`` the job's log is echoed as it
    grows until the job ends."""
    environment = environment or JobEnvironment()
    user_folder = environment.user_working_dir()
    client = JobSubmissionClient(address)
    entrypoint = f"python -m intermodal.cli score {JOB_CONFIG}"
    if not aggregate:
        entrypoint += " --no-aggregate"
    with tempfile.TemporaryDirectory(prefix="intermodal-job-") as folder:
        if user_folder is not None:  # the job runs in it, the model's module found there
            shutil.copytree(
                user_folder,
                folder,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".git", "__pycache__"),
            )
        (Path(folder) / JOB_CONFIG).write_text(dump_config(cluster_config(config)))
        environment_of_job = runtime_env(folder, environment)
        job_id = _submit_when_ready(client, entrypoint, environment_of_job, echo)
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

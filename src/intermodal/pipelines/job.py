"""One job from config to ``global/``: what ``intermodal score`` does, for callers that build
their configs in code (the validation suites, the model library)."""

from __future__ import annotations

import pyarrow as pa

from intermodal import storage
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.score import run_score
from intermodal.progress import Progress
from intermodal.rundir import RunPaths
from intermodal.schemas.config import JobConfig, dump_config


def run_job(config: JobConfig, progress: Progress) -> pa.Table:
    """score + aggregate one run; keeps its config as ``config.yaml`` in the run directory."""
    fs, path = storage.filesystem(RunPaths(config.output).root)
    fs.makedirs(path, exist_ok=True)
    with fs.open(f"{path}/config.yaml", "w") as handle:
        handle.write(dump_config(config))
    run_score(config, progress)
    return run_aggregate(config.output, progress)

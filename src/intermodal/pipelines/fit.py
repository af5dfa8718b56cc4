"""``fit``: every measure's artifacts learnt from the sample it asks for → ``artifacts/``.

Samples are drawn without replacement over all shards (only the row groups holding them are
read), so they are the same whichever way the input is sharded. The fits run on the cluster
(``pipelines.artifacts``).
"""

from __future__ import annotations

from intermodal.cluster import ensure_ray
from intermodal.cluster.resources import check_compute
from intermodal.measures import job_measures
from intermodal.pipelines.artifacts import fit_measures
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards
from intermodal.progress import Progress, print_progress
from intermodal.schemas.config import JobConfig


def run_fit(config: JobConfig, progress: Progress = print_progress) -> None:
    """``intermodal fit``: learn what the job's measures need into its run directory, whether
    or not earlier fits match."""
    shards = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    ensure_ray()
    check_compute(config.compute)  # a setting the cluster cannot satisfy: refuse, not wait
    if not fit_measures(config, job_measures(config), shards, duplicates, progress):
        progress(f"[fit] nothing to fit: none of {', '.join(config.measures)} learns anything")

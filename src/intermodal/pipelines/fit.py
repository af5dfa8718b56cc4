"""``fit``: every measure's artifacts learnt from the sample it asks for → ``artifacts/``.

Samples are drawn without replacement over all shards (only the row groups holding them are
read), so they are the same whichever way the input is sharded.
"""

from __future__ import annotations

from intermodal.measures import job_measures
from intermodal.pipelines.artifacts import fit_measure
from intermodal.pipelines.inputs import duplicate_ids, inspect_shards
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig


def run_fit(config: JobConfig, progress: Progress = print) -> None:
    """``intermodal fit``: learn what the job's measures need into its run directory, whether
    or not earlier fits match."""
    shards = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    fits = [
        m.name for m in job_measures(config) if fit_measure(config, m, shards, duplicates, progress)
    ]
    if not fits:
        progress(f"[fit] nothing to fit: none of {', '.join(config.measures)} learns anything")

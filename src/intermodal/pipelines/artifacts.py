"""Fitting a measure's artifacts, and the marker that says what they were fitted on."""

from __future__ import annotations

import pyarrow as pa

from intermodal import __version__, storage
from intermodal.measures import Measure
from intermodal.pipelines.inputs import Shard, fingerprint, labelled_sample, sample_table
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig


class FitMarker:
    """``artifacts/<measure>/fitted_on.json``: what a fit depended on (its settings, the
    modalities, the input fingerprint). Removed when a fit starts and written when it ends, so
    a present, matching marker means complete artifacts fitted on this input and settings."""

    def __init__(self, job: JobConfig, shards: list[Shard], measure: Measure) -> None:
        self.uri = storage.join(measure.folder(job), "fitted_on.json")
        self.content = {
            "intermodal": __version__,  # another release may fit differently
            measure.name: measure.fit_key(job),
            "modalities": [m.model_dump(mode="json") for m in job.modalities],
            "input": fingerprint(shards),
        }

    def clear(self) -> None:
        storage.remove(self.uri)

    def write(self) -> None:
        storage.write_json(self.content, self.uri)

    def matches(self) -> bool:
        fs, path = storage.filesystem(self.uri)
        return fs.exists(path) and storage.read_json(self.uri) == self.content


def fitted(job: JobConfig, measure: Measure, shards: list[Shard]) -> bool:
    """Whether ``measure`` fits nothing or has artifacts fitted on this input and settings."""
    return measure.fit_sample(job) is None or FitMarker(job, shards, measure).matches()


def fit_measure(
    job: JobConfig,
    measure: Measure,
    shards: list[Shard],
    duplicates: pa.Array,
    progress: Progress = print,
) -> bool:
    """Fit and save ``measure``'s artifacts on the sample it asks for; False when it fits
    nothing."""
    plan = measure.fit_sample(job)
    if plan is None:
        return False
    marker = FitMarker(job, shards, measure)
    marker.clear()
    if plan.labelled:
        sample = labelled_sample(
            job, shards, plan.rows, plan.seed, duplicates, plan.minimum, plan.purpose
        )
    else:
        sample = sample_table(job, shards, plan.rows, plan.seed, duplicates)
    measure.fit(job, sample, progress)
    marker.write()
    return True

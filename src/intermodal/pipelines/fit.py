"""``fit``: per-modality PID codebooks from a uniform sample of valid rows → ``artifacts/``.

The sample is ``pid.fit_rows`` valid rows drawn without replacement over all shards (only the
row groups holding them are read), so it is the same whichever way the input is sharded.
"""

from __future__ import annotations

import pyarrow as pa

from intermodal import storage
from intermodal.estimators.discretize import Codebook, CodebookConfig, fit_codebook
from intermodal.pipelines.inputs import (
    Shard,
    duplicate_ids,
    fingerprint,
    inspect_shards,
    sample_rows,
)
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig


def codebook_uri(run_dir: str, modality: str) -> str:
    return storage.join(RunPaths(run_dir).artifacts, "codebooks", f"{modality}.npz")


class FitMarker:
    """``artifacts/<folder>/fitted_on.json``: what a fit depended on (its settings, the
    modalities, the input fingerprint). Removed when a fit starts and written when it ends, so
    a present, matching marker means complete artifacts fitted on this input and settings."""

    def __init__(self, config: JobConfig, shards: list[Shard], folder: str, settings: dict):
        self.uri = storage.join(RunPaths(config.output).artifacts, folder, "fitted_on.json")
        self.content = {
            folder: settings,
            "modalities": [m.model_dump(mode="json") for m in config.modalities],
            "input": fingerprint(shards),
        }

    def clear(self) -> None:
        storage.remove(self.uri)

    def write(self) -> None:
        storage.write_json(self.content, self.uri)

    def matches(self) -> bool:
        fs, path = storage.filesystem(self.uri)
        return fs.exists(path) and storage.read_json(self.uri) == self.content


def _codebook_marker(config: JobConfig, shards: list[Shard]) -> FitMarker:
    return FitMarker(config, shards, "codebooks", config.pid.model_dump(mode="json"))


def codebook_config(config: JobConfig) -> CodebookConfig:
    pid = config.pid
    return CodebookConfig(
        n_clusters=pid.n_clusters,
        standardize=pid.standardize,
        pca_components=pid.pca_components,
        seed=pid.seed,
    )


def fit_codebooks(
    config: JobConfig, shards: list[Shard], duplicates: pa.Array, progress: Progress = print
) -> dict[str, Codebook]:
    """Fit and save one codebook per modality; returns them by modality name."""
    marker = _codebook_marker(config, shards)
    marker.clear()
    sample = sample_rows(config, shards, config.pid.fit_rows, config.pid.seed, duplicates)
    settings = codebook_config(config)
    codebooks = {}
    for name, rows in sample.items():
        if settings.pca_components is not None and settings.pca_components > rows.shape[1]:
            raise ValueError(
                f"pid.pca_components = {settings.pca_components} exceeds modality '{name}' "
                f"size {rows.shape[1]}"
            )
        codebooks[name] = fit_codebook(rows, settings)
        storage.write_arrays(codebooks[name].to_arrays(), codebook_uri(config.output, name))
        progress(
            f"[fit] {name}: {codebooks[name].kind} codebook, {codebooks[name].n_codes} codes "
            f"from {len(rows)} rows"
        )
    marker.write()
    return codebooks


def load_codebooks(config: JobConfig, shards: list[Shard]) -> dict[str, Codebook] | None:
    """The run's saved codebooks, or None when there are none or they were fitted on other
    settings or other input."""
    if not _codebook_marker(config, shards).matches():
        return None
    return {
        name: Codebook.from_arrays(storage.read_arrays(codebook_uri(config.output, name)))
        for name in config.modality_names
    }


def run_fit(config: JobConfig, progress: Progress = print) -> dict[str, Codebook]:
    """``intermodal fit``: learn the codebooks of ``config``'s input into its run directory."""
    shards = inspect_shards(config)
    return fit_codebooks(config, shards, duplicate_ids(config, shards), progress)

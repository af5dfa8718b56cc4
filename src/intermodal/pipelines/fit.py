"""``fit``: per-modality PID codebooks from a uniform sample of valid rows → ``artifacts/``, and
the entry point that fits every measure's artifacts (``run_fit``).

The sample is ``pid.fit_rows`` valid rows drawn without replacement over all shards (only the
row groups holding them are read), so it is the same whichever way the input is sharded.
"""

from __future__ import annotations

import pyarrow as pa

from intermodal import storage
from intermodal.estimators.discretize import Codebook, CodebookConfig, fit_codebook
from intermodal.models.fusion_artifacts import FUSION_MEASURES
from intermodal.pipelines.artifacts import FitMarker
from intermodal.pipelines.fit_fusion import fit_fusion
from intermodal.pipelines.fit_lsmi import fit_lsmi
from intermodal.pipelines.fit_pid_batch import fit_pid_batch
from intermodal.pipelines.inputs import Shard, duplicate_ids, inspect_shards, sample_rows
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.config import JobConfig


def codebook_uri(run_dir: str, modality: str) -> str:
    return storage.join(RunPaths(run_dir).artifacts, "codebooks", f"{modality}.npz")


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


def run_fit(config: JobConfig, progress: Progress = print) -> None:
    """``intermodal fit``: learn what the job's measures need (PID codebooks, LSMI, PID BATCH,
    I2MoE and InTense models) into its run directory, whether or not earlier fits match."""
    shards = inspect_shards(config)
    duplicates = duplicate_ids(config, shards)
    if "pid_cvx" in config.measures:
        fit_codebooks(config, shards, duplicates, progress)
    if "lsmi" in config.measures:
        fit_lsmi(config, shards, duplicates, progress)
    if "pid_batch" in config.measures:
        fit_pid_batch(config, shards, duplicates, progress)
    for measure in FUSION_MEASURES:
        if measure in config.measures:
            fit_fusion(config, shards, duplicates, progress, measure=measure)
    if not {"pid_cvx", "lsmi", "pid_batch", *FUSION_MEASURES} & set(config.measures):
        progress(
            "[fit] nothing to fit: the job measures none of pid_cvx, lsmi, pid_batch, i2moe, "
            "intense"
        )

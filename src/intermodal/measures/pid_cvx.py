"""PID with the exact CVX estimator (paper 003 §3.1, App. C.4): each modality discretised by a
codebook fitted on a sample (k-means, histograms for scalars), per score row the cell of each
modality, and per pair of modalities and target (the labels; the model's predictions with a
model) one ``[k_a, k_b, C]`` count tensor over all rows and per group column, merged by
addition and solved once on the driver. Bits.

Artifacts (``artifacts/pid_cvx/``): ``<modality>.npz``, each modality's codebook arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from intermodal import storage
from intermodal.charts.html import Section, paragraph
from intermodal.charts.pid import pid_bars
from intermodal.charts.run import RunData
from intermodal.estimators.discretize import Codebook, CodebookConfig, fit_codebook
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.estimators.stats import JointCounts, Keyed, grouped_counts
from intermodal.measures.base import (
    BatchOperator,
    FitSample,
    FitWorkers,
    Measure,
    Progress,
    global_record,
)
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.tables import PID_TERMS, modality_pairs, modality_values


def code_column(modality: str) -> str:
    """Score column of a modality's PID codebook cell."""
    return f"pid_code_{modality}"


class PIDConfig(Strict):
    """Codebooks for the exact PID (paper 003 App. C.4): k-means per modality, histograms for
    scalar modalities, fitted on a uniform sample of ``fit_rows`` valid rows."""

    n_clusters: int = Field(default=20, ge=2, le=1000)  # k; also caps histogram bins
    standardize: bool = True  # per-feature mean/std before PCA and k-means
    pca_components: int | None = Field(default=None, ge=1)  # None: no PCA
    fit_rows: int = Field(default=100_000, ge=1)
    seed: int = 0


class PIDCVX(Measure):
    name = "pid_cvx"
    section = "pid_cvx"
    former_section = "pid"  # renamed: every other measure's section is its name
    settings = PIDConfig
    title = "PID codebooks"

    def check(self, job: JobConfig) -> None:
        if job.model is None and job.label_column is None:
            raise ValueError("measure 'pid_cvx' needs label_column or a model to predict with")
        components = self.options(job).pca_components
        too_narrow = [m.name for m in job.modalities if components and components > m.size]
        if too_narrow:
            raise ValueError(
                f"pid_cvx.pca_components = {components} exceeds the size of modalities {too_narrow}"
            )

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [pa.field(code_column(m), pa.int32(), nullable=False) for m in job.modality_names]

    # --- codebooks ---------------------------------------------------------------------------

    def fit_sample(self, job: JobConfig) -> FitSample:
        settings = self.options(job)
        return FitSample(settings.fit_rows, settings.seed, 1, "PID codebooks", labelled=False)

    def fit(
        self, job: JobConfig, sample: pa.Table, progress: Progress, workers: FitWorkers
    ) -> None:
        settings = self.options(job)
        codebook_settings = CodebookConfig(
            n_clusters=settings.n_clusters,
            standardize=settings.standardize,
            pca_components=settings.pca_components,
            seed=settings.seed,
        )
        handles = [
            workers.submit(
                fit_codebook,
                modality_values(sample.column(modality.name), modality.size),
                codebook_settings,
            )
            for modality in job.modalities
        ]
        for modality, codebook in zip(job.modalities, workers.gather(handles), strict=True):
            storage.write_arrays(codebook.to_arrays(), self._codebook_uri(job, modality.name))
            progress(
                f"[fit] {modality.name}: {codebook.kind} codebook, {codebook.n_codes} codes "
                f"from {sample.num_rows} rows"
            )

    def _codebook_uri(self, job: JobConfig, modality: str) -> str:
        return storage.join(self.folder(job), f"{modality}.npz")

    def codebooks(self, job: JobConfig) -> dict[str, Codebook]:
        """The run's fitted codebooks by modality."""
        return {
            name: Codebook.from_arrays(storage.read_arrays(self._codebook_uri(job, name)))
            for name in job.modality_names
        }

    def describe_artifacts(self, job: JobConfig) -> dict:
        return {n: {"kind": b.kind, "codes": b.n_codes} for n, b in self.codebooks(job).items()}

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        codebooks = self.codebooks(job)

        def score(context: BatchContext) -> dict[str, Any]:
            return {
                code_column(name): codebook.assign(context.values[name]).astype(np.int32)
                for name, codebook in codebooks.items()
            }

        return score

    # --- counts and their PID ----------------------------------------------------------------

    def partial(self, job: JobConfig, scores: pa.Table, groups: Mapping[str, np.ndarray]) -> Keyed:
        """Per target, pair and group (configured group columns only: the target is the label
        or prediction itself) the joint counts of the pair's cells and the target; rows whose
        target is null are left out of that target's counts."""
        codes = {name: book.n_codes for name, book in self.codebooks(job).items()}
        merged = Keyed()
        for target in job.targets:
            known = pc.is_valid(scores.column(target)).to_numpy(zero_copy_only=False)
            y = scores.column(target).fill_null(0).to_numpy(zero_copy_only=False)[known]
            kept = {name: groups[name][known] for name in job.group_columns}
            for a, b in modality_pairs(job.modality_names):
                counts = grouped_counts(
                    scores.column(code_column(a)).to_numpy()[known],
                    scores.column(code_column(b)).to_numpy()[known],
                    y,
                    (codes[a], codes[b], job.num_classes),
                    kept,
                )
                merged = merged.merge(
                    Keyed({(target, (a, b), group): c for group, c in counts.items()})
                )
        return merged

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """One row per target (``label``, ``pred``), pair, group and term R, U1, U2, S and I:
        statistic ``pid`` (bits; ``n`` rows counted)."""
        records = []
        items: dict[Any, JointCounts] = partial.items if partial is not None else {}
        for (target, pair, group), counts in sorted(items.items()):
            if counts.total == 0:
                continue
            result = pid_from_joint(counts.joint(), base=2)
            values = dict(zip(PID_TERMS, result.terms, strict=True))
            values["I"] = result.mutual_information
            records += [
                global_record(
                    self.name,
                    "pid",
                    value,
                    counts.total,
                    None,
                    group,
                    term=term,
                    modalities=pair,
                    target=target,
                )
                for term, value in values.items()
            ]
        return records

    def report(self, run: RunData) -> Section | None:
        if run.rows(self.name, None).is_empty():
            return None
        text = (
            "Exact PID (paper 003, CVX) of each modality pair with the labels and with the "
            "model's predictions (data vs model), for the whole dataset and per group column."
        )
        return Section("PID (CVX)", paragraph(text) + "".join(pid_bars(run, self.name, "bits")))

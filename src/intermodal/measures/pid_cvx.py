"""PID with the exact CVX estimator (paper 003 §3.1, App. C.4): each modality discretised by a
codebook fitted on a sample (k-means, histograms for scalars), per score row the cell of each
modality, and per pair of modalities and target (the labels; the model's predictions with a
model) one ``[k_a, k_b, C]`` count tensor over all rows and per group column, merged by
addition and solved once on the driver. Bits.

Where k-means runs (``space``): ``joint`` (default) clusters each modality's bottleneck of
per-modality encoders trained together to predict the targets from every modality
(``models.pid_codes``), so the cells keep what the label depends on even when it is a few
directions of a high-dimensional modality, or synergistic (each modality alone says nothing);
``features`` clusters the standardised (optionally PCA-reduced) features, as the paper does.
Either way a joint classifier of each pair estimates ``I(x_a, x_b; y)`` on held-out rows of the
sample, reported next to ``I(code_a, code_b; y)`` of the counts: what discretising lost.

Artifacts (``artifacts/pid_cvx/``): ``<modality>.npz``, each modality's codebook arrays;
``information.json``, the classifiers' held-out information per target and pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from intermodal import storage
from intermodal.charts.html import Section, html_table, paragraph
from intermodal.charts.pid import agreement_table, pid_bars
from intermodal.charts.run import RunData
from intermodal.estimators.discretize import Codebook, CodebookConfig, fit_codebook
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.estimators.stats import JointCounts, Keyed, grouped_counts
from intermodal.measures.agreement import AGREEMENT, agreement_records
from intermodal.measures.base import (
    BatchOperator,
    FitSample,
    FitWorkers,
    Measure,
    Progress,
    global_record,
    require_float_features,
    training_settings,
)
from intermodal.models.pid_codes import (
    EncoderTraining,
    Information,
    feature_information,
    fit_joint_codebooks,
)
from intermodal.operators.context import (
    BatchContext,
    SharedModel,
    predicted_rows,
)
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.tables import LABEL, PID_TERMS, modality_pairs, modality_values

CODES_INFORMATION = "codes_information"  # statistic: I(code_a, code_b; y) of the counts, bits
FEATURE_INFORMATION = "feature_information"  # statistic: a classifier's I(x_a, x_b; y), bits
INFORMATION_FILE = "information.json"


def code_column(modality: str) -> str:
    """Score column of a modality's PID codebook cell."""
    return f"pid_code_{modality}"


class PIDEncoderConfig(Strict):
    """The joint classifier (``models.pid_codes``): per-modality encoders of ``width`` values
    (linear, or with ``encoder_hidden`` ReLU units), a fusion head of two ``hidden`` layers and
    one such head per modality (weighted ``unimodal_weight`` in the loss), trained by Adam with
    early stopping on held-out rows; its bottleneck is where ``space: joint`` runs k-means, its
    fusion head's held-out loss the ``feature_information`` rows."""

    width: int = Field(default=2, ge=1, le=64)
    encoder_hidden: int = Field(default=0, ge=0)  # 0: linear encoders
    hidden: int = Field(default=64, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    max_steps: int = Field(default=20_000, ge=1)
    eval_every: int = Field(default=200, ge=1)  # steps between held-out evaluations
    patience: int = Field(default=8, ge=1)  # evaluations without improvement before stopping
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    # weight of each modality's own head (its bottleneck alone predicting the targets): keeps
    # what one modality knows inside its own cells instead of split across modalities
    unimodal_weight: float = Field(default=1.0, ge=0)


class PIDConfig(Strict):
    """Codebooks for the exact PID (paper 003 App. C.4): k-means per modality, histograms for
    scalar modalities, fitted on a uniform sample of ``fit_rows`` valid rows (labelled ones
    with ``space: joint`` and a label column). ``space: joint`` runs k-means on the bottleneck
    of jointly trained per-modality encoders, ``features`` on the standardised features."""

    space: Literal["joint", "features"] = "joint"
    n_clusters: int = Field(default=20, ge=2, le=1000)  # k; also caps histogram bins
    standardize: bool = True  # per-feature mean/std before PCA, the encoders and k-means
    pca_components: int | None = Field(default=None, ge=1)  # None: no PCA
    fit_rows: int = Field(default=100_000, ge=1)
    seed: int = 0
    encoders: PIDEncoderConfig = PIDEncoderConfig()


class PIDCVX(Measure):
    name = "pid_cvx"
    section = "pid_cvx"
    former_section = "pid"  # renamed: every other measure's section is its name
    settings = PIDConfig
    title = "PID codebooks"

    def check(self, job: JobConfig) -> None:
        if job.model is None and job.label_column is None:
            raise ValueError("measure 'pid_cvx' needs label_column or a model to predict with")
        require_float_features(job, self.name, "clusters the modality values")
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
        # the joint encoders learn from the labels: only labelled rows (all rows without labels)
        labelled = settings.space == "joint" and job.label_column is not None
        minimum = settings.n_clusters if labelled else 1
        return FitSample(settings.fit_rows, settings.seed, minimum, "PID codebooks", labelled)

    def fit_key(self, job: JobConfig) -> dict:
        settings = self.options(job).model_dump(mode="json")
        if job.model is not None:  # the classifiers also learn the model's predictions
            settings["model"] = job.model.model_dump(mode="json")
        return settings

    def _targets(
        self, job: JobConfig, sample: pa.Table, progress: Progress
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The sample rows whose every target is known ``[n]`` bool, and the targets
        (``label``, ``pred``) of those rows."""
        known = np.ones(sample.num_rows, dtype=bool)
        targets = {}
        if job.label_column is not None:
            column = sample.column(LABEL)
            known &= pc.is_valid(column).to_numpy(zero_copy_only=False)
            targets[LABEL] = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if job.model is not None:
            progress(f"[pid_cvx] model predictions of the {sample.num_rows} sampled rows")
            targets["pred"] = predicted_rows(job, sample)
        return known, {target: values[known] for target, values in targets.items()}

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
        training = training_settings(EncoderTraining, settings.encoders, seed=settings.seed)
        features = {m.name: modality_values(sample.column(m.name), m.size) for m in job.modalities}
        known, targets = self._targets(job, sample, progress)
        labelled = {name: values[known] for name, values in features.items()}
        if settings.space == "joint":
            progress(
                f"[pid_cvx] joint encoders (width {training.width}) of "
                f"{', '.join(job.modality_names)} on {int(known.sum())} rows"
            )
            handle = workers.submit(
                fit_joint_codebooks,
                labelled,
                targets,
                job.num_classes,
                codebook_settings,
                training,
                workers.progress,
            )
            ((codebooks, information),) = workers.gather([handle])
        else:
            handles = [
                workers.submit(fit_codebook, features[m.name], codebook_settings)
                for m in job.modalities
            ]
            # the classifier for feature_information only, on the labelled rows
            enough = int(known.sum()) >= 2
            if enough:
                handles.append(
                    workers.submit(
                        feature_information,
                        labelled,
                        targets,
                        job.num_classes,
                        settings.standardize,
                        training,
                        workers.progress,
                    )
                )
            *books, information = workers.gather(handles) + ([] if enough else [{}])
            codebooks = dict(zip(job.modality_names, books, strict=True))
        for modality in job.modalities:
            codebook = codebooks[modality.name]
            storage.write_arrays(codebook.to_arrays(), self._codebook_uri(job, modality.name))
            progress(
                f"[fit] {modality.name}: {codebook.kind} codebook ({settings.space} space), "
                f"{codebook.n_codes} codes from {sample.num_rows} rows"
            )
        storage.write_json(
            [
                {"target": target, "modalities": list(pair), **per_target[target].to_json()}
                for pair, per_target in information.items()
                for target in targets
            ],
            storage.join(self.folder(job), INFORMATION_FILE),
        )

    def information(self, job: JobConfig) -> dict[tuple[str, tuple[str, str]], Information]:
        """The classifiers' held-out ``I(x_a, x_b; y)`` by (target, pair); empty when the fit
        had too few rows with known targets."""
        uri = storage.join(self.folder(job), INFORMATION_FILE)
        if not storage.exists(uri):
            return {}
        return {
            (row["target"], tuple(row["modalities"])): Information.from_json(row)
            for row in storage.read_json(uri)
        }

    def _codebook_uri(self, job: JobConfig, modality: str) -> str:
        return storage.join(self.folder(job), f"{modality}.npz")

    def codebooks(self, job: JobConfig) -> dict[str, Codebook]:
        """The run's fitted codebooks by modality."""
        return {
            name: Codebook.from_arrays(storage.read_arrays(self._codebook_uri(job, name)))
            for name in job.modality_names
        }

    def describe_artifacts(self, job: JobConfig) -> dict:
        space = self.options(job).space
        return {
            n: {"kind": b.kind, "codes": b.n_codes, "space": space}
            for n, b in self.codebooks(job).items()
        }

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
        statistic ``pid`` (bits; ``n`` rows counted); per target, pair and group statistic
        ``codes_information`` (I of the counts, bits) and per target and pair, whole dataset
        only, ``feature_information`` (the classifier's held-out estimate on the features,
        bits; ``n`` held-out rows, ``stderr`` over them). With both targets, per pair and group
        the agreement ``alpha`` of the model's PID with the labels' (``agreement_records``)."""
        records = [
            global_record(
                self.name,
                FEATURE_INFORMATION,
                info.value,
                info.n,
                info.stderr,
                modalities=pair,
                target=target,
            )
            for (target, pair), info in sorted(self.information(job).items())
        ]
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
            records.append(
                global_record(
                    self.name,
                    CODES_INFORMATION,
                    result.mutual_information,
                    counts.total,
                    None,
                    group,
                    modalities=pair,
                    target=target,
                )
            )
        return records + agreement_records(self.name, records)

    def report(self, run: RunData) -> Section | None:
        if run.rows(self.name, None).is_empty():
            return None
        text = (
            "Exact PID (paper 003, CVX) of each modality pair with the labels and with the "
            "model's predictions (data vs model), for the whole dataset and per group column."
        )
        body = paragraph(text) + "".join(pid_bars(run, self.name, "bits"))
        body += agreement_table(run, self.name, AGREEMENT)
        return Section("PID (CVX)", body + self._information_table(run))

    def _information_table(self, run: RunData) -> str:
        """Codes against features: what discretising lost, per target and pair."""
        rows = run.rows(self.name, None).filter(
            pl.col("statistic").is_in([CODES_INFORMATION, FEATURE_INFORMATION])
            & (pl.col("group_by") == "")
        )
        if rows.is_empty():
            return ""
        table = (
            rows.with_columns(pl.col("modalities").list.join(", ").alias("pair"))
            .pivot(on="statistic", index=["target", "pair"], values="value")
            .sort("target", "pair")
        )
        text = (
            "Information about the target kept by the codes, I(code_a, code_b; y) of the counts, "
            "against a held-out classifier's estimate of I(x_a, x_b; y) on the features (bits). "
            "The codes' value carries a small upward plug-in bias, the classifier's falls short "
            "of the truth by what it did not learn."
        )
        return paragraph(text) + html_table(table)

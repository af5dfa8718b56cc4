"""LSMI (paper 001): per row and pair of modalities the pointwise redundancy, uniqueness and
synergy R, U1, U2, S (nats) from KNIFE entropies h(x_m) and the pointwise mutual information of
cross-fitted classifiers (or of the model's masked coalitions, ``classifiers: model``); for the
dataset, the mean terms, the pair's adjustment constant and the adjusted means.

Artifacts (``artifacts/lsmi/``): ``entropy-<m>.npz`` (preprocessing arrays) and ``entropy.pt``
(KNIFE state dicts by modality), ``classifiers.json`` (the digest of the ``FoldedMLP`` of each
key ``<m>`` or ``<a>__<b>``, stored once per run in ``artifacts/classifiers/<digest>.pt``, where
PID BATCH finds the ones it shares), ``prior.npz`` (``log p(y)``). Everything loads with weights
only (``models.artifacts.load_state``) or ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import Field

from intermodal import storage
from intermodal.charts.figures import histograms
from intermodal.charts.html import Section, paragraph
from intermodal.charts.pid import pid_bars
from intermodal.charts.run import RunData, pair_terms
from intermodal.estimators.knife import EntropyModel, KnifeConfig, fit_entropy_model
from intermodal.estimators.lsmi import SHIFT_SIGNS, adjusted, adjustment, pointwise
from intermodal.measures.base import (
    BatchOperator,
    CategoryRule,
    FitSample,
    FitWorkers,
    Measure,
    Needs,
    Progress,
    global_record,
)
from intermodal.models.artifacts import load_state, save_state
from intermodal.models.classifiers import (
    CLASSIFIER_INDEX,
    LOG_PROBABILITY_FLOOR,
    ClassifierConfig,
    ClassifierTraining,
    FoldedMLP,
    classifier_keys,
    fold_of,
    joined,
    key_name,
    load_classifier_states,
    log_proba_of_labels,
    save_classifiers,
    train_classifiers,
)
from intermodal.models.protocol import MultimodalModel, build_model
from intermodal.models.training import CPU, fit_device
from intermodal.operators.context import BatchContext, SharedModel, modality_arrays
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.tables import (
    LABEL,
    PID_TERMS,
    SAMPLE_ID,
    PIDTerms,
    lsmi_column,
    modality_pairs,
)

ENCODE_CHUNK_ROWS = 4096


class LSMIEntropyConfig(Strict):
    """KNIFE h(x_m) per modality (mixture of Gaussians on standardised features)."""

    n_components: int = Field(default=5, ge=1)
    diagonal: bool = False
    pca_components: int | None = Field(default=None, ge=1)  # None: no PCA before KNIFE
    epochs: int = Field(default=30, ge=1)
    # 1024 rows at lr 1e-2 reach a lower held-out h than 256 at 1e-3 in a third of the time
    # (docs/benchmarks.md, "Fit speed")
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=1e-2, gt=0)


class LSMIConfig(Strict):
    """Pointwise redundancy / uniqueness / synergy (paper 001), fitted on a sample."""

    # crossfit: MLPs p(y | x_m), p(y | x_a, x_b) trained here with K-fold cross-fitting;
    # model: the configured model's masked coalition outputs (a model trained with modality
    # masking), masked as intershap.masking says; nothing is trained
    classifiers: Literal["crossfit", "model"] = "crossfit"
    # inputs: the modality columns; encoder: the configured model's encode(name, x) outputs
    features: Literal["inputs", "encoder"] = "inputs"
    folds: int = Field(default=5, ge=2, le=50)  # cross-fitting: no row scored by its own fit
    fit_rows: int = Field(default=100_000, ge=10)
    seed: int = 0
    classifier: ClassifierConfig = ClassifierConfig()
    entropy: LSMIEntropyConfig = LSMIEntropyConfig()


@dataclass
class LSMIArtifacts:
    entropy: dict[str, EntropyModel]
    classifiers: dict[str, FoldedMLP]
    log_prior: np.ndarray  # [C]
    folds: int
    seed: int


def lsmi_features(
    job: JobConfig,
    values: dict[str, np.ndarray],
    model: MultimodalModel | None,
    device: torch.device = CPU,
) -> dict[str, np.ndarray]:
    """``{modality: [n, f] float32}``: the modality values, or with a ``model`` (on ``device``)
    its ``encode(name, x)`` flattened, in chunks of ``ENCODE_CHUNK_ROWS`` rows."""
    if model is None:
        return values
    features = {}
    n_rows = len(next(iter(values.values())))
    n_chunks = max(1, -(-n_rows // ENCODE_CHUNK_ROWS))
    with torch.no_grad():
        for m in job.modalities:
            chunks = [
                model.encode(
                    m.name, torch.from_numpy(np.array(chunk)).to(device).view(-1, *m.shape)
                )
                .reshape(len(chunk), -1)
                .float()
                .cpu()
                .numpy()
                for chunk in np.array_split(values[m.name], n_chunks)
            ]
            features[m.name] = np.concatenate(chunks)
    return features


def entropy_part(
    name: str, rows: np.ndarray, knife: KnifeConfig, progress: Progress
) -> EntropyModel:
    """The fit part of one modality's KNIFE."""
    progress(f"[lsmi] entropy model of {name} ({rows.shape[1]} features)")
    return fit_entropy_model(rows, knife, progress, device=fit_device())


def log_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``log p(y) [C]`` from class frequencies, with one pseudo-count per class so a class
    absent from the sample still has a finite prior."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def dominant_names(pair: tuple[str, str]) -> list[str]:
    """Names of the LSMI terms of a pair, in ``PID_TERMS`` order, for people to read."""
    a, b = pair
    return ["redundancy", f"uniqueness_{a}", f"uniqueness_{b}", "synergy"]


def adjusted_lsmi(batch: pa.Table, pair: tuple[str, str], constant: float) -> dict[str, np.ndarray]:
    """Per row, the pair's LSMI terms shifted by the dataset constant (NaN where null)."""
    return {
        term: batch.column(lsmi_column(term, *pair)).cast(pa.float64()).to_numpy() + sign * constant
        for term, sign in zip(PID_TERMS, SHIFT_SIGNS, strict=True)
    }


def score_pairs(scores_file: str) -> list[tuple[str, str]]:
    """The modality pairs with LSMI columns in a score file (at least one, else an error)."""
    names = storage.parquet_file(scores_file).schema_arrow.names
    prefix = lsmi_column(PID_TERMS[0], "", "")[:-2]  # lsmi_R_
    pairs = [tuple(n[len(prefix) :].split("__")) for n in names if n.startswith(prefix)]
    if not pairs:
        raise ValueError(f"{scores_file}: no LSMI columns (lsmi_R_<a>__<b>); was lsmi measured?")
    return pairs  # type: ignore[return-value]


def chosen_pair(
    pairs: list[tuple[str, str]], wanted: tuple[str, str] | None, source: str
) -> tuple[str, str]:
    """The pair to use: ``wanted`` if given (and present), else the only one."""
    if wanted is not None:
        if tuple(wanted) not in pairs:
            raise ValueError(f"--pair {','.join(wanted)}: {source} has LSMI pairs {pairs}")
        return tuple(wanted)  # type: ignore[return-value]
    if len(pairs) > 1:
        raise ValueError(f"{source} has LSMI pairs {pairs}: choose one with --pair a,b")
    return pairs[0]


def pair_constant(run_dir: str, pair: tuple[str, str]) -> float:
    """The pair's dataset adjustment constant from ``global/lsmi.parquet``."""
    uri = storage.join(run_dir, "global", f"{LSMI.name}.parquet")
    try:
        table = storage.read_table(uri, columns=["term", "group_by", "value"])
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{uri}: missing; run `intermodal aggregate {run_dir}`") from error
    term = f"adjustment[{pair[0]},{pair[1]}]"
    rows = table.filter(pc.equal(table.column("term"), term))
    if rows.num_rows != 1:
        raise ValueError(f"{uri}: no single row with term {term}")
    return float(rows.column("value")[0].as_py())


class LSMI(Measure):
    name = "lsmi"
    section = "lsmi"
    settings = LSMIConfig
    title = "LSMI"
    partition_names = ("dominant",)

    def check(self, job: JobConfig) -> None:
        if job.label_column is None:
            raise ValueError("measure 'lsmi' needs label_column (it decomposes i(x; label))")
        settings = self.options(job)
        components = settings.entropy.pca_components
        if settings.features == "inputs" and components is not None:
            too_narrow = [m.name for m in job.modalities if components > m.size]
            if too_narrow:
                raise ValueError(
                    f"lsmi.entropy.pca_components = {components} exceeds the size of "
                    f"modalities {too_narrow}"
                )
        if job.model is None:
            if settings.features == "encoder":
                raise ValueError("lsmi.features 'encoder' needs a model")
            if settings.classifiers == "model":
                raise ValueError("lsmi.classifiers 'model' needs a model")

    def needs(self, job: JobConfig) -> Needs:
        settings = self.options(job)
        from_model = settings.classifiers == "model"
        return Needs(model=from_model or settings.features == "encoder", coalitions=from_model)

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [
            pa.field(lsmi_column(term, a, b), pa.float64())  # null where the label is null
            for a, b in modality_pairs(job.modality_names)
            for term in PID_TERMS
        ]

    # --- fitting -----------------------------------------------------------------------------

    def _feature_model(self, job: JobConfig) -> MultimodalModel | None:
        if self.options(job).features != "encoder" or job.model is None:
            return None
        model = job.model
        return build_model(model.factory, model.kwargs, model.weights, job.modality_names)

    def fit_sample(self, job: JobConfig) -> FitSample:
        settings = self.options(job)
        return FitSample(settings.fit_rows, settings.seed, settings.folds * 2, "LSMI")

    def fit_key(self, job: JobConfig) -> dict:
        settings = self.options(job).model_dump(mode="json")
        if self.options(job).features == "encoder" and job.model is not None:
            settings["model"] = job.model.model_dump(mode="json")
        return settings

    def fit(
        self, job: JobConfig, sample: pa.Table, progress: Progress, workers: FitWorkers
    ) -> None:
        settings = self.options(job)
        progress(f"[lsmi] fitting on {sample.num_rows} sampled rows, {settings.folds} folds")
        features = lsmi_features(job, modality_arrays(job, sample), self._feature_model(job))
        labels = sample.column(LABEL).to_numpy()
        folds = fold_of(sample.column(SAMPLE_ID), settings.folds, settings.seed)
        knife = KnifeConfig(**settings.entropy.model_dump(), seed=settings.seed)
        # every entropy model and classifier is a part of its own: submit them all, then wait
        entropy = {
            name: workers.submit(entropy_part, name, rows, knife, workers.progress)
            for name, rows in features.items()
        }
        training = ClassifierTraining(**settings.classifier.model_dump(), seed=settings.seed)
        # with classifiers: model the coalitions of the configured model stand in
        crossfit = settings.classifiers == "crossfit"
        classifiers = train_classifiers(
            classifier_keys(job.modality_names) if crossfit else [],
            features,
            labels,
            folds,
            settings.folds,
            job.num_classes,
            training,
            workers,
        )
        entropy = dict(zip(entropy, workers.gather(list(entropy.values())), strict=True))
        prior = log_prior(labels, job.num_classes)
        save_classifiers(classifiers, job.output, self._classifier_index(job))
        artifacts = LSMIArtifacts(entropy, classifiers.models, prior, settings.folds, settings.seed)
        self._save(job, artifacts)

    def _classifier_index(self, job: JobConfig) -> str:
        return storage.join(self.folder(job), CLASSIFIER_INDEX)

    def _save(self, job: JobConfig, artifacts: LSMIArtifacts) -> None:
        folder = self.folder(job)
        states = {}
        for name, model in artifacts.entropy.items():
            arrays, states[name] = model.to_state()
            storage.write_arrays(arrays, storage.join(folder, f"entropy-{name}.npz"))
        save_state(states, storage.join(folder, "entropy.pt"))
        storage.write_arrays(
            {
                "log_prior": artifacts.log_prior,
                "folds": np.array(artifacts.folds),
                "seed": np.array(artifacts.seed),
            },
            storage.join(folder, "prior.npz"),
        )

    def load(self, job: JobConfig, device: torch.device = CPU) -> LSMIArtifacts:
        """The saved artifacts, their models on ``device`` (classifier input sizes from the
        entropy models' sizes)."""
        folder = self.folder(job)
        prior = storage.read_arrays(storage.join(folder, "prior.npz"))
        folds = int(prior["folds"])
        entropy_states = load_state(storage.join(folder, "entropy.pt"))
        entropy = {
            name: EntropyModel.from_state(
                storage.read_arrays(storage.join(folder, f"entropy-{name}.npz")),
                entropy_states[name],
            ).to(device)
            for name in job.modality_names
        }
        states = load_classifier_states(job.output, self._classifier_index(job))
        settings = self.options(job)
        classifiers = {}
        crossfit = settings.classifiers == "crossfit"
        for key in classifier_keys(job.modality_names) if crossfit else []:
            model = FoldedMLP(
                sum(entropy[name].dim for name in key),
                settings.classifier.hidden,
                job.num_classes,
                folds,
            )
            model.load_state_dict(states[key_name(key)])
            classifiers[key_name(key)] = model.eval().to(device)
        return LSMIArtifacts(entropy, classifiers, prior["log_prior"], folds, int(prior["seed"]))

    # --- scoring -----------------------------------------------------------------------------

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        artifacts = self.load(job, shared.device)
        settings = self.options(job)
        encoder = shared.require_model() if settings.features == "encoder" else None
        keys = classifier_keys(job.modality_names)
        bits = {name: 1 << index for index, name in enumerate(job.modality_names)}

        def log_probabilities(
            context: BatchContext, features: dict[str, np.ndarray]
        ) -> dict[str, np.ndarray]:
            """``log p(y | ·)`` of each row's label per classifier key."""
            labels = context.labels
            if settings.classifiers == "model":
                rows = np.arange(len(labels))
                floor = np.exp(LOG_PROBABILITY_FLOOR)
                return {
                    key_name(key): np.log(
                        np.maximum(
                            context.coalitions[rows, sum(bits[m] for m in key), labels], floor
                        )
                    )
                    for key in keys
                }
            folds = fold_of(context.batch.column(SAMPLE_ID), artifacts.folds, artifacts.seed)
            return {
                key_name(key): log_proba_of_labels(
                    artifacts.classifiers[key_name(key)], joined(features, key), folds, labels
                )
                for key in keys
            }

        def score(context: BatchContext) -> dict[str, Any]:
            features = lsmi_features(job, context.values, encoder, shared.device)
            entropy = {
                name: model.entropy(features[name]) for name, model in artifacts.entropy.items()
            }
            log_p = log_probabilities(context, features)
            prior = artifacts.log_prior[context.labels]
            columns = {}
            for a, b in modality_pairs(job.modality_names):
                terms = pointwise(
                    entropy[a], entropy[b], log_p[a], log_p[b], log_p[key_name((a, b))], prior
                )
                for term, values in zip(PID_TERMS, terms, strict=True):
                    # rows without a label were scored with a placeholder class: null
                    columns[lsmi_column(term, a, b)] = pa.array(
                        values, pa.float64(), mask=~context.labelled
                    )
            return columns

        return score

    # --- the dataset -------------------------------------------------------------------------

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """Per pair ``a,b`` and group: the raw means ``R[a,b]``, ``U1[a,b]``, ``U2[a,b]``,
        ``S[a,b]`` (nats, with standard errors), the same shifted by the pair's dataset-level
        constant (``R_adjusted[a,b]``, ...; one constant for every group, from the whole
        dataset's means) and the constant itself (``adjustment[a,b]``, whole dataset only)."""
        records = []
        for a, b in modality_pairs(job.modality_names):
            pair = f"{a},{b}"
            columns = [lsmi_column(term, a, b) for term in PID_TERMS]
            overall = [summaries.get(column) for column in columns]
            if any(summary is None or summary.count == 0 for summary in overall):
                continue
            constant = adjustment(*(summary.mean for summary in overall))
            records.append(
                global_record(self.name, f"adjustment[{pair}]", constant, overall[0].count)
            )
            for group in summaries.groups():
                found = [summaries.get(column, group) for column in columns]
                if any(summary is None or summary.count == 0 for summary in found):
                    continue
                means = PIDTerms(*(summary.mean for summary in found))
                shifted = adjusted(means, constant)
                for term, mean, moved, summary in zip(
                    PID_TERMS, means, shifted, found, strict=True
                ):
                    n, error = summary.count, summary.stderr
                    records += [
                        global_record(self.name, f"{term}[{pair}]", mean, n, error, group),
                        global_record(
                            self.name, f"{term}_adjusted[{pair}]", moved, n, error, group
                        ),
                    ]
        return records

    def report(self, run: RunData) -> Section | None:
        if run.rows(self.name).is_empty():
            return None
        parts = [
            paragraph(
                "LSMI (paper 001): mean pointwise redundancy, uniqueness and synergy, adjusted "
                "by the dataset constant (global/lsmi.parquet), for all samples, per label, per "
                "predicted class and per group; then the raw per-sample terms."
            ),
            *pid_bars(run, self.name, "nats", adjusted=True),
        ]
        for a, b in pair_terms(run.terms(self.name)):
            columns = [lsmi_column(term, a, b) for term in PID_TERMS]
            parts.append(histograms(run.scores(columns), f"Per-sample LSMI of ({a}, {b}), raw", 4))
        return Section("LSMI", "".join(parts))

    # --- what later jobs read ----------------------------------------------------------------

    def partition_rule(
        self, by: str, run_dir: str, scores_file: str, pair: tuple[str, str] | None
    ) -> CategoryRule:
        """``dominant``: each row in the partition of its largest adjusted LSMI term of
        ``pair`` (the only pair when there is one)."""
        pair = chosen_pair(score_pairs(scores_file), pair, scores_file)
        constant = pair_constant(run_dir, pair)
        return CategoryRule(
            by=by,
            columns=tuple(lsmi_column(term, *pair) for term in PID_TERMS),
            names=tuple(dominant_names(pair)),
            offsets=tuple(sign * constant for sign in SHIFT_SIGNS),
            descriptions=tuple(
                f"largest adjusted LSMI term of {','.join(pair)} is {term}" for term in PID_TERMS
            ),
            missing="the LSMI terms",
        )

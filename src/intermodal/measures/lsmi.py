"""LSMI (paper 001): per row and pair of modalities the pointwise redundancy, uniqueness and
synergy R, U1, U2, S (nats) from KNIFE entropies h(x_m) and the pointwise mutual information of
cross-fitted classifiers (or of the model's masked coalitions, ``classifiers: model``); for the
dataset, the mean terms, the pair's adjustment constant and the adjusted means. The entropies
are taken on each modality's label posterior (``entropy.space: posterior``, the default), the
same space for every modality whatever its width, units or label-free features, or on its
standardised features (``space: features``, the reference code's way).

Artifacts (``artifacts/lsmi/``): ``entropy-<m>.npz`` (preprocessing arrays) and ``entropy.pt``
(KNIFE state dicts by modality), ``posterior.pt`` (with ``space: posterior`` and
``classifiers: model``: the per-modality posteriors trained for the entropies),
``classifiers.json`` (the digest of the ``FoldedMLP`` of each key ``<m>`` or ``<a>__<b>``,
stored once per run in ``artifacts/classifiers/<digest>.pt``, where PID BATCH finds the ones
it shares), ``prior.npz`` (``log p(y)``). Everything loads with weights only
(``models.artifacts.load_state``) or ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import Field, model_validator

from intermodal import storage
from intermodal.charts.figures import histograms
from intermodal.charts.html import Section, paragraph
from intermodal.charts.pid import pid_bars
from intermodal.charts.run import RunData, modalities_literal
from intermodal.estimators.ensemble import (
    ROLES,
    accuracy,
    ensemble_probabilities,
    global_weights,
    interaction_weights,
)
from intermodal.estimators.knife import EntropyModel, KnifeConfig, fit_entropy_model
from intermodal.estimators.lsmi import (
    SHIFT_SIGNS,
    adjusted,
    adjustment,
    distillation_weights,
    pointwise,
)
from intermodal.estimators.posterior_entropy import (
    DEFAULT_RESOLUTION,
    PosteriorEntropyModel,
    fit_posterior_entropy_model,
)
from intermodal.measures.base import (
    BatchOperator,
    CategoryRule,
    FitSample,
    FitWorkers,
    Measure,
    Needs,
    Progress,
    RowExport,
    global_record,
    require_float_features,
    score_field,
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
    train_folded,
)
from intermodal.models.training import CPU, fit_device
from intermodal.operators.context import (
    BatchContext,
    SharedModel,
    encoded_features,
    job_model,
    modality_arrays,
)
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.legacy import upgrade_legacy_global
from intermodal.schemas.tables import (
    LABEL,
    PID_TERMS,
    PRED,
    SAMPLE_ID,
    PIDTerms,
    modality_pairs,
)


def lsmi_column(term: str, first: str, second: str, target: str = LABEL) -> str:
    """Score column of one LSMI term (``PID_TERMS``) of the pair (first, second), of the label
    (``lsmi_<T>_<a>__<b>``) or, with ``classifiers: model``, of the model's predicted class
    standing in for it (``lsmi_pred_<T>_<a>__<b>``)."""
    prefix = "lsmi" if target == LABEL else f"lsmi_{target}"
    return f"{prefix}_{term}_{first}__{second}"


def probability_column(class_index: int) -> str:
    """Score column of the model's probability of a class with every modality
    (``classifiers: model``)."""
    return f"lsmi_proba_{class_index}"


class LSMIEntropyConfig(Strict):
    """KNIFE h(x_m) per modality (mixture of Gaussians), on the modality's posterior
    coordinates or on its standardised features."""

    # posterior: on the coordinates of each modality's label posterior p(· | x_m) in the
    # probability simplex (its cross-fitted classifier's, the fold models averaged; with
    # classifiers: model one trained for this only): the same space R^(C-1) and units for
    # every modality, so widths, units and label-free features do not decide the per-row
    # split; features: on the standardised (optionally PCA-projected) features, as paper
    # 001's reference code (comparable only across modalities of one width and kind)
    space: Literal["posterior", "features"] = "posterior"
    # space posterior: std of the Gaussian noise the posterior coordinates are smoothed with
    # before KNIFE (distance between probability vectors): posteriors closer than this count
    # as one state, so a classifier's jitter around a state does not enter h
    resolution: float = Field(default=DEFAULT_RESOLUTION, gt=0)
    n_components: int = Field(default=5, ge=1)
    diagonal: bool = False
    # None: no PCA before KNIFE (space: features only)
    pca_components: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=30, ge=1)
    # 1024 rows at lr 1e-2 reach a lower held-out h than 256 at 1e-3 in a third of the time
    # (docs/benchmarks.md, "Fit speed")
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=1e-2, gt=0)

    @model_validator(mode="after")
    def _pca_only_on_features(self) -> LSMIEntropyConfig:
        if self.pca_components is not None and self.space != "features":
            raise ValueError(
                "entropy.pca_components projects the features: it needs entropy.space: features"
            )
        return self


class LSMIConfig(Strict):
    """Pointwise redundancy / uniqueness / synergy (paper 001), fitted on a sample."""

    # crossfit: MLPs p(y | x_m), p(y | x_a, x_b) trained here with K-fold cross-fitting;
    # model: the configured model's masked coalition outputs (a model trained with modality
    # masking), masked as intershap.masking says; nothing is trained
    classifiers: Literal["crossfit", "model"] = "crossfit"
    # inputs: the modality columns; encoder: the configured model's encode(name, x) outputs
    features: Literal["inputs", "encoder"] = "inputs"
    # cross-fitting: no row scored by its own fit; model k trains on the folds other than k and
    # k + 1 (its early-stopping rows), so 2 folds would leave it nothing to train on
    folds: int = Field(default=5, ge=3, le=50)
    fit_rows: int = Field(default=100_000, ge=10)
    seed: int = 0
    classifier: ClassifierConfig = ClassifierConfig()
    entropy: LSMIEntropyConfig = LSMIEntropyConfig()


@dataclass
class LSMIArtifacts:
    entropy: dict[str, EntropyModel | PosteriorEntropyModel]
    classifiers: dict[str, FoldedMLP]
    log_prior: np.ndarray  # [C]
    folds: int
    seed: int


def entropy_part(
    name: str,
    rows: np.ndarray,
    knife: KnifeConfig,
    progress: Progress,
    posterior: FoldedMLP | tuple[Any, ...] | None = None,
    resolution: float = DEFAULT_RESOLUTION,
) -> EntropyModel | PosteriorEntropyModel:
    """The fit part of one modality's entropy model: KNIFE on its features (``posterior``
    None) or on the posterior coordinates of ``posterior``, the modality's cross-fitted
    classifier, or ``(labels, folds, n_folds, num_classes, training)`` to train that classifier
    here first (``classifiers: model`` trains no classifiers of its own)."""
    if posterior is None:
        progress(f"[lsmi] entropy model of {name} ({rows.shape[1]} features)")
        return fit_entropy_model(rows, knife, progress, device=fit_device())
    if not isinstance(posterior, FoldedMLP):
        labels, folds, n_folds, num_classes, training = posterior
        progress(f"[lsmi] posterior p(y | {name}) for its entropy model")
        posterior = train_folded(
            rows, labels, folds, n_folds, num_classes, training, device=fit_device()
        )
    progress(f"[lsmi] entropy model of {name} on its posterior ({rows.shape[1]} features)")
    return fit_posterior_entropy_model(posterior, rows, knife, resolution, progress, fit_device())


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
    """The pair's dataset adjustment constant from ``global/lsmi.parquet`` (statistic
    ``adjustment``; a table of the previous release is upgraded first)."""
    uri = storage.join(run_dir, "global", f"{LSMI.name}.parquet")
    try:
        table = upgrade_legacy_global(storage.read_table(uri))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{uri}: missing; run `intermodal aggregate {run_dir}`") from error
    frame = pl.DataFrame(pl.from_arrow(table))
    rows = frame.filter(
        (pl.col("statistic") == "adjustment")
        & (pl.col("modalities") == modalities_literal(pair))
        & (pl.col("group_by") == "")
    )
    if rows.height != 1:
        raise ValueError(f"{uri}: no single adjustment row of the pair {pair[0]},{pair[1]}")
    return float(rows["value"].item())


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
        if settings.features == "inputs":
            require_float_features(job, self.name, "fits its classifiers on the modality values")
        components = settings.entropy.pca_components
        on_features = settings.entropy.space == "features"
        if settings.features == "inputs" and on_features and components is not None:
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
        pairs = modality_pairs(job.modality_names)
        fields = [
            # null where the label is null
            score_field(lsmi_column(term, a, b), pa.float64(), True, term, (a, b), LABEL)
            for a, b in pairs
            for term in PID_TERMS
        ]
        if self.options(job).classifiers == "model":
            # what an ensemble of runs reads (export ensemble): the model's class
            # probabilities and the terms of the class it predicts, on every row
            fields += [
                score_field(probability_column(c), pa.float64(), False, target=PRED)
                for c in range(job.num_classes)
            ]
            fields += [
                score_field(lsmi_column(term, a, b, PRED), pa.float64(), False, term, (a, b), PRED)
                for a, b in pairs
                for term in PID_TERMS
            ]
        return fields

    # --- fitting -----------------------------------------------------------------------------

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
        encoder = job_model(job) if settings.features == "encoder" else None
        features = encoded_features(job, modality_arrays(job, sample), encoder)
        labels = sample.column(LABEL).to_numpy()
        folds = fold_of(sample.column(SAMPLE_ID), settings.folds, settings.seed)
        own_settings = {"space", "resolution"}  # of the posterior space, not of KNIFE
        knife = KnifeConfig(**settings.entropy.model_dump(exclude=own_settings), seed=settings.seed)
        training = ClassifierTraining(**settings.classifier.model_dump(), seed=settings.seed)
        # with classifiers: model the coalitions of the configured model stand in
        crossfit = settings.classifiers == "crossfit"
        on_posterior = settings.entropy.space == "posterior"
        # every entropy model and classifier is a part of its own: submit them all, then wait
        # (on the posterior space, an entropy model waits for its modality's classifier)
        entropy = {
            name: workers.submit(entropy_part, name, rows, knife, workers.progress)
            for name, rows in ({} if on_posterior else features).items()
        }
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
        if on_posterior:
            own = (labels, folds, settings.folds, job.num_classes, training)
            entropy = {
                name: workers.submit(
                    entropy_part,
                    name,
                    rows,
                    knife,
                    workers.progress,
                    classifiers.models[name] if crossfit else own,
                    settings.entropy.resolution,
                )
                for name, rows in features.items()
            }
        entropy = dict(zip(entropy, workers.gather(list(entropy.values())), strict=True))
        prior = log_prior(labels, job.num_classes)
        save_classifiers(classifiers, job.output, self._classifier_index(job))
        artifacts = LSMIArtifacts(entropy, classifiers.models, prior, settings.folds, settings.seed)
        self._save(job, artifacts)

    def _classifier_index(self, job: JobConfig) -> str:
        return storage.join(self.folder(job), CLASSIFIER_INDEX)

    def _save(self, job: JobConfig, artifacts: LSMIArtifacts) -> None:
        folder = self.folder(job)
        states, posteriors = {}, {}
        for name, model in artifacts.entropy.items():
            if isinstance(model, PosteriorEntropyModel):
                # entropy.space posterior: the classifier whose posterior the KNIFE models
                posteriors[name] = model.encoder.state_dict()
                model = model.entropy_model
            arrays, states[name] = model.to_state()
            storage.write_arrays(arrays, storage.join(folder, f"entropy-{name}.npz"))
        save_state(states, storage.join(folder, "entropy.pt"))
        if posteriors:
            save_state(posteriors, storage.join(folder, "posterior.pt"))
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
        settings = self.options(job)
        prior = storage.read_arrays(storage.join(folder, "prior.npz"))
        folds = int(prior["folds"])
        entropy_states = load_state(storage.join(folder, "entropy.pt"))
        entropy = {
            name: EntropyModel.from_state(
                storage.read_arrays(storage.join(folder, f"entropy-{name}.npz")),
                entropy_states[name],
            )
            for name in job.modality_names
        }
        if settings.entropy.space == "posterior":
            posteriors = load_state(storage.join(folder, "posterior.pt"))
            for name, state in posteriors.items():
                # FoldedMLP weights are [folds, fan_in, fan_out]; mean is [in]
                encoder = FoldedMLP(
                    state["mean"].shape[0],
                    state["weights.0"].shape[2],
                    state["weights.2"].shape[2],
                    state["weights.0"].shape[0],
                )
                encoder.load_state_dict(state)
                entropy[name] = PosteriorEntropyModel(
                    encoder.eval(), entropy[name], state["mean"].shape[0]
                )
        entropy = {name: model.to(device) for name, model in entropy.items()}
        states = load_classifier_states(job.output, self._classifier_index(job))
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
            context: BatchContext, features: dict[str, np.ndarray], labels: np.ndarray
        ) -> dict[str, np.ndarray]:
            """``log p(y | ·)`` of each row's ``labels`` per classifier key."""
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
            features = encoded_features(job, context.values, encoder, shared.device)
            entropy = {
                name: model.entropy(features[name]) for name, model in artifacts.entropy.items()
            }

            def terms_of(labels: np.ndarray) -> dict[tuple[str, str], PIDTerms]:
                log_p = log_probabilities(context, features, labels)
                prior = artifacts.log_prior[labels]
                return {
                    (a, b): pointwise(
                        entropy[a], entropy[b], log_p[a], log_p[b], log_p[key_name((a, b))], prior
                    )
                    for a, b in modality_pairs(job.modality_names)
                }

            columns: dict[str, Any] = {}
            for (a, b), terms in terms_of(context.labels).items():
                for term, values in zip(PID_TERMS, terms, strict=True):
                    # rows without a label were scored with a placeholder class: null
                    columns[lsmi_column(term, a, b)] = pa.array(
                        values, pa.float64(), mask=~context.labelled
                    )
            if settings.classifiers == "model":
                full = context.coalitions[:, (1 << len(job.modality_names)) - 1]
                for c in range(job.num_classes):
                    columns[probability_column(c)] = full[:, c].astype(np.float64)
                for (a, b), terms in terms_of(context.predictions).items():
                    for term, values in zip(PID_TERMS, terms, strict=True):
                        columns[lsmi_column(term, a, b, PRED)] = values
            return columns

        return score

    # --- the dataset -------------------------------------------------------------------------

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """Per pair ``a,b`` (target ``label``): the pair's dataset-level constant (statistic
        ``adjustment``, whole dataset only) and per group and term R, U1, U2, S the mean of
        its column shifted by that constant (``adjusted_mean``, nats, with the column's
        standard error; one constant for every group, from the whole dataset's means). The
        raw means are the columns' ``mean`` rows."""
        records = []
        for a, b in modality_pairs(job.modality_names):
            columns = [lsmi_column(term, a, b) for term in PID_TERMS]
            overall = [summaries.get(column) for column in columns]
            if any(summary is None or summary.count == 0 for summary in overall):
                continue
            constant = adjustment(*(summary.mean for summary in overall))
            records.append(
                global_record(
                    self.name,
                    "adjustment",
                    constant,
                    overall[0].count,
                    modalities=(a, b),
                    target=LABEL,
                )
            )
            for group in summaries.groups():
                found = [summaries.get(column, group) for column in columns]
                if any(summary is None or summary.count == 0 for summary in found):
                    continue
                means = PIDTerms(*(summary.mean for summary in found))
                shifted = adjusted(means, constant)
                for term, column, moved, summary in zip(
                    PID_TERMS, columns, shifted, found, strict=True
                ):
                    records.append(
                        global_record(
                            self.name,
                            "adjusted_mean",
                            moved,
                            summary.count,
                            summary.stderr,
                            group,
                            term=term,
                            modalities=(a, b),
                            target=LABEL,
                            column=column,
                        )
                    )
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
            *pid_bars(run, self.name, "nats", "adjusted_mean", " adjusted"),
        ]
        for a, b in run.pairs(self.name, "adjusted_mean"):
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

    export_names = ("distill-weights", "ensemble")

    def export(
        self,
        name: str,
        run_dirs: Sequence[str],
        scores_files: Sequence[str],
        reads: Sequence[Sequence[str]] = (),
    ) -> RowExport:
        if name == "ensemble":
            return ensemble_export(run_dirs, scores_files, reads)
        if len(run_dirs) != 1:
            raise ValueError(f"export {name} reads one run, got {len(run_dirs)}")
        return self._distillation(name, run_dirs[0], scores_files[0])

    def _distillation(self, name: str, run_dir: str, scores_file: str) -> RowExport:
        """``distill-weights`` (paper 001 §4.3.2): per sample and pair, the four LSMI terms
        adjusted by the pair's dataset constant ``c`` (``R + c, U1 − c, U2 − c, S + c``, the
        scale the run reports its means on), clipped at 0 (a negative pointwise term is
        information the sample's modalities mislead about: nothing to distil) and divided by
        their sum, so the four weights are ≥ 0 and sum to 1; 1/4 each where every term clips
        to 0; null without a label."""
        pairs = score_pairs(scores_file)
        constants = {pair: pair_constant(run_dir, pair) for pair in pairs}
        return RowExport(
            name=name,
            columns=tuple(lsmi_column(t, a, b) for a, b in pairs for t in PID_TERMS),
            transform=distillation_stage,
            options=constants,
            facts={
                "normalisation": "max(adjusted term, 0) / sum over R, U1, U2, S; 1/4 each when "
                "all are 0; null without a label",
                "adjustment": {f"{a},{b}": constant for (a, b), constant in constants.items()},
            },
        )


def weight_column(term: str, first: str, second: str) -> str:
    """Column of one distillation weight: ``w_<term>_<a>__<b>`` (terms as in the scores)."""
    return f"w_{term}_{first}__{second}"


def distillation_stage(batch: pa.Table, constants: dict[tuple[str, str], float]) -> pa.Table:
    """Score rows → ``sample_id`` and the distillation weights of every pair."""
    columns: dict[str, pa.Array] = {SAMPLE_ID: batch.column(SAMPLE_ID)}
    for pair, constant in constants.items():
        weights = distillation_weights(adjusted_lsmi(batch, pair, constant))
        for term, values in weights.items():
            columns[weight_column(term, *pair)] = pa.array(values, pa.float64(), from_pandas=True)
    return pa.table(columns)


# the rows an ensemble's comparison splits by sample id: fold FIT_FOLD fits the global weights,
# the other fold is where every ensemble and model is evaluated
HELD_OUT_SEED = 0
FIT_FOLD = 0


@dataclass(frozen=True)
class EnsembleOptions:
    """What the ensemble stage needs: each model's role, the reference run's predicted-class
    term columns and the pair's constant, the number of classes."""

    roles: tuple[str, ...]
    term_columns: tuple[str, ...]
    constant: float
    num_classes: int


def ensemble_probability_column(model: int, class_index: int) -> str:
    """Column of the joined rows: model ``model``'s probability of a class."""
    return f"p{model}_{class_index}"


def _role(reads: Sequence[str], pair: tuple[str, str], run_dir: str) -> str:
    """The role (``estimators.ensemble.ROLES``) of a model reading ``reads`` of ``pair``."""
    chosen = set(reads) & set(pair)
    if chosen == set(pair):
        return "both"
    if chosen:
        return ROLES[pair.index(next(iter(chosen)))]
    raise ValueError(f"{run_dir}: --reads {','.join(reads)} names neither of {pair}")


def same_input(run_dirs: Sequence[str]) -> None:
    """ValueError naming the runs when they did not score the same input (fingerprints)."""
    fingerprints = {
        run: storage.read_json(storage.join(run, "manifest.json"))["input"]["fingerprint"]
        for run in run_dirs
    }
    if len(set(fingerprints.values())) > 1:
        raise ValueError(
            "the runs scored different inputs (input fingerprints "
            + ", ".join(f"{run}: {value[:12]}" for run, value in fingerprints.items())
            + "); an ensemble combines models on the same rows"
        )


def ensemble_export(
    run_dirs: Sequence[str], scores_files: Sequence[str], reads: Sequence[Sequence[str]]
) -> RowExport:
    """``ensemble`` (paper 001 §4.3.3, ``estimators.ensemble``): the runs' models combined per
    sample, each weighted by the interactions of the sample it can use, from the LSMI terms of
    the predicted class of the first run whose model reads both modalities (adjusted by that
    run's constant, clipped at 0). ``reads``: the modalities each run's model reads (all when
    not given). The summary compares, on the held-out half of the labelled rows (by sample
    id), each model, the plain average, one global weight per model fitted by EM on the other
    half, and this ensemble."""
    if len(run_dirs) < 2:
        raise ValueError(f"export ensemble needs two or more runs, got {len(run_dirs)}")
    if reads and len(reads) != len(run_dirs):
        raise ValueError(f"--reads given {len(reads)} times for {len(run_dirs)} runs")
    same_input(run_dirs)
    for run, file in zip(run_dirs, scores_files, strict=True):
        if probability_column(0) not in storage.parquet_file(file).schema_arrow.names:
            raise ValueError(
                f"{run}: no model probabilities; score it with lsmi.classifiers: model"
            )
    pair = chosen_pair(score_pairs(scores_files[0]), None, scores_files[0])
    roles = tuple(_role(reads[k] if reads else pair, pair, run) for k, run in enumerate(run_dirs))
    if "both" not in roles:
        raise ValueError(f"export ensemble: no run's model reads both {pair[0]} and {pair[1]}")
    reference = roles.index("both")
    term_columns = tuple(lsmi_column(t, *pair, PRED) for t in PID_TERMS)
    rows, classes = _joined_runs(run_dirs, scores_files, reference, term_columns)
    constant = pair_constant(run_dirs[reference], pair)
    options = EnsembleOptions(roles, term_columns, constant, classes)
    return RowExport(
        name="ensemble",
        columns=(),
        transform=ensemble_stage,
        options=options,
        facts={
            "pair": list(pair),
            "roles": dict(zip(run_dirs, roles, strict=True)),
            "terms_from": run_dirs[reference],
            "adjustment": options.constant,
            "weights": "per model: u1 + r/2 (reads the first modality), u2 + r/2 (the second), "
            "s (both), adjusted terms of the predicted class clipped at 0, a role without a "
            "model handed to the models reading both, over the sample's total",
            "held_out": _comparison(rows, options, len(run_dirs)),
        },
        rows=rows,
    )


def _joined_runs(
    run_dirs: Sequence[str],
    scores_files: Sequence[str],
    reference: int,
    term_columns: tuple[str, ...],
) -> tuple[pa.Table, int]:
    """The runs' rows joined on ``sample_id``: the label and predicted-class terms of the
    reference run, each model's class probabilities (``p<k>_<c>``); and the classes."""
    names = storage.parquet_file(scores_files[0]).schema_arrow.names
    classes = sum(name.startswith(probability_column(0)[:-1]) for name in names)
    joined: pa.Table | None = None
    for k, run in enumerate(run_dirs):
        wanted = [probability_column(c) for c in range(classes)]
        extra = [LABEL, *term_columns] if k == reference else []
        columns = [SAMPLE_ID, *wanted, *extra]
        table = storage.read_table(storage.join(run, "scores"), columns=columns)
        renamed = [ensemble_probability_column(k, c) for c in range(classes)]
        table = table.rename_columns([SAMPLE_ID, *renamed, *extra])
        if joined is not None and table.num_rows != joined.num_rows:
            raise ValueError(f"{run}: {table.num_rows} scored rows, not {joined.num_rows}")
        joined = table if joined is None else joined.join(table, SAMPLE_ID)
    assert joined is not None
    return joined.sort_by(SAMPLE_ID), classes


def _model_probabilities(batch: pa.Table, models: int, classes: int) -> np.ndarray:
    """``[n, K, C]`` of the joined rows."""
    return np.stack(
        [
            np.column_stack(
                [batch.column(ensemble_probability_column(k, c)).to_numpy() for c in range(classes)]
            )
            for k in range(models)
        ],
        axis=1,
    )


def _interaction_weights(batch: pa.Table, options: EnsembleOptions) -> np.ndarray:
    """``[n, K]`` per-sample weights of the joined rows."""
    signs = np.asarray(SHIFT_SIGNS)
    terms = np.column_stack([batch.column(c).to_numpy() for c in options.term_columns])
    return interaction_weights(terms + signs * options.constant, options.roles)


def ensemble_stage(batch: pa.Table, options: EnsembleOptions) -> pa.Table:
    """Joined rows → ``sample_id``, each model's weight, the ensemble's class probabilities
    and its class."""
    models = len(options.roles)
    weights = _interaction_weights(batch, options)
    probabilities = ensemble_probabilities(
        weights, _model_probabilities(batch, models, options.num_classes)
    )
    columns: dict[str, Any] = {SAMPLE_ID: batch.column(SAMPLE_ID)}
    columns |= {f"ensemble_w_{k}": weights[:, k] for k in range(models)}
    columns |= {f"ensemble_p_{c}": probabilities[:, c] for c in range(options.num_classes)}
    columns["ensemble_pred"] = probabilities.argmax(axis=1).astype(np.int64)
    return pa.table(columns)


def _comparison(rows: pa.Table, options: EnsembleOptions, models: int) -> dict:
    """Accuracies on the held-out labelled rows; the global weights fitted on the others."""
    labelled = rows.filter(pc.is_valid(rows.column(LABEL)))
    fit = fold_of(labelled.column(SAMPLE_ID), 2, HELD_OUT_SEED) == FIT_FOLD
    labels = labelled.column(LABEL).to_numpy()
    probabilities = _model_probabilities(labelled, models, options.num_classes)
    fitted = global_weights(probabilities[fit], labels[fit])
    held, held_labels = probabilities[~fit], labels[~fit]
    ensembles = {
        "average": ensemble_probabilities(np.full(models, 1.0 / models), held),
        "global_weights": ensemble_probabilities(fitted, held),
        "interaction": ensemble_probabilities(
            _interaction_weights(labelled.filter(pa.array(~fit)), options), held
        ),
    }
    return {
        "rows": len(held_labels),
        "fit_rows": int(fit.sum()),
        "global_weights": fitted.tolist(),
        "accuracy": {
            **{f"model_{k}": accuracy(held[:, k], held_labels) for k in range(models)},
            **{name: accuracy(values, held_labels) for name, values in ensembles.items()},
        },
    }

"""PID with the BATCH estimator (paper 003 §3.2, App. B.3) on continuous features: per target
(the labels; the model's predictions with a model) cross-fitted classifiers per modality and
pair, and one encoder pair per pair of modalities trained against the classifiers' held-out
outputs. Scoring runs the batched log-domain Sinkhorn projection per block of
``block_size`` rows and writes the block's estimate (bits) on each of its rows with the
block's id; the dataset value is the mean over blocks with its standard error across blocks.

Artifacts (``artifacts/pid_batch/``): ``classifiers.json`` (the digest of the ``FoldedMLP`` of
``<target>/<m>`` and ``<target>/<a>__<b>``, stored once per run in
``artifacts/classifiers/<digest>.pt``, shared with LSMI where they agree), ``encoders.pt``
(``LabelEncoder`` state dicts by ``<target>/<a>__<b>/1`` and ``/2``); loaded with
``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from intermodal.charts.figures import grouped_bars
from intermodal.charts.html import Section, paragraph
from intermodal.charts.pid import agreement_table
from intermodal.charts.run import RunData
from intermodal.estimators.pid_batch import block_pid
from intermodal.estimators.stats import BlockEstimates, Keyed
from intermodal.measures.agreement import AGREEMENT, agreement_records
from intermodal.measures.base import (
    BatchOperator,
    FitSample,
    FitWorkers,
    Measure,
    Needs,
    Progress,
    global_record,
    require_float_features,
    score_field,
    training_settings,
)
from intermodal.models.artifacts import load_state, save_state
from intermodal.models.classifiers import (
    CLASSIFIER_INDEX,
    ClassifierConfig,
    Classifiers,
    ClassifierTraining,
    FoldedMLP,
    classifier_keys,
    fold_of,
    joined,
    key_name,
    load_classifier_states,
    own_fold_probabilities,
    own_fold_probability_tensor,
    save_classifiers,
    train_classifiers,
)
from intermodal.models.pid_batch import EncoderTraining, LabelEncoder, blocks, train_encoders
from intermodal.models.training import CPU, fit_device
from intermodal.operators.context import (
    BatchContext,
    SharedModel,
    encoded_features,
    job_model,
    modality_arrays,
    predicted_rows,
)
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.tables import LABEL, PID_TARGETS, PID_TERMS, SAMPLE_ID, modality_pairs

BATCH_BLOCK = "pid_batch_block"  # score column: the row's scoring block


def batch_column(term: str, first: str, second: str, target: str = "label") -> str:
    """Score column of one PID BATCH term (R, U1, U2, S) of the pair (first, second), of the
    labels (``pid_batch_...``) or of the model's predictions (``pid_batch_model_...``)."""
    prefix = "pid_batch" if target == "label" else "pid_batch_model"
    return f"{prefix}_{term}_{first}__{second}"


BLOCK_ID_RANGE = 1 << 62  # block ids: a hash of the block's first sample id
BLOCK_ID_SEED = 0x5EED


class PIDBatchConfig(Strict):
    """The BATCH estimator of PID (paper 003 §3.2, App. B.3) on continuous features."""

    block_size: int = Field(default=256, ge=8)  # m: rows per coupling, in training and scoring
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    hidden: int = Field(default=32, ge=1)  # encoder MLP width (3 layers)
    embed_dim: int = Field(default=10, ge=1)  # encoder features per label
    sinkhorn_iters: int = Field(default=200, ge=1)
    sinkhorn_tol: float = Field(default=1e-6, gt=0)  # largest row-marginal error accepted
    # training backpropagates through this many last iterations, started from the converged
    # scaling (None: through every iteration, as the paper's code does; same values, slower)
    sinkhorn_grad_iters: int | None = Field(default=1, ge=1)
    folds: int = Field(default=5, ge=3, le=50)  # as lsmi.folds: 3 at least
    # inputs: the modality columns; encoder: the configured model's encode(name, x) outputs
    # (what a model reading raw images or token ids makes of them)
    features: Literal["inputs", "encoder"] = "inputs"
    fit_rows: int = Field(default=100_000, ge=16)
    seed: int = 0
    classifier: ClassifierConfig = ClassifierConfig()


@dataclass
class TargetModels:
    """The classifiers and encoder pairs fitted for one target (labels or predictions)."""

    classifiers: dict[str, FoldedMLP]  # by key <m> or <a>__<b>
    encoders: dict[str, tuple[LabelEncoder, LabelEncoder]]  # by pair key <a>__<b>


def encoder_part(
    features: dict[str, np.ndarray],
    pair: tuple[str, str],
    held_out: tuple[np.ndarray, np.ndarray],
    training: EncoderTraining,
    name: str,
    progress: Progress,
) -> tuple[LabelEncoder, LabelEncoder]:
    """The fit part of one pair's encoders, given its modalities' held-out ``p(y | x_m)``."""
    a, b = pair
    return train_encoders(
        features[a], features[b], *held_out, training, name, progress, device=fit_device()
    )


class PIDBatch(Measure):
    name = "pid_batch"
    section = "pid_batch"
    settings = PIDBatchConfig
    title = "PID BATCH"

    def check(self, job: JobConfig) -> None:
        if job.label_column is None:
            raise ValueError("measure 'pid_batch' needs label_column")
        if self.options(job).features == "inputs":
            require_float_features(job, self.name, "trains its encoders on the modality values")
        elif job.model is None:
            raise ValueError("pid_batch.features 'encoder' needs a model")

    def needs(self, job: JobConfig) -> Needs:
        return Needs(model=self.options(job).features == "encoder")

    def fields(self, job: JobConfig) -> list[pa.Field]:
        pairs = modality_pairs(job.modality_names)
        return [
            pa.field(BATCH_BLOCK, pa.int64(), nullable=False),
            *(
                score_field(
                    batch_column(term, a, b, target),
                    pa.float64(),
                    nullable=False,
                    term=term,
                    modalities=(a, b),
                    target=target,
                )
                for target in job.targets
                for a, b in pairs
                for term in PID_TERMS
            ),
        ]

    # --- fitting -----------------------------------------------------------------------------

    def fit_sample(self, job: JobConfig) -> FitSample:
        settings = self.options(job)
        minimum = max(settings.folds * 2, settings.block_size)  # at least one block
        return FitSample(settings.fit_rows, settings.seed, minimum, "PID BATCH")

    def fit_key(self, job: JobConfig) -> dict:
        settings = self.options(job).model_dump(mode="json")
        if job.model is not None:  # model PID (and encoder features) are fitted with the model
            settings["model"] = job.model.model_dump(mode="json")
        return settings

    def fit(
        self, job: JobConfig, sample: pa.Table, progress: Progress, workers: FitWorkers
    ) -> None:
        settings = self.options(job)
        progress(f"[pid_batch] fitting on {sample.num_rows} sampled rows")
        encoder = job_model(job) if settings.features == "encoder" else None
        features = encoded_features(job, modality_arrays(job, sample), encoder)
        folds = fold_of(sample.column(SAMPLE_ID), settings.folds, settings.seed)
        training = training_settings(ClassifierTraining, settings.classifier, seed=settings.seed)
        targets = {"label": sample.column(LABEL).to_numpy()}
        if job.model is not None:
            progress("[pid_batch] model predictions of the sample (model PID)")
            targets["pred"] = predicted_rows(job, sample)
        encoder_training = training_settings(EncoderTraining, settings)
        shared_features = workers.share(features)
        classifiers, encoders = {}, {}
        trained = Classifiers({}, {})
        for target, values in targets.items():
            target_classifiers = train_classifiers(
                classifier_keys(job.modality_names),
                features,
                values,
                folds,
                settings.folds,
                job.num_classes,
                training,
                workers,
            )
            trained = trained.merged(target_classifiers.prefixed(f"{target}/"))
            classifiers[target] = target_classifiers.models
            held_out = {
                name: own_fold_probabilities(classifiers[target][name], features[name], folds)
                for name in job.modality_names
            }
            # the encoder pairs of every target run side by side; gathered below
            encoders[target] = {
                key_name((a, b)): workers.submit(
                    encoder_part,
                    shared_features,
                    (a, b),
                    (held_out[a], held_out[b]),
                    encoder_training,
                    f"{target}: encoders {a}, {b}",
                    workers.progress,
                )
                for a, b in modality_pairs(job.modality_names)
            }
        fitted = {
            target: TargetModels(
                classifiers[target],
                dict(zip(pairs, workers.gather(list(pairs.values())), strict=True)),
            )
            for target, pairs in encoders.items()
        }
        folder = self.folder(job)
        save_classifiers(trained, job.output, f"{folder}/{CLASSIFIER_INDEX}")
        save_state(
            {
                f"{target}/{pair}/{side + 1}": encoder.state_dict()
                for target, models in fitted.items()
                for pair, pair_encoders in models.encoders.items()
                for side, encoder in enumerate(pair_encoders)
            },
            f"{folder}/encoders.pt",
        )

    def load(self, job: JobConfig, device: torch.device = CPU) -> dict[str, TargetModels]:
        """The fitted models per target (``label``, and ``pred`` with a model), on ``device``."""
        settings = self.options(job)
        folder = self.folder(job)
        classifier_states = load_classifier_states(job.output, f"{folder}/{CLASSIFIER_INDEX}")
        # each modality's feature width (its values', or its encoder outputs'), as its own
        # classifier was fitted on them: FoldedMLP's ``mean`` is [in]
        sizes = {
            name: classifier_states[f"label/{name}"]["mean"].shape[0] for name in job.modality_names
        }
        encoder_states = load_state(f"{folder}/encoders.pt")
        targets = {}
        for target in job.targets:
            classifiers = {}
            for key in classifier_keys(job.modality_names):
                model = FoldedMLP(
                    sum(sizes[name] for name in key),
                    settings.classifier.hidden,
                    job.num_classes,
                    settings.folds,
                )
                model.load_state_dict(classifier_states[f"{target}/{key_name(key)}"])
                classifiers[key_name(key)] = model.eval().to(device)
            encoders = {}
            for pair in modality_pairs(job.modality_names):
                pair_encoders = []
                for side, name in enumerate(pair):
                    encoder = LabelEncoder(
                        sizes[name], job.num_classes, settings.hidden, settings.embed_dim
                    )
                    encoder.load_state_dict(encoder_states[f"{target}/{key_name(pair)}/{side + 1}"])
                    pair_encoders.append(encoder.eval().to(device))
                encoders[key_name(pair)] = (pair_encoders[0], pair_encoders[1])
            targets[target] = TargetModels(classifiers, encoders)
        return targets

    # --- scoring -----------------------------------------------------------------------------

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        settings = self.options(job)
        fitted = self.load(job, shared.device)
        keys = classifier_keys(job.modality_names)
        encoder = shared.require_model() if settings.features == "encoder" else None

        @torch.no_grad()
        def score(context: BatchContext) -> dict[str, Any]:
            features = encoded_features(job, context.values, encoder, shared.device)
            n_rows = context.num_rows
            folds = fold_of(context.batch.column(SAMPLE_ID), settings.folds, settings.seed)
            ids = context.batch.column(SAMPLE_ID).combine_chunks()
            slices = blocks(n_rows, settings.block_size)
            block_ids = np.empty(n_rows, dtype=np.int64)
            for block in slices:
                first = ids.slice(block.start, 1)
                block_ids[block] = fold_of(first, BLOCK_ID_RANGE, BLOCK_ID_SEED)[0]
            columns: dict[str, Any] = {BATCH_BLOCK: block_ids}
            for target, models in fitted.items():
                probabilities = {
                    key_name(key): own_fold_probability_tensor(
                        models.classifiers[key_name(key)], joined(features, key), folds
                    )
                    for key in keys
                }
                for a, b in modality_pairs(job.modality_names):
                    encoder_a, encoder_b = models.encoders[key_name((a, b))]
                    terms = {term: np.empty(n_rows) for term in PID_TERMS}
                    for block in slices:
                        x_a, x_b = (
                            torch.from_numpy(np.array(features[m][block])).to(shared.device)
                            for m in (a, b)
                        )
                        values = block_pid(
                            encoder_a(x_a).double(),
                            encoder_b(x_b).double(),
                            probabilities[a][block],
                            probabilities[b][block],
                            probabilities[key_name((a, b))][block],
                            n_iters=settings.sinkhorn_iters,
                            tol=settings.sinkhorn_tol,
                        )
                        for term, value in zip(PID_TERMS, values, strict=True):
                            terms[term][block] = value / np.log(2)  # bits, as pid_cvx
                    for term, values in terms.items():
                        columns[batch_column(term, a, b, target)] = values
            return columns

        return score

    # --- the dataset -------------------------------------------------------------------------

    def partial(self, job: JobConfig, scores: pa.Table, groups: Mapping[str, np.ndarray]) -> Keyed:
        """Per target and pair, each scoring block's estimates (R, U1, U2, S) and rows, kept
        by block id: a batch that spans two input shards is written to two score files, and
        its split block must count once."""
        block_ids = scores.column(BATCH_BLOCK).to_numpy()
        return Keyed(
            {
                (target, (a, b)): BlockEstimates.of(
                    block_ids,
                    np.column_stack(
                        [scores.column(batch_column(t, a, b, target)).to_numpy() for t in PID_TERMS]
                    ),
                )
                for target in job.targets
                for a, b in modality_pairs(job.modality_names)
            }
        )

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """Per target (``label``, ``pred``) and pair ``a,b`` the terms R, U1, U2, S in bits:
        statistic ``pid``, the mean of the block estimates with its standard error across
        blocks; ``n`` is the rows scored. With both targets, per pair the agreement ``alpha`` of
        the model's PID with the labels' (``agreement_records``)."""
        records = []
        items: dict[Any, BlockEstimates] = partial.items if partial is not None else {}
        for (target, (a, b)), estimates in sorted(items.items()):
            moments = estimates.moments()
            if moments.count == 0:
                continue
            stderr = moments.stderr()
            rows = round(float(moments.mean[-1]) * moments.count)
            for index, term in enumerate(PID_TERMS):
                records.append(
                    global_record(
                        self.name,
                        "pid",
                        float(moments.mean[index]),
                        rows,
                        float(stderr[index]),
                        term=term,
                        modalities=(a, b),
                        target=target,
                    )
                )
        return records + agreement_records(self.name, records)

    def report(self, run: RunData) -> Section | None:
        if run.rows(self.name, None, "pid").is_empty():
            return None
        parts = [
            paragraph(
                "PID BATCH (paper 003): the mean over scoring blocks of the block estimates, "
                "with the standard error across blocks, of the labels and (with a model) "
                "predictions."
            )
        ]
        series_by_pair: dict[tuple[str, str], dict[str, tuple[list[float], list]]] = {}
        for target in PID_TARGETS:
            values = run.pairs(self.name, "pid", target=target)
            errors = run.pairs(self.name, "pid", target=target, field="stderr")
            for pair, terms in values.items():
                series_by_pair.setdefault(pair, {})[_SERIES[target]] = (
                    [terms[t] for t in PID_TERMS],
                    [errors[pair][t] for t in PID_TERMS],
                )
        for (a, b), series in series_by_pair.items():
            parts.append(grouped_bars(PID_TERMS, series, f"PID BATCH of ({a}, {b})", "bits"))
        parts.append(agreement_table(run, self.name, AGREEMENT))
        return Section("PID (BATCH)", "".join(parts))


_SERIES = {"label": "labels", "pred": "model"}  # how the bars name each target

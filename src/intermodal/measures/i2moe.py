"""I2MoE (paper 002): an interpretable mixture of experts trained on a sample of labelled
rows (``measures.fusion``); per row the weight of each expert (``uni_<m>`` per modality,
``syn``, ``red``; non-negative, summing to 1), the class each expert predicts on its own and
the class the mixture predicts; for the dataset, each expert's mean weight (and, as for every
score column, its quantiles), each expert's accuracy and how often the experts agree and the
mixture is right (paper 002 §6.2, ``estimators.experts``).

Artifacts (``artifacts/i2moe/``): ``model.pt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, model_validator
from torch import nn

from intermodal import storage
from intermodal.charts.figures import box_plots, grouped_bars
from intermodal.charts.html import Section, paragraph
from intermodal.charts.run import RunData
from intermodal.estimators.experts import AGREEMENT_CELLS, expert_indicators
from intermodal.estimators.stats import Keyed, grouped_moments
from intermodal.measures.base import BatchOperator, CategoryRule, global_record, score_field
from intermodal.measures.fusion import FusionMeasure, fusion_inputs
from intermodal.models.i2moe import I2MoE as I2MoEModel
from intermodal.models.i2moe import expert_names
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.schemas.config import JobConfig, Strict
from intermodal.schemas.tables import LABEL

I2MOE_PRED = "i2moe_pred"  # score column: the class the I2MoE predicts
I2MOE_WEIGHT_PREFIX = "i2moe_w_"


def i2moe_expert_pred_column(expert: str) -> str:
    """Score column of the class one expert predicts on its own."""
    return f"{I2MOE_PRED}_{expert}"


def i2moe_weight_column(expert: str) -> str:
    """Score column of one I2MoE expert's weight (``uni_<m>``, ``syn``, ``red``)."""
    return f"{I2MOE_WEIGHT_PREFIX}{expert}"


class I2MoEConfig(Strict):
    """I2MoE (paper 002) trained on a sample of labelled rows; scores per-sample expert weights.

    ``warmup_epochs``: the first epochs train every expert on its own task loss before the
    re-weighting model is used; without them the re-weighting model learns the label itself
    and the weights say nothing about interactions. ``perturbation`` and ``gate_objective``:
    ours (``swap``, ``expected_loss``) or the paper's (``noise``, ``mixture``); why ours are
    the defaults is in docs/models.md, I2MoE findings."""

    backbone: Literal["mlp", "transformer"] = "mlp"
    hidden_dim: int = Field(default=32, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    interaction_weight: float = Field(default=2.0, ge=0)  # λ_int
    perturbation: Literal["swap", "noise"] = "swap"
    gate_objective: Literal["expected_loss", "mixture"] = "expected_loss"
    epochs: int = Field(default=10, ge=1)
    warmup_epochs: int = Field(default=5, ge=0)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    fit_rows: int = Field(default=100_000, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> I2MoEConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs}): "
                "the re-weighting model is trained only after the warm-up"
            )
        return self


def leader_shares(
    panels: dict[str, dict[str, np.ndarray]],
) -> dict[str, tuple[list[float], list[None]]]:
    """Per panel, the share of its samples whose largest weight is each expert's (as
    ``grouped_bars`` series, without error bars)."""
    shares = {}
    for name, weights in panels.items():
        stacked = np.column_stack(list(weights.values()))
        stacked = stacked[np.isfinite(stacked).all(axis=1)]
        leaders = np.bincount(stacked.argmax(axis=1), minlength=stacked.shape[1])
        shares[name] = ((leaders / max(len(stacked), 1)).tolist(), [None] * len(leaders))
    return shares


class I2MoE(FusionMeasure):
    name = "i2moe"
    section = "i2moe"
    settings = I2MoEConfig
    title = "I2MoE"
    partition_names = ("i2moe",)

    def experts(self, job: JobConfig) -> list[str]:
        return expert_names(job.modality_names)

    def build(self, job: JobConfig) -> nn.Module:
        settings = self.options(job)
        return I2MoEModel(
            job.modality_names,
            [m.size for m in job.modalities],
            num_classes=job.num_classes,
            backbone=settings.backbone,
            hidden_dim=settings.hidden_dim,
            temperature=settings.temperature,
            interaction_weight=settings.interaction_weight,
            perturbation=settings.perturbation,
            gate_objective=settings.gate_objective,
        )

    def warmup_epochs(self, job: JobConfig) -> int:
        return self.options(job).warmup_epochs

    def fields(self, job: JobConfig) -> list[pa.Field]:
        own = {f"uni_{m}": (m,) for m in job.modality_names}  # a uniqueness expert's modality
        return [
            *(
                score_field(
                    i2moe_weight_column(expert),
                    pa.float64(),
                    nullable=False,
                    term=expert,
                    modalities=own.get(expert, ()),
                )
                for expert in self.experts(job)
            ),
            pa.field(I2MOE_PRED, pa.int64(), nullable=False),
            *(
                pa.field(i2moe_expert_pred_column(expert), pa.int64(), nullable=False)
                for expert in self.experts(job)
            ),
        ]

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        model = self.load(job, shared.device).double()

        @torch.no_grad()
        def score(context: BatchContext) -> dict[str, Any]:
            inputs = fusion_inputs(job, context.batch, torch.float64, shared.device)
            result = model.interpret(inputs)
            weights = result["weights"].cpu().numpy()
            columns: dict[str, Any] = {
                i2moe_weight_column(expert): weights[:, index]
                for index, expert in enumerate(model.expert_names)
            }
            columns[I2MOE_PRED] = result["logits"].argmax(dim=-1).cpu().numpy()
            expert_classes = result["expert_logits"].argmax(dim=-1).cpu().numpy()
            for index, expert in enumerate(model.expert_names):
                columns[i2moe_expert_pred_column(expert)] = expert_classes[:, index]
            return columns

        return score

    def partial(
        self, job: JobConfig, scores: pa.Table, groups: Mapping[str, np.ndarray]
    ) -> Keyed | None:
        """Per group, the moments of the expert indicators (``estimators.experts``) over the
        labelled rows: their means are the accuracies and the agreement shares."""
        if job.label_column is None:
            return None
        labels = scores.column(LABEL)
        labelled = labels.is_valid().to_numpy(zero_copy_only=False)
        experts = np.column_stack(
            [scores.column(i2moe_expert_pred_column(e)).to_numpy() for e in self.experts(job)]
        )
        rows = expert_indicators(
            experts[labelled],
            scores.column(I2MOE_PRED).to_numpy()[labelled],
            labels.fill_null(-1).to_numpy()[labelled],
        )
        return Keyed(grouped_moments(rows, {k: v[labelled] for k, v in groups.items()}))

    def finalize(self, job: JobConfig, partial: Keyed | None, summaries: Any) -> list[dict]:
        """Per group, over labelled rows: ``expert_accuracy`` of each expert (term the expert),
        ``accuracy`` of the mixture, and ``expert_agreement`` with terms ``agree_correct``,
        ``agree_wrong``, ``disagree_correct``, ``disagree_wrong`` (shares summing to 1)."""
        if partial is None:
            return []
        experts = self.experts(job)
        statistics = [
            *(("expert_accuracy", expert) for expert in experts),
            ("accuracy", ""),
            *(("expert_agreement", cell) for cell in AGREEMENT_CELLS),
        ]
        records = []
        for group, moments in sorted(partial.items.items()):
            if moments.count == 0:
                continue
            stderr = moments.stderr()
            records += [
                global_record(
                    self.name,
                    statistic,
                    moments.mean[index],
                    moments.count,
                    stderr[index],
                    group,
                    term=term,
                    target=LABEL,
                )
                for index, (statistic, term) in enumerate(statistics)
            ]
        return records

    def report(self, run: RunData) -> Section | None:
        # the mean of each weight column, its term the expert
        experts = list(run.terms(self.name, "mean"))
        if not experts:
            return None
        weights = run.scores([i2moe_weight_column(expert) for expert in experts])
        panels = {"all samples": dict(zip(experts, weights.values(), strict=True))}
        labels = run.scores([LABEL]).get(LABEL)
        if labels is not None:
            for label in np.unique(labels[np.isfinite(labels)]):
                rows = labels == label
                panels[f"label = {label:g}"] = {
                    expert: values[rows]
                    for expert, values in zip(experts, weights.values(), strict=True)
                }
        text = (
            "I2MoE (paper 002): each sample's weights of the uniqueness (uni_<modality>), "
            "synergy and redundancy experts; they sum to 1. The bars count the samples each "
            "expert leads (has the largest weight); the box plots show the weights themselves. "
            "Mean weights per group and p10/p50/p90 of every weight column are in "
            "global/i2moe.parquet. The model was trained on a sample of the rows, which are "
            "scored in-sample."
        )
        shares = leader_shares(panels)
        leaders = grouped_bars(
            experts, shares, "I2MoE: share of samples each expert leads", "share"
        )
        figure = box_plots(panels, "I2MoE expert weights per sample", "weight")
        return Section("I2MoE", paragraph(text) + leaders + figure + self._experts(run))

    def _experts(self, run: RunData) -> str:
        """Each expert's accuracy on its own next to the mixture's, and the agreement shares
        (paper 002 §6.2), over the labelled rows."""
        accuracy = run.terms(self.name, "expert_accuracy")
        if not accuracy:
            return ""
        mixture = run.terms(self.name, "accuracy")
        names = [*accuracy, "mixture"]
        values = [*accuracy.values(), mixture.get("", np.nan)]
        bars = grouped_bars(
            names,
            {"accuracy": (values, [None] * len(names))},
            "I2MoE: accuracy of each expert alone and of the mixture (labelled rows)",
            "accuracy",
        )
        shares = run.terms(self.name, "expert_agreement")
        text = paragraph(
            "Experts agree on a row when every expert predicts the same class on its own: "
            + ", ".join(f"{cell.replace('_', ' ')} {share:.1%}" for cell, share in shares.items())
            + " of the labelled rows (the mixture correct or wrong)."
        )
        return bars + text

    def partition_rule(
        self, by: str, run_dir: str, scores_file: str, pair: tuple[str, str] | None
    ) -> CategoryRule:
        """``i2moe``: each row in the partition of its expert with the largest weight."""
        names = storage.parquet_file(scores_file).schema_arrow.names
        experts = tuple(
            n[len(I2MOE_WEIGHT_PREFIX) :] for n in names if n.startswith(I2MOE_WEIGHT_PREFIX)
        )
        if not experts:
            raise ValueError(
                f"{scores_file}: no I2MoE weight columns ({I2MOE_WEIGHT_PREFIX}<expert>); "
                "was i2moe measured?"
            )
        return CategoryRule(
            by=by,
            columns=tuple(i2moe_weight_column(e) for e in experts),
            names=experts,
            offsets=(0.0,) * len(experts),
            descriptions=tuple(f"largest I2MoE weight is {e}'s" for e in experts),
            missing="the I2MoE weights",
        )

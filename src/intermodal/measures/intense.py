"""InTense (paper 004): a fusion model with one block per modality subset, trained on a sample
of labelled rows (``measures.fusion``); per row each block's contribution to the logit of the
class InTense predicts, that class's bias and the class; for the dataset, each block's
relevance β (the trained model's, ‖β‖_p = 1) and its mean contribution.

Artifacts (``artifacts/intense/``): ``model.pt``.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa
import torch
from pydantic import Field, field_validator
from torch import nn

from intermodal.charts.figures import grouped_bars
from intermodal.charts.html import Section, paragraph
from intermodal.charts.run import RunData
from intermodal.measures.base import BatchOperator, global_record, score_field
from intermodal.measures.fusion import FusionMeasure, fusion_inputs
from intermodal.models.intense import InTense as InTenseModel
from intermodal.models.intense import term_members, term_names
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.schemas.config import JobConfig, Strict

INTENSE_BIAS = "intense_bias"  # score column: the predicted class's bias
INTENSE_PRED = "intense_pred"  # score column: the class InTense predicts


def intense_contribution_column(term: str) -> str:
    """Score column of one InTense block's contribution (``M1``, ``M1xM2``, ...)."""
    return f"intense_c_{term}"


class InTenseConfig(Strict):
    """InTense (paper 004) trained on a sample of labelled rows; scores per-sample block
    contributions. ``subsets``: modality name lists, one block each (default: every singleton
    and every pair)."""

    subsets: list[list[str]] | None = None
    hidden_dim: int = Field(default=32, ge=1)
    latent_dim: int = Field(default=4, ge=1)
    p: float = Field(default=1.0, ge=1)
    regularization: float = Field(default=0.05, ge=0)  # Λ of eq. 3
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    fit_rows: int = Field(default=100_000, ge=2)
    seed: int = 0

    @field_validator("subsets")
    @classmethod
    def _distinct_non_empty(cls, subsets: list[list[str]] | None) -> list[list[str]] | None:
        if subsets is None:
            return None
        if not subsets:
            raise ValueError("give at least one subset, or leave subsets unset for the default")
        for subset in subsets:
            if not subset or len(set(subset)) != len(subset):
                raise ValueError(f"every subset needs distinct modality names, got {subset}")
        return subsets


class InTense(FusionMeasure):
    name = "intense"
    section = "intense"
    settings = InTenseConfig
    title = "InTense"

    def check(self, job: JobConfig) -> None:
        super().check(job)
        subsets = self.options(job).subsets or []
        unknown = sorted({name for subset in subsets for name in subset} - set(job.modality_names))
        if unknown:
            raise ValueError(
                f"intense.subsets name {unknown}, not configured modalities "
                f"(modalities: {job.modality_names})"
            )
        keys = [frozenset(subset) for subset in subsets]
        if len(set(keys)) != len(keys):
            raise ValueError(f"intense.subsets lists a subset twice: {subsets}")

    def terms(self, job: JobConfig) -> list[str]:
        return term_names(job.modality_names, self.options(job).subsets)

    def members(self, job: JobConfig) -> list[tuple[str, ...]]:
        """The modalities of each block of ``terms``."""
        return term_members(job.modality_names, self.options(job).subsets)

    def build(self, job: JobConfig) -> nn.Module:
        settings = self.options(job)
        return InTenseModel(
            job.modality_names,
            [m.size for m in job.modalities],
            num_classes=job.num_classes,
            subsets=settings.subsets,
            hidden_dim=settings.hidden_dim,
            latent_dim=settings.latent_dim,
            p=settings.p,
            regularization=settings.regularization,
        )

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [
            *(
                score_field(
                    intense_contribution_column(term),
                    pa.float64(),
                    nullable=False,
                    term=term,
                    modalities=members,
                )
                for term, members in zip(self.terms(job), self.members(job), strict=True)
            ),
            score_field(INTENSE_BIAS, pa.float64(), nullable=False, term="bias"),
            pa.field(INTENSE_PRED, pa.int64(), nullable=False),
        ]

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        model = self.load(job, shared.device).double()

        @torch.no_grad()
        def score(context: BatchContext) -> dict[str, Any]:
            inputs = fusion_inputs(job, context.batch, torch.float64, shared.device)
            result = model.interpret(inputs)
            predicted = result["logits"].argmax(dim=-1)
            rows = torch.arange(len(predicted), device=predicted.device)
            contributions = result["contributions"][rows, :, predicted].cpu().numpy()  # [B, blocks]
            columns: dict[str, Any] = {
                intense_contribution_column(term): contributions[:, index]
                for index, term in enumerate(model.term_names)
            }
            columns[INTENSE_BIAS] = model.bias[predicted].cpu().numpy()
            columns[INTENSE_PRED] = predicted.cpu().numpy()
            return columns

        return score

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """Statistic ``relevance`` per block (term ``M1xM2``, modalities its members): the
        trained model's β_I, whole dataset, ``n`` the rows scored, no standard error; absent
        when no row was scored, so no model was trained. The mean contributions are the
        ``mean`` rows of the ``intense_c_<term>`` columns."""
        terms = self.terms(job)
        overall = summaries.get(intense_contribution_column(terms[0]))
        if overall is None or overall.count == 0:
            return []
        relevance = self.load(job).relevance().numpy()
        return [
            global_record(
                self.name, "relevance", value, overall.count, term=term, modalities=members
            )
            for term, members, value in zip(terms, self.members(job), relevance, strict=True)
        ]

    def report(self, run: RunData) -> Section | None:
        relevance = run.terms(self.name, "relevance")
        if not relevance:
            return None
        terms = list(relevance)
        columns = [intense_contribution_column(t) for t in terms]
        means = run.rows(self.name, "", "mean").filter(pl.col("column").is_in(columns))
        contributions = {
            term: (value, error)
            for term, value, error in means.select("term", "value", "stderr").iter_rows()
        }
        text = (
            "InTense (paper 004): the relevance β of each modality and interaction block "
            "(‖β‖_p = 1), and each block's mean contribution to the logit of the predicted "
            "class with its standard error."
        )
        figures = [
            grouped_bars(
                terms,
                {"relevance": (list(relevance.values()), [None] * len(terms))},
                "InTense relevance per term",
                "relevance β",
            ),
            grouped_bars(
                terms,
                {
                    "mean contribution": (
                        [contributions[t][0] for t in terms],
                        [contributions[t][1] for t in terms],
                    )
                },
                "InTense mean contribution to the predicted logit",
                "logit",
            ),
        ]
        return Section("InTense", paragraph(text) + "".join(figures))

"""InterSHAP (paper 000): per sample, the Shapley values of each modality, the Shapley
interaction matrix and local InterSHAP of the explained output, from the model's coalition
values; for the dataset, global InterSHAP and its breakdown from the mean matrix.

Its settings section ``intershap`` also says how masked modalities are replaced (``masking``,
``background_size``, ``background_uri``, ``seed``): that is the coalition pass every measure
reading coalition values shares (``operators.context``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from intermodal import storage
from intermodal.charts.figures import (
    INTERACTION_COLOUR,
    heatmap,
    histograms,
    stacked_bars,
    waterfall,
)
from intermodal.charts.html import Section, class_label, group_label, paragraph
from intermodal.charts.run import RunData
from intermodal.estimators.intershap import (
    dataset_terms,
    explained_values,
    interaction_column,
    interaction_pairs,
    intershap_columns,
    intershap_table,
    shapley_column,
    target_suffixes,
)
from intermodal.measures.base import (
    BatchOperator,
    Measure,
    Needs,
    global_record,
    score_field,
)
from intermodal.operators.context import BatchContext, SharedModel
from intermodal.schemas.config import JobConfig, SharedURI, Strict
from intermodal.schemas.tables import SAMPLE_ID

if TYPE_CHECKING:
    import shap

EXPLAINED_CLASS = "explained_class"
INTERACTIONS = "interactions"  # the feature name of all cross-modal terms in shap's plots


class InterSHAPConfig(Strict):
    # background: expectation over K rows; mean: one row, the background mean; zeros: zeros
    masking: Literal["background", "mean", "zeros"] = "background"
    background_size: int = Field(default=32, ge=1, le=4096)
    background_uri: SharedURI | None = None  # default: sampled from the input itself
    # predicted: the class predicted with all modalities (paper); label; all: every class
    target: Literal["predicted", "label", "all"] = "predicted"
    seed: int = 0
    # modalities masked by a constant instead of the rows above: a number fills a fixed-shape
    # modality (zeros for pixels); "empty" gives a variable-length one no steps (an all-false
    # mask, the pad value everywhere); the other modalities keep ``masking``
    baseline: dict[str, float | Literal["empty"]] = Field(default_factory=dict)


def check_baseline(job: JobConfig, baseline: Mapping[str, float | str]) -> None:
    """ValueError naming ``intershap.baseline`` when it names an unknown modality, gives a
    variable-length one a number or a fixed-shape one "empty", or a value its dtype lacks."""
    modalities = {m.name: m for m in job.modalities}
    for name, value in baseline.items():
        modality = modalities.get(name)
        key = f"intershap.baseline.{name}"
        if modality is None:
            raise ValueError(f"{key}: no such modality; modalities {sorted(modalities)}")
        if modality.variable != (value == "empty"):
            wanted = '"empty" (no steps)' if modality.variable else "a number"
            raise ValueError(
                f"{key} is {value!r}; modality '{name}' ({modality.kind}) needs {wanted}"
            )
        if modality.variable:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            unrepresentable = np.array(value).astype(modality.dtype) != value
        if unrepresentable:
            raise ValueError(f"{key} = {value} is not a {modality.dtype} value")


def statistic_columns(modalities: Sequence[str], suffix: str) -> list[str]:
    """The interaction matrix's upper triangle, then local InterSHAP, of one explained output:
    the columns whose means give the dataset terms."""
    pairs = interaction_pairs(modalities)
    return [
        *(interaction_column(modalities[i], modalities[j], suffix) for i, j in pairs),
        f"intershap_local{suffix}",
    ]


def explained_outputs(setting: str, num_classes: int) -> list[tuple[str, str]]:
    """``(column suffix, target)`` per explained output: the ``target`` of its global rows is
    the setting (``predicted``, ``label``), or ``class<k>`` per class with ``all``."""
    suffixes = target_suffixes(setting, num_classes)
    if setting != "all":
        return [(suffix, setting) for suffix in suffixes]
    return [(suffix, suffix.removeprefix("__")) for suffix in suffixes]


def column_terms(modalities: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``(term, modalities)`` of each column of ``intershap_columns``, in that order."""
    return [
        ("value_full", ()),
        ("value_empty", ()),
        *(("shapley", (m,)) for m in modalities),
        *(
            ("interaction", (modalities[i], modalities[j]))
            for i, j in interaction_pairs(modalities)
        ),
        ("local", ()),
    ]


class InterSHAP(Measure):
    name = "intershap"
    section = "intershap"
    settings = InterSHAPConfig
    title = "InterSHAP"

    def check(self, job: JobConfig) -> None:
        if job.model is None:
            raise ValueError("measure 'intershap' needs a model")
        if self.options(job).target == "label" and job.label_column is None:
            raise ValueError("intershap.target 'label' needs label_column")
        check_baseline(job, self.options(job).baseline)
        others = [m.name for m in job.modalities if not m.float_features]
        if self.options(job).masking == "mean" and others:
            raise ValueError(
                f"intershap.masking 'mean' averages rows, which {others} (integer or variable "
                "length) have no meaning for: use masking background or zeros"
            )

    def needs(self, job: JobConfig) -> Needs:
        return Needs(model=True, coalitions=True)

    def label_reason(self, job: JobConfig) -> str | None:
        return "the label is explained" if self.options(job).target == "label" else None

    def _outputs(self, job: JobConfig) -> list[tuple[str, str]]:
        return explained_outputs(self.options(job).target, job.num_classes)

    def fields(self, job: JobConfig) -> list[pa.Field]:
        setting = self.options(job).target
        names = job.modality_names
        fields = []
        for suffix, target in self._outputs(job):
            if setting != "all":
                fields.append(pa.field(EXPLAINED_CLASS, pa.int64(), nullable=False))
            columns = zip(intershap_columns(names, suffix), column_terms(names), strict=True)
            fields += [
                score_field(name, pa.float64(), False, term, modalities, target)
                for name, (term, modalities) in columns
            ]
        return fields

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        target = self.options(job).target

        def score(context: BatchContext) -> dict[str, Any]:
            labels = context.labels if target == "label" else None
            values, classes = explained_values(context.coalitions, target, labels)
            columns: dict[str, Any] = {}
            if classes is not None:
                columns[EXPLAINED_CLASS] = classes.astype(np.int64)
            columns.update(intershap_table(values, job.modality_names, target, job.num_classes))
            return columns

        return score

    def finalize(self, job: JobConfig, partial: Any, summaries: Any) -> list[dict]:
        """Per explained output (``target``) and group: global InterSHAP and its breakdown
        (statistic ``intershap``, ``estimators.intershap.dataset_terms``) from the mean
        interaction matrix. The means of local InterSHAP and of the matrix are the ``mean``
        rows of their columns."""
        records = []
        for suffix, target in self._outputs(job):
            columns = statistic_columns(job.modality_names, suffix)
            for group in summaries.groups():
                found = [summaries.get(column, group) for column in columns]
                if any(summary is None or summary.count == 0 for summary in found):
                    continue
                means = np.array([summary.mean for summary in found])
                records += [
                    global_record(
                        self.name,
                        "intershap",
                        value,
                        found[0].count,
                        None,
                        group,
                        term=term,
                        modalities=modalities,
                        target=target,
                    )
                    for term, modalities, value in dataset_terms(means[:-1], job.modality_names)
                ]
        return records

    def report(self, run: RunData) -> Section | None:
        if self.name not in run.measures or run.rows(self.name).is_empty():
            return None
        parts = [
            paragraph(
                "InterSHAP (paper 000): the share of the model's behaviour (the absolute mean "
                "Shapley interaction matrix) that comes from each modality alone and from "
                "cross-modal interactions, for all samples and per predicted class; the mean "
                "interaction matrix; the mean prediction as a waterfall; per-sample scores."
            )
        ]
        settings = run.config[self.name]
        for suffix, target in explained_outputs(settings["target"], run.config["num_classes"]):
            columns = [
                f"intershap_local{suffix}",
                f"intershap_value_full{suffix}",
                *(shapley_column(m, suffix) for m in run.modalities),
            ]
            parts += [
                self._breakdown(run, suffix, target),
                heatmap(
                    self._mean_matrix(run, target),
                    run.modalities,
                    f"Mean interaction matrix{class_label(suffix)}",
                ),
                self._mean_waterfall(run, suffix, target),
                histograms(
                    run.scores(columns), f"Per-sample InterSHAP scores{class_label(suffix)}"
                ),
            ]
        return Section("InterSHAP", "".join(parts))

    def _breakdown(self, run: RunData, suffix: str, target: str) -> str:
        """Fractions of the behaviour from each modality and from interactions (eq. 9), for
        the whole dataset and per predicted class."""
        groups = [g for g in run.groups(self.name, "intershap", target) if g[0] in ("", "pred")]
        segments: dict[str, list[float]] = {m: [] for m in run.modalities}
        segments["interactions"] = []
        for group_by, group in groups:
            values = run.values(self.name, "intershap", group_by, group, target)
            for m in run.modalities:
                segments[m].append(values.get(("modality", (m,)), np.nan))
            segments["interactions"].append(values.get(("global", ()), np.nan))
        return stacked_bars(
            [group_label(*g) for g in groups],
            segments,
            f"InterSHAP breakdown{class_label(suffix)}: modalities vs interactions",
            "fraction of the model's behaviour",
            {"interactions": INTERACTION_COLOUR},
        )

    def _mean_matrix(self, run: RunData, target: str) -> np.ndarray:
        """The mean interaction matrix: the ``mean`` rows of the ``interaction`` columns."""
        names = run.modalities
        values = run.values(self.name, "mean", target=target)
        matrix = np.zeros((len(names), len(names)))
        for i, j in interaction_pairs(names):
            matrix[i, j] = matrix[j, i] = values[("interaction", (names[i], names[j]))]
        return matrix

    def _mean_waterfall(self, run: RunData, suffix: str, target: str) -> str:
        """Paper 000 Fig. 2: the mean prediction built from v(∅), each modality's main effect
        and the interactions (means over samples of the per-sample decomposition)."""
        names = run.modalities
        matrix = self._mean_matrix(run, target)
        empty = run.scores([f"intershap_value_empty{suffix}"])[f"intershap_value_empty{suffix}"]
        contributions = {m: float(matrix[i, i]) for i, m in enumerate(names)}
        contributions["interactions"] = float(matrix.sum() - np.trace(matrix))
        return waterfall(
            float(np.mean(empty)),
            contributions,
            f"Mean decomposition of the explained probability{class_label(suffix)}",
            "probability of the explained class",
        )


def _import_shap() -> Any:
    try:
        import shap
    except ImportError as error:
        raise ImportError(
            "to_shap_explanation needs the 'shap' package: pip install 'intermodal[shap]'"
        ) from error
    return shap


def to_shap_explanation(
    run_dir: str, sample_ids: Sequence[object] | None = None, suffix: str = ""
) -> shap.Explanation:
    """InterSHAP of a run's samples as a ``shap.Explanation`` for shap's waterfall and force
    plots (paper 000 §4.3): one value per modality, its main effect φ_mm, and one for all
    cross-modal interactions, Σ_{a≠b} φ_ab; ``base_values`` is v(∅). For every sample
    ``base_values + values.sum()`` is v(all), the explained probability.

    Rows are in ``sample_id`` order; ``sample_ids`` selects samples (default: all of
    ``scores/``, held in memory); ``suffix`` picks the explained class of a ``target: all``
    run (``"__class1"``).
    """
    shap = _import_shap()
    config = storage.read_json(storage.join(run_dir, "manifest.json"))["config"]
    if InterSHAP.name not in config["measures"]:
        raise ValueError(f"{run_dir}: InterSHAP was not measured (measures: {config['measures']})")
    modalities = [m["name"] for m in config["modalities"]]
    pairs = interaction_pairs(modalities)
    full, empty = f"intershap_value_full{suffix}", f"intershap_value_empty{suffix}"
    matrix = [interaction_column(modalities[i], modalities[j], suffix) for i, j in pairs]
    fs, path = storage.filesystem(storage.join(run_dir, "scores"))
    table = pq.read_table(
        path,
        columns=[SAMPLE_ID, full, empty, *matrix],
        filters=None if sample_ids is None else pc.field(SAMPLE_ID).isin(list(sample_ids)),
        filesystem=storage.arrow_filesystem(fs),
    ).sort_by(SAMPLE_ID)
    terms = {name: table.column(name).to_numpy() for name in matrix}
    main = [terms[interaction_column(m, m, suffix)] for m in modalities]
    # the scores keep the upper triangle: each off-diagonal φ_ab stands for φ_ab and φ_ba
    cross = sum(
        (
            2 * terms[interaction_column(modalities[i], modalities[j], suffix)]
            for i, j in pairs
            if i != j
        ),
        start=np.zeros(table.num_rows),
    )
    return shap.Explanation(
        values=np.column_stack([*main, cross]),
        base_values=table.column(empty).to_numpy(),
        feature_names=[*modalities, INTERACTIONS],
    )

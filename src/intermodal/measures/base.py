"""What a measure is, and the values it hands the generic layers.

A measure is one object (a ``Measure`` subclass) that owns, in one module: its settings
section, what it needs, its score columns, its fitted artifacts (fit, save, load), its batch
operator, its partial statistics and how they become global rows, and its report section.
The generic layers (``pipelines``, ``report``, ``cli``, ``export``) loop over the registry
(``intermodal.measures.MEASURES``) and call these methods; none of them spells a measure's
name. Array shapes: B rows in a batch, M modalities, C classes, 2**M coalitions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from intermodal.models.artifacts import artifact_folder
from intermodal.models.training import FitWorkers, InlineWorkers
from intermodal.progress import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import global_record, global_table

if TYPE_CHECKING:
    from intermodal.charts.html import Section
    from intermodal.charts.run import RunData
    from intermodal.operators.context import BatchContext, SharedModel

# what measures use from below, in one place
__all__ = ["FitWorkers", "InlineWorkers", "Progress", "global_record", "global_table"]
# One operator call: a batch's context → the measure's own score columns, in field order.
BatchOperator = Callable[["BatchContext"], dict[str, Any]]


@dataclass(frozen=True)
class Needs:
    """What a measure needs of the job and of the shared per-batch work."""

    model: bool = False  # the configured model (its predictions, encoders, or coalitions)
    coalitions: bool = False  # the model's masked coalition values p(y | x_S), background rows


@dataclass(frozen=True)
class FitSample:
    """The rows a fit learns from: ``rows`` valid rows drawn uniformly with ``seed``, only
    labelled ones when ``labelled``; fewer than ``minimum`` is an error naming ``purpose``."""

    rows: int
    seed: int
    minimum: int
    purpose: str
    labelled: bool = True


Training = TypeVar("Training")


def training_settings(kind: type[Training], *sections: BaseModel, **values: Any) -> Training:
    """The one way a measure's settings become a training config: the dataclass ``kind``
    (``ClassifierTraining``, ``KnifeConfig``, ``EncoderTraining``, ``FusionTrainConfig``...)
    with each of its fields that a settings section has (later sections win), then
    ``values``."""
    names = {f.name for f in dataclass_fields(kind)}  # type: ignore[arg-type]
    chosen: dict[str, Any] = {}
    for section in sections:
        chosen.update(section.model_dump(include=names))
    return kind(**{**chosen, **values})


class Partial(Protocol):
    """A measure's mergeable statistics of some score rows: ``merge`` is associative and
    commutative, so blocks are summarised anywhere and merged in any order."""

    def merge(self, other: Self) -> Self: ...


# field metadata keys of what a score column's statistics are of (``score_field``)
FACT_KEYS = {
    "term": b"intermodal.term",
    "modalities": b"intermodal.modalities",
    "target": b"intermodal.target",
}


@dataclass(frozen=True)
class ColumnFacts:
    """What the statistics of a score column are of, copied into their global rows:
    ``term`` (``R``, an expert, a block, ``shapley``...), the ``modalities`` it is about and
    the ``target`` (``label``, ``pred``, InterSHAP's explained output); empty where none."""

    term: str = ""
    modalities: tuple[str, ...] = ()
    target: str = ""


def score_field(
    name: str,
    type_: pa.DataType,
    nullable: bool = True,
    term: str = "",
    modalities: Sequence[str] = (),
    target: str = "",
) -> pa.Field:
    """A score column (``Measure.fields``) carrying, as field metadata, the facts its global
    statistics are labelled with (``column_facts``)."""
    facts = {"term": term, "modalities": json.dumps(list(modalities)), "target": target}
    metadata = {FACT_KEYS[key]: value.encode() for key, value in facts.items()}
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


def column_facts(field: pa.Field) -> ColumnFacts:
    """The facts ``score_field`` set on ``field`` (empty ones for a plain field)."""
    metadata = field.metadata or {}
    text = {key: metadata.get(name, b"").decode() for key, name in FACT_KEYS.items()}
    modalities = tuple(json.loads(text["modalities"])) if text["modalities"] else ()
    return ColumnFacts(text["term"], modalities, text["target"])


def require_float_features(job: JobConfig, measure: str, reads: str) -> None:
    """ValueError when a modality is not a fixed-size float vector, which ``reads`` (what the
    measure computes on them) needs: one line naming the modalities and the way out."""
    others = [f"{m.name} ({m.kind})" for m in job.modalities if not m.float_features]
    if others:
        raise ValueError(
            f"measure '{measure}' {reads}, which needs fixed-size float modalities; "
            f"{', '.join(others)} are not: score them through the model's encoder features "
            "(intershap, or lsmi or pid_batch with features: encoder), or give this measure float "
            "features of them (e.g. embeddings written by your encoder)"
        )


class Measure:
    """Base of every measure. Subclasses set ``name`` (and ``section``/``settings`` when they
    have settings) and override what they do; the defaults mean "nothing to do"."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the job config key of its settings
    settings: ClassVar[type[BaseModel] | None] = None  # the model of that section
    former_section: ClassVar[str | None] = None  # its key before a rename, read for a release
    title: ClassVar[str] = ""  # for people: progress lines, report headings

    # --- the job -----------------------------------------------------------------------------

    def check(self, job: JobConfig) -> None:
        """Raise ValueError when the job cannot run this measure (say which key to set)."""

    def needs(self, job: JobConfig) -> Needs:
        return Needs()

    def label_reason(self, job: JobConfig) -> str | None:
        """Why every scored row needs a label under these settings (rows without one are
        rejected with this reason); None when rows without a label can be scored."""
        return None

    def options(self, job: JobConfig) -> Any:
        """This measure's settings section of ``job``."""
        if self.section is None:
            raise ValueError(f"measure '{self.name}' has no settings")
        return job.section(self.section)

    def folder(self, job: JobConfig) -> str:
        """``<output>/artifacts/<name>``: where its fitted artifacts live."""
        return artifact_folder(job.output, self.name)

    # --- score columns -----------------------------------------------------------------------

    def fields(self, job: JobConfig) -> list[pa.Field]:
        """Its score columns, in table order."""
        return []

    # --- fitting -----------------------------------------------------------------------------

    def fit_sample(self, job: JobConfig) -> FitSample | None:
        """The sample its fit learns from; None when it fits nothing."""
        return None

    def fit_key(self, job: JobConfig) -> dict:
        """What its artifacts depend on besides the input and the modalities (recorded next
        to them; a change means refitting)."""
        return self.options(job).model_dump(mode="json") if self.section else {}

    def fit(
        self, job: JobConfig, sample: pa.Table, progress: Progress, workers: FitWorkers
    ) -> None:
        """Learn from ``sample`` (normalised rows) and save under ``folder(job)``; independent
        parts go through ``workers`` (``InlineWorkers`` runs them in this process)."""

    def describe_artifacts(self, job: JobConfig) -> dict:
        """Facts about its fitted artifacts for the run's manifest."""
        return {}

    # --- scoring -----------------------------------------------------------------------------

    def operator(self, job: JobConfig, shared: SharedModel) -> BatchOperator:
        """Called once per actor: load what scoring needs, return the per-batch function."""
        raise NotImplementedError(f"measure '{self.name}' writes no score columns")

    # --- aggregation -------------------------------------------------------------------------

    def partial(
        self, job: JobConfig, scores: pa.Table, groups: Mapping[str, np.ndarray]
    ) -> Partial | None:
        """Its own statistics of some score rows (``groups``: the breakdown columns as text),
        beyond the column summaries every score column gets; None when it keeps none."""
        return None

    def finalize(self, job: JobConfig, partial: Partial | None, summaries: Any) -> list[dict]:
        """Its own global rows (``global_record``) from its merged ``partial`` and the merged
        column summaries of every score column (``estimators.stats.ColumnSummaries``). Every
        float score column already gets its ``mean`` and quantiles, labelled with the facts of
        its field (``score_field``): write no row that repeats one of those."""
        return []

    # --- reading a run -----------------------------------------------------------------------

    def report(self, run: RunData) -> Section | None:
        """Its section of the HTML report; None when the run has nothing of it."""
        return None

    # --- exports -----------------------------------------------------------------------------

    export_names: ClassVar[tuple[str, ...]] = ()  # the ``intermodal export`` names it offers

    def export(
        self,
        name: str,
        run_dirs: Sequence[str],
        scores_files: Sequence[str],
        reads: Sequence[Sequence[str]] = (),
    ) -> RowExport:
        """The export ``name`` (one of ``export_names``) of the runs ``run_dirs`` (most exports
        take one; ``scores_files``: one score file of each, to read the columns present;
        ``reads``: the modalities each run's model reads, in run order, where the user said);
        ValueError naming what is missing."""
        raise ValueError(f"measure '{self.name}' offers no export '{name}'")

    # --- partitions --------------------------------------------------------------------------

    partition_names: ClassVar[tuple[str, ...]] = ()  # the ``--by`` values it offers

    def partition_rule(
        self, by: str, run_dir: str, scores_file: str, pair: tuple[str, str] | None
    ) -> CategoryRule:
        """The rule of one of its ``partition_names`` for a run (``scores_file``: one of its
        score files, to read the columns present); ValueError naming what is missing."""
        raise ValueError(f"measure '{self.name}' offers no partition '{by}'")


@dataclass(frozen=True)
class RowExport:
    """A per-sample table a measure offers to later jobs (``intermodal export <name>``): the
    score columns it reads, and a pure function of a batch of them (a Ray Data stage; its
    ``options`` travel to the workers) returning ``sample_id`` and its own columns. ``facts``
    go to the summary file beside the output. An export of several runs prepares its ``rows``
    on the driver (the runs' columns joined on ``sample_id``); the stage then reads those
    instead of a run's scores."""

    name: str
    columns: tuple[str, ...]  # score columns read, besides sample_id
    transform: Callable[[pa.Table, Any], pa.Table]
    options: Any
    facts: dict
    rows: pa.Table | None = None


@dataclass(frozen=True)
class CategoryRule:
    """A partition a measure offers to ``intermodal partition --by <by>``: each row goes to the
    category of its largest ``column + offset`` (the first of equal ones), or to the null
    partition where any of them is null or NaN."""

    by: str
    columns: tuple[str, ...]  # score columns read
    names: tuple[str, ...]  # the category of each column
    offsets: tuple[float, ...]  # added to each column before comparing
    descriptions: tuple[str, ...]  # the rule of each category, for partitions.json
    missing: str  # what a row of the null partition lacks, for people

    def assign(self, batch: pa.Table, null_name: str) -> np.ndarray:
        """The category name of every row of ``batch``."""
        values = np.column_stack(
            [
                batch.column(column).cast(pa.float64()).to_numpy() + offset
                for column, offset in zip(self.columns, self.offsets, strict=True)
            ]
        )
        labels = np.array([*self.names, null_name])
        index = np.where(
            np.isnan(values).any(axis=1),
            len(self.names),
            np.argmax(np.nan_to_num(values, nan=-np.inf), axis=1),
        )
        return labels[index]

"""The job configuration: pydantic models loaded from YAML, every key validated.

Unknown keys are errors (a typo must not silently fall back to a default); messages name the
file and the dotted key.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

import fsspec
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and the key."""


class Strict(BaseModel):
    """A settings model: unknown keys are errors and values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _shared_uri(uri: str | None) -> str | None:
    """A URI that Ray's worker processes read too: not ``memory://``, which lives inside one
    process (fine for tests of storage helpers, never for a job)."""
    if uri is not None and uri.startswith("memory://"):
        raise ValueError(
            f"'{uri}': memory:// lives inside one process and Ray's workers cannot read it; "
            "use a local path, file://, or an object store URI such as s3://"
        )
    return uri


SharedURI = Annotated[str, AfterValidator(_shared_uri)]


# the tensor types a modality may be given to the model as (numpy / torch names)
ModalityDtype = Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"]


class ModalityConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    column: str | None = None  # input column; defaults to the name
    # the model's per-sample tensor shape; a leading null makes the first axis variable
    # (a sequence of steps, e.g. token ids), padded to max_length with a mask beside it
    shape: list[int | None] = Field(min_length=1)
    dtype: ModalityDtype = "float32"  # the tensor type the model receives
    max_length: int | None = Field(default=None, ge=1)  # steps of a variable first axis
    pad_value: float = 0  # what fills the steps after a row's end
    truncate: bool = False  # a row longer than max_length: cut (true) or rejected (false)

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def variable(self) -> bool:
        """Whether the first axis varies from row to row (``shape: [null, ...]``)."""
        return self.shape[0] is None

    @property
    def step_size(self) -> int:
        """Values per step of the first axis (1 for ``[null]``; ``prod(shape)`` if fixed)."""
        return _product(self.shape[1:]) if self.variable else self.size

    @property
    def tensor_shape(self) -> list[int]:
        """The per-row shape of the tensor the model receives (``max_length`` steps if
        variable)."""
        first = self.max_length if self.variable else self.shape[0]
        return [int(first or 0), *(int(extent or 0) for extent in self.shape[1:])]

    @property
    def size(self) -> int:
        """Values per row of the model's tensor (padded to ``max_length`` if variable)."""
        return _product(self.tensor_shape)

    @property
    def float_features(self) -> bool:
        """Whether the modality is a fixed-size float vector, what the estimators that fit on
        features (k-means, KNIFE, the measures' own networks) read."""
        return self.dtype.startswith("float") and not self.variable

    @property
    def kind(self) -> str:
        """How messages name the modality's type: ``float32``, ``int64, variable length``."""
        return f"{self.dtype}, variable length" if self.variable else self.dtype

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int | None]) -> list[int | None]:
        if any(extent is None for extent in shape[1:]):
            raise ValueError(f"only the first axis may be null (variable), got {shape}")
        if any(extent is not None and extent <= 0 for extent in shape):
            raise ValueError(f"every extent must be positive, got {shape}")
        return shape

    @model_validator(mode="after")
    def _padding(self) -> ModalityConfig:
        if self.variable != (self.max_length is not None):
            raise ValueError(
                "a variable first axis (shape: [null, ...]) needs max_length, and max_length "
                f"needs one; got shape {self.shape}, max_length {self.max_length}"
            )
        if self.truncate and not self.variable:
            raise ValueError("truncate applies to a variable first axis (shape: [null, ...])")
        if not self.dtype.startswith("float"):
            low, high = _integer_range(self.dtype)
            if self.pad_value != int(self.pad_value) or not low <= self.pad_value <= high:
                raise ValueError(f"pad_value {self.pad_value} is not a {self.dtype} value")
        return self


def _product(extents: list[int | None]) -> int:
    size = 1
    for extent in extents:
        size *= extent or 0
    return size


def _integer_range(dtype: str) -> tuple[int, int]:
    """The smallest and largest value of an integer ``ModalityDtype``."""
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    if dtype.startswith("u"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


ENTRYPOINT = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # package.module:function


class ModelConfig(Strict):
    name: str  # recorded in the manifest and the demo tables
    factory: str = Field(pattern=ENTRYPOINT)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: SharedURI | None = None  # URI of a state_dict, loaded with weights_only=True
    # run on every batch of raw modality columns where rows are read (decode images, tokenize
    # text), before the row checks: returns each modality's values (docs/usage.md)
    preprocess: str | None = Field(default=None, pattern=ENTRYPOINT)
    preprocess_kwargs: dict[str, Any] = Field(default_factory=dict)


class ActorRange(Strict):
    """An elastic pool: Ray Data starts ``initial`` actors (default ``min``), keeps at least
    ``min`` and adds more, up to ``max``, while batches wait. A GPU pool on an autoscaling
    cluster sets ``initial`` so it does not ramp up from one actor."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)
    initial: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial ({self.initial}) must lie between min ({self.min}) and max ({self.max})"
            )
        return self


class FitResources(Strict):
    """What each part of a fit (one model of a measure) asks of the cluster."""

    cpus: float = Field(default=1, ge=1)  # also its torch threads (whole CPUs)
    gpus: float = Field(default=0, ge=0)


class ComputeConfig(Strict):
    batch_size: int = Field(default=1024, ge=1)
    # a fixed pool size, {min, max, initial} for an elastic pool, or auto: from 1 up to as many
    # actors as the cluster can reach (its autoscaler's node types at their maximum counts, else
    # the nodes alive) hold while one CPU stays free for reading and writing
    actors: int | ActorRange | Literal["auto"] = "auto"
    # what scores: Ray tasks (each reads, validates, scores and writes one shard in a worker
    # process that keeps the built operator for the run's next shards), or a pool of actors
    # fed by separate read and write tasks; auto: actors when they hold GPUs, else tasks
    score_on: Literal["auto", "tasks", "actors"] = "auto"
    cpus_per_actor: float = Field(default=1, gt=0)
    gpus_per_actor: float = Field(default=0, ge=0)
    # torch threads per actor; default: the actor's CPUs (Ray pins OMP_NUM_THREADS to them)
    torch_threads: int | None = Field(default=None, ge=1)
    fit: FitResources = FitResources()
    # on an autoscaling cluster: how long the job waits for the nodes its actors need before
    # it fails (a GPU group scaling from zero takes minutes to boot)
    wait_for_nodes_seconds: float = Field(default=900, ge=0)
    # the autoscaler's node types in the cluster launcher's YAML (`available_node_types`),
    # when Ray does not report them itself; default: ~/ray_bootstrap_config.yaml if present
    autoscaler_config: str | None = None

    @property
    def scores_on_tasks(self) -> bool:
        """Whether the score stage runs as tasks (``score_on``, ``auto`` resolved)."""
        if self.score_on == "auto":
            return self.gpus_per_actor == 0
        return self.score_on == "tasks"

    @field_validator("actors", mode="before")
    @classmethod
    def _pool(cls, value: Any) -> Any:
        """One message for the three forms, rather than one per form of the union."""
        if value == "auto" or isinstance(value, ActorRange):
            return value
        if isinstance(value, dict):
            try:
                return ActorRange.model_validate(value)
            except ValidationError as error:
                raise ValueError(error.errors()[0]["msg"]) from None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(
            f"expected a pool size >= 1, {{min, max, initial}} or 'auto', got {value!r}"
        )


class MeasureSpec(Protocol):
    """What validating a job needs of a measure (``intermodal.measures.Measure`` is one): its
    name, the key and pydantic model of its settings section (None: it has none), a check of
    the job as a whole (raises ValueError for settings it cannot run with), and why every
    scored row needs a label under the job's settings (None when it does not)."""

    name: ClassVar[str]
    section: ClassVar[str | None]
    settings: ClassVar[type[BaseModel] | None]
    former_section: ClassVar[str | None]  # the section's key before a rename, still read

    def check(self, job: JobConfig) -> None: ...

    def label_reason(self, job: JobConfig) -> str | None: ...


# The measures a job is validated against: ``intermodal.measures.MEASURES``, passed in by
# ``intermodal.measures.parse_config`` as the validation context (measures sit above schemas
# in the layering, so this module never imports them).
Registry = Mapping[str, MeasureSpec]


def _registry(info: ValidationInfo) -> Registry:
    registry = (info.context or {}).get("measures")
    if registry is None:
        raise TypeError(
            "a job config is validated against the registered measures: use "
            "intermodal.measures.parse_config (or pass context={'measures': MEASURES})"
        )
    return registry


def measure_sections(registry: Registry) -> dict[str, type[BaseModel]]:
    """Each measure's settings key and model."""
    return {
        m.section: m.settings
        for m in registry.values()
        if m.section is not None and m.settings is not None
    }


class JobConfig(BaseModel):
    """A job. Keys other than the fields below are measures' settings sections (``lsmi:``,
    ``pid:``...), each validated by its measure's model; any other key is an error."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dataset: str  # a name for the manifest and tables
    input: SharedURI  # fsspec URI of a Parquet file, a directory of shards, or a glob
    # parquet, arrow (Hugging Face save_to_disk) or lance; auto: from the URI (formats.py)
    input_format: Literal["auto", "parquet", "arrow", "lance"] = "auto"
    output: SharedURI  # run directory URI
    id_column: str = "sample_id"
    label_column: str | None = "label"
    group_columns: list[str] = Field(default_factory=list)
    num_classes: int = Field(ge=2)
    modalities: list[ModalityConfig] = Field(min_length=2)
    measures: list[str] = Field(default=["intershap"], min_length=1, validate_default=True)
    model: ModelConfig | None = None
    # the run fails (non-zero exit) when fewer rows are scored than this share of the input;
    # a run that scores no row always fails
    min_scored_fraction: float = Field(default=0.0, ge=0, le=1)
    compute: ComputeConfig = ComputeConfig()
    _label_reasons: list[str] = PrivateAttr(default_factory=list)

    @property
    def modality_names(self) -> list[str]:
        return [modality.name for modality in self.modalities]

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else "none"

    @property
    def label_reasons(self) -> list[str]:
        """Why rows without a label cannot be scored (empty when they can); worked out at
        validation, so workers that lack a measure the driver registered can read it."""
        return list(self._label_reasons)

    @property
    def targets(self) -> list[str]:
        """Score columns that PID-style measures decompose: the label when there is one, the
        prediction when there is a model."""
        return [*(["label"] if self.label_column else []), *(["pred"] if self.model else [])]

    @field_validator("measures")
    @classmethod
    def _registered(cls, measures: list[str], info: ValidationInfo) -> list[str]:
        known = _registry(info)
        unknown = [m for m in measures if m not in known]
        if unknown:
            raise ValueError(f"unknown measure(s) {unknown}; known: {', '.join(known)}")
        return measures

    def without_sections(self) -> JobConfig:
        """This job without its measures' settings sections: what reading and validating rows
        needs. A read task that gets it unpickles no measure module (their settings models live
        there, and the measures import torch: seconds in every fresh worker)."""
        reading = JobConfig.model_construct(
            **{name: getattr(self, name) for name in self.model_fields}
        )
        reading._label_reasons = list(self._label_reasons)
        return reading

    def section(self, key: str) -> Any:
        """A measure's settings section (its defaults when the job does not set it)."""
        return getattr(self, key)

    @model_validator(mode="before")
    @classmethod
    def _validate_sections(cls, data: Any, info: ValidationInfo) -> Any:
        """Each measure's section through its own model; unknown keys are errors, reported
        with their dotted keys like every other error."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        registry = _registry(info)
        for measure in registry.values():
            if measure.former_section in data and measure.section not in data:
                warnings.warn(
                    f"config key '{measure.former_section}' is now '{measure.section}' "
                    "(the old key is read until the next release)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                data[measure.section] = data.pop(measure.former_section)
        sections = measure_sections(registry)
        errors: list[Any] = []
        for key, value in list(data.items()):
            if key in cls.model_fields:
                continue
            if key not in sections:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
                continue
            try:
                data[key] = sections[key].model_validate(value)
            except ValidationError as error:
                errors += [{**item, "loc": (key, *item["loc"])} for item in error.errors()]
        for key, model in sections.items():
            data.setdefault(key, model())
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> JobConfig:
        names = self.modality_names
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if len(names) > 10:
            raise ValueError(f"at most 10 modalities (2**M coalitions), got {len(names)}")
        if len(set(self.measures)) != len(self.measures):
            raise ValueError(f"measures must be unique, got {self.measures}")
        registry = _registry(info)
        for measure in self.measures:
            registry[measure].check(self)
        reasons = [registry[m].label_reason(self) for m in self.measures]
        self._label_reasons = [reason for reason in reasons if reason is not None]
        return self


def _format(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def validate_config(data: Any, source: str, measures: Registry) -> JobConfig:
    """Validate a mapping as a job config against ``measures``; errors name ``source`` and the
    dotted key. Callers use ``intermodal.measures.parse_config``, which passes the registry."""
    try:
        return JobConfig.model_validate(data, context={"measures": measures})
    except ValidationError as error:
        raise ConfigError(_format(error, source)) from None


def read_config(uri: str | Path) -> Any:
    """The YAML mapping of a job config at a path or fsspec URI, not yet validated."""
    try:
        with fsspec.open(str(uri), "r") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{uri}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None


def dump_config(config: JobConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

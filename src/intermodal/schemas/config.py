"""The job configuration: pydantic models loaded from YAML, every key validated.

Unknown keys are errors (a typo must not silently fall back to a default); messages name the
file and the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import fsspec
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
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


class ModalityConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    column: str | None = None  # input column; defaults to the name
    shape: list[int] = Field(min_length=1)  # the model's per-sample tensor shape

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def size(self) -> int:
        size = 1
        for extent in self.shape:
            size *= extent
        return size

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if any(extent <= 0 for extent in shape):
            raise ValueError(f"every extent must be positive, got {shape}")
        return shape


class ModelConfig(_Strict):
    name: str  # recorded in the manifest and the demo tables
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:function
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: SharedURI | None = None  # URI of a state_dict, loaded with weights_only=True


class InterSHAPConfig(_Strict):
    # background: expectation over K rows; mean: one row, the background mean; zeros: zeros
    masking: Literal["background", "mean", "zeros"] = "background"
    background_size: int = Field(default=32, ge=1, le=4096)
    background_uri: SharedURI | None = None  # default: sampled from the input itself
    # predicted: the class predicted with all modalities (paper); label; all: every class
    target: Literal["predicted", "label", "all"] = "predicted"
    seed: int = 0


class PIDConfig(_Strict):
    """Codebooks for the exact PID (paper 003 App. C.4): k-means per modality, histograms for
    scalar modalities, fitted on a uniform sample of ``fit_rows`` valid rows."""

    n_clusters: int = Field(default=20, ge=2, le=1000)  # k; also caps histogram bins
    standardize: bool = True  # per-feature mean/std before PCA and k-means
    pca_components: int | None = Field(default=None, ge=1)  # None: no PCA
    fit_rows: int = Field(default=100_000, ge=1)
    seed: int = 0


class ClassifierConfig(_Strict):
    """Cross-fitted MLPs p(y | x_m) and p(y | x_a, x_b): two hidden ReLU layers, Adam."""

    hidden: int = Field(default=64, ge=1)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)


class LSMIEntropyConfig(_Strict):
    """KNIFE h(x_m) per modality (mixture of Gaussians on standardised features)."""

    n_components: int = Field(default=5, ge=1)
    diagonal: bool = False
    pca_components: int | None = Field(default=None, ge=1)  # None: no PCA before KNIFE
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)


class LSMIConfig(_Strict):
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


class PIDBatchConfig(_Strict):
    """The BATCH estimator of PID (paper 003 §3.2, App. B.3) on continuous features."""

    block_size: int = Field(default=256, ge=8)  # m: rows per coupling, in training and scoring
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    hidden: int = Field(default=32, ge=1)  # encoder MLP width (3 layers)
    embed_dim: int = Field(default=10, ge=1)  # encoder features per label
    sinkhorn_iters: int = Field(default=200, ge=1)
    sinkhorn_tol: float = Field(default=1e-6, gt=0)  # largest row-marginal error accepted
    folds: int = Field(default=5, ge=2, le=50)
    fit_rows: int = Field(default=100_000, ge=16)
    seed: int = 0
    classifier: ClassifierConfig = ClassifierConfig()


class I2MoEConfig(_Strict):
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


class InTenseConfig(_Strict):
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


Measure = Literal["intershap", "pid_cvx", "lsmi", "pid_batch", "i2moe", "intense"]


class ComputeConfig(_Strict):
    batch_size: int = Field(default=1024, ge=1)
    actors: int = Field(default=1, ge=1)
    cpus_per_actor: float = Field(default=1, gt=0)
    gpus_per_actor: float = Field(default=0, ge=0)
    # torch threads per actor; default: the actor's CPUs (Ray pins OMP_NUM_THREADS to them)
    torch_threads: int | None = Field(default=None, ge=1)


class JobConfig(_Strict):
    dataset: str  # a name for the manifest and tables
    input: SharedURI  # fsspec URI of a Parquet file, a directory of shards, or a glob
    output: SharedURI  # run directory URI
    id_column: str = "sample_id"
    label_column: str | None = "label"
    group_columns: list[str] = Field(default_factory=list)
    num_classes: int = Field(ge=2)
    modalities: list[ModalityConfig] = Field(min_length=2)
    # intershap needs a model; pid_cvx runs on labels, and also on predictions with a model;
    # lsmi needs labels
    measures: list[Measure] = Field(default=["intershap"], min_length=1)
    model: ModelConfig | None = None
    intershap: InterSHAPConfig = InterSHAPConfig()
    pid: PIDConfig = PIDConfig()
    lsmi: LSMIConfig = LSMIConfig()
    pid_batch: PIDBatchConfig = PIDBatchConfig()
    i2moe: I2MoEConfig = I2MoEConfig()
    intense: InTenseConfig = InTenseConfig()
    compute: ComputeConfig = ComputeConfig()

    @property
    def modality_names(self) -> list[str]:
        return [modality.name for modality in self.modalities]

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else "none"

    @model_validator(mode="after")
    def _consistent(self) -> JobConfig:
        names = self.modality_names
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if len(names) > 10:
            raise ValueError(f"at most 10 modalities (2**M coalitions), got {len(names)}")
        if len(set(self.measures)) != len(self.measures):
            raise ValueError(f"measures must be unique, got {self.measures}")
        if "intershap" in self.measures and self.model is None:
            raise ValueError("measure 'intershap' needs a model")
        if "pid_cvx" in self.measures and self.model is None and self.label_column is None:
            raise ValueError("measure 'pid_cvx' needs label_column or a model to predict with")
        if "pid_batch" in self.measures and self.label_column is None:
            raise ValueError("measure 'pid_batch' needs label_column")
        if "lsmi" in self.measures and self.label_column is None:
            raise ValueError("measure 'lsmi' needs label_column (it decomposes i(x; label))")
        if "lsmi" in self.measures and self.model is None:
            if self.lsmi.features == "encoder":
                raise ValueError("lsmi.features 'encoder' needs a model")
            if self.lsmi.classifiers == "model":
                raise ValueError("lsmi.classifiers 'model' needs a model")
        for measure in ("i2moe", "intense"):
            if measure in self.measures and self.label_column is None:
                raise ValueError(f"measure '{measure}' needs label_column (it trains on labels)")
        self._check_intense_subsets()
        if self.intershap.target == "label" and self.label_column is None:
            raise ValueError("intershap.target 'label' needs label_column")
        return self

    def _check_intense_subsets(self) -> None:
        subsets = self.intense.subsets or []
        unknown = sorted({name for subset in subsets for name in subset} - set(self.modality_names))
        if unknown:
            raise ValueError(
                f"intense.subsets name {unknown}, not configured modalities "
                f"(modalities: {self.modality_names})"
            )
        keys = [frozenset(subset) for subset in subsets]
        if len(set(keys)) != len(keys):
            raise ValueError(f"intense.subsets lists a subset twice: {subsets}")


def _format(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> JobConfig:
    """Validate a mapping as a job config; errors name ``source`` and the dotted key."""
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error, source)) from None


def load_config(uri: str | Path) -> JobConfig:
    """Read and validate a YAML job config from a path or fsspec URI."""
    try:
        with fsspec.open(str(uri), "r") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{uri}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{uri}: not valid YAML: {error}") from None
    return parse_config(data, str(uri))


def dump_config(config: JobConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

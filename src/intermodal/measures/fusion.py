"""What I2MoE and InTense share: an interpretable fusion model trained on a uniform sample of
labelled rows and saved as ``artifacts/<measure>/model.pt`` (its ``state_dict``, loaded with
``weights_only=True`` into a model rebuilt from the config), then run in float64 on every row,
the sampled ones included (for those rows the scores are in-sample). float64 makes the weights
sum to 1 and the contributions plus the bias add up to the logit to float64's rounding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from intermodal import storage
from intermodal.measures.base import (
    FitSample,
    FitWorkers,
    Measure,
    Progress,
    require_float_features,
    training_settings,
)
from intermodal.models.artifacts import load_state, save_state
from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.models.training import CPU, fit_device
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, modality_arrays

# batch statistics (InTense's VBN) need two rows
MINIMUM_FIT_ROWS = 2


def fusion_inputs(
    job: JobConfig, rows: pa.Table, dtype: torch.dtype = torch.float32, device: torch.device = CPU
) -> dict[str, torch.Tensor]:
    """``{modality: [n, size]}`` tensors of normalised rows on ``device``, as the fusion models
    take them."""
    # Arrow buffers are read-only and torch wants writable memory: copy only when needed
    return {
        name: torch.from_numpy(np.require(values, requirements=["C", "W"])).to(device, dtype)
        for name, values in modality_arrays(job, rows).items()
    }


def fusion_part(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    training: FusionTrainConfig,
    name: str,
    progress: Progress,
) -> nn.Module:
    """The fit part of a fusion model: trained on this process's device, returned on the CPU."""
    device = fit_device()
    trained = train_fusion_model(
        model.to(device),
        {m: x.to(device) for m, x in inputs.items()},
        labels.to(device),
        training,
        lambda line: progress(f"[{name}]{line}"),
    )
    return trained.cpu()


class FusionMeasure(Measure):
    """A measure read off a fusion model it trains; subclasses build the model."""

    def check(self, job: JobConfig) -> None:
        if job.label_column is None:
            raise ValueError(f"measure '{self.name}' needs label_column (it trains on labels)")
        require_float_features(job, self.name, "trains its fusion model on the modality values")

    def build(self, job: JobConfig) -> nn.Module:
        """An untrained model over the configured modalities (flattened inputs)."""
        raise NotImplementedError

    def warmup_epochs(self, job: JobConfig) -> int:
        return 0

    def fit_sample(self, job: JobConfig) -> FitSample:
        settings = self.options(job)
        return FitSample(settings.fit_rows, settings.seed, MINIMUM_FIT_ROWS, self.name)

    def fit_key(self, job: JobConfig) -> dict:
        settings = self.options(job).model_dump(mode="json")
        settings["num_classes"] = job.num_classes  # the output layer's size
        return settings

    def model_uri(self, job: JobConfig) -> str:
        return storage.join(self.folder(job), "model.pt")

    def fit(
        self, job: JobConfig, sample: pa.Table, progress: Progress, workers: FitWorkers
    ) -> None:
        settings = self.options(job)
        progress(f"[{self.name}] training on {sample.num_rows} sampled rows")
        labels = torch.from_numpy(np.require(sample.column(LABEL).to_numpy(), np.int64, ["C", "W"]))
        torch.manual_seed(settings.seed)  # the initial weights
        training = training_settings(
            FusionTrainConfig, settings, warmup_epochs=self.warmup_epochs(job)
        )
        handle = workers.submit(
            fusion_part,
            self.build(job),
            fusion_inputs(job, sample),
            labels,
            training,
            self.name,
            workers.progress,
        )
        model = workers.gather([handle])[0]
        save_state(model.state_dict(), self.model_uri(job))

    def load(self, job: JobConfig, device: torch.device = CPU) -> nn.Module:
        """The saved model, in eval mode, on ``device``."""
        model = self.build(job)
        model.load_state_dict(load_state(self.model_uri(job)))
        return model.eval().to(device)

"""Model operators for ``Dataset.map_batches`` on an actor pool: InterSHAP scores, or just the
prediction (model PID without InterSHAP)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from intermodal.estimators.coalitions import full_coalition
from intermodal.estimators.intershap import explained_values, intershap_table
from intermodal.models.protocol import build_model
from intermodal.operators.coalitions import CoalitionValues
from intermodal.operators.columns import carried_columns, measure_columns, scores_schema
from intermodal.schemas.config import ComputeConfig, JobConfig
from intermodal.schemas.tables import LABEL, PRED, modality_values

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    Every batch allocates and frees the same few large temporaries. Under glibc's defaults an
    actor thread's arena hands them back to the kernel after each batch and faults them in
    again on the next (measured: half the actor's CPU time in the kernel, and a fragmented
    heap of several GB). Keeping them makes the steady state allocation-free. A no-op where
    the C library is not glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest value glibc accepts
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def use_actor_threads(compute: ComputeConfig) -> None:
    """Size torch's threads to the actor: ``compute.torch_threads``, else its CPUs (Ray sets
    ``OMP_NUM_THREADS`` to them, and torch read it before the actor existed)."""
    torch.set_num_threads(compute.torch_threads or max(1, int(compute.cpus_per_actor)))


def select_device(gpus: float) -> torch.device:
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


class ModelOperator:
    """Loads the configured model once per actor on its device; subclasses score batches."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = JobConfig.model_validate(config)
        compute = self.config.compute
        keep_freed_memory()
        use_actor_threads(compute)
        self.device = select_device(compute.gpus_per_actor)
        self.modalities = self.config.modalities
        model = self.config.model
        if model is None:
            raise ValueError("this operator needs a configured model")
        self.model = build_model(
            model.factory, model.kwargs, model.weights, self.config.modality_names
        )
        self.model.to(self.device)  # type: ignore[attr-defined]

    def _tensors(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {
            # Arrow buffers are read-only; torch wants writable memory (copies only then)
            m.name: torch.from_numpy(np.require(columns[m.name], requirements=["C", "W"]))
            .view(-1, *m.shape)
            .to(self.device)
            for m in self.modalities
        }

    def _inputs(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return self._tensors(
            {m.name: modality_values(batch.column(m.name), m.size) for m in self.modalities}
        )


class PredictionOperator(ModelOperator):
    """The class the model predicts from all modalities, for model PID without InterSHAP."""

    @torch.no_grad()
    def predict(self, batch: pa.Table) -> np.ndarray:
        """The predicted class ``[B]`` int64 of a normalised input batch."""
        inputs = self._inputs(batch)
        logits = self.model.fuse({m: self.model.encode(m, x) for m, x in inputs.items()})
        return logits.argmax(dim=-1).cpu().numpy().astype(np.int64)

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = carried_columns(batch, self.config)
        columns[PRED] = self.predict(batch)
        columns.update(measure_columns(batch, self.config))
        return pa.table(columns, schema=scores_schema(batch, self.config, prediction=True))


class InterSHAPOperator(ModelOperator):
    """Scores a normalised input batch (see ``schemas.validation``): for every sample the
    Shapley values, the interaction matrix and local InterSHAP of the explained output."""

    def __init__(self, config: dict[str, Any], background: dict[str, np.ndarray]) -> None:
        super().__init__(config)
        self.coalitions = CoalitionValues(self.model, self._tensors(background))

    def __call__(self, batch: pa.Table) -> pa.Table:
        probabilities = self.coalitions(self._inputs(batch)).cpu().numpy()
        target = self.config.intershap.target
        labels = batch.column(LABEL).to_numpy() if target == "label" else None
        values, classes = explained_values(probabilities, target, labels)
        names = self.config.modality_names
        columns = carried_columns(batch, self.config)
        full = full_coalition(len(names))
        columns[PRED] = probabilities[:, full].argmax(axis=-1).astype(np.int64)
        if classes is not None:
            columns["explained_class"] = classes.astype(np.int64)
        columns.update(intershap_table(values, names, target, self.config.num_classes))
        columns.update(measure_columns(batch, self.config))
        return pa.table(columns, schema=scores_schema(batch, self.config, prediction=True))

"""What the measures of one actor share: the configured model, built once, and per batch the
model's outputs, computed once whichever measures read them.

``SharedModel`` holds the model on the actor's device and, when a measure reads coalition
values, one ``CoalitionValues`` over the background rows. ``BatchContext`` wraps one
normalised input batch and computes lazily, at most once: the modality values, the model's
coalition values ``[B, 2**M, C]`` and its predictions ``[B]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from intermodal.estimators.coalitions import full_coalition
from intermodal.models.protocol import ModalityInput, MultimodalModel, build_model
from intermodal.models.training import CPU
from intermodal.operators.coalitions import CoalitionValues
from intermodal.operators.device import select_device
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, mask_key, modality_arrays


def constant_arrays(
    job: JobConfig, values: Mapping[str, float | str], n_rows: int = 1
) -> dict[str, np.ndarray]:
    """``n_rows`` rows of ``modality_arrays`` that hold one value per modality (``values``,
    0 where absent); a variable-length modality has no steps (an all-false mask, its values
    the pad value)."""
    arrays = {}
    for m in job.modalities:
        fill = m.pad_value if m.variable else float(values.get(m.name, 0))
        arrays[m.name] = np.full((n_rows, m.size), fill, m.dtype)
        if m.variable:
            arrays[mask_key(m.name)] = np.zeros((n_rows, m.max_length or 0), bool)
    return arrays


def as_tensors(
    job: JobConfig, arrays: Mapping[str, np.ndarray], device: torch.device
) -> dict[str, ModalityInput]:
    """``modality_arrays`` as the model's inputs: ``[n, *tensor_shape]`` tensors, and for a
    variable-length modality ``{"values": [n, max_length, ...], "mask": [n, max_length]}``."""
    inputs: dict[str, ModalityInput] = {}
    for m in job.modalities:
        values = _tensor(arrays[m.name], device).view(-1, *m.tensor_shape)
        if m.variable:
            inputs[m.name] = {"values": values, "mask": _tensor(arrays[mask_key(m.name)], device)}
        else:
            inputs[m.name] = values
    return inputs


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # Arrow buffers are read-only; torch wants writable memory (copies only then)
    return torch.from_numpy(np.require(array, requirements=["C", "W"])).to(device)


@torch.no_grad()
def predicted_classes(model: MultimodalModel, inputs: Mapping[str, ModalityInput]) -> np.ndarray:
    """``[n]`` int64: the class the model predicts from every modality."""
    logits = model.fuse({m: model.encode(m, x) for m, x in inputs.items()})
    return logits.argmax(dim=-1).cpu().numpy().astype(np.int64)


def job_model(job: JobConfig) -> MultimodalModel:
    """The configured model, built with its kwargs and weights (on the CPU)."""
    if job.model is None:
        raise ValueError("this step needs a configured model")
    settings = job.model
    return build_model(settings.factory, settings.kwargs, settings.weights, job.modality_names)


def predicted_rows(job: JobConfig, rows: pa.Table) -> np.ndarray:
    """The configured model's predicted class ``[n]`` for normalised rows, in batches of
    ``compute.batch_size`` (fits that need the model's predictions of their sample)."""
    model, size = job_model(job), job.compute.batch_size
    parts = [
        predicted_classes(
            model, as_tensors(job, modality_arrays(job, rows.slice(start, size)), CPU)
        )
        for start in range(0, rows.num_rows, size)
    ]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


ENCODE_CHUNK_ROWS = 4096  # rows per encode call: bounded memory for wide encoder outputs


def encoded_features(
    job: JobConfig,
    arrays: Mapping[str, np.ndarray],
    model: MultimodalModel | None,
    device: torch.device = CPU,
) -> dict[str, np.ndarray]:
    """``{modality: [n, f] float32}``: with a ``model`` (on ``device``) its ``encode(name, x)``
    of ``modality_arrays`` flattened per row, in chunks of ``ENCODE_CHUNK_ROWS`` rows; without
    one, the modality values themselves (measures with ``features: inputs``)."""
    if model is None:
        return {m.name: arrays[m.name] for m in job.modalities}
    n_rows = len(arrays[job.modalities[0].name])
    n_chunks = max(1, -(-n_rows // ENCODE_CHUNK_ROWS))
    chunks: dict[str, list[np.ndarray]] = {m.name: [] for m in job.modalities}
    with torch.no_grad():
        for rows in np.array_split(np.arange(n_rows), n_chunks):
            inputs = as_tensors(job, {key: array[rows] for key, array in arrays.items()}, device)
            for name, x in inputs.items():
                encoded = model.encode(name, x)
                if not isinstance(encoded, torch.Tensor):
                    raise ValueError(
                        f"encoder features: encode('{name}', x) returned "
                        f"{type(encoded).__name__}, not one tensor per row"
                    )
                chunks[name].append(encoded.reshape(len(rows), -1).float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


class SharedModel:
    """The configured model of one actor (None without one) and, when ``background`` rows are
    given, its coalition values over them; ``device`` is where every measure of the actor
    computes (its GPU when ``compute.gpus_per_actor`` gives it one, unless given)."""

    def __init__(
        self,
        job: JobConfig,
        background: Mapping[str, np.ndarray] | None,
        device: torch.device | None = None,
    ) -> None:
        self.job = job
        self.device = device or select_device(job.compute.gpus_per_actor)
        self.model: MultimodalModel | None = None
        self.coalition_values: CoalitionValues | None = None
        if job.model is not None:
            settings = job.model
            self.model = build_model(
                settings.factory, settings.kwargs, settings.weights, job.modality_names
            )
            self.model.to(self.device)  # type: ignore[attr-defined]
            if background is not None:
                tensors = as_tensors(job, background, self.device)
                self.coalition_values = CoalitionValues(self.model, tensors)

    def require_model(self) -> MultimodalModel:
        if self.model is None:
            raise ValueError("this measure needs a configured model")
        return self.model


class BatchContext:
    """One normalised input batch and what is computed from it at most once."""

    def __init__(self, batch: pa.Table, shared: SharedModel) -> None:
        self.batch = batch
        self.shared = shared
        self.job = shared.job

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    @cached_property
    def values(self) -> dict[str, np.ndarray]:
        """``modality_arrays`` of the batch: ``{modality: [B, size]}`` (and step masks)."""
        return modality_arrays(self.job, self.batch)

    @cached_property
    def inputs(self) -> dict[str, ModalityInput]:
        """The model's input tensors on the actor's device."""
        return as_tensors(self.job, self.values, self.shared.device)

    @cached_property
    def labelled(self) -> np.ndarray:
        """``[B]`` bool: rows with a label."""
        return pc.is_valid(self.batch.column(LABEL)).to_numpy(zero_copy_only=False)

    @cached_property
    def labels(self) -> np.ndarray:
        """``[B]`` int64 labels; rows without one hold a placeholder 0 (see ``labelled``)."""
        return self.batch.column(LABEL).fill_null(0).to_numpy().astype(np.int64)

    @cached_property
    def coalitions(self) -> np.ndarray:
        """``[B, 2**M, C]`` float64: the model's softmax outputs with the modalities outside
        each coalition masked (``operators.coalitions``)."""
        if self.shared.coalition_values is None:
            raise ValueError("no coalition values: no measure of this job asked for them")
        return self.shared.coalition_values(self.inputs).cpu().numpy()

    @cached_property
    def predictions(self) -> np.ndarray:
        """``[B]`` int64: the class the model predicts with every modality (read off the
        coalition values when they are computed anyway, else one forward pass)."""
        if self.shared.coalition_values is not None:
            full = full_coalition(len(self.job.modalities))
            return self.coalitions[:, full].argmax(axis=-1).astype(np.int64)
        return predicted_classes(self.shared.require_model(), self.inputs)

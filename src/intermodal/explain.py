"""InterSHAP in memory: tensors or numpy arrays in, scores out; no Ray, no files.

The same code path as the score pipeline's InterSHAP operator: ``CoalitionValues`` (cached
encoders, block-split first layer when the model declares one) for the coalition
probabilities, then ``estimators.intershap`` for the explained values and the score columns;
the dataset terms are the values ``aggregate`` writes for all rows (``summary_terms``: the
``intershap`` statistics and the means of the local and interaction columns).

    import intermodal
    result = intermodal.intershap(model, {"image": x_img, "text": x_txt},
                                  {"image": b_img, "text": b_txt})
    result.global_intershap, result.local, result.columns["shapley_image"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from intermodal.estimators.coalitions import full_coalition
from intermodal.estimators.intershap import (
    GlobalInterSHAP,
    explained_values,
    global_terms,
    interaction_column,
    interaction_pairs,
    intershap_table,
    summary_terms,
    target_suffixes,
)
from intermodal.estimators.shapley import interaction_matrix, shapley_values
from intermodal.estimators.stats import Moments
from intermodal.models.protocol import MultimodalModel, as_multimodal
from intermodal.operators.coalitions import CoalitionValues
from intermodal.schemas.tables import PRED

Target = Literal["predicted", "label", "all"]
ArrayLike = Tensor | np.ndarray


@dataclass(frozen=True)
class InterSHAPResult:
    """Per-sample and dataset InterSHAP of one set of inputs. ``T`` explained outputs: one for
    ``target`` "predicted" or "label", one per class for "all"."""

    modalities: list[str]
    target: Target
    probabilities: np.ndarray  # [N, 2**M, C] p(y | x_S), coalition S as a bitmask
    predicted: np.ndarray  # [N] int64, the class predicted from all modalities
    explained_class: np.ndarray | None  # [N] int64; None when every class is explained
    shapley: np.ndarray  # [N, T, M]
    interactions: np.ndarray  # [N, T, M, M] signed, symmetric; rows sum to the Shapley values
    local: np.ndarray  # [N, T] local InterSHAP in [0, 1]
    global_terms: list[GlobalInterSHAP]  # [T] from the mean signed interaction matrix
    columns: dict[str, np.ndarray]  # the pipeline's score columns, all but ids and labels
    summary: list[tuple[str, float, float | None]]  # (term, value, stderr) as in global/

    @property
    def global_intershap(self) -> float:
        """Global InterSHAP of the first (with "all": class 0's) explained output."""
        return self.global_terms[0].intershap


def _model_dtype_and_device(model: MultimodalModel) -> tuple[torch.dtype, torch.device]:
    parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    if parameter is None:
        return torch.get_default_dtype(), torch.device("cpu")
    return parameter.dtype, parameter.device


def _tensors(
    arrays: Mapping[str, ArrayLike], names: Sequence[str], dtype: torch.dtype, device: torch.device
) -> dict[str, Tensor]:
    """One tensor per modality on the model's device; floating inputs in the model's float type
    (numpy gives float64 by default), others (token ids) as they are."""
    missing = set(names) - set(arrays)
    if missing:
        raise ValueError(f"no values for modalities {sorted(missing)}")
    tensors = {}
    for name in names:
        value = torch.as_tensor(arrays[name])
        if value.is_floating_point():
            value = value.to(dtype)
        tensors[name] = value.to(device)
    lengths = {len(t) for t in tensors.values()}
    if len(lengths) != 1:
        raise ValueError(f"modalities have different numbers of rows: {sorted(lengths)}")
    if lengths == {0}:
        raise ValueError("no rows")
    return tensors


def _summary(
    columns: Mapping[str, np.ndarray], modalities: list[str], target: Target, num_classes: int
) -> list[tuple[str, float, float | None]]:
    """The ``aggregate`` step's InterSHAP terms over all rows, one set per explained output."""
    rows = []
    for suffix in target_suffixes(target, num_classes):
        names = [
            *(
                interaction_column(modalities[i], modalities[j], suffix)
                for i, j in interaction_pairs(modalities)
            ),
            f"intershap_local{suffix}",
        ]
        moments = Moments.of(np.column_stack([columns[name] for name in names]))
        stderr = moments.stderr()
        terms = summary_terms(
            moments.mean[:-1],
            stderr[:-1],
            float(moments.mean[-1]),
            float(stderr[-1]),
            modalities,
        )
        rows += [
            (term + suffix, value, None if error is None or np.isnan(error) else error)
            for term, value, error in terms
        ]
    return rows


def intershap(
    model: nn.Module | MultimodalModel,
    inputs: Mapping[str, ArrayLike],
    background: Mapping[str, ArrayLike],
    target: Target = "predicted",
    labels: ArrayLike | None = None,
    batch_size: int = 1024,
) -> InterSHAPResult:
    """InterSHAP of ``model`` on ``inputs`` (modality → ``[N, ...]``).

    A modality outside a coalition is replaced by each row of ``background`` (modality →
    ``[K, ...]``, all K rows, the expectation over them); pass one row (the mean, zeros) for a
    single baseline. ``model`` follows ``models.protocol.MultimodalModel`` or is a plain
    ``forward(dict) -> logits`` module; it is put in eval mode for the call. ``target``:
    explain the predicted class, the ``labels`` class, or every class ("all"). Samples are
    scored ``batch_size`` at a time (memory grows with ``batch_size · K``). The modalities
    and their order are the model's ``modalities``; for a plain module, the keys of
    ``inputs`` in order.
    """
    if target == "label" and labels is None:
        raise ValueError('target="label" needs labels')
    multimodal = as_multimodal(model, list(inputs)) if isinstance(model, nn.Module) else model
    names = list(multimodal.modalities)
    dtype, device = _model_dtype_and_device(multimodal)
    real = _tensors(inputs, names, dtype, device)
    masked_by = _tensors(background, names, dtype, device)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        coalitions = CoalitionValues(multimodal, masked_by)
        n_samples = len(real[names[0]])
        probabilities = np.concatenate(
            [
                coalitions({m: x[start : start + batch_size] for m, x in real.items()})
                .cpu()
                .numpy()
                for start in range(0, n_samples, batch_size)
            ]
        )
    finally:
        if was_training:
            model.train()

    label_values = (
        None if labels is None else torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    )
    values, classes = explained_values(probabilities, target, label_values)
    num_classes = probabilities.shape[-1]
    predicted = probabilities[:, full_coalition(len(names))].argmax(axis=-1).astype(np.int64)
    columns: dict[str, np.ndarray] = {PRED: predicted}
    if classes is not None:
        columns["explained_class"] = classes.astype(np.int64)
    columns.update(intershap_table(values, names, target, num_classes))
    matrices = interaction_matrix(values)
    return InterSHAPResult(
        modalities=names,
        target=target,
        probabilities=probabilities,
        predicted=predicted,
        explained_class=None if classes is None else classes.astype(np.int64),
        shapley=shapley_values(values),
        interactions=matrices,
        local=np.stack(
            [columns[f"intershap_local{s}"] for s in target_suffixes(target, num_classes)], axis=1
        ),
        global_terms=[global_terms(matrices[:, t].mean(axis=0)) for t in range(values.shape[1])],
        columns=columns,
        summary=_summary(columns, names, target, num_classes),
    )

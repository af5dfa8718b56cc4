"""The multimodal model protocol and how a configured model is built.

A model exposes ``modalities``, ``encode(name, x) -> embedding`` per modality and
``fuse(embeddings) -> logits``. A modality's input ``x`` is a ``[n, *shape]`` tensor of its
``dtype``, or for a modality with a variable first axis ``{"values": [n, max_length, ...],
"mask": [n, max_length] bool}`` (``ModalityInput``), whose tensors travel together wherever
rows are masked. Masking happens at the input (a missing modality is replaced by background
inputs before ``encode``), so encoder outputs of real and background rows are computed once
and only ``fuse`` runs per coalition. A plain ``forward(inputs) -> logits``
module is wrapped with identity encoders.

A model whose ``fuse`` starts with one ``Linear`` over the concatenated embeddings may declare
it with ``first_layer_split() -> FirstLayerSplit``: masked rows then add per-modality blocks of
that layer's output instead of running it (``W·[x_1; b_2] + c = W_1·x_1 + W_2·b_2 + c``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import fsspec
import torch
from torch import Tensor, nn

from intermodal.entrypoints import import_entrypoint
from intermodal.schemas.validation import first_line

# one modality's batch: a tensor, or named tensors of the same rows (values and their mask)
ModalityInput = Tensor | dict[str, Tensor]


def batch_rows(x: ModalityInput) -> int:
    """Rows of one modality's batch."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def map_rows(function: Callable[[Tensor], Tensor], x: ModalityInput) -> ModalityInput:
    """``function`` applied to each tensor of a modality's batch (row selection, repetition):
    a variable-length modality's values and mask stay row-aligned."""
    if isinstance(x, dict):
        return {key: function(tensor) for key, tensor in x.items()}
    return function(x)


@runtime_checkable
class MultimodalModel(Protocol):
    modalities: Sequence[str]

    def encode(self, name: str, x: ModalityInput) -> ModalityInput: ...

    def fuse(self, embeddings: Mapping[str, ModalityInput]) -> Tensor: ...


@dataclass(frozen=True)
class FirstLayerSplit:
    """``fuse(e) == rest(first(torch.cat([e[m].flatten(1) for m in modalities], dim=1)))``.

    ``first`` is fuse's first layer, one ``Linear`` over every modality's embedding flattened
    per row and concatenated in the model's ``modalities`` order; ``rest`` maps that layer's
    output to the logits. ``rest`` receives a fresh tensor that nothing else reads, so it may
    work in place (``nn.ReLU(inplace=True)``)."""

    first: nn.Linear
    rest: Callable[[Tensor], Tensor]


def declared_first_layer_split(model: object) -> FirstLayerSplit | None:
    """The split a model declares with a ``first_layer_split()`` method; None when it has no
    such method or the method returns None (fuse does not start with such a Linear)."""
    declare = getattr(model, "first_layer_split", None)
    if declare is None:
        return None
    split = declare()
    if split is not None and not isinstance(split, FirstLayerSplit):
        raise TypeError(
            f"{type(model).__name__}.first_layer_split() returned {type(split).__name__}, "
            "not a FirstLayerSplit"
        )
    return split


class ForwardModel(nn.Module):
    """Adapts ``forward(dict[str, Tensor]) -> logits`` to the protocol (identity encoders)."""

    def __init__(self, module: nn.Module, modalities: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.modalities = tuple(modalities)

    def encode(self, name: str, x: ModalityInput) -> ModalityInput:
        return x

    def fuse(self, embeddings: Mapping[str, ModalityInput]) -> Tensor:
        return self.module(dict(embeddings))

    def first_layer_split(self) -> FirstLayerSplit | None:
        """The wrapped module's split: with identity encoders its inputs are the embeddings."""
        return declared_first_layer_split(self.module)


def as_multimodal(module: nn.Module, modalities: Sequence[str]) -> MultimodalModel:
    if isinstance(module, MultimodalModel):
        missing = set(modalities) - set(module.modalities)
        if missing:
            raise ValueError(f"model has no encoder for modalities {sorted(missing)}")
        return module
    return ForwardModel(module, modalities)


def load_state_dict(uri: str) -> dict[str, Tensor]:
    """A checkpoint's tensors; refuses anything that is not a plain state_dict."""
    try:
        with fsspec.open(uri, "rb") as handle:
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"model.weights '{uri}': no such file") from None
    except Exception as error:  # torch raises UnpicklingError and others for foreign data
        # torch's own message is many lines of advice on unsafe loading: name the error only
        raise ValueError(
            f"model.weights '{uri}': not a state_dict saved with torch.save(model.state_dict()); "
            f"torch.load(weights_only=True) refused it ({type(error).__name__})"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"model.weights '{uri}': expected a state_dict (name → tensor)")
    return dict(state)


def build_model(
    factory: str, kwargs: Mapping[str, Any], weights: str | None, modalities: Sequence[str]
) -> MultimodalModel:
    """Build the configured model in eval mode, weights loaded when given."""
    try:
        module = import_entrypoint(factory)(**kwargs)
    except TypeError as error:
        raise ValueError(
            f"model.kwargs {dict(kwargs)}: '{factory}' does not take them ({first_line(error)})"
        ) from None
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"model.factory '{factory}' returned {type(module).__name__}, not a Module"
        )
    if weights is not None:
        try:
            module.load_state_dict(load_state_dict(weights))
        except RuntimeError as error:  # missing, unexpected or misshapen tensors
            lines = str(error).strip().splitlines()
            detail = " ".join(line.strip() for line in lines[1:3])
            raise ValueError(
                f"model.weights '{weights}' do not fit the model '{factory}' builds with "
                f"model.kwargs: {detail}"
            ) from None
    module.eval()
    return as_multimodal(module, modalities)

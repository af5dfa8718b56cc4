"""Coalition values of a multimodal model: v(S) for every subset S of modalities.

v(S) is the softmax output with the modalities outside S masked: replaced by each of K
background rows (expectation over them), or by one baseline row (the background mean, or
zeros). Encoder outputs of the real and the background rows are computed once per batch and
per operator respectively; only ``fuse`` runs per coalition.

When the model declares that ``fuse`` starts with one ``Linear`` over the concatenated
embeddings (``models.protocol.FirstLayerSplit``), that layer is split into per-modality blocks
``W_m``: ``W_m·e_m`` is computed once per real row and once per background row, and a masked
row's pre-activation is the sum of its blocks (``W·[x_1; b_2] + c = W_1·x_1 + W_2·b_2 + c``).
Only the rest of ``fuse`` runs per masked row. Values equal the unsplit path to float round-off.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.nn import functional

from intermodal.estimators.coalitions import full_coalition, membership
from intermodal.models.protocol import (
    FirstLayerSplit,
    ModalityInput,
    MultimodalModel,
    batch_rows,
    declared_first_layer_split,
    map_rows,
)

# Fused rows per ``fuse`` call: large enough for efficient matmuls, small enough that the
# temporaries of one call stay modest and are reused by the allocator from call to call.
MAX_FUSE_ROWS = 1 << 14
# Masked rows per call of the rest of ``fuse`` on the split path. Its pre-activations and
# activations then stay in the CPU's caches: measured on an early-fusion FCNN 300→150→75→2,
# chunks of 2k–16k rows ran 3x faster per row than one chunk of 200k.
SPLIT_CHUNK_ROWS = 1 << 12
# Up to this many classes the softmax runs over the transposed logits (``_probabilities``).
SHORT_CLASS_AXIS = 32


def _masked_rows(
    real: Mapping[str, ModalityInput], background: Mapping[str, ModalityInput], masks: Tensor
) -> dict[str, ModalityInput]:
    """Inputs (or embeddings) of every (coalition, sample, background row) triple:
    ``[n_coalitions * B * K, ...]``, the real row where ``masks[c, m]`` says modality m is
    present, the background row elsewhere: one ``torch.where`` (one allocation) per tensor.
    The tensors of a structured input (values and mask) are chosen together."""

    def choose(present: Tensor, x: Tensor, b: Tensor) -> Tensor:
        present = present.view(-1, 1, 1, *(1,) * (x.dim() - 1))
        return torch.where(present, x[None, :, None], b[None, None]).reshape(-1, *x.shape[1:])

    rows: dict[str, ModalityInput] = {}
    for position, (name, x) in enumerate(real.items()):
        present, b = masks[:, position], background[name]
        if isinstance(x, dict):
            rows[name] = {key: choose(present, x[key], b[key]) for key in x}  # type: ignore[index]
        else:
            rows[name] = choose(present, x, b)  # type: ignore[arg-type]
    return rows


def _probabilities(logits: Tensor) -> Tensor:
    """Float64 softmax over the class axis of ``[rows, C]`` logits. With few classes torch's
    softmax over a short last axis runs a loop per row; over the leading axis of the transposed
    view it vectorises across rows (measured on [4096, C]: C = 2, 0.19 → 0.04 ms; C = 100,
    2.4 → 3.6 ms, hence the cut-off)."""
    double = logits.double()
    if logits.shape[-1] <= SHORT_CLASS_AXIS:
        return torch.softmax(double.T, dim=0).T
    return torch.softmax(double, dim=-1)


def _mean_over_background(logits: Tensor, n_samples: int, n_background: int) -> Tensor:
    """``[n_coalitions * B * K, C]`` logits → ``[B, n_coalitions, C]`` mean probabilities."""
    probabilities = _probabilities(logits)
    grouped = probabilities.view(-1, n_samples, n_background, logits.shape[-1])
    return grouped.mean(dim=2).transpose(0, 1)


class BlockSplitLayer:
    """A first ``Linear`` over concatenated embeddings, cut into per-modality column blocks."""

    def __init__(self, split: FirstLayerSplit, background: Mapping[str, Tensor]) -> None:
        self.names = list(background)
        widths = [embedding[0].numel() for embedding in background.values()]
        if sum(widths) != split.first.in_features:
            raise ValueError(
                f"the declared first layer takes {split.first.in_features} features, but the "
                f"embeddings of {self.names} have {widths} (sum {sum(widths)})"
            )
        self.blocks = [w.contiguous() for w in split.first.weight.split(widths, dim=1)]
        self.bias = split.first.bias
        self.rest = split.rest
        self.background = self.project(background)

    def project(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """``W_m·e_m`` (no bias) of every modality's rows: ``[M, n, width]``."""
        return torch.stack(
            [
                functional.linear(embeddings[m].flatten(1), block)
                for m, block in zip(self.names, self.blocks, strict=True)
            ]
        )

    def masked_values(self, real: Mapping[str, Tensor], masks: Tensor, values: Tensor) -> None:
        """Fills ``values[:, c]`` (``[B, C]``) with the mean probabilities over the background
        rows for each coalition ``masks[c]`` (``[n_coalitions, M]`` bool; neither empty nor
        full)."""
        real_blocks = self.project(real)
        n_samples, width = real_blocks.shape[1:]
        n_background = self.background.shape[1]
        samples_per_chunk = min(n_samples, max(1, SPLIT_CHUNK_ROWS // n_background))
        coalitions_per_chunk = min(
            len(masks), max(1, SPLIT_CHUNK_ROWS // (samples_per_chunk * n_background))
        )
        # One buffer for every chunk's pre-activations: a fresh multi-MB tensor per chunk costs
        # page faults (measured: a quarter of the time of the add, ReLU and next Linear).
        rows_per_chunk = coalitions_per_chunk * samples_per_chunk * n_background
        buffer = real_blocks.new_empty(rows_per_chunk * width)
        for start in range(0, len(masks), coalitions_per_chunk):
            coalitions = slice(start, start + coalitions_per_chunk)
            present = masks[coalitions, :, None, None]
            # Each coalition's sum of present real blocks [c, B, width] and of absent background
            # blocks plus the bias [c, K, width]; ``where`` rather than a 0/1 matmul keeps a
            # non-finite value in an absent block out of the sum.
            real_part = torch.where(present, real_blocks, 0.0).sum(dim=1)
            background_part = torch.where(present, 0.0, self.background).sum(dim=1)
            if self.bias is not None:
                background_part += self.bias
            for first in range(0, n_samples, samples_per_chunk):
                samples = slice(first, first + samples_per_chunk)
                chunk_real = real_part[:, samples, None]
                # [c, b, K, width]: every (coalition, sample, background row) pre-activation
                shape = (len(chunk_real), chunk_real.shape[1], n_background, width)
                pre_activation = buffer[: shape[0] * shape[1] * n_background * width].view(shape)
                torch.add(chunk_real, background_part[:, None], out=pre_activation)
                logits = self.rest(pre_activation.view(-1, width))
                values[samples, coalitions] = _mean_over_background(logits, shape[1], n_background)


class CoalitionValues:
    """Computes ``[B, 2**M, C]`` coalition probabilities with cached encoder outputs, and with
    the block-split first layer when the model declares one and ``split`` is True (False
    forces the general path: for benchmarks and tests)."""

    def __init__(
        self, model: MultimodalModel, background: Mapping[str, ModalityInput], split: bool = True
    ) -> None:
        self.model = model
        self.names = list(model.modalities)
        self.n_modalities = len(self.names)
        with torch.no_grad():
            self.background = {m: model.encode(m, background[m]) for m in self.names}
            declared = declared_first_layer_split(model) if split else None
            self.split = None
            if declared is not None:
                self.split = BlockSplitLayer(declared, _tensors(self.background))
            empty = torch.softmax(model.fuse(self.background).double(), dim=-1).mean(dim=0)
        self.empty = empty  # v(∅) does not depend on the sample: computed once
        self.present = torch.as_tensor(membership(self.n_modalities), device=empty.device)

    @torch.no_grad()
    def __call__(self, inputs: Mapping[str, ModalityInput]) -> Tensor:
        n = batch_rows(next(iter(inputs.values())))
        real = {m: self.model.encode(m, inputs[m]) for m in self.names}
        full = full_coalition(self.n_modalities)
        n_background = batch_rows(next(iter(self.background.values())))
        values = torch.empty(
            n, full + 1, len(self.empty), dtype=torch.float64, device=self.empty.device
        )
        values[:, 0] = self.empty
        values[:, full] = torch.softmax(self.model.fuse(real).double(), dim=-1)
        if self.split is not None:
            self.split.masked_values(_tensors(real), self.present[1:full], values[:, 1:full])
            return values
        per_chunk = max(1, MAX_FUSE_ROWS // (n * n_background))
        for start in range(1, full, per_chunk):
            chunk = slice(start, min(start + per_chunk, full))
            fused = self.model.fuse(_masked_rows(real, self.background, self.present[chunk]))
            values[:, chunk] = _mean_over_background(fused, n, n_background)
        return values


def _tensors(embeddings: Mapping[str, ModalityInput]) -> dict[str, Tensor]:
    """Embeddings the split first layer can read: one tensor per modality."""
    structured = [m for m, e in embeddings.items() if not isinstance(e, Tensor)]
    if structured:
        raise ValueError(
            f"first_layer_split() needs one embedding tensor per modality; encode() returned "
            f"named tensors for {structured}"
        )
    return dict(embeddings)  # type: ignore[arg-type]


@torch.no_grad()
def naive_coalition_values(
    model: MultimodalModel,
    inputs: Mapping[str, ModalityInput],
    background: Mapping[str, ModalityInput],
) -> Tensor:
    """Reference: mask at the input and run the whole model (``encode`` and ``fuse``) once per
    coalition on all (sample, background row) pairs. Used to check ``CoalitionValues`` and to
    measure what caching the encoders saves."""
    names = list(model.modalities)
    n = batch_rows(inputs[names[0]])
    n_background = batch_rows(background[names[0]])
    columns = []
    for coalition in range(1 << len(names)):
        present = [bool(coalition >> m & 1) for m in range(len(names))]
        if all(present):
            logits = model.fuse({m: model.encode(m, inputs[m]) for m in names})
            columns.append(torch.softmax(logits.double(), dim=-1))
            continue
        masked = {}
        for m, here in zip(names, present, strict=True):
            if here:
                masked[m] = map_rows(lambda x: x.repeat_interleave(n_background, 0), inputs[m])
            else:
                masked[m] = map_rows(lambda b: b.repeat(n, *(1,) * (b.dim() - 1)), background[m])
        logits = model.fuse({m: model.encode(m, x) for m, x in masked.items()})
        probabilities = torch.softmax(logits.double(), dim=-1)
        columns.append(probabilities.view(n, n_background, -1).mean(dim=1))
    return torch.stack(columns, dim=1)

"""Coalition values of a multimodal model: v(S) for every subset S of modalities.

v(S) is the softmax output with the modalities outside S masked: replaced by each of K
background rows (expectation over them), or by one baseline row (the background mean, or
zeros). Encoder outputs of the real and the background rows are computed once per batch and
per operator respectively; only ``fuse`` runs per coalition.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from intermodal.estimators.coalitions import full_coalition, membership
from intermodal.models.protocol import MultimodalModel

# Fused rows per ``fuse`` call: large enough for efficient matmuls, small enough that the
# temporaries of one call stay modest and are reused by the allocator from call to call.
MAX_FUSE_ROWS = 1 << 14


def _masked_rows(
    real: Mapping[str, Tensor], background: Mapping[str, Tensor], masks: Tensor
) -> dict[str, Tensor]:
    """Inputs (or embeddings) of every (coalition, sample, background row) triple:
    ``[n_coalitions * B * K, ...]``, the real row where ``masks[c, m]`` says modality m is
    present, the background row elsewhere: one ``torch.where`` (one allocation) per modality."""
    rows = {}
    for position, (name, x) in enumerate(real.items()):
        extra = (1,) * (x.dim() - 1)
        present = masks[:, position].view(-1, 1, 1, *extra)
        chosen = torch.where(present, x[None, :, None], background[name][None, None])
        rows[name] = chosen.reshape(-1, *x.shape[1:])
    return rows


def _mean_over_background(logits: Tensor, n_samples: int, n_background: int) -> Tensor:
    """``[n_coalitions * B * K, C]`` logits → ``[B, n_coalitions, C]`` mean probabilities."""
    probabilities = torch.softmax(logits.double(), dim=-1)
    grouped = probabilities.view(-1, n_samples, n_background, logits.shape[-1])
    return grouped.mean(dim=2).transpose(0, 1)


class CoalitionValues:
    """Computes ``[B, 2**M, C]`` coalition probabilities with cached encoder outputs."""

    def __init__(self, model: MultimodalModel, background: Mapping[str, Tensor]) -> None:
        self.model = model
        self.names = list(model.modalities)
        self.n_modalities = len(self.names)
        with torch.no_grad():
            self.background = {m: model.encode(m, background[m]) for m in self.names}
            empty = torch.softmax(model.fuse(self.background).double(), dim=-1).mean(dim=0)
        self.empty = empty  # v(∅) does not depend on the sample: computed once
        self.present = torch.as_tensor(membership(self.n_modalities), device=empty.device)

    @torch.no_grad()
    def __call__(self, inputs: Mapping[str, Tensor]) -> Tensor:
        n = len(next(iter(inputs.values())))
        real = {m: self.model.encode(m, inputs[m]) for m in self.names}
        full = full_coalition(self.n_modalities)
        n_background = len(next(iter(self.background.values())))
        values = torch.empty(
            n, full + 1, len(self.empty), dtype=torch.float64, device=self.empty.device
        )
        values[:, 0] = self.empty
        values[:, full] = torch.softmax(self.model.fuse(real).double(), dim=-1)
        per_chunk = max(1, MAX_FUSE_ROWS // (n * n_background))
        for start in range(1, full, per_chunk):
            chunk = slice(start, min(start + per_chunk, full))
            fused = self.model.fuse(_masked_rows(real, self.background, self.present[chunk]))
            values[:, chunk] = _mean_over_background(fused, n, n_background)
        return values


@torch.no_grad()
def naive_coalition_values(
    model: MultimodalModel, inputs: Mapping[str, Tensor], background: Mapping[str, Tensor]
) -> Tensor:
    """Reference: mask at the input and run the whole model (``encode`` and ``fuse``) once per
    coalition on all (sample, background row) pairs. Used to check ``CoalitionValues`` and to
    measure what caching the encoders saves."""
    names = list(model.modalities)
    n = len(inputs[names[0]])
    n_background = len(background[names[0]])
    columns = []
    for coalition in range(1 << len(names)):
        present = [bool(coalition >> m & 1) for m in range(len(names))]
        if all(present):
            logits = model.fuse({m: model.encode(m, inputs[m]) for m in names})
            columns.append(torch.softmax(logits.double(), dim=-1))
            continue
        masked = {}
        for m, here in zip(names, present, strict=True):
            x, b = inputs[m], background[m]
            masked[m] = (
                x.repeat_interleave(n_background, 0) if here else b.repeat(n, *(1,) * (b.dim() - 1))
            )
        logits = model.fuse({m: model.encode(m, x) for m, x in masked.items()})
        probabilities = torch.softmax(logits.double(), dim=-1)
        columns.append(probabilities.view(n, n_background, -1).mean(dim=1))
    return torch.stack(columns, dim=1)

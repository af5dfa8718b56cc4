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

# Fused rows per ``fuse`` call: bounds memory while keeping calls large enough to be efficient.
MAX_FUSE_ROWS = 1 << 16


def _masked_rows(
    real: Mapping[str, Tensor], background: Mapping[str, Tensor], coalition_mask: Tensor
) -> dict[str, Tensor]:
    """Inputs (or embeddings) of every (sample, background row) pair for one coalition:
    ``[B*K, ...]``, sample-major, the real row where the modality is present."""
    rows = {}
    for position, (name, x) in enumerate(real.items()):
        k = len(background[name])
        if coalition_mask[position]:
            rows[name] = x.repeat_interleave(k, dim=0)
        else:
            rows[name] = background[name].repeat(len(x), *([1] * (x.dim() - 1)))
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
        self.present = torch.as_tensor(membership(self.n_modalities))
        with torch.no_grad():
            self.background = {m: model.encode(m, background[m]) for m in self.names}
            empty = torch.softmax(model.fuse(self.background).double(), dim=-1).mean(dim=0)
        self.empty = empty  # v(∅) does not depend on the sample: computed once

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
        partial = list(range(1, full))
        per_chunk = max(1, MAX_FUSE_ROWS // max(1, n * n_background))
        for start in range(0, len(partial), per_chunk):
            chunk = partial[start : start + per_chunk]
            pieces = [_masked_rows(real, self.background, self.present[s]) for s in chunk]
            fused = self.model.fuse({m: torch.cat([p[m] for p in pieces]) for m in self.names})
            values[:, chunk] = _mean_over_background(fused, n, n_background)
        return values


@torch.no_grad()
def naive_coalition_values(
    model: MultimodalModel, inputs: Mapping[str, Tensor], background: Mapping[str, Tensor]
) -> Tensor:
    """Reference: mask at the input and run the whole model per coalition (no caching).
    Used to check ``CoalitionValues`` and to measure what the caching saves."""
    names = list(model.modalities)
    present = membership(len(names))
    n = len(next(iter(inputs.values())))
    ordered = {m: inputs[m] for m in names}
    columns = []
    for coalition in range(1 << len(names)):
        full = coalition == full_coalition(len(names))
        rows = ordered if full else _masked_rows(ordered, background, present[coalition])
        logits = model.fuse({m: model.encode(m, x) for m, x in rows.items()})
        n_background = 1 if full else len(background[names[0]])
        columns.append(_mean_over_background(logits, n, n_background)[:, 0])
    return torch.stack(columns, dim=1)

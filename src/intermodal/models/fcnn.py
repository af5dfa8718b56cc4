"""Fully connected baselines with early, intermediate and late fusion (paper 000 §4.1).

Layer widths follow the paper: input, hidden = half the input, output layer input = half the
hidden. Early fusion concatenates the inputs (identity encoders); intermediate fusion encodes
each modality with one layer and fuses before the hidden layer; late fusion encodes each
modality with two layers and fuses before the output layer.

Each declares ``first_layer_split``: the head's first ``Linear`` takes the concatenated
embeddings, so coalition values add its per-modality blocks (see ``models.protocol``). For late
fusion that Linear is the whole head and the rest is the identity. The head's ReLUs work in
place: they follow a Linear whose output nothing else reads, and they save one temporary per
masked row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from intermodal.models.protocol import FirstLayerSplit

Fusion = Literal["early", "intermediate", "late"]


class FCNN(nn.Module):
    def __init__(
        self, modalities: Sequence[str], dims: Sequence[int], num_classes: int, fusion: Fusion
    ) -> None:
        super().__init__()
        if len(modalities) != len(dims):
            raise ValueError("one input dimension per modality")
        self.modalities = tuple(modalities)
        self.fusion = fusion
        total = sum(dims)
        if fusion == "early":
            self.encoders = nn.ModuleDict()
            self.head = nn.Sequential(
                nn.Linear(total, total // 2),
                nn.ReLU(inplace=True),
                nn.Linear(total // 2, total // 4),
                nn.ReLU(inplace=True),
                nn.Linear(total // 4, num_classes),
            )
        elif fusion == "intermediate":
            self.encoders = nn.ModuleDict(
                {
                    m: nn.Sequential(nn.Linear(d, d // 2), nn.ReLU())
                    for m, d in zip(modalities, dims, strict=True)
                }
            )
            self.head = nn.Sequential(
                nn.Linear(total // 2, total // 4),
                nn.ReLU(inplace=True),
                nn.Linear(total // 4, num_classes),
            )
        elif fusion == "late":
            self.encoders = nn.ModuleDict(
                {
                    m: nn.Sequential(
                        nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, d // 4), nn.ReLU()
                    )
                    for m, d in zip(modalities, dims, strict=True)
                }
            )
            self.head = nn.Linear(sum(d // 4 for d in dims), num_classes)
        else:
            raise ValueError(f"fusion must be early, intermediate or late, got {fusion!r}")

    def encode(self, name: str, x: Tensor) -> Tensor:
        return self.encoders[name](x) if name in self.encoders else x

    def fuse(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        return self.head(torch.cat([embeddings[m] for m in self.modalities], dim=-1))

    def first_layer_split(self) -> FirstLayerSplit:
        if isinstance(self.head, nn.Linear):  # late fusion
            return FirstLayerSplit(self.head, nn.Identity())
        return FirstLayerSplit(self.head[0], self.head[1:])

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.fuse({m: self.encode(m, inputs[m]) for m in self.modalities})


def build_fcnn(
    modalities: Sequence[str], dims: Sequence[int], num_classes: int = 2, fusion: Fusion = "early"
) -> FCNN:
    """Factory for configs: ``intermodal.models.fcnn:build_fcnn``."""
    return FCNN(modalities, dims, num_classes, fusion)

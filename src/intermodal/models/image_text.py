"""A small image + text classifier in plain torch, of the kind users bring: a convolutional
tower over uint8 images and an embedding tower over token ids with their mask, fused by an
MLP whose first layer is declared for the block-split coalition pass.

``encode("image", x)`` takes ``[n, 1, H, W]`` uint8 pixels; ``encode("text", x)`` takes
``{"values": [n, L] int64, "mask": [n, L] bool}`` and max-pools the embeddings of the real
steps (a row without any step, as under zero masking, encodes as zeros).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from intermodal.models.protocol import FirstLayerSplit, ModalityInput

MODALITIES = ("image", "text")


class ImageTextClassifier(nn.Module):
    def __init__(
        self, vocab: int = 50, width: int = 16, hidden: int = 32, num_classes: int = 2
    ) -> None:
        super().__init__()
        self.modalities = MODALITIES
        self.image_tower = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),  # where the shape is does not matter
            nn.Flatten(),
            nn.Linear(16, width),
        )
        self.embedding = nn.Embedding(vocab, width)
        self.text_tower = nn.Linear(width, width)
        self.first = nn.Linear(2 * width, hidden)
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(hidden, num_classes))

    def encode(self, name: str, x: ModalityInput) -> torch.Tensor:
        if name == "image":
            return self.image_tower(cast(torch.Tensor, x).float() / 255.0)
        tokens = cast(dict[str, torch.Tensor], x)
        steps = tokens["mask"].unsqueeze(-1)
        embedded = self.embedding(tokens["values"]).masked_fill(~steps, float("-inf"))
        pooled = torch.where(steps.any(dim=1), embedded.amax(dim=1), 0.0)
        return self.text_tower(pooled)

    def fuse(self, embeddings: Mapping[str, ModalityInput]) -> torch.Tensor:
        joined = torch.cat([cast(torch.Tensor, embeddings[name]) for name in MODALITIES], dim=1)
        return self.rest(self.first(joined))

    def forward(self, inputs: Mapping[str, ModalityInput]) -> torch.Tensor:
        return self.fuse({name: self.encode(name, inputs[name]) for name in MODALITIES})

    def first_layer_split(self) -> FirstLayerSplit:
        return FirstLayerSplit(self.first, self.rest)


def build_image_text(vocab: int = 50, width: int = 16, hidden: int = 32) -> ImageTextClassifier:
    """The model factory a job names: ``intermodal.models.image_text:build_image_text``."""
    return ImageTextClassifier(vocab, width, hidden)


def padded_tokens(texts: Sequence[Sequence[int]], max_length: int) -> dict[str, np.ndarray]:
    """Token-id lists as the text modality's training input: ``values`` ``[n, max_length]``
    int64 padded with 0 and ``mask`` ``[n, max_length]`` bool (longer lists are cut)."""
    values = np.zeros((len(texts), max_length), np.int64)
    mask = np.zeros((len(texts), max_length), bool)
    for row, tokens in enumerate(texts):
        kept = list(tokens)[:max_length]
        values[row, : len(kept)] = kept
        mask[row, : len(kept)] = True
    return {"values": values, "mask": mask}

"""Token-sequence XOR: a text modality of token ids (int64, a different length per row) beside
a one-value modality, and a parameter-free model that reads the tokens through their mask.

Each row's ``text`` is 3 to ``max_tokens`` token ids drawn from ``[2, vocab)``; when the row's
text bit is set, the ``MARKER`` token replaces one of them. ``flag`` is the other bit as one
float. The label is text bit XOR flag bit, so the interaction is pure synergy, as HD-XOR's
synergy setting with the XOR function. ``text_bit`` holds the text bit as one float: the same
information in a fixed float layout, for comparing scores across layouts.

``TokenXORModel`` decides the text bit as "MARKER among the row's real tokens": it reads
``{"values", "mask"}`` and ignores padded steps. Padding with ``MARKER`` itself
(``pad_value: 1``) therefore tests that the mask reaches the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyarrow as pa
import torch

# one modality's batch as the model receives it (``models.protocol.ModalityInput``)
ModalityInput = torch.Tensor | dict[str, torch.Tensor]
MARKER = 1  # the token whose presence is the text bit (0 is left for padding)
MODALITIES = ("text", "flag")


@dataclass(frozen=True)
class TokenXORSpec:
    n_samples: int = 2000
    vocab: int = 50
    max_tokens: int = 24
    seed: int = 0


def generate_token_xor(spec: TokenXORSpec) -> pa.Table:
    """``sample_id``, ``label``, ``text`` (list<int64>), ``text_string`` (the same ids as one
    string, space-separated: text to preprocess), ``flag`` and ``text_bit`` (list<float> of
    one value each)."""
    rng = np.random.default_rng(spec.seed)
    text_bit = rng.integers(0, 2, spec.n_samples)
    flag_bit = rng.integers(0, 2, spec.n_samples)
    texts = token_texts(rng, text_bit, spec.vocab, spec.max_tokens)
    one_value = pa.list_(pa.float32())
    return pa.table(
        {
            "sample_id": pa.array(np.arange(spec.n_samples), pa.int64()),
            "label": pa.array(text_bit ^ flag_bit, pa.int64()),
            "text": pa.array(texts, pa.list_(pa.int64())),
            "text_string": pa.array([" ".join(map(str, tokens)) for tokens in texts]),
            "flag": pa.array(flag_bit[:, None].astype(np.float32).tolist(), one_value),
            "text_bit": pa.array(text_bit[:, None].astype(np.float32).tolist(), one_value),
        }
    )


def token_texts(
    rng: np.random.Generator, bits: np.ndarray, vocab: int, max_tokens: int
) -> list[list[int]]:
    """One token-id list per bit, 3 to ``max_tokens`` ids from ``[2, vocab)``, ``MARKER`` at a
    random step exactly where the bit is set."""
    texts = []
    for length, has_marker in zip(rng.integers(3, max_tokens + 1, len(bits)), bits, strict=True):
        tokens = rng.integers(2, vocab, length)
        if has_marker:
            tokens[rng.integers(0, length)] = MARKER
        texts.append(tokens.tolist())
    return texts


def split_token_text(columns: dict[str, pa.Array], separator: str = " ") -> dict[str, object]:
    """A ``model.preprocess``: the ``text`` modality's strings split at ``separator`` into
    token ids (one int64 array per row; a token that is not an integer raises), the other
    modalities as they are."""
    texts = columns["text"].to_pylist()
    tokens = [np.array([int(t) for t in text.split(separator)], np.int64) for text in texts]
    return {**columns, "text": tokens}


class TokenXORModel(torch.nn.Module):
    """Logits ``±margin/2`` of text bit XOR flag bit. ``text`` is read as token ids with their
    mask (``{"values": [n, L] int64, "mask": [n, L] bool}``) or as the precomputed bit
    (``[n, 1]`` float, the ``text_bit`` column)."""

    def __init__(self, margin: float = 30.0) -> None:
        super().__init__()
        self.modalities = MODALITIES
        self.margin = margin

    def encode(self, name: str, x: ModalityInput) -> torch.Tensor:
        if isinstance(x, dict):  # token ids: the bit is MARKER among the real steps
            return ((x["values"] == MARKER) & x["mask"]).any(dim=1, keepdim=True).float()
        return x.float()

    def fuse(self, embeddings: Mapping[str, ModalityInput]) -> torch.Tensor:
        text, flag = (cast(torch.Tensor, embeddings[name]) for name in MODALITIES)
        exclusive = text + flag - 2 * text * flag  # XOR of 0/1 values
        positive_logit = ((exclusive[:, 0] > 0.5).float() * 2 - 1) * (self.margin / 2)
        return torch.stack([-positive_logit, positive_logit], dim=1)


def token_xor_model() -> TokenXORModel:
    """The model factory a job names: ``intermodal.synthetic.tokens:token_xor_model``."""
    return TokenXORModel()

"""Images and text with a known interaction: PNG-encoded images that hold one of two shapes,
token-id texts that hold a marker token or not, and a label that depends on both (``xor``:
shape XOR marker, synergy) or on the image alone (``uniqueness``).

Each image is ``IMAGE_SIZE`` × ``IMAGE_SIZE`` grey levels of noise in ``[0, 60)`` with one bright
shape at a random place: a 4 × 4 square for image bit 1, a 2 × 8 bar for bit 0 (the same number
of bright pixels, so brightness alone does not tell them apart). The texts are those of
``synthetic.tokens`` (3 to ``max_tokens`` ids, ``MARKER`` where the text bit is set). Stored as
a user would hold them: ``image`` binary (PNG bytes), ``text`` list<int64>.
``decode_png_images`` is the ``model.preprocess`` that turns a batch of them into ``[n, 1, H,
W]`` uint8 arrays; it raises on bytes that are not an image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from intermodal.synthetic.tokens import token_texts

IMAGE_SIZE = 16
SHAPES = {1: (4, 4), 0: (2, 8)}  # image bit → (height, width) of its bright shape
VARIANTS = ("xor", "uniqueness")


@dataclass(frozen=True)
class ImageTextSpec:
    variant: str = "xor"  # xor: label = image bit XOR text bit; uniqueness: the image bit
    n_samples: int = 4000
    vocab: int = 50
    max_tokens: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")


def shape_image(rng: np.random.Generator, bit: int) -> np.ndarray:
    """One ``[IMAGE_SIZE, IMAGE_SIZE]`` uint8 image: noise and the bit's shape."""
    image = rng.integers(0, 60, (IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)
    height, width = SHAPES[bit]
    top = rng.integers(0, IMAGE_SIZE - height + 1)
    left = rng.integers(0, IMAGE_SIZE - width + 1)
    image[top : top + height, left : left + width] = 220
    return image


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def generate_image_text(spec: ImageTextSpec) -> pa.Table:
    """``sample_id``, ``label``, ``image`` (PNG bytes), ``text`` (list<int64>), and the bits
    ``image_bit``, ``text_bit`` (int64) the label was built from."""
    rng = np.random.default_rng(spec.seed)
    image_bit = rng.integers(0, 2, spec.n_samples)
    text_bit = rng.integers(0, 2, spec.n_samples)
    label = image_bit ^ text_bit if spec.variant == "xor" else image_bit
    images = [png_bytes(shape_image(rng, int(bit))) for bit in image_bit]
    return pa.table(
        {
            "sample_id": pa.array(np.arange(spec.n_samples), pa.int64()),
            "label": pa.array(label, pa.int64()),
            "image": pa.array(images, pa.binary()),
            "text": pa.array(token_texts(rng, text_bit, spec.vocab, spec.max_tokens)),
            "image_bit": pa.array(image_bit, pa.int64()),
            "text_bit": pa.array(text_bit, pa.int64()),
        }
    )


def decode_png_images(columns: dict[str, pa.Array]) -> dict[str, object]:
    """A ``model.preprocess``: the ``image`` modality's PNG bytes decoded to ``[n, 1, H, W]``
    uint8 (one grey channel), the other modalities as they are."""
    images = [np.asarray(Image.open(io.BytesIO(data))) for data in columns["image"].to_pylist()]
    return {**columns, "image": np.stack(images)[:, None]}

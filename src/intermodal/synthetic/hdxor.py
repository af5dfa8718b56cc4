"""HD-XOR: high-dimensional XOR data with a known interaction type (InterSHAP, §4.1).

Each sample draws a few fair bits, turns them into per-modality Gaussian latents (200 dims,
noise inside the latent) and projects every latent with a modality-specific random matrix.
The four settings control where the label information lives:

* ``uniqueness``: one modality carries both bits; the label is their XOR.
* ``synergy``: every modality carries one bit; the label needs all of them.
* ``redundancy``: every modality carries the same latent holding both bits.
* ``random``: the label is independent of everything.

Alongside the features, ``<modality>_bits`` columns hold the clean bits so that
:func:`xor_function_model` (the paper's controlled baseline) can be evaluated on them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, Field, model_validator

from intermodal.storage import join, write_table

Setting = Literal["uniqueness", "synergy", "redundancy", "random"]

LATENT_DIM = 200
DEFAULT_DIMS = [200, 100, 150, 100]
ROW_GROUP_SIZE = 4096

_SYNERGY_MEAN, _SYNERGY_STD = 0.35, 2.0
_UNIQUE_MEAN = 0.35
_REDUNDANT_MEAN = 0.25
_RANDOM_MEAN = 0.5


class HDXORSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one HD-XOR data set."""

    setting: Setting = "synergy"
    n_modalities: int = Field(default=2, ge=2, le=4)
    n_samples: int = Field(default=20_000, ge=8)
    dims: list[int] | None = None
    unique_modality: int = Field(default=0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_modalities(self) -> HDXORSpec:
        if self.dims is not None:
            if len(self.dims) != self.n_modalities:
                raise ValueError(
                    f"dims has {len(self.dims)} entries for {self.n_modalities} modalities"
                )
            if min(self.dims) < 1:
                raise ValueError(f"dims must be positive, got {self.dims}")
        if self.unique_modality >= self.n_modalities:
            raise ValueError(
                f"unique_modality={self.unique_modality} out of range for "
                f"{self.n_modalities} modalities"
            )
        return self

    @property
    def modality_names(self) -> list[str]:
        """Column names of the feature modalities: ``["m0", "m1", ...]``."""
        return [f"m{m}" for m in range(self.n_modalities)]

    @property
    def feature_dims(self) -> list[int]:
        """Number of features per modality (``dims`` or the paper's defaults)."""
        return list(self.dims) if self.dims is not None else DEFAULT_DIMS[: self.n_modalities]


class _Draw(NamedTuple):
    """Per-sample draw before projection.

    label: [n] int64; latents: M arrays [n, LATENT_DIM]; bits: M arrays [n, n_bits] int.
    """

    label: np.ndarray
    latents: list[np.ndarray]
    bits: list[np.ndarray]


def _fair_bits(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Independent fair bits, shape [n, k] int64."""
    return rng.integers(0, 2, size=(n, k), dtype=np.int64)


def _signal_block(
    rng: np.random.Generator, bit: np.ndarray, mean: float, std: float, width: int
) -> np.ndarray:
    """Gaussian block centred at ``+mean`` where ``bit`` is 1 and ``-mean`` otherwise.

    bit: [n] -> returns [n, width] float64.
    """
    centre = np.where(bit == 1, mean, -mean)[:, None]
    return rng.normal(centre, std, size=(bit.shape[0], width))


def _two_bit_latent(rng: np.random.Generator, bits: np.ndarray, mean: float) -> np.ndarray:
    """Latent whose first half encodes ``bits[:, 0]`` and second half ``bits[:, 1]``.

    bits: [n, 2] -> returns [n, LATENT_DIM].
    """
    half = LATENT_DIM // 2
    return np.concatenate(
        [
            _signal_block(rng, bits[:, 0], mean, 1.0, half),
            _signal_block(rng, bits[:, 1], mean, 1.0, half),
        ],
        axis=1,
    )


def _one_hot_balanced_bits(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Bit patterns [n, k] where exactly ``n // 2`` rows have exactly one bit set.

    Independent fair bits would make "exactly one set" a minority class for k > 2, so the two
    classes are drawn separately and then shuffled together.
    """
    n_pos = n // 2
    positives = np.zeros((n_pos, k), dtype=np.int64)
    positives[np.arange(n_pos), rng.integers(0, k, size=n_pos)] = 1
    patterns = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
    negative_patterns = patterns[patterns.sum(axis=1) != 1]
    negatives = negative_patterns[rng.integers(0, len(negative_patterns), size=n - n_pos)]
    return rng.permutation(np.concatenate([positives, negatives]), axis=0)


def _draw_synergy(spec: HDXORSpec, rng: np.random.Generator) -> _Draw:
    n, k = spec.n_samples, spec.n_modalities
    # For two modalities "exactly one set" is XOR, and fair independent bits are balanced.
    bits = _fair_bits(rng, n, k) if k == 2 else _one_hot_balanced_bits(rng, n, k)
    latents = [
        _signal_block(rng, bits[:, m], _SYNERGY_MEAN, _SYNERGY_STD, LATENT_DIM) for m in range(k)
    ]
    label = (bits.sum(axis=1) == 1).astype(np.int64)
    return _Draw(label, latents, [bits[:, m : m + 1] for m in range(k)])


def _draw_uniqueness(spec: HDXORSpec, rng: np.random.Generator) -> _Draw:
    n, u = spec.n_samples, spec.unique_modality
    bits = _fair_bits(rng, n, 2)
    latents, bit_cols = [], []
    for m in range(spec.n_modalities):
        if m == u:
            latents.append(_two_bit_latent(rng, bits, _UNIQUE_MEAN))
            bit_cols.append(bits)
        else:
            latents.append(rng.standard_normal((n, LATENT_DIM)))
            bit_cols.append(_fair_bits(rng, n, 2))
    return _Draw(bits[:, 0] ^ bits[:, 1], latents, bit_cols)


def _draw_redundancy(spec: HDXORSpec, rng: np.random.Generator) -> _Draw:
    bits = _fair_bits(rng, spec.n_samples, 2)
    shared = _two_bit_latent(rng, bits, _REDUNDANT_MEAN)
    k = spec.n_modalities
    return _Draw(bits[:, 0] ^ bits[:, 1], [shared] * k, [bits] * k)


def _draw_random(spec: HDXORSpec, rng: np.random.Generator) -> _Draw:
    n, k = spec.n_samples, spec.n_modalities
    label = _fair_bits(rng, n, 1)[:, 0]
    shared = rng.normal(_RANDOM_MEAN, 1.0, size=(n, LATENT_DIM))
    return _Draw(label, [shared] * k, [_fair_bits(rng, n, 2) for _ in range(k)])


_DRAWERS: dict[str, Callable[[HDXORSpec, np.random.Generator], _Draw]] = {
    "synergy": _draw_synergy,
    "uniqueness": _draw_uniqueness,
    "redundancy": _draw_redundancy,
    "random": _draw_random,
}


def _projections(spec: HDXORSpec) -> list[np.ndarray]:
    """Projection matrices P_m ~ U(-0.5, 0.5), each [dims[m], LATENT_DIM].

    One child seed per modality keeps P_m independent of n_samples and of how many modalities
    follow it, so data sets that differ only in size share their projections.
    """
    children = np.random.SeedSequence(spec.seed).spawn(1)[0].spawn(spec.n_modalities)
    return [
        np.random.default_rng(child).uniform(-0.5, 0.5, size=(d, LATENT_DIM))
        for child, d in zip(children, spec.feature_dims, strict=True)
    ]


def _fixed_size_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """[n, d] array -> fixed-size list<float32>[d] column of length n."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), values.shape[1])


def generate(spec: HDXORSpec) -> pa.Table:
    """Draw one HD-XOR data set.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n], per modality ``m{i}`` as
    fixed-size list<float32>[dims[i]], then per modality ``m{i}_bits`` as fixed-size
    list<float32>[n_bits] (1 bit for synergy, 2 otherwise).
    """
    draw = _DRAWERS[spec.setting](spec, np.random.default_rng(spec.seed))
    names = spec.modality_names
    features = [
        _fixed_size_list(latent @ proj.T)
        for latent, proj in zip(draw.latents, _projections(spec), strict=True)
    ]
    bits = [_fixed_size_list(b) for b in draw.bits]
    columns = [
        pa.array(np.arange(spec.n_samples, dtype=np.int64)),
        pa.array(draw.label.astype(np.int64)),
        *features,
        *bits,
    ]
    column_names = ["sample_id", "label", *names, *(f"{name}_bits" for name in names)]
    return pa.Table.from_arrays(columns, names=column_names)


def write_table_shards(table: pa.Table, uri: str, n_shards: int = 4) -> list[str]:
    """Write ``table`` as ``n_shards`` contiguous Parquet files ``part-00000.parquet``, ... under
    ``uri`` (a local directory or any fsspec URI), row groups of at most ``ROW_GROUP_SIZE``
    rows. Returns the written file URIs, spelled like ``uri``."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    bounds = np.linspace(0, table.num_rows, n_shards + 1).round().astype(int)
    written = []
    for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
        shard = join(uri, f"part-{i:05d}.parquet")
        write_table(table.slice(start, stop - start), shard, row_group_size=ROW_GROUP_SIZE)
        written.append(shard)
    return written


def write_shards(spec: HDXORSpec, uri: str, n_shards: int = 4) -> list[str]:
    """Generate the data set of ``spec`` and write it with :func:`write_table_shards`."""
    return write_table_shards(generate(spec), uri, n_shards)


class XORFunctionModel(torch.nn.Module):
    """Parameter-free classifier computing the HD-XOR label from the clean bits columns.

    ``forward`` takes ``{modality name: [B, n_bits] float tensor of 0/1}`` and returns
    logits [B, 2]. With ``source=None`` (synergy) it reads the first bit of every modality;
    otherwise it reads both bits of modality ``source``. Either way the positive class is
    "exactly one of the read bits is set", which is XOR for two bits.
    """

    def __init__(self, modalities: tuple[str, ...], source: int | None, margin: float) -> None:
        super().__init__()
        self.modalities = modalities
        self.source = source
        self.margin = margin

    def _read_bits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoded bits [B, k] bool."""
        if self.source is None:
            values = torch.cat([inputs[name][:, :1] for name in self.modalities], dim=1)
        else:
            values = inputs[self.modalities[self.source]]
        return values > 0.5

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        positive = self._read_bits(inputs).sum(dim=1) == 1
        dtype = inputs[self.modalities[0]].dtype
        positive_logit = (positive.to(dtype) * 2 - 1) * (self.margin / 2)
        return torch.stack([-positive_logit, positive_logit], dim=1)


def xor_function_model(
    setting: str, n_modalities: int, unique_modality: int = 0, margin: float = 30.0
) -> torch.nn.Module:
    """The controlled XOR function of the paper's baseline, evaluated on ``m{i}_bits`` inputs.

    synergy: positive iff exactly one modality's bit is set. uniqueness: XOR of the unique
    modality's two bits, other modalities ignored. redundancy: XOR of modality 0's bits; as in
    the paper this model is only meaningful for synergy and uniqueness, because with every
    modality carrying the same bits any single-modality function is one arbitrary choice.
    random: no function of the inputs predicts the label, so this raises ``ValueError``.
    """
    if not 2 <= n_modalities <= 4:
        raise ValueError(f"n_modalities must be in 2..4, got {n_modalities}")
    if not 0 <= unique_modality < n_modalities:
        raise ValueError(f"unique_modality={unique_modality} out of range for {n_modalities}")
    sources: dict[str, int | None] = {
        "synergy": None,
        "uniqueness": unique_modality,
        "redundancy": 0,
    }
    if setting not in sources:
        raise ValueError(f"no XOR function model for setting {setting!r}")
    modalities = tuple(f"m{m}" for m in range(n_modalities))
    return XORFunctionModel(modalities, sources[setting], margin)

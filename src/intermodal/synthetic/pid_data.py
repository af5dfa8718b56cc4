"""Synthetic data sets with known PID structure (paper 003 §4.1, Tables 1 and 2).

Bitwise data (Table 1): two fair independent bits ``x1, x2`` and ``y = op(x1, x2)`` for
``op`` in AND, OR, XOR. :func:`bitwise_joint` gives the exact joint; :func:`generate_bitwise`
samples rows whose features are the bit (``dims = 1``) or ``bit * direction`` with a fixed
random unit direction per modality (``dims > 1``), plus isotropic Gaussian noise of std
``noise`` per feature. The clean bits stay in ``x1_bits`` / ``x2_bits`` for discrete estimation.

Latent generative data (Table 2), following the released generator rather than the paper text:

* latents ``z1, z2, zc`` are ``[n, latent_dim]`` with covariance ``1.5 · I`` (std √1.5);
* ``x1 = z1 @ A1 + zc @ C`` and ``x2 = z2 @ A2 + zc @ C``, i.e. ``concat(z_i, zc) @ W_i`` with
  ``W_i = [A_i; C]`` of shape ``[2 * latent_dim, feature_dim]``, all blocks U(0, 1) and the
  ``zc`` block ``C`` shared by both modalities;
* a label vector ``[n, latent_dim]`` per setting: ``zc`` (DR), ``z1`` (DU1), ``z2`` (DU2),
  ``z1 ⊙ z2 / √1.5`` (DS: elementwise products, scaled to the same variance as the others), and
  for ``setting="mixed"`` the weighted sum ``Σ mix[s] · vector[s]`` (:func:`share_mix` turns
  the paper's mixed data sets, a share of each latent's dimensions, into such weights);
* score = label vector @ ``m`` with a fixed random Gaussian ``m`` [latent_dim], cut at its
  empirical quantiles into ``n_classes`` balanced classes. The released generator thresholds
  ``sigmoid(mean(f(vector)))``; for a linear ``f`` that mean is one linear projection and the
  sigmoid is monotone, so quantile classes of the plain projection are the same classes.

Labels are a deterministic function of the latents (no label noise). The paper builds every
label with one fixed nonlinear map of the chosen latents (App. C.3); here DR, DU1 and DU2 use a
linear projection and DS the projection of elementwise products ``Σ_k m_k z1_k z2_k``. That score
is symmetric in ``z2`` for every fixed ``z1`` (and vice versa), so neither modality alone says
anything about the label: ``I(X1; Y) = I(X2; Y) = 0`` and all information is synergy, the
continuous counterpart of XOR. (A linear DS score, additive in ``z1`` and ``z2``, is mostly
redundancy under k-means codes, contrary to the paper's Table 2.)
The fixed parts (directions, transforms, ``m``) come from one child of ``SeedSequence(seed)``
and the samples from another, so data sets that differ only in ``n_samples`` share them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

BitwiseOp = Literal["and", "or", "xor"]
LatentSetting = Literal["DR", "DU1", "DU2", "DS", "mixed"]
Interaction = Literal["DR", "DU1", "DU2", "DS"]

LATENT_VARIANCE = 1.5

_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
}


def bitwise_joint(op: BitwiseOp) -> np.ndarray:
    """Exact joint ``p[x1, x2, y]`` [2, 2, 2] of two fair independent bits, ``y = op(x1, x2)``."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    bits = np.arange(2)
    x1, x2 = np.meshgrid(bits, bits, indexing="ij")
    p = np.zeros((2, 2, 2))
    p[x1, x2, _OPS[op](x1, x2)] = 0.25
    return p


class BitwiseSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one bitwise data set."""

    op: BitwiseOp
    n_samples: int = Field(ge=1)
    seed: int = 0
    dims: int = Field(default=1, ge=1)
    noise: float = Field(default=0.0, ge=0.0)


class LatentSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one latent generative data set; ``mix`` is required iff ``setting="mixed"``
    and maps interactions to non-negative weights of their label vectors."""

    setting: LatentSetting
    n_samples: int = Field(ge=1)
    latent_dim: int = Field(default=5, ge=1)
    feature_dim: int = Field(default=32, ge=1)
    n_classes: int = Field(default=2, ge=2)
    seed: int = 0
    mix: dict[Interaction, float] | None = None

    @model_validator(mode="after")
    def _check_mix(self) -> LatentSpec:
        if (self.setting == "mixed") != (self.mix is not None):
            raise ValueError('mix must be given exactly when setting == "mixed"')
        if self.mix is not None and (
            min(self.mix.values(), default=0.0) < 0 or sum(self.mix.values()) <= 0
        ):
            raise ValueError(f"mix weights must be non-negative with a positive sum: {self.mix}")
        if self.n_classes > self.n_samples:
            raise ValueError(f"n_classes={self.n_classes} exceeds n_samples={self.n_samples}")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Label-vector weights per interaction (``{setting: 1.0}`` unless mixed)."""
        return dict(self.mix) if self.mix is not None else {self.setting: 1.0}


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(generator of the fixed parts, generator of the samples) for ``seed``."""
    fixed, samples = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(fixed), np.random.default_rng(samples)


def _fixed_size_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """[n, d] array -> fixed-size list<float32>[d] column of length n."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), values.shape[1])


def _unit_directions(rng: np.random.Generator, n_modalities: int, dims: int) -> np.ndarray:
    """Random unit vectors [n_modalities, dims], uniform on the sphere."""
    directions = rng.standard_normal((n_modalities, dims))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _bit_features(
    rng: np.random.Generator, bits: np.ndarray, direction: np.ndarray, noise: float
) -> np.ndarray:
    """``bits[:, None] * direction + N(0, noise²)``: bits [n], direction [d] -> [n, d]."""
    features = bits[:, None] * direction[None, :]
    if noise > 0:
        features = features + rng.normal(0.0, noise, size=features.shape)
    return features


def generate_bitwise(spec: BitwiseSpec) -> pa.Table:
    """Draw one bitwise data set.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n] (= op(x1_bits, x2_bits)), ``x1``,
    ``x2`` fixed-size list<float32>[dims], ``x1_bits``, ``x2_bits`` int64 [n].
    """
    fixed_rng, rng = _rngs(spec.seed)
    # with one feature the "direction" is the bit itself, not a random sign
    directions = np.ones((2, 1)) if spec.dims == 1 else _unit_directions(fixed_rng, 2, spec.dims)
    bits = rng.integers(0, 2, size=(2, spec.n_samples), dtype=np.int64)
    label = _OPS[spec.op](bits[0], bits[1])
    features = [_bit_features(rng, bits[m], directions[m], spec.noise) for m in range(2)]
    columns = [
        pa.array(np.arange(spec.n_samples, dtype=np.int64)),
        pa.array(label.astype(np.int64)),
        *(_fixed_size_list(f) for f in features),
        pa.array(bits[0]),
        pa.array(bits[1]),
    ]
    return pa.Table.from_arrays(
        columns, names=["sample_id", "label", "x1", "x2", "x1_bits", "x2_bits"]
    )


def _label_vectors(z1: np.ndarray, z2: np.ndarray, zc: np.ndarray) -> dict[str, np.ndarray]:
    """Label vector [n, latent_dim] of every pure interaction, all of equal variance."""
    return {"DR": zc, "DU1": z1, "DU2": z2, "DS": z1 * z2 / np.sqrt(LATENT_VARIANCE)}


def _quantile_classes(score: np.ndarray, n_classes: int) -> np.ndarray:
    """Cut ``score`` [n] at its empirical quantiles into ``n_classes`` balanced classes [n]."""
    cuts = np.quantile(score, np.arange(1, n_classes) / n_classes)
    return np.searchsorted(cuts, score, side="right").astype(np.int64)


def _latent_label(
    spec: LatentSpec, z1: np.ndarray, z2: np.ndarray, zc: np.ndarray, projection: np.ndarray
) -> np.ndarray:
    """Classes [n] of the weighted label vector (latents [n, latent_dim]) projected on
    ``projection`` [latent_dim]."""
    vectors = _label_vectors(z1, z2, zc)
    vector = sum(weight * vectors[name] for name, weight in spec.weights.items())
    return _quantile_classes(vector @ projection, spec.n_classes)


def generate_latent(spec: LatentSpec) -> pa.Table:
    """Draw one latent generative data set.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n] in ``0..n_classes-1``, ``x1``, ``x2``
    fixed-size list<float32>[feature_dim].
    """
    fixed_rng, rng = _rngs(spec.seed)
    d, f = spec.latent_dim, spec.feature_dim
    a1, a2, shared = (fixed_rng.uniform(0.0, 1.0, size=(d, f)) for _ in range(3))
    projection = fixed_rng.standard_normal(d)
    z1, z2, zc = rng.normal(0.0, np.sqrt(LATENT_VARIANCE), size=(3, spec.n_samples, d))
    x1 = z1 @ a1 + zc @ shared
    x2 = z2 @ a2 + zc @ shared
    columns = [
        pa.array(np.arange(spec.n_samples, dtype=np.int64)),
        pa.array(_latent_label(spec, z1, z2, zc, projection)),
        _fixed_size_list(x1),
        _fixed_size_list(x2),
    ]
    return pa.Table.from_arrays(columns, names=["sample_id", "label", "x1", "x2"])


def share_mix(shares: dict[Interaction, float]) -> dict[Interaction, float]:
    """``LatentSpec.mix`` weights of a data set of paper 003's mixed kind (§4.1, App. C.3):
    ``y = f(z1*, z2*, zc*)`` builds the label from a share of each latent's dimensions (``z*``
    is half of them). Here the label vector is a weighted sum of the pure ones, each of the
    same variance per dimension, so a latent that enters with a share ``s`` of its dimensions
    is its label vector (``DU1`` for z1, ``DU2`` for z2, ``DR`` for zc) weighted by ``√s``:
    the share ``s`` of the score variance that all of its dimensions would bring."""
    if min(shares.values(), default=0.0) < 0 or sum(shares.values()) <= 0:
        raise ValueError(f"shares must be non-negative with a positive sum: {shares}")
    return {name: float(np.sqrt(share)) for name, share in shares.items()}

"""Synthetic data sets with known interactions for validating LSMI (paper 001 §4.1, App. A.1).

Four families, each returned as an Arrow table with ``sample_id`` int64, ``label`` int64 and
the modalities ``x1``, ``x2`` (and ``x3`` for mixed widths) as fixed-size list<float32> columns:

* **Circuit logic** (§4.1.2, Table 1): two fair independent bits ``b1``, ``b2`` and a gate.
  ``"xor"``: ``y = b1 XOR b2``; ``"or"``: ``y = b1 OR b2``; ``"xor_not"``: a random half of the
  rows (``n // 2`` of them, drawn without replacement) uses ``y = b1 XOR b2`` and the rest
  ``y = NOT b2``. The gate of a row is encoded in *both* modalities, so the ground truth of
  ``"xor_not"`` is the average of the two halves' PIDs. Ground truth in nats
  (:data:`CIRCUIT_TRUTH`, Table 1 after the dataset-level adjustment):

  ========== ================== ==== ========= =================
  op         R                  U1   U2        S
  ========== ================== ==== ========= =================
  xor        0                  0    0         ln 2 ≈ 0.6931
  or         ¾·ln(4/3) ≈ 0.2158 0    0         ½·ln 2 ≈ 0.3466
  xor_not    0                  0    ½·ln 2    ½·ln 2
  ========== ================== ==== ========= =================

  For ``"or"``, ``R + U1 = I(X1; Y) = ¾·ln(4/3)`` and ``R + U1 + U2 + S = H(Y) = h(¾)
  ≈ 0.5623`` nats (``H(Y) − I(X1; Y) = ½·ln 2``).

* **Gaussian mixture with correlation ρ** (§4.1.3): ``y`` uniform over ``n_classes``,
  ``x1 = onehot(y) + u`` and ``x2 = onehot(y) + ρ·u + √(1 − ρ²)·v`` with ``u, v`` iid
  ``N(0, noise²·I)``. Each modality's marginal is the same mixture for every ρ; only the joint
  (the correlation of the two noise parts, ``ρ`` per feature within each class) changes.
  ``y``, ``u`` and ``v`` are drawn in the same order for every ρ, so tables that differ only
  in ``rho`` share ``label`` and ``x1`` exactly.

* **Preset interaction mixtures** (§4.1.4): every row gets an interaction type R, U1, U2 or S
  (exact counts from the normalised fractions by largest-remainder rounding, then shuffled),
  and with fair independent bits ``a``, ``c`` and ``y`` binary:

  ==== ============ ============ ===========
  type x1 carries   x2 carries   label
  ==== ============ ============ ===========
  R    a            a            a
  U1   a            c            a
  U2   c            a            a
  S    a            c            a XOR c
  ==== ============ ============ ===========

  The type is encoded in both modalities, so each type contributes ``ln 2`` nats of its own
  term weighted by its fraction (:func:`preset_truth`).

* **Mixed widths** (for LSMI on modalities of different widths): three modalities ``x1``,
  ``x2``, ``x3`` of ``widths`` features (default 48, 16 and 5), the preset construction with
  these types (``y`` binary, ``a``, ``c`` fair independent bits):

  ==== ========= ========= ========= ===========
  type x1        x2        x3        label
  ==== ========= ========= ========= ===========
  R    a         a         a         a
  U1   a         c         c         a
  U3   c         c         a         a
  S    a         c         c         a XOR c
  ==== ========= ========= ========= ===========

  so the narrowest modality ``x3`` alone knows the label on the ``U3`` rows. The type is
  encoded in every modality; per pair of modalities each type contributes ``ln 2`` nats to
  one term or to none (a pair of modalities that both carry ``c`` knows nothing of ``y``):
  :func:`mixed_width_truth` per pair, :func:`mixed_width_row_truth` per row.

Embedding (circuit, presets and mixed widths): each modality's small code vector (bit as ±1,
followed by the gate as ±1 or the type as a one-hot) is mapped into ``dims`` (or its width)
features by a fixed random matrix with orthonormal columns (QR of a Gaussian matrix), then iid
``N(0, noise²)`` is added per feature. Because the columns are orthonormal,
``features @ basis`` is the least-squares code estimate, with per-entry noise ``N(0, noise²)``
(:func:`decode_codes`). The circuit code layout is the same for every op (the gate entry is
constant ``+1`` for ``"xor"`` and ``"or"``), so all three circuit data sets have the same
dimensions. Fixed maps come from one child of ``SeedSequence(seed)`` and samples from another,
so data sets that differ only in ``n_samples`` (or ``op``, ``fractions``) share the maps.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from intermodal.synthetic.pid_data import _fixed_size_list, _rngs

CircuitOp = Literal["xor", "or", "xor_not"]
InteractionType = Literal["R", "U1", "U2", "S"]
MixedWidthType = Literal["R", "U1", "U3", "S"]

INTERACTION_TYPES: tuple[str, ...] = ("R", "U1", "U2", "S")
CIRCUIT_CODE_DIM = 2  # [bit ±1, gate ±1 (+1: xor/or, −1: not)]
PRESET_CODE_DIM = 1 + len(INTERACTION_TYPES)  # [bit ±1, one-hot type]
MIXED_WIDTH_TYPES: tuple[str, ...] = ("R", "U1", "U3", "S")
MIXED_WIDTH_MODALITIES: tuple[str, ...] = ("x1", "x2", "x3")
MIXED_WIDTH_CODE_DIM = 1 + len(MIXED_WIDTH_TYPES)  # [bit ±1, one-hot type]
# per mixed-width type: the bit ("a" or "c") that x1, x2, x3 carry, and the label (a or a XOR c)
MIXED_WIDTH_LAYOUT: dict[str, tuple[tuple[str, str, str], str]] = {
    "R": (("a", "a", "a"), "a"),
    "U1": (("a", "c", "c"), "a"),
    "U3": (("c", "c", "a"), "a"),
    "S": (("a", "c", "c"), "xor"),
}

_LN2 = float(np.log(2.0))

CIRCUIT_TRUTH: dict[str, dict[str, float]] = {
    "xor": {"R": 0.0, "U1": 0.0, "U2": 0.0, "S": _LN2},
    "or": {"R": float(0.75 * np.log(4 / 3)), "U1": 0.0, "U2": 0.0, "S": _LN2 / 2},
    "xor_not": {"R": 0.0, "U1": 0.0, "U2": _LN2 / 2, "S": _LN2 / 2},
}
"""Dataset-level PID ground truth of the circuit data sets, in nats."""


class CircuitSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one circuit-logic data set."""

    op: CircuitOp
    n_samples: int = Field(ge=1)
    dims: int = Field(default=8, ge=CIRCUIT_CODE_DIM)
    noise: float = Field(default=0.1, ge=0.0)
    seed: int = 0


class GaussianMixtureSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one Gaussian mixture with cross-modal noise correlation ``rho``."""

    n_samples: int = Field(ge=1)
    n_classes: int = Field(default=2, ge=2)
    rho: float = Field(ge=-1.0, le=1.0)
    noise: float = Field(default=0.5, gt=0.0)
    seed: int = 0


class PresetSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one preset interaction mixture; ``fractions`` are non-negative weights per
    interaction type (missing types weigh 0), normalised to sum to one."""

    fractions: dict[InteractionType, float]
    n_samples: int = Field(ge=1)
    dims: int = Field(default=16, ge=PRESET_CODE_DIM)
    noise: float = Field(default=0.1, ge=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_fractions(self) -> PresetSpec:
        values = list(self.fractions.values())
        if min(values, default=0.0) < 0 or sum(values) <= 0 or not np.all(np.isfinite(values)):
            raise ValueError(
                f"fractions must be finite, non-negative and have a positive sum: {self.fractions}"
            )
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Normalised fraction of every interaction type, in ``INTERACTION_TYPES`` order."""
        total = sum(self.fractions.values())
        return {name: self.fractions.get(name, 0.0) / total for name in INTERACTION_TYPES}

    @property
    def counts(self) -> dict[str, int]:
        """Exact row count per type: largest-remainder rounding of ``weights · n_samples``."""
        return _exact_counts(self.weights, self.n_samples)


class MixedWidthSpec(BaseModel, extra="forbid", frozen=True):
    """Parameters of one mixed-width data set: ``widths`` of ``x1``, ``x2``, ``x3`` (each at
    least ``MIXED_WIDTH_CODE_DIM``) and non-negative ``fractions`` per type (missing types weigh
    0), normalised to sum to one. The default fractions keep every per-row LSMI term exact for
    exact entropies of the modalities' label posteriors (docs/choices.md, "LSMI on modalities
    of different widths")."""

    n_samples: int = Field(ge=1)
    widths: tuple[int, int, int] = (48, 16, 5)
    fractions: dict[MixedWidthType, float] = {"R": 0.1, "U1": 0.25, "U3": 0.3, "S": 0.35}
    noise: float = Field(default=0.1, ge=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> MixedWidthSpec:
        if min(self.widths) < MIXED_WIDTH_CODE_DIM:
            raise ValueError(
                f"widths must be at least {MIXED_WIDTH_CODE_DIM} each, got {self.widths}"
            )
        values = list(self.fractions.values())
        if min(values, default=0.0) < 0 or sum(values) <= 0 or not np.all(np.isfinite(values)):
            raise ValueError(
                f"fractions must be finite, non-negative and have a positive sum: {self.fractions}"
            )
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Normalised fraction of every type, in ``MIXED_WIDTH_TYPES`` order."""
        total = sum(self.fractions.values())
        return {name: self.fractions.get(name, 0.0) / total for name in MIXED_WIDTH_TYPES}

    @property
    def counts(self) -> dict[str, int]:
        """Exact row count per type: largest-remainder rounding of ``weights · n_samples``."""
        return _exact_counts(self.weights, self.n_samples)


def _exact_counts(weights: dict[str, float], n_samples: int) -> dict[str, int]:
    """Largest-remainder rounding of ``weights · n_samples`` (ties go to the earlier name)."""
    target = np.array(list(weights.values())) * n_samples
    counts = np.floor(target).astype(np.int64)
    order = np.argsort(-(target - counts), kind="stable")  # stable: ties to the earlier type
    counts[order[: n_samples - counts.sum()]] += 1
    return dict(zip(weights, counts.tolist(), strict=True))


def preset_truth(spec: PresetSpec) -> dict[str, float]:
    """Dataset-level PID ground truth in nats: ``ln 2 · fraction`` of every type's own term."""
    return {name: _LN2 * weight for name, weight in spec.weights.items()}


def _orthonormal_maps(rng: np.random.Generator, dims: int, code_dim: int) -> np.ndarray:
    """Two random maps [2, dims, code_dim] with orthonormal columns (QR of Gaussians)."""
    gaussians = rng.standard_normal((2, dims, code_dim))
    return np.stack([np.linalg.qr(g)[0] for g in gaussians])


def circuit_maps(spec: CircuitSpec) -> np.ndarray:
    """Fixed embedding maps [2, dims, CIRCUIT_CODE_DIM] of ``spec`` (modality 1, modality 2)."""
    return _orthonormal_maps(_rngs(spec.seed)[0], spec.dims, CIRCUIT_CODE_DIM)


def preset_maps(spec: PresetSpec) -> np.ndarray:
    """Fixed embedding maps [2, dims, PRESET_CODE_DIM] of ``spec`` (modality 1, modality 2)."""
    return _orthonormal_maps(_rngs(spec.seed)[0], spec.dims, PRESET_CODE_DIM)


def decode_codes(features: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares code estimate [n, code_dim] of ``features`` [n, dims] under a map
    ``basis`` [dims, code_dim] with orthonormal columns (``features @ basis``)."""
    return np.asarray(features, dtype=np.float64) @ basis


def _embed(
    rng: np.random.Generator, codes: np.ndarray, basis: np.ndarray, noise: float
) -> np.ndarray:
    """``codes @ basis.T + N(0, noise²)``: codes [n, k], basis [dims, k] -> [n, dims]."""
    features = codes @ basis.T
    if noise > 0:
        features = features + rng.normal(0.0, noise, size=features.shape)
    return features


def _signs(bits: np.ndarray) -> np.ndarray:
    """0/1 -> −1/+1 as float."""
    return 2.0 * bits - 1.0


def generate_circuit(spec: CircuitSpec) -> pa.Table:
    """Draw one circuit-logic data set.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n], ``x1``, ``x2`` fixed-size
    list<float32>[dims], ``x1_bits``, ``x2_bits`` int64 [n] (clean ``b1``, ``b2``) and
    ``gate`` string [n] (``"xor"``, ``"or"`` or ``"not"``).
    """
    fixed_rng, rng = _rngs(spec.seed)
    maps = _orthonormal_maps(fixed_rng, spec.dims, CIRCUIT_CODE_DIM)
    n = spec.n_samples
    b1, b2 = rng.integers(0, 2, size=(2, n), dtype=np.int64)
    is_not = np.zeros(n, dtype=bool)
    if spec.op == "xor_not":
        is_not[rng.choice(n, size=n - n // 2, replace=False)] = True
    label = b1 | b2 if spec.op == "or" else np.where(is_not, 1 - b2, b1 ^ b2)
    gate_sign = np.where(is_not, -1.0, 1.0)
    features = [
        _embed(rng, np.stack([_signs(bits), gate_sign], axis=1), maps[m], spec.noise)
        for m, bits in enumerate((b1, b2))
    ]
    gate_name = "or" if spec.op == "or" else "xor"
    gate = np.where(is_not, "not", gate_name)
    columns = [
        pa.array(np.arange(n, dtype=np.int64)),
        pa.array(label.astype(np.int64)),
        *(_fixed_size_list(f) for f in features),
        pa.array(b1),
        pa.array(b2),
        pa.array(gate.tolist(), type=pa.string()),
    ]
    return pa.Table.from_arrays(
        columns, names=["sample_id", "label", "x1", "x2", "x1_bits", "x2_bits", "gate"]
    )


def generate_gaussian_mixture(spec: GaussianMixtureSpec) -> pa.Table:
    """Draw one Gaussian mixture with noise correlation ``rho``.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n] in ``0..n_classes-1``, ``x1``,
    ``x2`` fixed-size list<float32>[n_classes].
    """
    _, rng = _rngs(spec.seed)
    n, k = spec.n_samples, spec.n_classes
    label = rng.integers(0, k, size=n, dtype=np.int64)
    u, v = rng.normal(0.0, spec.noise, size=(2, n, k))
    centres = np.eye(k)[label]
    x1 = centres + u
    x2 = centres + spec.rho * u + np.sqrt(max(1.0 - spec.rho**2, 0.0)) * v
    columns = [
        pa.array(np.arange(n, dtype=np.int64)),
        pa.array(label),
        _fixed_size_list(x1),
        _fixed_size_list(x2),
    ]
    return pa.Table.from_arrays(columns, names=["sample_id", "label", "x1", "x2"])


def generate_preset(spec: PresetSpec) -> pa.Table:
    """Draw one preset interaction mixture.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n] in {0, 1}, ``x1``, ``x2``
    fixed-size list<float32>[dims], ``interaction`` string [n] (R, U1, U2 or S), and the clean
    carried bits ``x1_bits``, ``x2_bits`` int64 [n].
    """
    fixed_rng, rng = _rngs(spec.seed)
    maps = _orthonormal_maps(fixed_rng, spec.dims, PRESET_CODE_DIM)
    n = spec.n_samples
    type_index = rng.permutation(
        np.repeat(np.arange(len(INTERACTION_TYPES)), list(spec.counts.values()))
    )
    a, c = rng.integers(0, 2, size=(2, n), dtype=np.int64)
    names = np.array(INTERACTION_TYPES)[type_index]
    x1_bits = np.where(names == "U2", c, a)
    x2_bits = np.where((names == "U1") | (names == "S"), c, a)
    label = np.where(names == "S", a ^ c, a)
    one_hot = np.eye(len(INTERACTION_TYPES))[type_index]
    features = [
        _embed(rng, np.column_stack([_signs(bits), one_hot]), maps[m], spec.noise)
        for m, bits in enumerate((x1_bits, x2_bits))
    ]
    columns = [
        pa.array(np.arange(n, dtype=np.int64)),
        pa.array(label.astype(np.int64)),
        *(_fixed_size_list(f) for f in features),
        pa.array(names.tolist(), type=pa.string()),
        pa.array(x1_bits.astype(np.int64)),
        pa.array(x2_bits.astype(np.int64)),
    ]
    return pa.Table.from_arrays(
        columns, names=["sample_id", "label", "x1", "x2", "interaction", "x1_bits", "x2_bits"]
    )


def _mixed_width_term(carried: tuple[str, str], label: str) -> str | None:
    """The one LSMI term (``R``, ``U1``, ``U2``, ``S``) that a pair of modalities carrying the
    bits ``carried`` gets for a label of rule ``label``, or None when the pair knows nothing."""
    if label == "xor":
        return "S" if carried[0] != carried[1] else None
    return {("a", "a"): "R", ("a", "c"): "U1", ("c", "a"): "U2"}.get(carried)


def _pair_positions(pair: tuple[str, str]) -> tuple[int, int]:
    if len(pair) != 2 or not set(pair) <= set(MIXED_WIDTH_MODALITIES) or pair[0] == pair[1]:
        raise ValueError(f"pair must be two of {MIXED_WIDTH_MODALITIES}, got {pair}")
    return MIXED_WIDTH_MODALITIES.index(pair[0]), MIXED_WIDTH_MODALITIES.index(pair[1])


def mixed_width_row_truth(interaction: np.ndarray, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    """Per row the PID terms of ``pair`` (two of ``x1``, ``x2``, ``x3``, U1 the first's, U2 the
    second's) in nats: ``ln 2`` on the row type's term, 0 elsewhere; ``interaction [n]`` the
    rows' type names."""
    first, second = _pair_positions(pair)
    interaction = np.asarray(interaction)
    truth = {term: np.zeros(len(interaction)) for term in INTERACTION_TYPES}
    for name, (carried, label) in MIXED_WIDTH_LAYOUT.items():
        term = _mixed_width_term((carried[first], carried[second]), label)
        if term is not None:
            truth[term][interaction == name] = _LN2
    return truth


def mixed_width_truth(spec: MixedWidthSpec) -> dict[tuple[str, str], dict[str, float]]:
    """Dataset-level PID ground truth in nats of every pair of modalities: ``ln 2 · fraction``
    of each type on its term for that pair."""
    truth = {}
    for pair in combinations(MIXED_WIDTH_MODALITIES, 2):
        first, second = _pair_positions(pair)
        terms = dict.fromkeys(INTERACTION_TYPES, 0.0)
        for name, weight in spec.weights.items():
            carried, label = MIXED_WIDTH_LAYOUT[name]
            term = _mixed_width_term((carried[first], carried[second]), label)
            if term is not None:
                terms[term] += _LN2 * weight
        truth[pair] = terms
    return truth


def generate_mixed_widths(spec: MixedWidthSpec) -> pa.Table:
    """Draw one mixed-width data set.

    Columns: ``sample_id`` int64 [n], ``label`` int64 [n] in {0, 1}, ``x1``, ``x2``, ``x3``
    fixed-size list<float32>[width], ``interaction`` string [n] (R, U1, U3 or S), and the clean
    carried bits ``x1_bits``, ``x2_bits``, ``x3_bits`` int64 [n].
    """
    fixed_rng, rng = _rngs(spec.seed)
    maps = [
        np.linalg.qr(fixed_rng.standard_normal((width, MIXED_WIDTH_CODE_DIM)))[0]
        for width in spec.widths
    ]
    n = spec.n_samples
    type_index = rng.permutation(
        np.repeat(np.arange(len(MIXED_WIDTH_TYPES)), list(spec.counts.values()))
    )
    a, c = rng.integers(0, 2, size=(2, n), dtype=np.int64)
    layouts = [MIXED_WIDTH_LAYOUT[name] for name in MIXED_WIDTH_TYPES]
    is_xor = np.array([label == "xor" for _, label in layouts])[type_index]
    label = np.where(is_xor, a ^ c, a)
    one_hot = np.eye(len(MIXED_WIDTH_TYPES))[type_index]
    bits, features = [], []
    for m, basis in enumerate(maps):
        carries_a = np.array([carried[m] == "a" for carried, _ in layouts])[type_index]
        bits.append(np.where(carries_a, a, c))
        features.append(_embed(rng, np.column_stack([_signs(bits[m]), one_hot]), basis, spec.noise))
    names = np.array(MIXED_WIDTH_TYPES)[type_index]
    columns = [
        pa.array(np.arange(n, dtype=np.int64)),
        pa.array(label.astype(np.int64)),
        *(_fixed_size_list(f) for f in features),
        pa.array(names.tolist(), type=pa.string()),
        *(pa.array(b.astype(np.int64)) for b in bits),
    ]
    modality_names = list(MIXED_WIDTH_MODALITIES)
    return pa.Table.from_arrays(
        columns,
        names=[
            "sample_id",
            "label",
            *modality_names,
            "interaction",
            *(f"{name}_bits" for name in modality_names),
        ],
    )

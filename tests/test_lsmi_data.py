"""Tests for the LSMI synthetic data (paper 001 §4.1, App. A.1): circuit logic, the Gaussian
mixture with correlation ρ and preset interaction mixtures."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from intermodal.synthetic.lsmi_data import (
    CIRCUIT_CODE_DIM,
    CIRCUIT_TRUTH,
    INTERACTION_TYPES,
    PRESET_CODE_DIM,
    CircuitSpec,
    GaussianMixtureSpec,
    PresetSpec,
    circuit_maps,
    decode_codes,
    generate_circuit,
    generate_gaussian_mixture,
    generate_preset,
    preset_maps,
    preset_truth,
)

LN2 = np.log(2.0)


def features(table: pa.Table, name: str) -> np.ndarray:
    """Fixed-size list column -> [n, d] array."""
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist())


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a probability array (any shape)."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(p: dict[tuple, float], a: list[int], b: list[int]) -> float:
    """Exact I(A; B) in nats from a joint ``{outcome tuple: probability}``; ``a`` and ``b``
    are index lists into the outcome tuples."""

    def marginal(idx: list[int]) -> np.ndarray:
        out: dict[tuple, float] = {}
        for outcome, prob in p.items():
            key = tuple(outcome[i] for i in idx)
            out[key] = out.get(key, 0.0) + prob
        return np.array(list(out.values()))

    return entropy(marginal(a)) + entropy(marginal(b)) - entropy(marginal(a + b))


def circuit_joint(op: str) -> dict[tuple, float]:
    """Exact joint of (b1, g, b2, g, y) with the gate g visible in both modalities: outcome
    tuples ``(b1, g1, b2, g2, y)``; modality 1 is indices [0, 1], modality 2 [2, 3]."""
    gates = {"xor": ["xor"], "or": ["or"], "xor_not": ["xor", "not"]}[op]
    fn = {"xor": lambda b1, b2: b1 ^ b2, "or": lambda b1, b2: b1 | b2, "not": lambda b1, b2: 1 - b2}
    joint: dict[tuple, float] = {}
    for gate, b1, b2 in itertools.product(gates, (0, 1), (0, 1)):
        key = (b1, gate, b2, gate, fn[gate](b1, b2))
        joint[key] = joint.get(key, 0.0) + 0.25 / len(gates)
    return joint


# --- circuit -----------------------------------------------------------------------------------


def test_circuit_schema() -> None:
    table = generate_circuit(CircuitSpec(op="xor_not", n_samples=10, dims=5))
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            ("x1", pa.list_(pa.float32(), 5)),
            ("x2", pa.list_(pa.float32(), 5)),
            ("x1_bits", pa.int64()),
            ("x2_bits", pa.int64()),
            ("gate", pa.string()),
        ]
    )
    assert column(table, "sample_id").tolist() == list(range(10))


def test_circuit_deterministic_and_maps_shared() -> None:
    spec = CircuitSpec(op="xor_not", n_samples=200, seed=3)
    assert generate_circuit(spec).equals(generate_circuit(spec))
    assert not generate_circuit(spec).equals(generate_circuit(spec.model_copy(update={"seed": 4})))
    maps = circuit_maps(spec)
    assert maps.shape == (2, spec.dims, CIRCUIT_CODE_DIM)
    for other in (
        CircuitSpec(op="or", n_samples=7, seed=3),
        CircuitSpec(op="xor", n_samples=1, seed=3),
    ):
        np.testing.assert_array_equal(circuit_maps(other), maps)
    for basis in maps:
        np.testing.assert_allclose(basis.T @ basis, np.eye(CIRCUIT_CODE_DIM), atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op": "and", "n_samples": 10},
        {"op": "xor", "n_samples": 0},
        {"op": "xor", "n_samples": 10, "dims": 1},
        {"op": "xor", "n_samples": 10, "noise": -0.1},
        {"op": "xor", "n_samples": 10, "extra": 1},
    ],
)
def test_circuit_spec_is_strict(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        CircuitSpec(**kwargs)


@pytest.mark.parametrize("n", [1000, 1001])
def test_xor_not_gate_split_is_exact_half(n: int) -> None:
    gate = column(generate_circuit(CircuitSpec(op="xor_not", n_samples=n, seed=1)), "gate")
    assert set(gate) == {"xor", "not"}
    assert (gate == "xor").sum() == n // 2
    assert (gate == "not").sum() == n - n // 2


@pytest.mark.parametrize("op", ["xor", "or", "xor_not"])
def test_circuit_labels_follow_gates(op: str) -> None:
    table = generate_circuit(CircuitSpec(op=op, n_samples=4000, seed=2))
    b1, b2, label, gate = (column(table, c) for c in ("x1_bits", "x2_bits", "label", "gate"))
    expected = {"xor": b1 ^ b2, "or": b1 | b2, "not": 1 - b2}
    assert set(gate) <= ({"xor", "not"} if op == "xor_not" else {op})
    for name, values in expected.items():
        rows = gate == name
        np.testing.assert_array_equal(label[rows], values[rows])
    # the bits are fair and independent
    for bits in (b1, b2, b1 ^ b2):
        assert abs(bits.mean() - 0.5) < 0.05


@pytest.mark.parametrize("op", ["xor", "or", "xor_not"])
def test_circuit_features_are_recoverable(op: str) -> None:
    spec = CircuitSpec(op=op, n_samples=20_000, noise=0.1, seed=5)
    table = generate_circuit(spec)
    gate = column(table, "gate")
    gate_sign = np.where(gate == "not", -1.0, 1.0)
    for m, basis in enumerate(circuit_maps(spec)):
        codes = decode_codes(features(table, f"x{m + 1}"), basis)
        bits = (codes[:, 0] > 0).astype(np.int64)
        assert (bits == column(table, f"x{m + 1}_bits")).mean() >= 0.999
        assert (np.sign(codes[:, 1]) == gate_sign).mean() >= 0.999


def test_circuit_noise_free_features_are_exact_codes() -> None:
    spec = CircuitSpec(op="xor_not", n_samples=64, noise=0.0)
    table = generate_circuit(spec)
    codes = decode_codes(features(table, "x1"), circuit_maps(spec)[0])
    expected = np.column_stack(
        [2.0 * column(table, "x1_bits") - 1, np.where(column(table, "gate") == "not", -1, 1)]
    )
    np.testing.assert_allclose(codes, expected, atol=1e-6)


@pytest.mark.parametrize("op", ["xor", "or", "xor_not"])
def test_circuit_truth_identities(op: str) -> None:
    truth = CIRCUIT_TRUTH[op]
    joint = circuit_joint(op)
    x1, x2, y = [0, 1], [2, 3], [4]
    assert truth["R"] + truth["U1"] == pytest.approx(mutual_information(joint, x1, y), abs=1e-12)
    assert truth["R"] + truth["U2"] == pytest.approx(mutual_information(joint, x2, y), abs=1e-12)
    assert sum(truth.values()) == pytest.approx(mutual_information(joint, x1 + x2, y), abs=1e-12)
    assert min(truth.values()) >= 0


def test_circuit_truth_values() -> None:
    h_y = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert h_y == pytest.approx(0.5623, abs=1e-4)
    assert CIRCUIT_TRUTH["or"]["R"] == pytest.approx(0.2158, abs=1e-4)
    assert CIRCUIT_TRUTH["or"]["S"] == pytest.approx(h_y - CIRCUIT_TRUTH["or"]["R"])
    assert CIRCUIT_TRUTH["xor"]["S"] == pytest.approx(LN2)
    assert CIRCUIT_TRUTH["xor_not"]["U2"] == CIRCUIT_TRUTH["xor_not"]["S"] == pytest.approx(LN2 / 2)


# --- Gaussian mixture ---------------------------------------------------------------------------


def test_gaussian_mixture_schema_and_determinism() -> None:
    spec = GaussianMixtureSpec(n_samples=50, n_classes=3, rho=0.3, seed=1)
    table = generate_gaussian_mixture(spec)
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            ("x1", pa.list_(pa.float32(), 3)),
            ("x2", pa.list_(pa.float32(), 3)),
        ]
    )
    assert table.equals(generate_gaussian_mixture(spec))
    assert not table.equals(generate_gaussian_mixture(spec.model_copy(update={"seed": 2})))
    assert set(column(table, "label")) <= {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_samples": 10, "rho": 1.5},
        {"n_samples": 10, "rho": -1.01},
        {"n_samples": 10, "rho": 0.0, "noise": 0.0},
        {"n_samples": 10, "rho": 0.0, "n_classes": 1},
        {"n_samples": 0, "rho": 0.0},
        {"n_samples": 10},
        {"n_samples": 10, "rho": 0.0, "sigma": 1.0},
    ],
)
def test_gaussian_mixture_spec_is_strict(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        GaussianMixtureSpec(**kwargs)


def test_gaussian_mixture_marginal_does_not_depend_on_rho() -> None:
    n, k, noise = 40_000, 3, 0.5
    # same seed: identical labels and x1 for every rho
    base = generate_gaussian_mixture(GaussianMixtureSpec(n_samples=n, n_classes=k, rho=0.8))
    flipped = generate_gaussian_mixture(GaussianMixtureSpec(n_samples=n, n_classes=k, rho=-0.8))
    assert base.column("label").equals(flipped.column("label"))
    assert base.column("x1").equals(flipped.column("x1"))
    # different seeds: both modalities have the same per-class mixture for rho = ±0.8
    tables = [
        generate_gaussian_mixture(
            GaussianMixtureSpec(n_samples=n, n_classes=k, rho=rho, noise=noise, seed=seed)
        )
        for rho, seed in ((0.8, 11), (-0.8, 12))
    ]
    for table in tables:
        label = column(table, "label")
        assert np.bincount(label, minlength=k) / n == pytest.approx(np.full(k, 1 / k), abs=0.02)
        for name in ("x1", "x2"):
            x = features(table, name)
            for cls in range(k):
                rows = x[label == cls]
                np.testing.assert_allclose(rows.mean(axis=0), np.eye(k)[cls], atol=0.03)
                np.testing.assert_allclose(rows.std(axis=0), noise, atol=0.02)


@pytest.mark.parametrize("rho", [-0.8, 0.0, 0.5, 1.0])
def test_gaussian_mixture_noise_correlation_is_rho(rho: float) -> None:
    k = 2
    table = generate_gaussian_mixture(
        GaussianMixtureSpec(n_samples=20_000, n_classes=k, rho=rho, seed=7)
    )
    label = column(table, "label")
    centres = np.eye(k)[label]
    u1 = features(table, "x1") - centres
    u2 = features(table, "x2") - centres
    for cls, dim in itertools.product(range(k), range(k)):
        rows = label == cls
        corr = np.corrcoef(u1[rows, dim], u2[rows, dim])[0, 1]
        assert corr == pytest.approx(rho, abs=0.04)


# --- presets ------------------------------------------------------------------------------------


def test_preset_schema_and_determinism() -> None:
    spec = PresetSpec(fractions={"R": 1, "S": 1}, n_samples=30, dims=6, seed=2)
    table = generate_preset(spec)
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            ("x1", pa.list_(pa.float32(), 6)),
            ("x2", pa.list_(pa.float32(), 6)),
            ("interaction", pa.string()),
            ("x1_bits", pa.int64()),
            ("x2_bits", pa.int64()),
        ]
    )
    assert table.equals(generate_preset(spec))
    assert not table.equals(generate_preset(spec.model_copy(update={"seed": 3})))
    assert set(column(table, "label")) <= {0, 1}
    maps = preset_maps(spec)
    assert maps.shape == (2, 6, PRESET_CODE_DIM)
    other = PresetSpec(fractions={"U1": 1.0}, n_samples=5, dims=6, seed=2)
    np.testing.assert_array_equal(preset_maps(other), maps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fractions": {"R": -0.1, "S": 1.0}, "n_samples": 10},
        {"fractions": {"R": 0.0}, "n_samples": 10},
        {"fractions": {}, "n_samples": 10},
        {"fractions": {"X": 1.0}, "n_samples": 10},
        {"fractions": {"R": float("nan")}, "n_samples": 10},
        {"fractions": {"R": 1.0}, "n_samples": 0},
        {"fractions": {"R": 1.0}, "n_samples": 10, "dims": 4},
        {"fractions": {"R": 1.0}, "n_samples": 10, "noise": -1.0},
        {"fractions": {"R": 1.0}, "n_samples": 10, "mix": 1},
    ],
)
def test_preset_spec_is_strict(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        PresetSpec(**kwargs)


@pytest.mark.parametrize(
    ("fractions", "n", "expected"),
    [
        ({"R": 1, "U1": 1, "U2": 1, "S": 1}, 1000, {"R": 250, "U1": 250, "U2": 250, "S": 250}),
        ({"R": 0.1, "S": 0.3}, 1001, {"R": 250, "U1": 0, "U2": 0, "S": 751}),
        ({"R": 1, "U1": 1, "U2": 1}, 10, {"R": 4, "U1": 3, "U2": 3, "S": 0}),
        ({"S": 2.0}, 7, {"R": 0, "U1": 0, "U2": 0, "S": 7}),
    ],
)
def test_preset_counts_match_fractions(fractions: dict, n: int, expected: dict) -> None:
    spec = PresetSpec(fractions=fractions, n_samples=n)
    assert spec.counts == expected
    interaction = column(generate_preset(spec), "interaction")
    assert {name: int((interaction == name).sum()) for name in INTERACTION_TYPES} == expected


def test_preset_rows_are_shuffled() -> None:
    spec = PresetSpec(fractions={"R": 1, "U1": 1, "U2": 1, "S": 1}, n_samples=400, seed=1)
    interaction = column(generate_preset(spec), "interaction")
    assert len(set(interaction[:100])) == 4


def test_preset_labels_and_decoded_bits() -> None:
    spec = PresetSpec(fractions={"R": 1, "U1": 2, "U2": 3, "S": 4}, n_samples=20_000, seed=9)
    table = generate_preset(spec)
    label, interaction = column(table, "label"), column(table, "interaction")
    decoded_bits, decoded_types = [], []
    for m, basis in enumerate(preset_maps(spec)):
        codes = decode_codes(features(table, f"x{m + 1}"), basis)
        decoded_bits.append((codes[:, 0] > 0).astype(np.int64))
        decoded_types.append(np.array(INTERACTION_TYPES)[codes[:, 1:].argmax(axis=1)])
        assert (decoded_bits[m] == column(table, f"x{m + 1}_bits")).mean() >= 0.999
        assert (decoded_types[m] == interaction).mean() >= 0.999
    b1, b2 = decoded_bits
    s, r, u1, u2 = (interaction == name for name in ("S", "R", "U1", "U2"))
    assert (label[s] == (b1[s] ^ b2[s])).mean() >= 0.999
    assert (label[r] == b1[r]).mean() >= 0.999 and (label[r] == b2[r]).mean() >= 0.999
    assert (label[u1] == b1[u1]).mean() >= 0.999
    assert (label[u2] == b2[u2]).mean() >= 0.999
    # the other modality's bit is independent of the label in unique rows
    assert abs((label[u1] == b2[u1]).mean() - 0.5) < 0.05
    assert abs((label[u2] == b1[u2]).mean() - 0.5) < 0.05
    # and so is every single bit in synergy rows
    assert abs((label[s] == b1[s]).mean() - 0.5) < 0.05
    assert abs(label.mean() - 0.5) < 0.02


def test_preset_clean_bits_follow_types_exactly() -> None:
    table = generate_preset(PresetSpec(fractions={"R": 1, "U1": 1, "U2": 1, "S": 1}, n_samples=800))
    label, interaction = column(table, "label"), column(table, "interaction")
    b1, b2 = column(table, "x1_bits"), column(table, "x2_bits")
    expected = {"R": b1, "U1": b1, "U2": b2, "S": b1 ^ b2}
    for name, values in expected.items():
        rows = interaction == name
        np.testing.assert_array_equal(label[rows], values[rows])
    np.testing.assert_array_equal(b1[interaction == "R"], b2[interaction == "R"])


def preset_joint(weights: dict[str, float]) -> dict[tuple, float]:
    """Exact joint of ``(b1, t, b2, t, y)`` with the type t visible in both modalities."""
    joint: dict[tuple, float] = {}
    for name, weight in weights.items():
        for a, c in itertools.product((0, 1), (0, 1)):
            b1, b2, y = {
                "R": (a, a, a),
                "U1": (a, c, a),
                "U2": (c, a, a),
                "S": (a, c, a ^ c),
            }[name]
            key = (b1, name, b2, name, y)
            joint[key] = joint.get(key, 0.0) + weight / 4
    return joint


def test_preset_truth_identities() -> None:
    spec = PresetSpec(fractions={"R": 0.1, "U1": 0.2, "U2": 0.3, "S": 0.4}, n_samples=10)
    truth = preset_truth(spec)
    assert truth == pytest.approx(
        {"R": 0.1 * LN2, "U1": 0.2 * LN2, "U2": 0.3 * LN2, "S": 0.4 * LN2}
    )
    joint = preset_joint(spec.weights)
    x1, x2, y = [0, 1], [2, 3], [4]
    assert truth["R"] + truth["U1"] == pytest.approx(mutual_information(joint, x1, y), abs=1e-12)
    assert truth["R"] + truth["U2"] == pytest.approx(mutual_information(joint, x2, y), abs=1e-12)
    assert sum(truth.values()) == pytest.approx(mutual_information(joint, x1 + x2, y), abs=1e-12)

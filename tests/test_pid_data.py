"""Tests for the PID synthetic data: bitwise joints against paper 003 Table 1, sampled bitwise
rows, and the latent generative settings whose generating latent must dominate the PID."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from intermodal.estimators.discretize import CodebookConfig, fit_codebook
from intermodal.estimators.information import mutual_information
from intermodal.estimators.pid_cvx import PIDResult, pid_from_joint
from intermodal.synthetic.pid_data import (
    BitwiseSpec,
    LatentSpec,
    bitwise_joint,
    generate_bitwise,
    generate_latent,
)

AND_REDUNDANCY = 0.311278  # bits, Table 1
TABLE_1 = {  # R, U1, U2, S in bits
    "and": [AND_REDUNDANCY, 0.0, 0.0, 0.5],
    "or": [AND_REDUNDANCY, 0.0, 0.0, 0.5],
    "xor": [0.0, 0.0, 0.0, 1.0],
}
DOMINANT_TERM = {"DR": 0, "DU1": 1, "DU2": 2, "DS": 3}  # index into terms()
N_CLUSTERS = 20


def terms(result: PIDResult) -> np.ndarray:
    """[R, U1, U2, S]."""
    return np.array(list(result.terms))


def features(table: pa.Table, name: str) -> np.ndarray:
    """Fixed-size list column -> [n, d] array."""
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def empirical_joint(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised counts [ka, kb, ky] of integer codes a, b, y [n]."""
    counts = np.zeros((a.max() + 1, b.max() + 1, y.max() + 1))
    np.add.at(counts, (a, b, y), 1.0)
    return counts / counts.sum()


@pytest.mark.parametrize("op", sorted(TABLE_1))
def test_bitwise_joint_matches_table_1(op: str) -> None:
    p = bitwise_joint(op)
    assert p.shape == (2, 2, 2)
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(terms(pid_from_joint(p)), TABLE_1[op], atol=1e-4)


def test_bitwise_joint_rejects_unknown_op() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        bitwise_joint("nand")


@pytest.mark.parametrize("op", sorted(TABLE_1))
def test_sampled_bitwise_joint_matches_table_1(op: str) -> None:
    table = generate_bitwise(BitwiseSpec(op=op, n_samples=100_000, seed=1))
    bits = [table.column(name).to_numpy() for name in ("x1_bits", "x2_bits", "label")]
    np.testing.assert_allclose(
        terms(pid_from_joint(empirical_joint(*bits))), TABLE_1[op], atol=0.01
    )


def test_bitwise_schema_and_clean_features() -> None:
    table = generate_bitwise(BitwiseSpec(op="and", n_samples=64, dims=3))
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            ("x1", pa.list_(pa.float32(), 3)),
            ("x2", pa.list_(pa.float32(), 3)),
            ("x1_bits", pa.int64()),
            ("x2_bits", pa.int64()),
        ]
    )
    x1_bits = table.column("x1_bits").to_numpy()
    x2_bits = table.column("x2_bits").to_numpy()
    np.testing.assert_array_equal(table.column("label").to_numpy(), x1_bits & x2_bits)
    # without noise a row is 0 or the modality's unit direction
    norms = np.linalg.norm(features(table, "x1"), axis=1)
    np.testing.assert_allclose(norms, x1_bits, atol=1e-6)


def test_bitwise_one_dim_is_the_bit() -> None:
    table = generate_bitwise(BitwiseSpec(op="xor", n_samples=32))
    np.testing.assert_array_equal(features(table, "x2")[:, 0], table.column("x2_bits").to_numpy())


def test_noisy_bits_stay_recoverable() -> None:
    spec = BitwiseSpec(op="xor", n_samples=50_000, dims=16, noise=0.3, seed=3)
    table = generate_bitwise(spec)
    for name in ("x1", "x2"):
        x = features(table, name)
        bits = table.column(f"{name}_bits").to_numpy()
        # the direction is the mean of the bit-1 rows; project on it and cut halfway
        direction = x[bits == 1].mean(axis=0)
        direction /= np.linalg.norm(direction)
        accuracy = np.mean((x @ direction > 0.5) == bits)
        # the best any rule can do is Φ(0.5 / 0.3) = 0.952; a broken embedding lands near 0.5
        assert accuracy > 0.94


def test_bitwise_deterministic_per_seed() -> None:
    spec = BitwiseSpec(op="or", n_samples=200, dims=4, noise=0.1, seed=5)
    assert generate_bitwise(spec).equals(generate_bitwise(spec))
    other = generate_bitwise(spec.model_copy(update={"seed": 6}))
    assert not generate_bitwise(spec).equals(other)


def test_bitwise_spec_is_strict() -> None:
    with pytest.raises(ValidationError):
        BitwiseSpec(op="and", n_samples=10, extra=1)
    with pytest.raises(ValidationError):
        BitwiseSpec(op="and", n_samples=10, noise=-0.1)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_latent_schema_and_balanced_classes(n_classes: int) -> None:
    spec = LatentSpec(setting="DS", n_samples=3000, feature_dim=12, n_classes=n_classes)
    table = generate_latent(spec)
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int64()),
            ("x1", pa.list_(pa.float32(), 12)),
            ("x2", pa.list_(pa.float32(), 12)),
        ]
    )
    np.testing.assert_array_equal(table.column("sample_id").to_numpy(), np.arange(3000))
    shares = np.bincount(table.column("label").to_numpy(), minlength=n_classes) / 3000
    np.testing.assert_allclose(shares, 1 / n_classes, atol=0.03)


def test_latent_deterministic_per_seed() -> None:
    spec = LatentSpec(setting="mixed", n_samples=500, mix={"DR": 0.5, "DS": 0.5}, seed=2)
    assert generate_latent(spec).equals(generate_latent(spec))
    assert not generate_latent(spec).equals(generate_latent(spec.model_copy(update={"seed": 3})))


def test_latent_spec_checks_mix() -> None:
    with pytest.raises(ValidationError):
        LatentSpec(setting="mixed", n_samples=10)
    with pytest.raises(ValidationError):
        LatentSpec(setting="DR", n_samples=10, mix={"DR": 1.0})
    with pytest.raises(ValidationError):
        LatentSpec(setting="mixed", n_samples=10, mix={"DR": -1.0, "DS": 2.0})
    with pytest.raises(ValidationError):
        LatentSpec(setting="mixed", n_samples=10, mix={"DX": 1.0})


def test_latent_mix_of_one_interaction_is_that_interaction() -> None:
    pure = generate_latent(LatentSpec(setting="DU1", n_samples=400, seed=4))
    mixed = generate_latent(LatentSpec(setting="mixed", n_samples=400, seed=4, mix={"DU1": 2.0}))
    assert pure.equals(mixed)


@pytest.mark.parametrize("setting", sorted(DOMINANT_TERM))
def test_generating_latent_dominates_pid(setting: str) -> None:
    table = generate_latent(LatentSpec(setting=setting, n_samples=20_000, seed=0))
    y = table.column("label").to_numpy()
    codebook = CodebookConfig(n_clusters=N_CLUSTERS)
    x1, x2 = features(table, "x1"), features(table, "x2")
    c1 = fit_codebook(x1, codebook).assign(x1)
    c2 = fit_codebook(x2, codebook).assign(x2)
    values = terms(pid_from_joint(empirical_joint(c1, c2, y)))
    assert np.argmax(values) == DOMINANT_TERM[setting], values


def test_synergistic_label_is_independent_of_each_modality() -> None:
    """DS: for any fixed z1 the score is symmetric in z2, so P(y | z1) = 1/2."""
    table = generate_latent(LatentSpec(setting="DS", n_samples=40_000, seed=1))
    y = table.column("label").to_numpy()
    for name in ("x1", "x2"):
        x = features(table, name)
        codes = fit_codebook(x, CodebookConfig(n_clusters=N_CLUSTERS)).assign(x)
        joint = empirical_joint(codes, np.zeros_like(codes), y)[:, 0]
        # plug-in bias alone is about (k − 1) / (2 n) ≈ 2e-4 nats
        assert mutual_information(joint) < 1.5e-3

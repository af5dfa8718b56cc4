"""PID BATCH: the block readout against the exact solver, and the encoders' training."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from intermodal.estimators.pid_batch import (
    batch_terms,
    coupling,
    log_kernel,
    plugin_information,
    union_information,
)
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.models.pid_batch import EncoderTraining, LabelEncoder, blocks, train_encoders
from intermodal.synthetic.pid_data import bitwise_joint


def block_of(p: np.ndarray, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a block reproducing the (x1, x2) marginal of ``p [k1, k2, ky]`` (``copies``
    rows per unit of 1/16 probability) and their value indices ``[m]``, ``[m]``."""
    pair = p.sum(axis=2)
    x1, x2 = [], []
    for a, b in itertools.product(range(p.shape[0]), range(p.shape[1])):
        count = round(pair[a, b] * 16) * copies
        x1 += [a] * count
        x2 += [b] * count
    return np.array(x1), np.array(x2)


@pytest.mark.parametrize("op", ["and", "or", "xor"])
def test_oracle_kernel_reads_out_the_exact_pid(op: str) -> None:
    """With the BROJA maximiser q* as kernel, Sinkhorn on exact p(y | x_i) returns q* and the
    readout equals pid_from_joint's terms."""
    p = bitwise_joint(op)
    exact = pid_from_joint(p, base=np.e)
    q = exact.q
    x1, x2 = block_of(p, copies=3)
    p_y_x1 = p.sum(axis=1) / p.sum(axis=(1, 2))[:, None]
    p_y_x2 = p.sum(axis=0) / p.sum(axis=(0, 2))[:, None]
    p_y_x12 = p / p.sum(axis=2, keepdims=True)
    # q*(x1_i, x2_j, y) as kernel; cells q* leaves empty get a negligible positive weight
    # (a row of zeros could not carry the classifiers' floored marginal)
    log_a = np.log(np.maximum(q[x1][:, x2].transpose(2, 0, 1), 1e-30))
    log_q = coupling(
        torch.from_numpy(log_a),
        torch.from_numpy(p_y_x1[x1]),
        torch.from_numpy(p_y_x2[x2]),
        n_iters=5000,
        tol=1e-12,
    )
    iq = float(union_information(log_q))
    informations = [
        float(plugin_information(torch.from_numpy(v)))
        for v in (p_y_x1[x1], p_y_x2[x2], p_y_x12[x1, x2])
    ]
    terms = batch_terms(iq, *informations)
    expected = list(exact.terms)
    np.testing.assert_allclose(list(terms), expected, atol=1e-6)


def test_identities_of_the_readout() -> None:
    terms = batch_terms(iq=0.5, i1=0.3, i2=0.25, i12=0.7)
    assert pytest.approx(0.3) == terms.R + terms.U1
    assert pytest.approx(0.25) == terms.R + terms.U2
    assert sum(terms) == pytest.approx(0.7)


def test_blocks_cover_every_row_once() -> None:
    for n, size in [(1000, 256), (1100, 256), (100, 256), (512, 256)]:
        covered = np.concatenate([np.arange(n)[block] for block in blocks(n, size)])
        np.testing.assert_array_equal(covered, np.arange(n))
        assert all(block.stop - block.start >= min(n, size / 2) for block in blocks(n, size))


def mean_union_information(encoders, x1, x2, p1, p2, size: int) -> float:
    values = []
    with torch.no_grad():
        for block in blocks(len(x1), size):
            f1 = encoders[0](torch.from_numpy(x1[block].astype(np.float32))).double()
            f2 = encoders[1](torch.from_numpy(x2[block].astype(np.float32))).double()
            log_q = coupling(
                log_kernel(f1, f2),
                torch.from_numpy(p1[block]),
                torch.from_numpy(p2[block]),
                n_iters=500,
                tol=1e-9,
            )
            values.append(float(union_information(log_q)))
    return float(np.mean(values))


def test_training_lowers_the_union_information_of_xor() -> None:
    """Noisy XOR bits with uninformative p(y | x_i): the optimum coupling has I_q(Y; X1, X2) = 0
    (labels independent of the pair), and training must move the encoders towards it."""
    rng = np.random.default_rng(0)
    n = 2048
    bits = rng.integers(0, 2, (n, 2))
    x1 = bits[:, :1] + rng.normal(0, 0.1, (n, 4))
    x2 = bits[:, 1:] + rng.normal(0, 0.1, (n, 4))
    flat = np.full((n, 2), 0.5)
    config = EncoderTraining(block_size=128, epochs=4, lr=1e-2, seed=0)
    torch.manual_seed(config.seed)  # the initialisation train_encoders starts from
    untrained = [LabelEncoder(4, 2, config.hidden, config.embed_dim) for _ in range(2)]
    for encoder, x in zip(untrained, (x1, x2), strict=True):
        encoder.fit_scaler(torch.from_numpy(x.astype(np.float32)))
    before = mean_union_information(untrained, x1, x2, flat, flat, 128)
    messages: list[str] = []
    trained = train_encoders(x1, x2, flat, flat, config, progress=messages.append)
    after = mean_union_information(trained, x1, x2, flat, flat, 128)
    assert "I_q" in messages[-1]
    assert 0 <= after < 0.5 * before

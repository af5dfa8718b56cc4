"""PID CVX codebooks that keep the signal (``space: joint``, ``models.pid_codes``), in process:
on HD-XOR synergy features (200 + 100 values, each modality's bit a weak direction among many
label-free ones) the jointly trained encoders' codes keep the synergy that k-means on the
standardised features loses, and the codes-vs-features information rows are reported."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from intermodal.estimators.discretize import Codebook, CodebookConfig, fit_preprocessing
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.measures import MEASURES, parse_config
from intermodal.measures.base import InlineWorkers
from intermodal.measures.pid_cvx import CODES_INFORMATION, FEATURE_INFORMATION, code_column
from intermodal.models.pid_codes import (
    EncoderArrays,
    EncoderTraining,
    encoded_codebook,
    fit_joint_codebooks,
    train_joint,
)
from intermodal.schemas.tables import LABEL, PID_TERMS, modality_values
from intermodal.synthetic.hdxor import HDXORSpec, generate
from intermodal.synthetic.pid_data import LatentSpec, generate_latent

ROWS = 6000  # the demo's scored rows (30 % of 20,000)
PAIR = ("m0", "m1")
TRUE_INFORMATION = 0.86  # I(x0, x1; y) of the Bayes rule on these features (module docstring)


def _job(out: str, **pid: object):
    return parse_config(
        {
            "dataset": "hdxor_synergy",
            "input": f"{out}/unused",
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": "m0", "shape": [200]}, {"name": "m1", "shape": [100]}],
            "measures": ["pid_cvx"],
            "pid_cvx": pid,
        }
    )


def _run(table: pa.Table, out: str, **pid: object) -> dict[tuple[str, str], float]:
    """Fit, code every row and aggregate through the measure itself (no Ray): the whole-data
    rows of the label as {(statistic, term): value}, with ``n`` and ``stderr`` under
    ``(statistic, "n")`` and ``(statistic, "stderr")``."""
    job = _job(out, **pid)
    measure = MEASURES["pid_cvx"]
    measure.fit(job, table, lambda _: None, InlineWorkers(lambda _: None))
    codebooks = measure.codebooks(job)
    scores = pa.table(
        {
            **{
                code_column(m.name): codebooks[m.name]
                .assign(modality_values(table.column(m.name), m.size))
                .astype(np.int32)
                for m in job.modalities
            },
            LABEL: table.column(LABEL),
        }
    )
    rows = measure.finalize(job, measure.partial(job, scores, {}), None)
    values = {}
    for row in rows:
        assert row["target"] == LABEL and tuple(row["modalities"]) == PAIR
        values[row["statistic"], row["term"]] = row["value"]
        if row["statistic"] != "pid":
            values[row["statistic"], "n"] = row["n"]
            values[row["statistic"], "stderr"] = row["stderr"]
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """HD-XOR synergy, 6,000 rows, coded in both spaces with default settings otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = generate(HDXORSpec(setting="synergy", n_modalities=2, n_samples=ROWS, seed=0))
        return {
            space: _run(table, str(tmp_path_factory.mktemp(space)), space=space)
            for space in ("joint", "features")
        }
    finally:
        torch.set_num_threads(threads)


def test_joint_codes_keep_the_synergy_that_feature_kmeans_loses(runs) -> None:
    joint, features = runs["joint"], runs["features"]
    assert joint["pid", "S"] >= 0.6
    assert features["pid", "S"] < 0.5  # k-means on all standardised features (before)
    for term in ("R", "U1", "U2"):  # each modality alone says nothing about the label
        assert joint["pid", term] < 0.03


def test_information_rows_report_what_discretising_lost(runs) -> None:
    for values in runs.values():
        codes, kept = values[CODES_INFORMATION, ""], values[FEATURE_INFORMATION, ""]
        assert codes == pytest.approx(values["pid", "I"], abs=1e-12)
        assert values[CODES_INFORMATION, "n"] == ROWS
        held_out = values[FEATURE_INFORMATION, "n"]
        assert held_out == round(0.2 * ROWS)
        stderr = values[FEATURE_INFORMATION, "stderr"]
        assert 0 < stderr < 0.05
        # plug-in bias of a 20 x 20 x 2 table on these rows, and the estimate's sampling error
        bias = (20 * 20 - 1) / (2 * ROWS * math.log(2))
        assert codes <= kept + bias + 3 * stderr
        # a held-out classifier's estimate stays below the Bayes rule's information
        assert 0.6 < kept < TRUE_INFORMATION + 3 * stderr
    # the features' information does not depend on where k-means runs (same classifier)
    assert runs["joint"][FEATURE_INFORMATION, ""] == pytest.approx(
        runs["features"][FEATURE_INFORMATION, ""], abs=1e-9
    )
    # what the feature-space codes lose, the joint ones keep
    lost = {
        space: v[FEATURE_INFORMATION, ""] - v[CODES_INFORMATION, ""] for space, v in runs.items()
    }
    assert lost["features"] > 0.25 and lost["joint"] < 0.1


def test_held_out_information_of_clean_and_of_unrelated_labels(one_torch_thread) -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(2, 3000))
    inputs = {
        name: b[:, None] + rng.normal(0, 0.05, size=(3000, 3))
        for name, b in zip("ab", bits, strict=True)
    }
    targets = {"xor": bits[0] ^ bits[1], "coin": rng.integers(0, 2, size=3000)}
    training = EncoderTraining(patience=4)
    fitted = train_joint(inputs, targets, 2, training, "xor", lambda _: None)
    xor, coin = fitted.information["a", "b"]["xor"], fitted.information["a", "b"]["coin"]
    assert xor.value == pytest.approx(1.0, abs=0.03) and xor.n == 600
    assert xor.entropy == pytest.approx(1.0, abs=0.01)
    assert abs(coin.value) < 3 * coin.stderr + 0.01
    assert [e.weight.shape for e in fitted.encoders.values()] == [(2, 3), (2, 3)]


@pytest.mark.parametrize("pca_components", [None, 3])
@pytest.mark.parametrize("hidden", [False, True])
def test_encoded_codebook_codes_the_encoders_output(tmp_path, pca_components, hidden) -> None:
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(500, 6)) * np.arange(1, 7)
    mean, scale, components, rows = fit_preprocessing(sample, True, pca_components)
    width = rows.shape[1]
    encoder = EncoderArrays(
        rng.normal(size=(2, 4 if hidden else width)),
        rng.normal(size=(4, width)) if hidden else None,
        rng.normal(size=4) if hidden else None,
    )
    config = CodebookConfig(n_clusters=5, pca_components=pca_components)
    book = encoded_codebook(rows, mean, scale, components, encoder, config)
    z = encoder(rows)
    spread = np.sqrt(((z - z.mean(axis=0)) ** 2).sum(axis=1).mean())
    np.testing.assert_allclose(book.transform(sample), z / spread, atol=1e-9)
    assert book.dim == 6 and book.centers.shape == (5, 2)
    np.savez(tmp_path / "book.npz", **book.to_arrays())
    loaded = Codebook.from_arrays(np.load(tmp_path / "book.npz", allow_pickle=False))
    np.testing.assert_array_equal(loaded.assign(sample), book.assign(sample))
    nearest = ((z[:, None] / spread - book.centers[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(book.assign(sample), nearest)


def test_scalar_modalities_keep_their_histogram(tmp_path, one_torch_thread) -> None:
    rng = np.random.default_rng(2)
    n = 400
    table = pa.table(
        {
            "sample_id": np.arange(n),
            LABEL: rng.integers(0, 2, size=n),
            "m0": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.normal(size=n * 3), pa.float32()), 3
            ),
            "s": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n), pa.float32()), 1),
        }
    )
    job = parse_config(
        {
            "dataset": "scalar",
            "input": str(tmp_path / "unused"),
            "output": str(tmp_path),
            "num_classes": 2,
            "modalities": [{"name": "m0", "shape": [3]}, {"name": "s", "shape": [1]}],
            "measures": ["pid_cvx"],
            "pid_cvx": {"n_clusters": 4},
        }
    )
    measure = MEASURES["pid_cvx"]
    measure.fit(job, table, lambda _: None, InlineWorkers(lambda _: None))
    books = measure.codebooks(job)
    assert books["s"].kind == "histogram" and books["m0"].kind == "kmeans"
    assert books["m0"].components.shape == (2, 3)  # the encoder's width, not PCA's
    assert set(measure.information(job)) == {(LABEL, ("m0", "s"))}


def test_modality_heads_keep_unique_information_out_of_synergy(one_torch_thread) -> None:
    """DU2 (label from x2's own latent; both modalities share z_c): with the fusion head only,
    x2's bottleneck may carry z_2 + z_c and x1's the z_c that cancels it, which the codes show
    as synergy; each modality's own head keeps x2's information in x2's cells."""
    table = generate_latent(LatentSpec(setting="DU2", n_samples=ROWS))
    samples = {m: modality_values(table.column(m), 32) for m in ("x1", "x2")}
    y = table.column(LABEL).to_numpy()
    terms = {}
    for weight in (0.0, 1.0):
        training = EncoderTraining(unimodal_weight=weight, patience=4)  # faster, same point
        books, _ = fit_joint_codebooks(
            samples, {LABEL: y}, 2, CodebookConfig(), training, lambda _: None
        )
        counts = np.zeros((20, 20, 2))
        np.add.at(
            counts, (books["x1"].assign(samples["x1"]), books["x2"].assign(samples["x2"]), y), 1
        )
        terms[weight] = dict(zip(PID_TERMS, pid_from_joint(counts / ROWS).terms, strict=True))
    assert terms[1.0]["U2"] > 0.6 and terms[1.0]["S"] < 0.15
    assert terms[0.0]["S"] > 0.25  # what the modality heads are there for


def test_more_modalities_give_each_pair_its_information(one_torch_thread) -> None:
    """Three modalities: one pair head per pair; y = a XOR b, c is noise."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=(2, 3000))
    inputs = {
        n: b[:, None] + rng.normal(0, 0.05, size=(3000, 2)) for n, b in zip("ab", bits, strict=True)
    }
    inputs["c"] = rng.normal(size=(3000, 2))
    training = EncoderTraining(patience=4)
    fitted = train_joint(inputs, {LABEL: bits[0] ^ bits[1]}, 2, training, "abc", lambda _: None)
    values = {pair: info[LABEL].value for pair, info in fitted.information.items()}
    assert set(values) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert values["a", "b"] > 0.9
    assert abs(values["a", "c"]) < 0.05 and abs(values["b", "c"]) < 0.05

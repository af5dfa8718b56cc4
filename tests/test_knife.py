"""KNIFE: density against scipy, chunking, known entropies, save/load, validation, PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from intermodal.estimators.knife import KNIFE, EntropyModel, KnifeConfig, fit_entropy_model

FAST = {"epochs": 15, "batch_size": 512, "lr": 1e-2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: threads only add overhead; restore the setting for later test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_knife(dim: int, n_components: int, diagonal: bool, seed: int = 0) -> KNIFE:
    """A float64 KNIFE with random parameters (all of them, upper triangle of ``lower`` too)."""
    generator = torch.Generator().manual_seed(seed)
    knife = KNIFE(dim, n_components, diagonal=diagonal).double()
    with torch.no_grad():
        for parameter in knife.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return knife


def scipy_log_density(knife: KNIFE, x: np.ndarray) -> np.ndarray:
    """Mixture log-pdf ``[N]`` from the module's parameters, via precision → covariance."""
    weights = torch.log_softmax(knife.logits, dim=0).detach().numpy()
    scales = knife.log_scales.detach().exp().numpy()
    lower = knife.strict_lower()
    log_pdfs = []
    for k in range(knife.n_components):
        unit = np.eye(knife.dim)
        if lower is not None:
            unit = unit + lower[k].detach().numpy()
        factor = unit @ np.diag(scales[k])
        covariance = np.linalg.inv(factor.T @ factor)
        mean = knife.means[k].detach().numpy()
        log_pdfs.append(weights[k] + multivariate_normal(mean, covariance).logpdf(x))
    return logsumexp(np.stack(log_pdfs, axis=1), axis=1)


def gaussian_entropy(covariance: np.ndarray) -> float:
    """``½ log((2πe)^d |Σ|)`` in nats."""
    d = len(covariance)
    return 0.5 * (d * math.log(2 * math.pi * math.e) + np.linalg.slogdet(covariance)[1])


COVARIANCE = np.array([[4.0, 1.2, -0.8], [1.2, 1.0, 0.3], [-0.8, 0.3, 1.5]])


@pytest.mark.parametrize("diagonal", [False, True])
def test_log_density_matches_scipy_mixture(diagonal: bool) -> None:
    knife = random_knife(dim=4, n_components=3, diagonal=diagonal)
    x = np.random.default_rng(1).normal(size=(300, 4))
    got = knife.log_density(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, scipy_log_density(knife, x), atol=1e-4, rtol=0)
    forward = knife(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(forward, -got, atol=1e-12)


def test_upper_triangle_and_diagonal_of_lower_are_ignored() -> None:
    knife = random_knife(dim=3, n_components=2, diagonal=False)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    before = knife.log_density(x)
    with torch.no_grad():
        knife.lower.add_(torch.triu(torch.full_like(knife.lower, 7.0)))
    torch.testing.assert_close(knife.log_density(x), before)


def test_shapes_and_chunking_agree() -> None:
    knife = random_knife(dim=6, n_components=5, diagonal=False).float()
    x = torch.randn(1000, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = knife.log_density(x)
        chunked = torch.cat([knife.log_density(part) for part in x.split(77)])
    assert whole.shape == (1000,)
    assert whole.dtype == torch.float32
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-5)
    model = EntropyModel(knife=knife.eval())
    rows = x.numpy().astype(np.float64)
    h = model.entropy(rows)
    assert h.shape == (1000,)
    assert h.dtype == np.float64
    np.testing.assert_allclose(model.entropy(rows, chunk_rows=33), h, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        knife.log_density(torch.zeros(4, 5))


def test_log_scales_are_clamped() -> None:
    knife = KNIFE(1, 1, diagonal=True).double()
    with torch.no_grad():
        knife.log_scales.fill_(50.0)
    # Clamped at 10: log N(0; 0, e^-20) = 10 − ½ log 2π instead of 50 − ½ log 2π.
    with torch.no_grad():
        value = knife.log_density(torch.zeros(1, 1, dtype=torch.float64))
    assert float(value) == pytest.approx(10.0 - 0.5 * math.log(2 * math.pi))


def test_initialise_places_kernels_on_data() -> None:
    sample = torch.randn(100, 3, generator=torch.Generator().manual_seed(4)) * torch.tensor(
        [1.0, 2.0, 0.5]
    )
    sample[:, 2] = 5.0  # constant feature: scale 1 instead of log 0
    knife = KNIFE(3, 4)
    knife.initialise(sample, torch.Generator().manual_seed(0))
    rows = {tuple(row.tolist()) for row in sample}
    assert all(tuple(mean.tolist()) in rows for mean in knife.means.detach())
    assert len({tuple(mean.tolist()) for mean in knife.means.detach()}) == 4
    std = sample.std(dim=0, correction=0)
    expected = torch.stack([-std[0].log(), -std[1].log(), torch.tensor(0.0)])
    torch.testing.assert_close(knife.log_scales.detach(), expected.expand(4, 3))
    assert torch.all(knife.lower == 0) and torch.all(knife.logits == 0)
    with pytest.raises(ValueError, match="n_components"):
        knife.initialise(sample[:3])


def test_training_recovers_gaussian_entropy() -> None:
    rng = np.random.default_rng(5)
    train = rng.multivariate_normal(np.zeros(3), COVARIANCE, size=20_000)
    fresh = rng.multivariate_normal(np.zeros(3), COVARIANCE, size=20_000)
    messages: list[str] = []
    raw = fit_entropy_model(train, KnifeConfig(standardize=False, **FAST), messages.append)
    assert raw.entropy(fresh).mean() == pytest.approx(gaussian_entropy(COVARIANCE), abs=0.05)
    assert messages and messages[-1].startswith("[knife] epoch 15/15: mean h ")

    std = np.sqrt(np.diag(COVARIANCE))
    standardised = fit_entropy_model(train, KnifeConfig(standardize=True, **FAST))
    expected = gaussian_entropy(COVARIANCE / np.outer(std, std))
    assert standardised.entropy(fresh).mean() == pytest.approx(expected, abs=0.05)


def test_training_recovers_two_cluster_mixture_entropy() -> None:
    weights = np.array([0.3, 0.7])
    means = np.array([[-3.0, 0.0], [2.0, 1.0]])
    covariances = np.array([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 1.5]]])

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        labels = rng.choice(2, size=n, p=weights)
        noise = np.stack([rng.multivariate_normal(np.zeros(2), c, size=n) for c in covariances])
        return means[labels] + noise[labels, np.arange(n)]

    def true_log_pdf(x: np.ndarray) -> np.ndarray:
        parts = [
            math.log(w) + multivariate_normal(m, c).logpdf(x)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
        return logsumexp(np.stack(parts, axis=1), axis=1)

    rng = np.random.default_rng(6)
    train, fresh = sample(20_000, rng), sample(20_000, rng)
    truth = -true_log_pdf(sample(200_000, rng)).mean()  # Monte-Carlo h(X), s.e. ≈ 0.003
    model = fit_entropy_model(train, KnifeConfig(standardize=False, **FAST))
    assert model.entropy(fresh).mean() == pytest.approx(truth, abs=0.1)


@pytest.mark.parametrize("diagonal", [False, True])
def test_save_load_round_trip(tmp_path, diagonal: bool) -> None:
    rows = np.random.default_rng(7).normal(size=(500, 4)) * [1.0, 3.0, 0.1, 2.0]
    config = KnifeConfig(diagonal=diagonal, pca_components=3, epochs=2, batch_size=128)
    model = fit_entropy_model(rows, config)
    arrays, state = model.to_state()
    np.savez(tmp_path / "knife.npz", **arrays)
    torch.save(state, tmp_path / "knife.pt")
    with np.load(tmp_path / "knife.npz") as saved:
        loaded = EntropyModel.from_state(
            saved, torch.load(tmp_path / "knife.pt", weights_only=True)
        )
    assert loaded.knife.diagonal is diagonal
    assert not loaded.knife.training
    np.testing.assert_array_equal(loaded.entropy(rows), model.entropy(rows))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_components": 0},
        {"pca_components": 0},
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        KnifeConfig(**kwargs)


@pytest.mark.parametrize(
    ("rows", "config", "match"),
    [
        (np.zeros(10), KnifeConfig(), "shape"),
        (np.zeros((10, 2, 1)), KnifeConfig(), "shape"),
        (np.full((10, 2), np.nan), KnifeConfig(), "NaN"),
        (np.array([[1.0, np.inf]] * 10), KnifeConfig(), "NaN"),
        (np.zeros((4, 2)), KnifeConfig(n_components=5), "n_components"),
        (np.zeros((10, 2)), KnifeConfig(pca_components=3), "pca_components"),
    ],
)
def test_fit_input_errors(rows: np.ndarray, config: KnifeConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_entropy_model(rows, config)


def test_entropy_rejects_wrong_dimension() -> None:
    model = fit_entropy_model(np.random.default_rng(8).normal(size=(50, 3)), KnifeConfig(epochs=1))
    with pytest.raises(ValueError, match="shape"):
        model.entropy(np.zeros((5, 2)))


def test_pca_path_gives_finite_values() -> None:
    rng = np.random.default_rng(9)
    rows = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5))
    model = fit_entropy_model(rows, KnifeConfig(pca_components=2, epochs=5, batch_size=512))
    assert model.knife.dim == 2 and model.dim == 5
    assert model.components.shape == (2, 5)
    h = model.entropy(rows[:300])
    assert h.shape == (300,)
    assert np.all(np.isfinite(h))

"""``validate lsmi``: paper 001's synthetic tables through the full pipeline (fit → score →
aggregate).

Each experiment generates a data set (``synthetic.lsmi_data``), writes it as Parquet shards and
runs ``score`` with ``measures: [lsmi]`` and no model: KNIFE entropies and 5-fold cross-fitted
classifiers are fitted on every row, then every row is scored by the classifiers of its
held-out fold. The estimate is the whole-dataset ``adjusted_mean`` row of term ``<T>`` and
modalities ``[x1, x2]`` (nats).

- ``xor``, ``or``, ``xor_not`` (§4.1.2, Table 1): circuit logic, two fair bits and the gate
  embedded in ``CIRCUIT_DIMS`` dimensions with N(0, 0.1²) noise per feature; truth
  ``CIRCUIT_TRUTH``.
- ``gmm_rho_<ρ>`` (§4.1.3, Figure 3): the two-class Gaussian mixture whose cross-modal noise
  correlation is ρ ∈ ``GMM_RHOS`` (``m0.8`` is −0.8). Every modality's marginal, and its joint
  with the label, is the same for every ρ, so the paper expects R, U1, U2 flat in ρ and only S
  to move. Truth: the LSMI terms of the exact density (``exact_gmm_lsmi``: the pointwise terms
  integrated on a grid, then the dataset adjustment). That truth is the paper's definition,
  ``h(x) = −log p(x)`` of the features, so these runs set ``entropy.space: features``
  (``GMM_SETTINGS``; the measure's default models the entropy of each modality's posterior
  state instead, docs/validation.md compares). When every ρ runs, the experiment
  ``gmm_rho`` adds each of R, U1, U2's spread across ρ (max − min; truth the exact spread)
  and the check ``R_U_flat_in_rho``: every estimated spread at most ``FLAT_TOLERANCE``.
- ``preset_*`` (§4.1.4, Figure 4): rows of one interaction type each in the fractions of
  ``PRESETS``; truth ``preset_truth`` (ln 2 · fraction on each type's own term).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.special import ndtr

from intermodal import storage
from intermodal.estimators.lsmi import adjusted, adjustment
from intermodal.measures import parse_config
from intermodal.pipelines.job import run_job
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import PID_TERMS, PIDTerms
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import (
    CIRCUIT_TRUTH,
    CircuitSpec,
    GaussianMixtureSpec,
    PresetSpec,
    generate_circuit,
    generate_gaussian_mixture,
    generate_preset,
    preset_truth,
)
from intermodal.validation.experiments import overall_terms
from intermodal.validation.rows import (
    check_row,
    chosen_experiments,
    spread,
    validation_row,
    write_validation,
)

CIRCUIT_EXPERIMENTS = ["xor", "or", "xor_not"]
CIRCUIT_DIMS = 8
CIRCUIT_NOISE = 0.1
GMM_RHOS = (-0.8, -0.4, 0.0, 0.4, 0.8)  # §4.1.3 without ±1, where the density is singular
GMM_NOISE = GaussianMixtureSpec.model_fields["noise"].default  # 0.5 per feature
GMM_CLASSES = 2  # the exact computation is written for two classes
GMM_CHECK = "gmm_rho"  # the experiment of the rows across ρ
FLAT_TOLERANCE = 0.05  # nats: the most an estimated R, U1 or U2 may move across ρ
FLAT_TERMS = ("R", "U1", "U2")
# the estimand of the exact truth: KNIFE on the (standardised) features, as in paper 001
GMM_SETTINGS = {"entropy": {"space": "features"}}


def _gmm_name(rho: float) -> str:
    return f"gmm_rho_{'m' if rho < 0 else ''}{abs(rho):g}"


GMM_EXPERIMENTS = {_gmm_name(rho): rho for rho in GMM_RHOS}
# §4.1.4 writes its mixtures as fractions, e.g. ¼U + ¾S; dims 16 and noise 0.1 (the defaults)
PRESETS: dict[str, dict[str, float]] = {
    "preset_u1_s": {"U1": 0.25, "S": 0.75},
    "preset_u1_r": {"U1": 0.25, "R": 0.75},
    "preset_r_s": {"R": 0.5, "S": 0.5},
    "preset_all": {"R": 0.25, "U1": 0.25, "U2": 0.25, "S": 0.25},
}
EXPERIMENTS = [*CIRCUIT_EXPERIMENTS, *GMM_EXPERIMENTS, *PRESETS]
N_SHARDS = 4

_HALF_NORMAL_END = 9.0  # the half-normal's mass beyond 9 is 2e-19
_HINGE_RANGE = 40.0  # in units of the product's scale: beyond it (c − δ)⁺ is c or 0 to e^-40


def hinge_expectation(c: np.ndarray, scale: float, n_nodes: int = 2000) -> np.ndarray:
    """``E[(c − scale · g1 · g2)⁺]`` for independent standard normal ``g1, g2``, at every
    entry of ``c``. Given ``g1``, the product is ``N(0, τ²)`` with ``τ = scale · |g1|`` and
    ``E[(c − τZ)⁺] = c Φ(c/τ) + τ φ(c/τ)``; the expectation over the half-normal ``|g1|`` is
    the midpoint rule on ``[0, 9]`` with ``n_nodes`` nodes. ``scale = 0``: ``max(c, 0)``."""
    c = np.asarray(c, dtype=np.float64)
    if scale == 0:
        return np.maximum(c, 0.0)
    step = _HALF_NORMAL_END / n_nodes
    t = (np.arange(n_nodes) + 0.5) * step
    weights = 2.0 * step * np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    tau = scale * t
    z = c[..., None] / tau
    density = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return (c[..., None] * ndtr(z) + tau * density) @ weights


def _hinge_function(scale: float, n_points: int = 2001):
    """``c ↦ hinge_expectation(c, scale)``, tabulated on ``±_HINGE_RANGE · scale`` and
    interpolated linearly; ``c`` beyond the table: ``c`` above, 0 below."""
    if scale == 0:
        return lambda c: np.maximum(c, 0.0)
    nodes = np.linspace(-_HINGE_RANGE * scale, _HINGE_RANGE * scale, n_points)
    values = hinge_expectation(nodes, scale)

    def hinge(c: np.ndarray) -> np.ndarray:
        inside = np.interp(c, nodes, values)
        return np.where(c >= nodes[-1], c, np.where(c <= nodes[0], 0.0, inside))

    return hinge


def _log_normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return -0.5 * math.log(2 * math.pi * sd**2) - (x - mean) ** 2 / (2 * sd**2)


def exact_gmm_lsmi(rho: float, noise: float = GMM_NOISE, grid: int = 601) -> dict[str, float]:
    """Exact mean pointwise LSMI terms (nats, before the dataset adjustment) of the two-class
    Gaussian mixture of ``generate_gaussian_mixture`` (``y`` fair, ``x1 = e_y + u``,
    ``x2 = e_y + ρu + √(1−ρ²)v``, ``u, v ~ N(0, noise² I₂)``), with the true densities in
    place of KNIFE and the classifiers: ``R, U1, U2, S`` and ``I1, I2, I12`` (the mean
    pointwise informations, = I(X1;Y), I(X2;Y), I(X1,X2;Y)).

    In the rotated coordinates ``a = (x[0] − x[1])/√2`` (it carries the label: mean ±1/√2) and
    ``b = (x[0] + x[1])/√2`` (mean 1/√2 for both classes) the noise stays iid with correlation
    ρ across modalities, and ``(b1, b2)`` is independent of ``(a1, a2, y)``. The informations
    depend on ``a`` only; the entropies are ``h_m = A_m + β_m`` with ``A_m = −log p(a_m)`` and
    ``β_m = −log p(b_m)``, and ``β1 − β2 = δ = √(1−ρ²) g1 g2`` for independent standard normal
    ``g``. So with ``min(X + δ, Y) = Y − (Y − X − δ)⁺``, the redundancy
    ``r = min(h1, h2) − min(h1 − i1, h2 − i2)`` averages over ``b`` in closed form up to the
    one-dimensional ``hinge_expectation``, and its mean over ``(a1, a2, y)`` is a sum over a
    ``grid × grid`` square of ``a`` (±(1/√2 + 10 · noise)) per class. ``U1 = I1 − R``,
    ``U2 = I2 − R``, ``S = I12 − I1 − I2 + R`` (eq. 2 in the mean)."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie strictly between -1 and 1, got {rho}")
    mu = 1.0 / math.sqrt(2.0)
    half = mu + 10.0 * noise
    axis = np.linspace(-half, half, grid)
    cell = (axis[1] - axis[0]) ** 2
    a1, a2 = np.meshgrid(axis, axis, indexing="ij")

    def log_marginal(a: np.ndarray) -> np.ndarray:
        return np.logaddexp(_log_normal(a, mu, noise), _log_normal(a, -mu, noise)) - math.log(2)

    def log_joint(mean: float) -> np.ndarray:  # (a1, a2) given the class: correlation ρ
        d1, d2 = a1 - mean, a2 - mean
        quadratic = (d1**2 - 2 * rho * d1 * d2 + d2**2) / (noise**2 * (1 - rho**2))
        return -math.log(2 * math.pi * noise**2 * math.sqrt(1 - rho**2)) - 0.5 * quadratic

    lp1, lp2 = log_marginal(a1), log_marginal(a2)
    joints = {mean: log_joint(mean) for mean in (mu, -mu)}
    lp12 = np.logaddexp(*joints.values()) - math.log(2)
    hinge = _hinge_function(math.sqrt(1 - rho**2))
    a_1, a_2 = -lp1, -lp2
    sums = dict.fromkeys(("R", "I1", "I2", "I12"), 0.0)
    for mean, lj in joints.items():
        weight = 0.5 * np.exp(lj) * cell
        i1 = _log_normal(a1, mean, noise) - lp1
        i2 = _log_normal(a2, mean, noise) - lp2
        # E_b min(h1, h2) − E_b min(h1 − i1, h2 − i2), both less the same E_b β2
        r = (a_2 - hinge(a_2 - a_1)) - (a_2 - i2 - hinge(a_2 - i2 - a_1 + i1))
        for name, value in (("R", r), ("I1", i1), ("I2", i2), ("I12", lj - lp12)):
            sums[name] += float((weight * value).sum())
    r = sums["R"]
    return {
        "R": r,
        "U1": sums["I1"] - r,
        "U2": sums["I2"] - r,
        "S": sums["I12"] - sums["I1"] - sums["I2"] + r,
        **{name: sums[name] for name in ("I1", "I2", "I12")},
    }


def gmm_truth(rho: float, noise: float = GMM_NOISE) -> dict[str, float]:
    """The exact LSMI terms of the mixture after the dataset adjustment (what the pipeline's
    ``adjusted_mean`` estimates), nats."""
    raw = exact_gmm_lsmi(rho, noise)
    means = PIDTerms(*(raw[term] for term in PID_TERMS))
    return dict(zip(PID_TERMS, adjusted(means, adjustment(*means)), strict=True))


def gmm_flat_rows(
    estimates: dict[float, dict[str, float]], truths: dict[float, dict[str, float]]
) -> list[dict]:
    """Spread across ρ of each of R, U1, U2 (estimate vs the exact spread) and the check that
    every estimated spread is at most ``FLAT_TOLERANCE``; ``estimates``/``truths``: ρ → terms."""
    rows, flat = [], True
    for term in FLAT_TERMS:
        estimated = spread([terms[term] for terms in estimates.values()])
        exact = spread([terms[term] for terms in truths.values()])
        rows.append(validation_row("lsmi", GMM_CHECK, f"{term}_spread", estimated, exact))
        flat &= estimated <= FLAT_TOLERANCE
    return [*rows, check_row("lsmi", GMM_CHECK, "R_U_flat_in_rho", flat)]


def _data(experiment: str, n_samples: int, seed: int) -> tuple[pa.Table, int, dict[str, float]]:
    """The experiment's table (``sample_id``, ``label``, ``x1``, ``x2``), feature size, truth."""
    columns = ["sample_id", "label", "x1", "x2"]
    if experiment in GMM_EXPERIMENTS:
        rho = GMM_EXPERIMENTS[experiment]
        spec = GaussianMixtureSpec(n_samples=n_samples, n_classes=GMM_CLASSES, rho=rho, seed=seed)
        return generate_gaussian_mixture(spec), GMM_CLASSES, gmm_truth(rho, spec.noise)
    if experiment in PRESETS:
        preset = PresetSpec(fractions=PRESETS[experiment], n_samples=n_samples, seed=seed)
        return generate_preset(preset).select(columns), preset.dims, preset_truth(preset)
    circuit = CircuitSpec(
        op=experiment, n_samples=n_samples, dims=CIRCUIT_DIMS, noise=CIRCUIT_NOISE, seed=seed
    )
    table = generate_circuit(circuit).select(columns)
    return table, CIRCUIT_DIMS, CIRCUIT_TRUTH[experiment]


def lsmi_job(
    experiment: str,
    data_uri: str,
    run_uri: str,
    n_samples: int,
    dims: int = CIRCUIT_DIMS,
    settings: dict | None = None,
) -> JobConfig:
    """The job of one experiment; ``settings``: further keys of its ``lsmi`` section."""
    return parse_config(
        {
            "dataset": f"lsmi_{experiment}",
            "input": data_uri,
            "output": run_uri,
            "num_classes": 2,
            "modalities": [{"name": name, "shape": [dims]} for name in ("x1", "x2")],
            "measures": ["lsmi"],
            "lsmi": {"fit_rows": n_samples, **(settings or {})},
        }
    )


def run_lsmi_suite(
    out: str,
    experiments: list[str] | None = None,
    n_samples: int = 20_000,
    seed: int = 0,
    progress: Progress = print,
) -> pl.DataFrame:
    """Run the experiments (default: all twelve) and write ``out/validation.parquet``."""
    rows = []
    gmm_estimates: dict[float, dict[str, float]] = {}
    gmm_truths: dict[float, dict[str, float]] = {}
    for experiment in chosen_experiments(experiments, EXPERIMENTS):
        table, dims, truth = _data(experiment, n_samples, seed)
        data_uri = storage.join(out, "data", experiment)
        write_table_shards(table, data_uri, N_SHARDS)
        run_uri = storage.join(out, "runs", experiment)
        settings = GMM_SETTINGS if experiment in GMM_EXPERIMENTS else None
        job = lsmi_job(experiment, data_uri, run_uri, n_samples, dims, settings)
        global_table = run_job(job, progress)
        estimates = overall_terms(global_table, "lsmi", "adjusted_mean", modalities=("x1", "x2"))
        rows += [
            validation_row("lsmi", experiment, term, estimates[term], truth[term])
            for term in PID_TERMS
        ]
        if experiment in GMM_EXPERIMENTS:
            gmm_estimates[GMM_EXPERIMENTS[experiment]] = estimates
            gmm_truths[GMM_EXPERIMENTS[experiment]] = truth
    if len(gmm_estimates) == len(GMM_EXPERIMENTS):
        rows += gmm_flat_rows(gmm_estimates, gmm_truths)
    return write_validation(out, rows)

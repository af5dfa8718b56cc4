"""Row checks send bad rows to rejects with a reason naming the column; schema checks fail
before any work."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from intermodal.measures import parse_config
from intermodal.schemas.validation import schema_problems, validate_rows

CONFIG = parse_config(
    {
        "dataset": "d",
        "input": "i",
        "output": "o",
        "num_classes": 2,
        "group_columns": ["site"],
        "modalities": [{"name": "a", "shape": [2]}, {"name": "b", "column": "b_raw", "shape": [3]}],
        "model": {"name": "m", "factory": "x.y:z"},
    }
)


def _batch() -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array([10, 11, 12, 13, 14, 15, None], pa.int64()),
            "label": pa.array([0, 1, 5, 1, 0, None, 1], pa.int64()),
            "site": ["x", "y", "x", "y", "x", "y", "x"],
            "a": pa.array(
                [[1, 2], [np.nan, 1], [1, 1], None, [0, 0], [1, 1], [1, 1]],
                pa.list_(pa.float32(), 2),
            ),
            "b_raw": pa.array(
                [[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2], [1, 2, np.inf], [0, 0, 0]],
                pa.list_(pa.float64()),
            ),
        }
    )


def test_each_bad_row_is_rejected_with_its_reasons() -> None:
    valid, rejects = validate_rows(_batch(), CONFIG, pa.array([10], pa.int64()), "f.parquet", 100)
    assert valid.column_names == ["sample_id", "label", "site", "a", "b"]
    assert valid.column("sample_id").to_pylist() == []  # every row has a problem
    reasons = dict(
        zip(
            rejects.column("row_index").to_pylist(),
            zip(
                rejects.column("columns").to_pylist(),
                rejects.column("reason").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    assert set(reasons) == set(range(100, 107))
    assert reasons[100] == ("sample_id", "duplicate sample_id (every copy rejected)")
    assert reasons[101] == ("a", "1 NaN/inf values")
    assert reasons[102] == ("label", "label 5 outside [0, 2)")
    assert reasons[103] == ("a", "value is null")
    assert reasons[104] == ("b_raw", "expected 3 values, got 2")
    assert reasons[105] == ("b_raw", "1 NaN/inf values")  # a null label is allowed
    assert reasons[106] == ("sample_id", "sample_id is null")
    assert set(rejects.column("source_file").to_pylist()) == {"f.parquet"}
    assert rejects.column("sample_id").to_pylist()[:2] == ["10", "11"]


def test_valid_rows_are_normalised() -> None:
    batch = _batch().slice(0, 1)
    valid, rejects = validate_rows(batch, CONFIG, pa.array([], pa.int64()), "f", 0)
    assert rejects.num_rows == 0
    assert valid.schema.field("b").type == pa.list_(pa.float32(), 3)
    assert valid.column("b").to_pylist() == [[1.0, 2.0, 3.0]]
    assert valid.column("site").to_pylist() == ["x"]


def test_schema_problems_name_the_column() -> None:
    schema = pa.schema(
        [
            ("sample_id", pa.float64()),
            ("label", pa.int64()),
            ("a", pa.list_(pa.float32(), 5)),
            ("b_raw", pa.string()),
        ]
    )
    problems = "\n".join(schema_problems(schema, CONFIG))
    assert "'sample_id' (id_column) must be int or string" in problems
    assert "'site' (group_columns) is missing" in problems
    assert "'a' (modality 'a') holds 5 values per row; shape [2] needs 2" in problems
    assert "'b_raw' (modality 'b') must be a list of numbers" in problems


@pytest.mark.parametrize("id_type", [pa.int64(), pa.string()])
def test_string_and_integer_ids(id_type) -> None:
    batch = (
        _batch()
        .slice(0, 1)
        .set_column(
            0,
            "sample_id",
            pa.array(["10"]).cast(id_type) if id_type == pa.string() else pa.array([10]),
        )
    )
    valid, _ = validate_rows(batch, CONFIG, pa.array([], id_type), "f", 0)
    assert valid.schema.field("sample_id").type == id_type


def test_a_null_element_reads_as_null_and_a_row_bad_twice_names_both_columns() -> None:
    batch = pa.table(
        {
            "sample_id": pa.array([1, 2], pa.int64()),
            "label": pa.array([0, 1], pa.int64()),
            "site": ["x", "y"],
            "a": pa.array([[1, None], [np.nan, 1]], pa.list_(pa.float32(), 2)),
            "b_raw": pa.array([[1, 2, 3], [1, 2]], pa.list_(pa.float64())),
        }
    )
    _, rejects = validate_rows(batch, CONFIG, pa.array([], pa.int64()), "f.parquet", 0)
    rows = rejects.select(["columns", "reason"]).to_pylist()
    assert rows == [
        {"columns": "a", "reason": "1 null values"},
        {"columns": "a,b_raw", "reason": "1 NaN/inf values; expected 3 values, got 2"},
    ]


# --- the validate suites' pure parts: exact LSMI of the Gaussian mixture, generators, checks


def _binary_gaussian_information(distance: float) -> float:
    """I(X; Y) in nats of a fair class between two Gaussians of one covariance at Mahalanobis
    ``distance``: the log-likelihood ratio L is N(Δ²/2, Δ²) given the class and
    I = ln 2 − E log(1 + e^-L) (Gauss–Hermite, 120 nodes)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    ratio = distance**2 / 2 + distance * nodes
    return float(np.log(2) - weights @ np.logaddexp(0.0, -ratio) / np.sqrt(2 * np.pi))


def test_hinge_expectation_matches_its_closed_forms_and_sampling() -> None:
    from intermodal.validation.lsmi import hinge_expectation

    # E[(−δ)⁺] = E|δ| / 2 = scale · E|g1| E|g2| / 2 = scale / π
    assert hinge_expectation(np.array(0.0), 0.6) == pytest.approx(0.6 / np.pi, abs=1e-6)
    far = hinge_expectation(np.array([-30.0, 30.0]), 0.5)
    assert far == pytest.approx([0.0, 30.0], abs=1e-9)
    assert hinge_expectation(np.array([-1.0, 2.0]), 0.0) == pytest.approx([0.0, 2.0])
    g = np.random.default_rng(0).standard_normal((2, 1_000_000))
    for c in (-0.5, 0.3, 1.2):
        sampled = np.maximum(c - 0.8 * g[0] * g[1], 0.0).mean()
        assert hinge_expectation(np.array(c), 0.8) == pytest.approx(sampled, abs=2e-3)


@pytest.mark.parametrize("rho", [-0.8, 0.0, 0.4])
def test_exact_gmm_lsmi_informations_match_the_closed_form(rho) -> None:
    from intermodal.validation.lsmi import exact_gmm_lsmi

    noise = 0.5
    exact = exact_gmm_lsmi(rho, noise)
    single = np.sqrt(2) / noise  # class centres e_0, e_1 lie √2 apart
    both = single * np.sqrt(2 / (1 + rho))  # (1, 1) C⁻¹ (1, 1)ᵀ = 2 / (1 + ρ)
    assert exact["I1"] == pytest.approx(_binary_gaussian_information(single), abs=1e-6)
    assert exact["I2"] == pytest.approx(exact["I1"], abs=1e-9)
    assert exact["I12"] == pytest.approx(_binary_gaussian_information(both), abs=1e-6)
    assert exact["U1"] == pytest.approx(exact["U2"], abs=1e-9)  # the modalities are symmetric
    total = exact["R"] + exact["U1"] + exact["U2"] + exact["S"]
    assert total == pytest.approx(exact["I12"], abs=1e-9)


@pytest.mark.parametrize("rho", [-0.8, 0.4])
def test_exact_gmm_lsmi_matches_sampled_pointwise_terms_of_the_true_density(rho) -> None:
    """The grid's reduction (rotation, the uninformative coordinate averaged in closed form)
    against the plain definition: pointwise LSMI of rows of the generator, with the true
    densities in the original coordinates, averaged."""
    from scipy.special import logsumexp

    from intermodal.estimators.lsmi import pointwise
    from intermodal.synthetic.lsmi_data import GaussianMixtureSpec, generate_gaussian_mixture
    from intermodal.validation.lsmi import exact_gmm_lsmi

    n, noise = 100_000, 0.5
    table = generate_gaussian_mixture(GaussianMixtureSpec(n_samples=n, rho=rho, seed=3))
    y = table.column("label").to_numpy()
    x1, x2 = (
        np.asarray(table.column(m).combine_chunks().flatten(), np.float64).reshape(n, 2)
        for m in ("x1", "x2")
    )
    centres = np.eye(2)
    log_unit = -0.5 * np.log(2 * np.pi * noise**2)

    def log_single(x, k):  # log N(x; e_k, noise² I)
        return (log_unit - (x - centres[k]) ** 2 / (2 * noise**2)).sum(axis=1)

    def log_pair(k):  # log p(x1, x2 | y = k): per feature a bivariate normal, correlation ρ
        d1, d2 = x1 - centres[k], x2 - centres[k]
        quadratic = (d1**2 - 2 * rho * d1 * d2 + d2**2) / (noise**2 * (1 - rho**2))
        return (-np.log(2 * np.pi * noise**2 * np.sqrt(1 - rho**2)) - quadratic / 2).sum(axis=1)

    rows = np.arange(n)
    singles = [np.stack([log_single(x, k) for k in (0, 1)], axis=1) for x in (x1, x2)]
    pair = np.stack([log_pair(k) for k in (0, 1)], axis=1)

    def log_posterior(joint):  # log p(y | ·) of the observed label, fair classes
        return joint[rows, y] - logsumexp(joint, axis=1)

    entropies = [np.log(2) - logsumexp(s, axis=1) for s in singles]  # −log p(x_m)
    prior = np.full(n, np.log(0.5))
    terms = pointwise(*entropies, *(log_posterior(j) for j in (*singles, pair)), prior)
    exact = exact_gmm_lsmi(rho, noise)
    for name, values in zip(("R", "U1", "U2", "S"), terms, strict=True):
        assert values.mean() == pytest.approx(exact[name], abs=0.006), name


def test_gmm_truth_applies_the_dataset_adjustment() -> None:
    from intermodal.validation.lsmi import exact_gmm_lsmi, gmm_truth

    raw, truth = exact_gmm_lsmi(0.4), gmm_truth(0.4)
    assert raw["U1"] < 0  # raw U negative, R and S positive: a = min(U1, U2)
    assert truth["U1"] == pytest.approx(0.0, abs=1e-12)
    assert truth["R"] == pytest.approx(raw["I1"])  # R + U1 = I(X1; Y) survives the shift
    assert truth["S"] == pytest.approx(raw["S"] + raw["U1"])
    with pytest.raises(ValueError, match="strictly between"):
        exact_gmm_lsmi(1.0)


def test_monotone_and_spread() -> None:
    from intermodal.validation.rows import monotone, spread

    assert monotone([1, 2, 3]) and not monotone([1, 2, 2])
    assert monotone([1, 2, 2], strict=False) and not monotone([1, 3, 2], strict=False)
    assert monotone([3, 2, 1], increasing=False) and not monotone([3, 3, 1], increasing=False)
    assert monotone([3, 3, 1], increasing=False, strict=False) and monotone([5])
    assert not monotone([0.0, 1e-13, 0.1], margin=0.005) and monotone([0, 0.01], margin=0.005)
    assert monotone([2.0, 2.004, 1.0], increasing=False, strict=False, margin=0.005)
    assert spread([0.5, 0.45, 0.52]) == pytest.approx(0.07)


def test_intershap_ordering_checks_need_every_experiment_and_read_the_claims() -> None:
    from intermodal.validation.intershap import ordering_checks

    assert ordering_checks({"fcnn_m2_synergy": 98.0, "fcnn_m3_synergy": 88.8}) == []
    table_3 = {"fcnn_m2_synergy": 98.0, "fcnn_m3_synergy": 88.8, "fcnn_m4_synergy": 64.1}
    (row,) = ordering_checks(table_3)
    assert (row["experiment"], row["term"], row["estimate"], row["truth"]) == (
        "fcnn_synergy_by_m",
        "global_falls_with_m",
        1.0,
        1.0,
    )
    (row,) = ordering_checks({**table_3, "fcnn_m4_synergy": 90.0})
    assert row["estimate"] == 0.0
    fusions = {
        "fcnn_m2_synergy": 98.0,
        "fcnn_m2_synergy_intermediate": 98.0,
        "fcnn_m2_synergy_late": 40.0,
    }
    (row,) = ordering_checks(fusions)
    assert row["term"] == "early_ge_intermediate_ge_late" and row["estimate"] == 1.0
    (row,) = ordering_checks({**fusions, "fcnn_m2_synergy_late": 99.0})
    assert row["estimate"] == 0.0
    assert len(ordering_checks({**table_3, **fusions})) == 2


def test_gmm_flat_rows_report_the_spread_and_the_check() -> None:
    from intermodal.validation.lsmi import FLAT_TOLERANCE, gmm_flat_rows

    def terms(r, u):
        return {"R": r, "U1": u, "U2": u, "S": 0.1}

    exact = {-0.4: terms(0.50, 0.0), 0.4: terms(0.50, 0.0)}
    rows = gmm_flat_rows({-0.4: terms(0.48, 0.01), 0.4: terms(0.50, 0.0)}, exact)
    assert [row["term"] for row in rows] == [
        "R_spread",
        "U1_spread",
        "U2_spread",
        "R_U_flat_in_rho",
    ]
    assert rows[0]["estimate"] == pytest.approx(0.02) and rows[0]["truth"] == 0.0
    assert rows[-1]["estimate"] == 1.0
    moving = {-0.4: terms(0.50, 0.0), 0.4: terms(0.50 + 2 * FLAT_TOLERANCE, 0.0)}
    assert gmm_flat_rows(moving, exact)[-1]["estimate"] == 0.0


def test_pid_mixed_check_needs_every_mix_and_a_strict_rise() -> None:
    from intermodal.validation.pid import MIXED_EXPERIMENTS, mixed_checks

    rising = dict(zip(MIXED_EXPERIMENTS, [0.0, 0.01, 0.06], strict=True))
    (row,) = mixed_checks("pid", rising)
    assert (row["experiment"], row["term"], row["estimate"]) == (
        "mixed_z1_share",
        "U1_rises_with_z1_share",
        1.0,
    )
    flat = dict(zip(MIXED_EXPERIMENTS, [0.0, 0.01, 0.01], strict=True))
    assert mixed_checks("pid", flat)[0]["estimate"] == 0.0
    noise = dict(zip(MIXED_EXPERIMENTS, [0.0, 1e-13, 0.1], strict=True))  # no rise at all
    assert mixed_checks("pid", noise)[0]["estimate"] == 0.0
    assert mixed_checks("pid", dict(list(rising.items())[:2])) == []


def test_share_mix_weights_each_latent_by_the_root_of_its_share() -> None:
    from intermodal.synthetic.pid_data import LatentSpec, generate_latent, share_mix

    mix = share_mix({"DU1": 1.0, "DU2": 0.5, "DR": 0.5})
    assert mix == pytest.approx({"DU1": 1.0, "DU2": np.sqrt(0.5), "DR": np.sqrt(0.5)})
    with pytest.raises(ValueError, match="non-negative"):
        share_mix({"DU1": -1.0})
    # one latent at any share is the pure data set
    alone = LatentSpec(setting="mixed", mix=share_mix({"DU1": 0.5}), n_samples=300, seed=1)
    pure = LatentSpec(setting="DU1", n_samples=300, seed=1)
    assert generate_latent(alone).equals(generate_latent(pure))

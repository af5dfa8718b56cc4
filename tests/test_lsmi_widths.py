"""LSMI on modalities of different widths (docs/choices.md, "LSMI on modalities of different
widths"): the pointwise entropies live on each modality's posterior coordinates, so neither a
modality's width, nor its units, nor label-free features it carries decide the per-row split.

Fit and score in this process (``InlineWorkers``, no Ray), on small data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from intermodal.estimators.knife import KnifeConfig
from intermodal.estimators.posterior_entropy import (
    fit_posterior_entropy_model,
    posterior_coordinates,
    sum_zero_basis,
)
from intermodal.measures import MEASURES, parse_config
from intermodal.measures.base import InlineWorkers
from intermodal.measures.lsmi import lsmi_column
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.tables import PID_TERMS, modality_pairs, modality_values
from intermodal.synthetic.lsmi_data import (
    MIXED_WIDTH_MODALITIES,
    MixedWidthSpec,
    PresetSpec,
    generate_mixed_widths,
    generate_preset,
    mixed_width_row_truth,
    mixed_width_truth,
)
from intermodal.synthetic.pid_data import _fixed_size_list

PRESET_ROWS, PRESET_DIMS, PADDING = 4000, 16, 40
MIXED_ROWS = 6000


def quiet(_: str) -> None:
    """Progress not shown."""


def lsmi_terms(table: pa.Table, widths: dict[str, int], out: str) -> dict[str, np.ndarray]:
    """``{column: [n]}`` of every LSMI column, fitted on every row (default settings) and
    scored by the held-out folds."""
    config = parse_config(
        {
            "dataset": "lsmi_widths",
            "input": out,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [d]} for m, d in widths.items()],
            "measures": ["lsmi"],
            "lsmi": {"fit_rows": table.num_rows},
        }
    )
    measure = MEASURES["lsmi"]
    measure.fit(config, table, quiet, InlineWorkers(quiet))
    scores = ScoreOperator(config, [measure])(table)
    return {
        lsmi_column(term, a, b): scores.column(lsmi_column(term, a, b)).to_numpy()
        for a, b in modality_pairs(list(widths))
        for term in PID_TERMS
    }


def replaced(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, _fixed_size_list(values))


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """x1 carries the label on every row, x2 on half of them (16 + 16 features), and its
    terms. x1's posterior is certain on every row, so its classifiers learn the same however
    it is rescaled or padded: what can move the terms is its entropy."""
    spec = PresetSpec(fractions={"R": 0.5, "U1": 0.5}, n_samples=PRESET_ROWS, dims=PRESET_DIMS)
    table = generate_preset(spec).select(["sample_id", "label", "x1", "x2"])
    widths = {"x1": PRESET_DIMS, "x2": PRESET_DIMS}
    return table, lsmi_terms(table, widths, str(tmp_path_factory.mktemp("preset")))


def assert_same_terms(terms: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    moved = {column: float(np.abs(terms[column] - expected[column]).mean()) for column in terms}
    assert max(moved.values()) < 0.02, moved


def test_a_change_of_units_leaves_the_terms(preset, tmp_path) -> None:
    table, expected = preset
    x1 = modality_values(table.column("x1"), PRESET_DIMS)
    scaled = replaced(table, "x1", x1 * 1000.0)
    widths = {"x1": PRESET_DIMS, "x2": PRESET_DIMS}
    assert_same_terms(lsmi_terms(scaled, widths, str(tmp_path)), expected)


def test_label_free_features_leave_the_terms(preset, tmp_path) -> None:
    """40 features of N(0, 1) noise appended to x1 (16 → 56 features) add ``h(noise)`` to
    every pointwise entropy of x1's features (about 57 nats), but nothing to its posterior."""
    table, expected = preset
    x1 = modality_values(table.column("x1"), PRESET_DIMS)
    noise = np.random.default_rng(1).normal(size=(table.num_rows, PADDING))
    padded = replaced(table, "x1", np.hstack([x1, noise]))
    widths = {"x1": PRESET_DIMS + PADDING, "x2": PRESET_DIMS}
    assert_same_terms(lsmi_terms(padded, widths, str(tmp_path)), expected)


def test_on_mixed_widths_the_terms_follow_the_information(tmp_path) -> None:
    """48, 16 and 5 features; the narrowest modality x3 alone knows the label on 30 % of the
    rows (type U3). Per row its uniqueness shows there, and every term's mean is the truth
    (raw and adjusted: every raw mean is ≥ 0 up to noise, so the adjustment is ~0)."""
    spec = MixedWidthSpec(n_samples=MIXED_ROWS)
    table = generate_mixed_widths(spec)
    kinds = table.column("interaction").to_numpy(zero_copy_only=False)
    widths = dict(zip(MIXED_WIDTH_MODALITIES, spec.widths, strict=True))
    terms = lsmi_terms(table.drop_columns(["interaction"]), widths, str(tmp_path))
    for (a, b), truth in mixed_width_truth(spec).items():
        means = {t: float(terms[lsmi_column(t, a, b)].mean()) for t in PID_TERMS}
        for term in PID_TERMS:
            assert means[term] == pytest.approx(truth[term], abs=0.03), (a, b, term, means)
        if b == "x3":  # x3 unique on the U3 rows of (x1, x3) and (x2, x3)
            unique = terms[lsmi_column("U2", a, b)]
            assert np.mean(unique > 0.1) > 0.25, (a, b)
            assert unique[kinds == "U3"].mean() == pytest.approx(np.log(2), abs=0.1), (a, b)


# --- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 7])
def test_the_sum_zero_basis_is_orthonormal_and_drops_the_constant(num_classes) -> None:
    basis = sum_zero_basis(num_classes)
    assert basis.shape == (num_classes, num_classes - 1)
    np.testing.assert_allclose(basis.T @ basis, np.eye(num_classes - 1), atol=1e-12)
    np.testing.assert_allclose(np.ones(num_classes) @ basis, 0.0, atol=1e-12)


class StateEncoder(nn.Module):
    """Logits ``[2, B, 3]`` (two "fold models") of one-hot rows ``[B, 3]``: state 0 a certain
    class 0, state 1 a certain class 1, state 2 even, each fold model off by a little."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.tensor([[[9.0, -9.0, -9.0], [-9.0, 9.0, -9.0], [0.0, 0.0, 0.0]]])
        self.register_buffer("table", torch.cat([table, table + 0.01]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bs,ksc->kbc", x, self.table)


def test_posterior_entropy_is_the_surprisal_of_the_posterior_state() -> None:
    """Rows in three posterior states of masses 0.1, 0.3 and 0.6: h differs between states by
    the log ratio of their masses, whatever the rows' width."""
    rng = np.random.default_rng(0)
    masses = np.array([0.1, 0.3, 0.6])
    states = rng.choice(3, size=4000, p=masses)
    rows = np.eye(3, dtype=np.float32)[states]
    encoder = StateEncoder()
    coordinates = posterior_coordinates(encoder, rows)
    assert coordinates.shape == (4000, 2)
    model = fit_posterior_entropy_model(encoder, rows, KnifeConfig(epochs=10, seed=0))
    assert model.dim == 3
    h = model.entropy(rows)
    for state in (0, 1):
        gap = h[states == state].mean() - h[states == 2].mean()
        assert gap == pytest.approx(np.log(masses[2] / masses[state]), abs=0.1)
    np.testing.assert_array_equal(model.entropy(rows[:10]), h[:10])


def test_mixed_widths_carry_what_the_layout_says() -> None:
    spec = MixedWidthSpec(n_samples=400, widths=(7, 6, 5), seed=3)
    table = generate_mixed_widths(spec)
    assert [table.column(m).type.list_size for m in MIXED_WIDTH_MODALITIES] == [7, 6, 5]
    kinds = np.array(table.column("interaction").to_pylist())
    label = table.column("label").to_numpy()
    bits = {m: table.column(f"{m}_bits").to_numpy() for m in MIXED_WIDTH_MODALITIES}
    assert {k: int(np.sum(kinds == k)) for k in ("R", "U1", "U3", "S")} == spec.counts
    rows = kinds != "S"
    np.testing.assert_array_equal(label[rows & (kinds != "U3")], bits["x1"][rows & (kinds != "U3")])
    np.testing.assert_array_equal(label[kinds == "U3"], bits["x3"][kinds == "U3"])
    np.testing.assert_array_equal(label[kinds == "S"], (bits["x1"] ^ bits["x2"])[kinds == "S"])
    for pair, truth in mixed_width_truth(spec).items():
        per_row = mixed_width_row_truth(kinds, pair)
        for term in PID_TERMS:
            # exact counts: the per-row truth averages to the dataset truth
            assert per_row[term].mean() == pytest.approx(truth[term], abs=1e-12)
    with pytest.raises(ValueError, match="widths must be at least"):
        MixedWidthSpec(n_samples=10, widths=(48, 16, 4))

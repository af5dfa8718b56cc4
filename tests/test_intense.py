"""InTense: the generalised centring of eq. 9, VBN running statistics, exact per-sample block
contributions, relevance (eq. 4) and regulariser (eq. 3) by hand, the model protocol, and the
SynthGene / SynthGene-Tri relevance rankings after real training."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import Tensor

from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.models.intense import (
    InTense,
    batch_moments,
    centre_product,
    subset_products,
)
from intermodal.models.protocol import MultimodalModel
from intermodal.operators.coalitions import CoalitionValues
from intermodal.synthetic.synthgene import (
    SynthGeneSpec,
    SynthGeneTriSpec,
    generate_synthgene,
    generate_synthgene_tri,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def table_tensors(table: pa.Table, names: Sequence[str]) -> tuple[dict[str, Tensor], Tensor]:
    n = table.num_rows
    inputs = {
        m: torch.from_numpy(table[m].combine_chunks().values.to_numpy().reshape(n, -1).copy())
        for m in names
    }
    return inputs, torch.from_numpy(table["label"].to_numpy().copy())


def skewed_factors(k: int, batch: int = 64, dim: int = 3) -> list[Tensor]:
    """k factors [B, dim] with non-zero means and correlated members (float64), so every
    uncentred sub-product has a clearly non-zero batch mean."""
    generator = torch.Generator().manual_seed(k)
    shared = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    return [
        1.0 + 0.5 * j + 0.5 * shared + torch.randn(batch, dim, generator=generator).double()
        for j in range(k)
    ]


def part_multiplying(
    product: Callable[[Sequence[Tensor]], Tensor], factors: Sequence[Tensor], j_positions: int
) -> Tensor:
    """The coefficient of ``Π_{m∈J} f^m`` in the multilinear ``product`` (J = bitmask over the
    factors), read off by inclusion–exclusion over setting the members of J to 1 or 0:
    ``Σ_{T⊆J} (-1)^{|J∖T|} product(f with T → 1, J∖T → 0)``. ``[B, D_1, ..., D_k]``."""
    total = torch.zeros(())
    for t in range(1 << len(factors)):
        if t & j_positions != t:
            continue
        replaced = [
            (torch.ones_like(f) if t >> m & 1 else torch.zeros_like(f))
            if j_positions >> m & 1
            else f
            for m, f in enumerate(factors)
        ]
        sign = (-1) ** bin(j_positions ^ t).count("1")
        total = total + sign * product(replaced)
    return total


def uncentred(factors: Sequence[Tensor]) -> Tensor:
    return subset_products(factors)[(1 << len(factors)) - 1]


SUBSETS_OF_FOUR = [s for k in range(1, 5) for s in itertools.combinations(range(4), k)]


@pytest.mark.parametrize("subset", SUBSETS_OF_FOUR, ids=str)
def test_centring_zeroes_the_mean_of_every_proper_sub_product(subset: tuple[int, ...]) -> None:
    """Eq. 11 for every subset I of M = 4 modalities and every proper J ⊊ I: the part of the
    centred product multiplying the members of J has zero batch mean. The plain product fails
    the same check."""
    factors = [skewed_factors(4)[m] for m in subset]
    moments = batch_moments(factors)  # fixed: the extraction below varies the members only

    def centred(members: Sequence[Tensor]) -> Tensor:
        return centre_product(members, moments)

    full = (1 << len(subset)) - 1
    for j in range(full):  # every proper J, the empty one included (E ĥ = 0)
        part = part_multiplying(centred, factors, j).mean(dim=0)
        torch.testing.assert_close(part, torch.zeros_like(part), atol=1e-9, rtol=0)
        plain = part_multiplying(uncentred, factors, j).mean(dim=0)
        assert plain.abs().min() > 0.1


def test_centred_pair_is_the_product_of_centred_members_minus_its_mean() -> None:
    """For two members the generalised centring is the paper's bi-modal case: centre each
    member, multiply, subtract the batch mean of the product."""
    f, g = skewed_factors(2)
    centred = centre_product([f, g], batch_moments([f, g]))
    product = (f - f.mean(0))[:, :, None] * (g - g.mean(0))[:, None, :]
    torch.testing.assert_close(centred, product - product.mean(0))


def test_centred_triple_matches_the_papers_worked_example() -> None:
    """App. B / §3.3 example for centred members: f1f2f3 − E(f1f2)f3 − E(f1f3)f2 − E(f2f3)f1
    − E(f1f2f3) (one-dimensional members)."""
    f1, f2, f3 = (f[:, :1] - f[:, :1].mean(0) for f in skewed_factors(3))
    centred = centre_product([f1, f2, f3], batch_moments([f1, f2, f3])).flatten(1)

    def mean(x: Tensor) -> Tensor:
        return x.mean(0)

    expected = (
        f1 * f2 * f3
        - mean(f1 * f2) * f3
        - mean(f1 * f3) * f2
        - mean(f2 * f3) * f1
        - mean(f1 * f2 * f3)
    )
    torch.testing.assert_close(centred, expected)


def tiny_model(**kwargs: object) -> tuple[InTense, dict[str, Tensor], Tensor]:
    """A 4-modality InTense with every block order up to 3, trained a few steps on random data
    (the fusion layer starts at zero)."""
    torch.manual_seed(0)
    names = ["a", "b", "c", "d"]
    inputs = {m: torch.randn(64, 5) for m in names}
    targets = torch.randint(0, 3, (64,))
    subsets = [list(s) for k in (1, 2, 3) for s in itertools.combinations(names, k)]
    model = InTense(names, [5] * 4, num_classes=3, subsets=subsets, latent_dim=3, **kwargs)
    config = FusionTrainConfig(epochs=3, batch_size=16)
    return (
        train_fusion_model(model, inputs, targets, config, progress=lambda _: None),
        inputs,
        targets,
    )


def test_contributions_sum_with_the_bias_to_the_logits() -> None:
    model, inputs, _ = tiny_model()
    with torch.no_grad():
        interpreted = model.interpret(inputs)
        contributions = interpreted["contributions"]
        assert contributions.shape == (64, len(model.term_names), 3)
        assert contributions.abs().sum() > 0
        torch.testing.assert_close(
            contributions.sum(dim=1) + model.bias, model(inputs), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(interpreted["logits"], model(inputs), atol=1e-5, rtol=0)


def test_eval_mode_uses_running_statistics() -> None:
    """In eval mode a row's output does not depend on the rest of its batch (InterSHAP's
    masked rows are mixed batches)."""
    model, inputs, _ = tiny_model()
    with torch.no_grad():
        whole = model(inputs)
        alone = model({m: x[:5] for m, x in inputs.items()})
    torch.testing.assert_close(alone, whole[:5])
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model({m: x[:5] for m, x in inputs.items()}), whole[:5])


def set_block_norms(model: InTense, norms: Sequence[float]) -> None:
    """Fusion blocks whose Frobenius norms are ``norms`` (one non-zero entry each)."""
    with torch.no_grad():
        for weight, norm in zip(model.block_weights, norms, strict=True):
            weight.zero_()
            weight[0, 0] = norm


def test_relevance_by_hand_for_p_1_and_p_2() -> None:
    model = InTense(["a", "b"], [3, 3], latent_dim=2)  # blocks a, b, axb
    set_block_norms(model, [3.0, 4.0, 1.0])
    assert model.term_names == ["a", "b", "axb"]
    # p = 1: β = ‖W_I‖ / Σ‖W_J‖
    expected_p1 = [3 / 8, 4 / 8, 1 / 8]
    torch.testing.assert_close(model.relevance(p=1), torch.tensor(expected_p1), atol=1e-6, rtol=0)
    # p = 2: β = ‖W_I‖^(2/3) / (Σ‖W_J‖^(4/3))^(1/2)
    denominator = math.sqrt(3 ** (4 / 3) + 4 ** (4 / 3) + 1)
    expected_p2 = [3 ** (2 / 3) / denominator, 4 ** (2 / 3) / denominator, 1 / denominator]
    beta = model.relevance(p=2)
    torch.testing.assert_close(beta, torch.tensor(expected_p2), atol=1e-6, rtol=0)
    assert math.isclose(float(beta.pow(2).sum()), 1.0, rel_tol=1e-5)  # ‖β‖_p = 1


def test_regulariser_by_hand() -> None:
    for p, expected in [(1.0, (3 + 4 + 1) ** 2), (2.0, (3 ** (4 / 3) + 4 ** (4 / 3) + 1) ** 1.5)]:
        model = InTense(["a", "b"], [3, 3], latent_dim=2, p=p)
        set_block_norms(model, [3.0, 4.0, 1.0])
        assert math.isclose(float(model.regularizer().detach()), expected, rel_tol=1e-5)


def test_subsets_and_term_names() -> None:
    names = ["M1", "M2", "M3"]
    default = InTense(names, [4, 4, 4])
    assert default.term_names == ["M1", "M2", "M3", "M1xM2", "M1xM3", "M2xM3"]
    configured = InTense(names, [4, 4, 4], subsets=[["M3", "M1"], ["M2"], names])
    assert configured.term_names == ["M1xM3", "M2", "M1xM2xM3"]
    for bad in ([["M4"]], [[]], [["M1", "M1"]], [["M1"], ["M1"]]):
        with pytest.raises(ValueError):
            InTense(names, [4, 4, 4], subsets=bad)


def test_protocol_and_intershap_coalitions() -> None:
    model, inputs, _ = tiny_model()
    assert isinstance(model, MultimodalModel)
    embeddings = {m: model.encode(m, x) for m, x in inputs.items()}
    torch.testing.assert_close(model.fuse(embeddings), model(inputs))
    values = CoalitionValues(model, {m: x[:8] for m, x in inputs.items()})(inputs)
    assert values.shape == (64, 16, 3)
    torch.testing.assert_close(values[:, -1], torch.softmax(model(inputs).double(), dim=-1))


def test_regression_fits_a_product_target() -> None:
    torch.manual_seed(0)
    inputs = {"a": torch.randn(512, 2), "b": torch.randn(512, 2)}
    targets = inputs["a"][:, 0] * inputs["b"][:, 0] + inputs["a"][:, 1]
    model = InTense(["a", "b"], [2, 2], task="regression", regularization=1e-3)
    config = FusionTrainConfig(epochs=30, lr=3e-3)
    train_fusion_model(model, inputs, targets, config, progress=lambda _: None)
    with torch.no_grad():
        error = torch.mean((model(inputs).squeeze(-1) - targets) ** 2)
    assert error < 0.2 * targets.var()


def train_on(table: pa.Table, names: list[str], subsets: list[list[str]], epochs: int) -> InTense:
    inputs, labels = table_tensors(table, names)
    torch.manual_seed(0)  # the initial weights, whatever ran before
    model = InTense(names, [x.shape[1] for x in inputs.values()], subsets=subsets, hidden_dim=32)
    config = FusionTrainConfig(epochs=epochs, batch_size=64, lr=3e-3)
    return train_fusion_model(model, inputs, labels, config, progress=lambda _: None)


def test_synthgene_informative_modalities_get_the_largest_relevance() -> None:
    spec = SynthGeneSpec(n_samples=6000)
    names = spec.modality_names
    model = train_on(generate_synthgene(spec), names, [[m] for m in names], epochs=8)
    relevance = dict(zip(model.term_names, model.relevance().tolist(), strict=True))
    top_three = sorted(relevance, key=relevance.get, reverse=True)[:3]
    assert set(top_three) == {"M2", "M4", "M7"}, relevance


def test_synthgene_tri_relevance_goes_to_the_xor_pair() -> None:
    spec = SynthGeneTriSpec(n_samples=4000)
    names = spec.modality_names
    subsets = [list(s) for k in (1, 2, 3) for s in itertools.combinations(names, k)]
    model = train_on(generate_synthgene_tri(spec), names, subsets, epochs=10)
    relevance = dict(zip(model.term_names, model.relevance().tolist(), strict=True))
    interactions = {term: value for term, value in relevance.items() if "x" in term}
    assert interactions["M1xM2"] >= 0.8 * sum(interactions.values()), relevance
    assert np.argmax(list(relevance.values())) == model.term_names.index("M1xM2")


def test_state_dict_round_trip_keeps_running_statistics(tmp_path) -> None:
    model, inputs, _ = tiny_model()
    torch.save(model.state_dict(), tmp_path / "intense.pt")
    names = list(model.modalities)
    subsets = [[names[m] for m in subset] for subset in model.subsets]
    fresh = InTense(names, [5] * 4, num_classes=3, subsets=subsets, latent_dim=3)
    fresh.load_state_dict(torch.load(tmp_path / "intense.pt", weights_only=True))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs), model(inputs))

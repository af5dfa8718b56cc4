"""I2MoE: weights, the swapped and noise-replaced passes, the interaction losses against
torch's and by hand, the two gate objectives' gradients, the model protocol, regression, and
expert weights after real training on HD-XOR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from intermodal import progress
from intermodal.estimators.experts import AGREEMENT_CELLS, expert_indicators
from intermodal.models.fusion_training import FusionTrainConfig, train_fusion_model
from intermodal.models.i2moe import (
    I2MoE,
    derangement,
    redundancy_loss,
    regression_redundancy_loss,
    regression_synergy_loss,
    regression_uniqueness_loss,
    swap_uniqueness_loss,
    synergy_loss,
    uniqueness_loss,
)
from intermodal.models.protocol import MultimodalModel
from intermodal.operators.coalitions import CoalitionValues
from intermodal.synthetic.hdxor import HDXORSpec, generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NAMES = ["a", "b", "c"]


def random_inputs(n: int = 16) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {m: torch.randn(n, 6 + i, generator=generator) for i, m in enumerate(NAMES)}


@pytest.mark.parametrize("backbone", ["mlp", "transformer"])
def test_weights_are_a_distribution_and_mix_the_experts(backbone: str) -> None:
    torch.manual_seed(0)
    model = I2MoE(NAMES, [6, 7, 8], num_classes=3, backbone=backbone).eval()
    assert model.expert_names == ["uni_a", "uni_b", "uni_c", "syn", "red"]
    with torch.no_grad():
        out = model.interpret(random_inputs())
    weights = out["weights"]
    assert weights.shape == (16, 5) and out["expert_logits"].shape == (16, 5, 3)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(16))
    mixed = (weights[:, :, None] * out["expert_logits"]).sum(dim=1)
    torch.testing.assert_close(out["logits"], mixed)


def test_noise_replaces_exactly_one_modality_per_pass() -> None:
    model = I2MoE(NAMES, [6, 7, 8], perturbation="noise")
    tokens = torch.randn(4096, 3, 32)
    passes = model.perturbed_tokens(tokens)
    assert passes.shape == (4, 4096, 3, 32)
    torch.testing.assert_close(passes[0], tokens)
    for j in range(3):
        for i in range(3):
            same = torch.equal(passes[1 + j][:, i], tokens[:, i])
            assert same == (i != j)
        noise = passes[1 + j][:, j]
        assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1) < 0.01
    assert not torch.equal(model.perturbed_tokens(tokens)[1], passes[1])  # fresh noise


def test_swap_takes_one_modality_from_another_row_per_pass() -> None:
    model = I2MoE(NAMES, [6, 7, 8])  # perturbation="swap" by default
    tokens = torch.randn(64, 3, 32)
    passes = model.perturbed_tokens(tokens)
    assert passes.shape == (4, 64, 3, 32)
    torch.testing.assert_close(passes[0], tokens)
    for j in range(3):
        for i in range(3):
            if i != j:
                torch.testing.assert_close(passes[1 + j][:, i], tokens[:, i])
        # token j of every row is token j of exactly one other row
        matches = (passes[1 + j][:, None, j] == tokens[None, :, j]).all(-1)  # [row, source]
        assert (matches.sum(1) == 1).all() and not matches.diagonal().any()
        assert (matches.sum(0) == 1).all()  # a permutation: every row's token used once
    assert not torch.equal(model.perturbed_tokens(tokens)[1], passes[1])  # fresh per call


def test_derangement_moves_every_row() -> None:
    for size in (2, 3, 17):
        partner = derangement(size)
        assert sorted(partner.tolist()) == list(range(size))
        assert (partner != torch.arange(size)).all()
    with pytest.raises(ValueError, match="two rows"):
        derangement(1)


def hand_outputs() -> Tensor:
    """One expert's outputs of the clean and three perturbed passes: [1 + 3, B=5, C=4]."""
    return torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(1))


def test_uniqueness_loss_is_torchs_triplet_margin_loss() -> None:
    outputs = hand_outputs()
    anchor, negative = outputs[0], outputs[2]  # modality 1 replaced = the negative
    expected = torch.stack(
        [F.triplet_margin_loss(anchor, outputs[p], negative, margin=1.0, p=2) for p in (1, 3)]
    ).mean()
    torch.testing.assert_close(uniqueness_loss(outputs, modality=1), expected)
    # and by hand: max(‖a − p‖ − ‖a − n‖ + margin, 0), averaged over samples and positives
    distance = lambda x, y: (x - y).pow(2).sum(-1).sqrt()  # noqa: E731
    by_hand = torch.stack(
        [
            (distance(anchor, outputs[p]) - distance(anchor, negative) + 1).clamp_min(0)
            for p in (1, 3)
        ]
    ).mean()
    torch.testing.assert_close(uniqueness_loss(outputs, modality=1), by_hand, atol=1e-5, rtol=0)


def test_synergy_and_redundancy_losses_are_cosine_similarities() -> None:
    outputs = hand_outputs()
    cosines = [F.cosine_similarity(outputs[0], outputs[j], dim=-1) for j in (1, 2, 3)]
    by_hand = [
        (outputs[0] * outputs[j]).sum(-1) / (outputs[0].norm(dim=-1) * outputs[j].norm(dim=-1))
        for j in (1, 2, 3)
    ]
    torch.testing.assert_close(torch.stack(cosines), torch.stack(by_hand))
    torch.testing.assert_close(synergy_loss(outputs), torch.stack(cosines).mean())
    torch.testing.assert_close(redundancy_loss(outputs), 1 - torch.stack(cosines).mean())


def test_swap_uniqueness_loss_by_hand() -> None:
    outputs = hand_outputs()
    cosines = [float(F.cosine_similarity(outputs[0], outputs[j], dim=-1).mean()) for j in (1, 2, 3)]
    expected = (1 - cosines[0] + 1 - cosines[2]) / 2 + 0.5 * cosines[1]
    assert float(swap_uniqueness_loss(outputs, modality=1)) == pytest.approx(expected)
    # XOR from both modalities costs more than a constant; following only your own modality
    # costs least: one-hot outputs, clean row 0 = class 0; swaps flip it or not
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    xor = torch.stack([torch.stack([a, a]), torch.stack([a, b]), torch.stack([b, a])])[:, :, None]
    constant = torch.stack([torch.stack([a, a])] * 3)[:, :, None]
    own = torch.stack([torch.stack([a, a]), torch.stack([b, a]), torch.stack([a, a])])[:, :, None]
    by_role = [float(swap_uniqueness_loss(o.squeeze(2), 0)) for o in (xor, constant, own)]
    assert by_role == pytest.approx([0.75, 0.5, 0.25])


def test_regression_losses_by_hand() -> None:
    outputs = torch.tensor([[[0.0]], [[0.5]], [[2.0]]])  # clean, a replaced, b replaced; B = 1
    # uniqueness of a: positive (b replaced) at squared distance 4, negative at 0.25
    assert float(regression_uniqueness_loss(outputs, modality=0)) == pytest.approx(4 - 0.25 + 1)
    assert float(regression_uniqueness_loss(outputs, modality=1)) == pytest.approx(0.0)
    assert float(regression_synergy_loss(outputs)) == pytest.approx((0.75 + 0.0) / 2)
    assert float(regression_redundancy_loss(outputs)) == pytest.approx((0.25 + 4) / 2)


@pytest.mark.parametrize("perturbation", ["swap", "noise"])
def test_interaction_losses_by_role(perturbation: str) -> None:
    model = I2MoE(NAMES, [6, 7, 8], num_classes=4, perturbation=perturbation)
    outputs = torch.randn(4, 5, 5, 4, generator=torch.Generator().manual_seed(2))  # E = 5
    probabilities = model._interaction_outputs(outputs)
    torch.testing.assert_close(probabilities, outputs.softmax(-1))  # probabilities by default
    unique = swap_uniqueness_loss if perturbation == "swap" else uniqueness_loss
    expected = [unique(probabilities[:, :, e], e) for e in range(3)]
    expected += [synergy_loss(probabilities[:, :, 3]), redundancy_loss(probabilities[:, :, 4])]
    torch.testing.assert_close(model.interaction_losses(probabilities), torch.stack(expected))


def test_expected_loss_trains_the_gate_on_each_experts_loss_and_the_experts_on_the_mixture() -> (
    None
):
    """``expected_loss``: the re-weighting model's gradient is that of Σ_e w_e · CE_e, the
    experts' that of CE(Σ_e w_e ŷ_e) with the weights fixed; ``mixture``: both get the
    mixture's gradient. Checked against the two losses written out with plain autograd."""
    torch.manual_seed(0)
    model = I2MoE(NAMES, [6, 7, 8], interaction_weight=0.0)
    inputs, targets = random_inputs(), torch.randint(0, 2, (16,))
    out = model.interpret(inputs)
    weights, experts = out["weights"], out["expert_logits"]
    expected_loss = torch.stack(
        [F.cross_entropy(experts[:, e], targets, reduction="none") for e in range(5)], 1
    )
    gate_target = (weights * expected_loss).sum(1).mean()
    gate = torch.autograd.grad(gate_target, list(model.reweight.parameters()), retain_graph=True)
    mixture = F.cross_entropy((weights.detach()[..., None] * experts).sum(1), targets)
    expert = torch.autograd.grad(mixture, list(model.experts.parameters()), retain_graph=True)
    model.zero_grad()
    model.training_loss(inputs, targets).backward()
    for got, want in zip(model.reweight.parameters(), gate, strict=True):
        torch.testing.assert_close(got.grad, want)
    for got, want in zip(model.experts.parameters(), expert, strict=True):
        torch.testing.assert_close(got.grad, want)
    model.gate_objective = "mixture"
    model.zero_grad()
    model.training_loss(inputs, targets).backward()
    mixed = F.cross_entropy((weights[..., None] * experts).sum(1), targets)
    gate = torch.autograd.grad(mixed, list(model.reweight.parameters()))
    for got, want in zip(model.reweight.parameters(), gate, strict=True):
        torch.testing.assert_close(got.grad, want)


def test_unknown_choices_are_refused() -> None:
    for name in ("perturbation", "gate_objective", "interaction_space"):
        with pytest.raises(ValueError, match=name):
            I2MoE(NAMES, [6, 7, 8], **{name: "other"})


def test_protocol_and_intershap_coalitions() -> None:
    torch.manual_seed(0)
    model = I2MoE(NAMES, [6, 7, 8]).eval()
    inputs = random_inputs()
    assert isinstance(model, MultimodalModel)
    with torch.no_grad():
        embeddings = {m: model.encode(m, x) for m, x in inputs.items()}
        torch.testing.assert_close(model.fuse(embeddings), model(inputs))
        values = CoalitionValues(model, {m: x[:4] for m, x in inputs.items()})(inputs)
    assert values.shape == (16, 8, 2)
    torch.testing.assert_close(values[:, -1], torch.softmax(model(inputs).double(), dim=-1))


def test_regression_training_fits_a_synergistic_target() -> None:
    torch.manual_seed(0)
    inputs = {"a": torch.randn(512, 2), "b": torch.randn(512, 2)}
    targets = inputs["a"][:, 0] * inputs["b"][:, 0]
    model = I2MoE(["a", "b"], [2, 2], task="regression", interaction_weight=0.01)
    config = FusionTrainConfig(epochs=30, lr=3e-3)
    train_fusion_model(model, inputs, targets, config, progress=lambda _: None)
    with torch.no_grad():
        error = torch.mean((model(inputs).squeeze(-1) - targets) ** 2)
    assert error < 0.3 * targets.var()


def test_progress_on_a_heartbeat_and_warmup_needs_a_warmup_loss(monkeypatch) -> None:
    messages: list[str] = []
    inputs, targets = random_inputs(), torch.randint(0, 2, (16,))
    model = I2MoE(NAMES, [6, 7, 8])
    train_fusion_model(
        model, inputs, targets, FusionTrainConfig(epochs=3, warmup_epochs=1), messages.append
    )
    assert len(messages) == 1 and "epoch 3/3" in messages[0]  # a quick fit: its last epoch
    messages.clear()
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.0)  # every epoch is overdue
    train_fusion_model(
        model, inputs, targets, FusionTrainConfig(epochs=3, warmup_epochs=1), messages.append
    )
    assert len(messages) == 3 and "warm-up" in messages[0] and "warm-up" not in messages[1]
    assert not model.training

    class NoWarmup(torch.nn.Module):
        def training_loss(self, inputs: dict[str, Tensor], targets: Tensor) -> Tensor:
            return torch.zeros(())

    with pytest.raises(TypeError):
        train_fusion_model(NoWarmup(), inputs, targets, FusionTrainConfig(warmup_epochs=1))


def mean_weights_after_training(setting: str, seed: int = 0) -> dict[str, float]:
    """Train the default I2MoE on 3000 HD-XOR rows (two modalities of 100 features)."""
    n = 3000
    spec = HDXORSpec(setting=setting, n_samples=n, dims=[100, 100], seed=seed)
    table = generate(spec)
    inputs = {
        m: torch.from_numpy(table[m].combine_chunks().values.to_numpy().reshape(n, -1).copy())
        for m in spec.modality_names
    }
    labels = torch.from_numpy(table["label"].to_numpy().copy())
    torch.manual_seed(seed)  # the initial weights, whatever ran before
    model = I2MoE(spec.modality_names, [100, 100])
    config = FusionTrainConfig(epochs=10, warmup_epochs=5, batch_size=64, seed=seed)
    train_fusion_model(model, inputs, labels, config, progress=lambda _: None)
    with torch.no_grad():
        weights = model.interpret(inputs)["weights"].mean(dim=0)
    return dict(zip(model.expert_names, weights.tolist(), strict=True))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_synergy_expert_leads_on_hdxor_synergy(seed: int) -> None:
    weights = mean_weights_after_training("synergy", seed)
    assert max(weights, key=weights.get) == "syn", weights


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_uniqueness_expert_leads_on_hdxor_uniqueness(seed: int) -> None:
    weights = mean_weights_after_training("uniqueness", seed)
    assert max(weights, key=weights.get) == "uni_m0", weights


def test_state_dict_round_trip(tmp_path) -> None:
    model = I2MoE(NAMES, [6, 7, 8], backbone="transformer").eval()
    torch.save(model.state_dict(), tmp_path / "i2moe.pt")
    fresh = I2MoE(NAMES, [6, 7, 8], backbone="transformer").eval()
    fresh.load_state_dict(torch.load(tmp_path / "i2moe.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh(random_inputs()), model(random_inputs()))


def test_expert_indicators_count_every_row_in_one_agreement_cell() -> None:
    experts = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]])
    predicted = np.array([0, 1, 0, 0])
    labels = np.array([0, 1, 1, 1])
    rows = expert_indicators(experts, predicted, labels)
    # each expert right; the mixture right; agree_correct, agree_wrong, disagree_correct,
    # disagree_wrong
    expected = [
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 1, 0, 0],
        [0, 1, 1, 0, 0, 0, 0, 1],
    ]
    np.testing.assert_array_equal(rows, expected)
    assert (rows[:, -4:].sum(axis=1) == 1).all()
    assert AGREEMENT_CELLS == ("agree_correct", "agree_wrong", "disagree_correct", "disagree_wrong")

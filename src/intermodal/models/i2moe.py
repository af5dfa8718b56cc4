"""I2MoE: interpretable multimodal interaction-aware mixture of experts (paper 002).

Each modality has an encoder (an MLP ending in layer norm, so embeddings live on the scale of
the N(0, 1) noise that replaces them under ``perturbation="noise"``). ``n`` uniqueness
experts, one synergy and one redundancy expert are copies of a fusion backbone over the ``n``
modality embeddings, each with its own prediction head; an MLP re-weighting model maps the
embeddings to per-sample weights ``w = softmax(r(e) / T)``; the prediction is ``Σ_e w_e · ŷ_e``
(eq. 1).

Experts, in order: ``uni_<modality>`` for every modality (configured order), then ``syn``,
``red``. Backbones: ``mlp`` (concatenated embeddings → MLP) or ``transformer`` (one token per
modality embedding plus a learned modality embedding, one encoder layer, mean pooling).

Interaction losses (§3.3.2, §3.4, App. C) compare every expert's output on the clean
embeddings (``ŷ⁽⁰⁾``) with its output on ``n`` perturbed copies, where copy ``j`` changes
modality ``j``'s embedding (``ŷ⁽ʲ⁾``); ``1 + n`` passes in all. Two perturbations
(``perturbation``):

* ``"swap"`` (default): modality ``j``'s embedding is taken from another row of the batch (a
  random derangement), so the perturbed input is a real embedding, not one that can be told
  apart from the rest. Each role is a pair of (in)variances under that change, with ``cos``
  the cosine similarity of the class probabilities ``ŷ⁽⁰⁾`` and ``ŷ⁽ʲ⁾``:
  ``uni_i`` = mean over ``j ≠ i`` of ``1 − cos_j`` + ½ ``cos_i`` (ignore the others, follow
  your own modality); ``syn`` = mean over ``j`` of ``cos_j`` (follow every modality); ``red`` =
  mean over ``j`` of ``1 − cos_j`` (survive a change of any one).
* ``"noise"``: the paper's losses, modality ``j``'s embedding replaced by fresh N(0, 1) noise:
  ``uni_i`` the triplet margin loss (margin 1, p = 2; anchor ``ŷ⁽⁰⁾``, positives ``ŷ⁽ʲ⁾`` for
  ``j ≠ i``, negative ``ŷ⁽ⁱ⁾``), ``syn`` and ``red`` as above.

Classification losses compare class probabilities (``interaction_space="probabilities"``,
default) or raw logits (``"logits"``, the reference implementation). Logits carry a
class-common offset that the prediction ignores and that can meet the losses alone.

For regression the paper says only that it uses MSE; here the same roles with squared
distances ``d`` on the perturbed passes: ``uni_i`` = mean_j ``relu(d(ŷ⁽⁰⁾, ŷ⁽ʲ⁾) −
d(ŷ⁽⁰⁾, ŷ⁽ⁱ⁾) + margin)``, ``syn`` = mean_j ``relu(margin − d(ŷ⁽⁰⁾, ŷ⁽ʲ⁾))``, ``red`` =
mean_j ``d(ŷ⁽⁰⁾, ŷ⁽ʲ⁾)``.

Training (``gate_objective``): ``"expected_loss"`` (default) trains the experts on the task
loss of the weighted prediction with the weights held fixed, and the re-weighting model on
``Σ_e w_e · loss(ŷ_e)`` with the experts held fixed: the expected task loss of routing each
sample to one expert, an upper bound of the mixture's loss (Jensen; the loss is convex in the
outputs). ``"mixture"`` trains both on the mixture's task loss, as the paper does. Either adds
``λ_int ·`` the mean interaction loss over experts (Algorithm 1).

Warm-up (:meth:`I2MoE.warmup_loss`, ``FusionTrainConfig.warmup_epochs``): for the first
epochs every expert fits the task on its own (plus the interaction losses) and the
re-weighting model is unused.

Why these choices (docs/models.md, I2MoE findings, has the measurements): with noise, an
expert can tell the replaced slot from a real embedding and meet its loss without using the
modality's content, so on HD-XOR uniqueness data the synergy expert predicted from ``m0`` alone
and still met its loss; with the mixture objective the re-weighting model can compute the
label itself and route between experts that predict nothing, or temper a confident expert by
mixing in one that outputs nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from intermodal.models.fusion_training import Task, check_task, task_loss

Backbone = Literal["mlp", "transformer"]
InteractionSpace = Literal["probabilities", "logits"]
Perturbation = Literal["swap", "noise"]
GateObjective = Literal["expected_loss", "mixture"]


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class MLPExpert(nn.Module):
    """Concatenated embeddings ``[B, n, h]`` → MLP → outputs ``[B, C]``."""

    def __init__(self, n_modalities: int, hidden_dim: int, outputs: int) -> None:
        super().__init__()
        self.net = _mlp([n_modalities * hidden_dim, hidden_dim, hidden_dim, outputs])

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens.flatten(1))


class TransformerExpert(nn.Module):
    """Modality tokens ``[B, n, h]`` (+ learned modality embedding) → one transformer encoder
    layer → mean over tokens → linear head ``[B, C]``."""

    def __init__(self, n_modalities: int, hidden_dim: int, outputs: int, num_heads: int) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.zeros(n_modalities, hidden_dim))
        self.layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, dim_feedforward=2 * hidden_dim, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(hidden_dim, outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.layer(tokens + self.modality_embedding).mean(dim=1))


def uniqueness_loss(outputs: Tensor, modality: int, margin: float = 1.0) -> Tensor:
    """``outputs``: one expert's ``[1 + n, B, C]`` (clean, then modality j replaced)."""
    anchor, negative = outputs[0], outputs[1 + modality]
    positives = [outputs[1 + j] for j in range(len(outputs) - 1) if j != modality]
    losses = [F.triplet_margin_loss(anchor, p, negative, margin=margin, p=2) for p in positives]
    return torch.stack(losses).mean()


def _cosines(outputs: Tensor) -> Tensor:
    """Cosine similarity of the clean and each perturbed output: ``[1 + n, B, C]`` → ``[n, B]``."""
    return F.cosine_similarity(outputs[:1], outputs[1:], dim=-1)


def swap_uniqueness_loss(outputs: Tensor, modality: int) -> Tensor:
    """Mean over the other modalities of ``1 − cos`` + ½ ``cos`` of ``modality``, from one
    expert's ``[1 + n, B, C]`` outputs on swapped passes.

    The invariance term counts double: an expert that computes the label from every modality
    (on XOR data: both terms 0.5) must cost more than one that outputs a constant (0 and 1),
    or nothing keeps a uniqueness expert from learning the synergy."""
    cosines = _cosines(outputs).mean(dim=1)  # [n]
    others = [j for j in range(len(cosines)) if j != modality]
    return (1 - cosines[others]).mean() + 0.5 * cosines[modality]


def synergy_loss(outputs: Tensor) -> Tensor:
    """Mean cosine similarity of the clean and each perturbed output; ``[1 + n, B, C]``."""
    return _cosines(outputs).mean()


def redundancy_loss(outputs: Tensor) -> Tensor:
    """Mean ``1 −`` cosine similarity of the clean and each perturbed output."""
    return 1 - synergy_loss(outputs)


def _squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample squared error summed over outputs: ``[..., B, C]`` → ``[..., B]``."""
    return (a - b).pow(2).sum(dim=-1)


def regression_uniqueness_loss(outputs: Tensor, modality: int, margin: float = 1.0) -> Tensor:
    distances = _squared_distance(outputs[:1], outputs[1:])  # [n, B]
    others = [j for j in range(len(distances)) if j != modality]
    return F.relu(distances[others] - distances[modality] + margin).mean()


def regression_synergy_loss(outputs: Tensor, margin: float = 1.0) -> Tensor:
    return F.relu(margin - _squared_distance(outputs[:1], outputs[1:])).mean()


def regression_redundancy_loss(outputs: Tensor) -> Tensor:
    return _squared_distance(outputs[:1], outputs[1:]).mean()


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def expert_names(modalities: Sequence[str]) -> list[str]:
    """The experts of an I2MoE over ``modalities``: ``uni_<modality>`` per modality in order,
    then ``syn``, ``red``."""
    return [f"uni_{name}" for name in modalities] + ["syn", "red"]


def derangement(size: int, device: torch.device | None = None) -> Tensor:
    """A random permutation of ``range(size)`` with no fixed point (``size`` ≥ 2): each row's
    partner is the next row along a random cycle through all rows."""
    if size < 2:
        raise ValueError(f"swapping embeddings between rows needs at least two rows, got {size}")
    order = torch.randperm(size, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


class I2MoE(nn.Module):
    """I2MoE over ``modalities`` (input sizes ``input_dims``); also a config factory
    (``intermodal.models.i2moe:I2MoE``).

    ``backbone``: ``mlp`` or ``transformer`` (``num_heads`` heads). ``hidden_dim``: embedding
    and backbone width. ``reweight_hidden_dim`` / ``reweight_layers``: the re-weighting MLP
    (1 layer = linear). ``temperature``: T of the weights' softmax. ``interaction_weight``:
    λ_int. ``margin``: of the noise triplets and the regression hinges. ``perturbation``,
    ``interaction_space`` and ``gate_objective``: see the module doc. ``task``: cross-entropy
    over ``num_classes`` logits, or MSE on one output (``num_classes`` is then ignored). Train
    with a few warm-up epochs (module doc).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        input_dims: Sequence[int],
        num_classes: int = 2,
        backbone: Backbone = "mlp",
        hidden_dim: int = 32,
        reweight_hidden_dim: int = 32,
        reweight_layers: int = 2,
        temperature: float = 1.0,
        interaction_weight: float = 2.0,
        task: Task = "classification",
        num_heads: int = 2,
        margin: float = 1.0,
        interaction_space: InteractionSpace = "probabilities",
        perturbation: Perturbation = "swap",
        gate_objective: GateObjective = "expected_loss",
    ) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError("I2MoE needs at least two modalities")
        if len(modalities) != len(input_dims):
            raise ValueError("one input dimension per modality")
        check_task(task)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.modalities = tuple(modalities)
        self.task = task
        self.temperature = temperature
        self.interaction_weight = interaction_weight
        self.margin = margin
        _check_choice("interaction_space", interaction_space, ("probabilities", "logits"))
        self.interaction_space = interaction_space
        _check_choice("perturbation", perturbation, ("swap", "noise"))
        _check_choice("gate_objective", gate_objective, ("expected_loss", "mixture"))
        self.perturbation = perturbation
        self.gate_objective = gate_objective
        n = len(self.modalities)
        outputs = num_classes if task == "classification" else 1
        self.encoders = nn.ModuleDict(
            {
                name: nn.Sequential(
                    _mlp([d, hidden_dim, hidden_dim]),
                    nn.LayerNorm(hidden_dim, elementwise_affine=False),
                )
                for name, d in zip(self.modalities, input_dims, strict=True)
            }
        )
        self.experts = nn.ModuleList(
            [self._expert(backbone, hidden_dim, outputs, num_heads) for _ in self.expert_names]
        )
        widths = [n * hidden_dim] + [reweight_hidden_dim] * (reweight_layers - 1)
        self.reweight = _mlp([*widths, len(self.expert_names)])

    def _expert(self, backbone: Backbone, hidden_dim: int, outputs: int, heads: int) -> nn.Module:
        n = len(self.modalities)
        if backbone == "mlp":
            return MLPExpert(n, hidden_dim, outputs)
        if backbone == "transformer":
            return TransformerExpert(n, hidden_dim, outputs, heads)
        raise ValueError(f"backbone must be mlp or transformer, got {backbone!r}")

    @property
    def expert_names(self) -> list[str]:
        """``uni_<modality>`` per modality in order, then ``syn``, ``red``."""
        return expert_names(self.modalities)

    def encode(self, name: str, x: Tensor) -> Tensor:
        """``[B, input_dim]`` → embedding ``[B, hidden_dim]``."""
        return self.encoders[name](x)

    def _tokens(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Embeddings stacked in modality order: ``[B, n, hidden_dim]``."""
        return torch.stack([embeddings[name] for name in self.modalities], dim=1)

    def expert_outputs(self, tokens: Tensor) -> Tensor:
        """``[..., n, hidden_dim]`` → every expert's output ``[..., n_experts, C]``."""
        flat = tokens.reshape(-1, *tokens.shape[-2:])
        outputs = torch.stack([expert(flat) for expert in self.experts], dim=1)
        return outputs.view(*tokens.shape[:-2], *outputs.shape[1:])

    def expert_weights(self, tokens: Tensor) -> Tensor:
        """Per-sample weights ``[B, n_experts]``: non-negative, summing to 1."""
        return torch.softmax(self.reweight(tokens.flatten(1)) / self.temperature, dim=-1)

    def fuse(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Prediction ``Σ_e w_e ŷ_e``: ``[B, C]``."""
        return self.interpret_embeddings(embeddings)["logits"]

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.fuse(self.embed(inputs))

    def embed(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: self.encode(name, inputs[name]) for name in self.modalities}

    def interpret_embeddings(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        tokens = self._tokens(embeddings)
        weights = self.expert_weights(tokens)
        expert_logits = self.expert_outputs(tokens)
        logits = (weights.unsqueeze(-1) * expert_logits).sum(dim=1)
        return {"weights": weights, "expert_logits": expert_logits, "logits": logits}

    def interpret(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``weights`` [B, n_experts], ``expert_logits`` [B, n_experts, C] and ``logits``
        [B, C] of one pass; experts in ``expert_names`` order."""
        return self.interpret_embeddings(self.embed(inputs))

    def perturbed_tokens(self, tokens: Tensor) -> Tensor:
        """``[B, n, h]`` → ``[1 + n, B, n, h]``: the clean tokens, then for each modality j the
        tokens with token j changed: taken from another row (``swap``: a random derangement of
        the batch, fresh per call) or replaced by fresh N(0, 1) noise (``noise``)."""
        n = tokens.shape[1]
        replaced = torch.eye(n, dtype=torch.bool, device=tokens.device)
        replaced = torch.cat([replaced.new_zeros(1, n), replaced])  # [1 + n, n]
        if self.perturbation == "noise":
            others = torch.randn((1 + n, *tokens.shape), dtype=tokens.dtype, device=tokens.device)
        else:
            rows = [derangement(len(tokens), tokens.device) for _ in range(1 + n)]
            others = torch.stack([tokens[partner] for partner in rows])
        return torch.where(replaced[:, None, :, None], others, tokens.unsqueeze(0))

    def interaction_losses(self, outputs: Tensor) -> Tensor:
        """Per-expert interaction losses ``[n_experts]`` from the outputs of the perturbed
        passes, ``[1 + n, B, n_experts, C]`` (see the module doc)."""
        n = len(self.modalities)
        per_expert = outputs.unbind(dim=2)
        if self.task == "classification" and self.perturbation == "swap":
            unique = [swap_uniqueness_loss(per_expert[i], i) for i in range(n)]
            rest = [synergy_loss(per_expert[n]), redundancy_loss(per_expert[n + 1])]
        elif self.task == "classification":
            unique = [uniqueness_loss(per_expert[i], i, self.margin) for i in range(n)]
            rest = [synergy_loss(per_expert[n]), redundancy_loss(per_expert[n + 1])]
        else:
            unique = [regression_uniqueness_loss(per_expert[i], i, self.margin) for i in range(n)]
            rest = [
                regression_synergy_loss(per_expert[n], self.margin),
                regression_redundancy_loss(per_expert[n + 1]),
            ]
        return torch.stack(unique + rest)

    def _interaction_outputs(self, outputs: Tensor) -> Tensor:
        """What the interaction losses compare: class probabilities or raw outputs."""
        if self.task == "classification" and self.interaction_space == "probabilities":
            return outputs.softmax(dim=-1)
        return outputs

    def _passes(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Clean tokens ``[B, n, h]``, expert outputs of the clean and perturbed passes
        ``[1 + n, B, E, C]`` and the mean interaction loss."""
        tokens = self._tokens(self.embed(inputs))
        outputs = self.expert_outputs(self.perturbed_tokens(tokens))
        interaction = self.interaction_losses(self._interaction_outputs(outputs)).mean()
        return tokens, outputs, interaction

    def training_loss(self, inputs: Mapping[str, Tensor], targets: Tensor) -> Tensor:
        """Task loss (``gate_objective``, module doc) + λ_int · mean interaction loss."""
        tokens, outputs, interaction = self._passes(inputs)
        weights, clean = self.expert_weights(tokens), outputs[0]
        if self.gate_objective == "mixture":
            task = task_loss(self.task, (weights.unsqueeze(-1) * clean).sum(dim=1), targets)
        else:
            mixed = (weights.detach().unsqueeze(-1) * clean).sum(dim=1)
            per_expert = torch.stack(
                [task_loss(self.task, expert, targets, "none") for expert in clean.unbind(1)], 1
            )
            expected = (weights * per_expert.detach()).sum(dim=1).mean()
            task = task_loss(self.task, mixed, targets) + expected
        return task + self.interaction_weight * interaction

    def warmup_loss(self, inputs: Mapping[str, Tensor], targets: Tensor) -> Tensor:
        """Mean of every expert's own task loss + λ_int · mean interaction loss; the
        re-weighting model is not used. See the module doc for why training starts so."""
        _, outputs, interaction = self._passes(inputs)
        task = torch.stack(
            [task_loss(self.task, expert, targets) for expert in outputs[0].unbind(1)]
        )
        return task.mean() + self.interaction_weight * interaction

"""InTense: interpretable tensor fusion (paper 004) for any number of modalities and subsets.

Each modality ``m`` has a subnetwork ``f^m`` (an MLP) followed by vector-wise batch
normalisation (VBN, eqs. 5–7): subtract the batch mean per element, divide by the square root
of the batch mean of the squared L2 norm; no affine. Every configured subset ``I`` of
modalities is one block: the modality's normalised representation for ``|I| = 1``, otherwise
the tensor (outer) product of its members' normalised representations, centred so that no
lower-order product leaks into it (eq. 9, generalised below) and rescaled to unit mean squared
Frobenius norm (eq. 10). One linear fusion layer maps all blocks to the logits:

    logits(x) = Σ_I W_I vec(z_I(x)) + b,          W_I: [C, |z_I|]

so ``c_I(x) = W_I vec(z_I(x))`` is an exact additive contribution of block ``I`` per sample.
Training adds the block L^q regulariser of eq. 3, ``Λ (Σ_I ‖W_I‖_F^q)^(2/q)`` with
``q = 2p / (p + 1)``; the relevance of block ``I`` is eq. 4 as implemented by the authors,
``β_I = ‖W_I‖^(2/(p+1)) / (Σ_J ‖W_J‖^(2p/(p+1)))^(1/p)`` (so ``‖β‖_p = 1``; ``p = 1`` gives
``‖W_I‖ / Σ_J ‖W_J‖``). The paper's printed numerator exponent ``p/(p+1)`` contradicts its own
eq. 17 with ``A_I = Λ‖W_I‖²``, which gives ``2/(p+1)``. Eq. 3's squared L2 penalty on the
subnetworks is left to the optimiser's weight decay, as in the paper's experiments.

Term names join the member modality names with ``x`` in the configured modality order
(``M1xM2``); ``term_names[k]`` names block ``k`` of ``contributions`` and ``relevance``.

In eval mode every batch statistic (VBN means and scales, the centring moments, the block
scales) is a running estimate, so a sample's output does not depend on its batch: this is
what InterSHAP's masked ``fuse`` calls need.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from intermodal.models.fusion_training import Task, check_task, task_loss

EPS = 1e-6


def submasks(mask: int) -> list[int]:
    """Every bitmask S ⊆ ``mask`` (including 0 and ``mask`` itself), in increasing order."""
    return [s for s in range(mask + 1) if s & mask == s]


def _broadcast_factor(factor: Tensor, position: int, k: int) -> Tensor:
    """``[B, D]`` -> ``[B, 1, .., D, .., 1]`` with ``D`` on axis ``1 + position`` of ``1 + k``."""
    shape = [factor.shape[0]] + [1] * k
    shape[1 + position] = factor.shape[1]
    return factor.view(shape)


def subset_products(factors: Sequence[Tensor]) -> dict[int, Tensor]:
    """Outer products of every subset of ``factors`` (k tensors ``[B, D_j]``).

    Returns ``{S: f^S}`` for every bitmask ``S`` over the k positions, ``f^S`` of shape
    ``[B, D_1 or 1, ..., D_k or 1]`` (size 1 on the axes of positions outside ``S``);
    ``f^0`` is ones ``[B, 1, ..., 1]``.
    """
    k = len(factors)
    placed = [_broadcast_factor(f, j, k) for j, f in enumerate(factors)]
    products = {0: factors[0].new_ones([factors[0].shape[0]] + [1] * k)}
    for s in range(1, 1 << k):
        lowest = (s & -s).bit_length() - 1
        products[s] = products[s & (s - 1)] * placed[lowest]
    return products


def batch_moments(factors: Sequence[Tensor]) -> dict[int, Tensor]:
    """Batch means ``m_S = E_B(f^S)`` of every non-empty subset product: ``{S: [D.. or 1]}``."""
    return {s: p.mean(dim=0) for s, p in subset_products(factors).items() if s}


def centring_coefficients(moments: Mapping[int, Tensor], k: int) -> dict[int, Tensor]:
    """The coefficients ``c(U)`` of the generalised centring for every ``U ⊆ {0..k-1}``.

    ``c(∅) = 1`` and ``c(U) = -Σ_{∅≠S⊆U} m_S c(U∖S)``. Unrolled, ``c(U)`` is the sum over
    ordered tuples of disjoint non-empty sets ``(S^1..S^ℓ)`` covering ``U`` of
    ``(-1)^ℓ Π_k m_{S^k}``: the coefficient of eq. 9 (App. B, eq. 26) with ordered tuples, as
    the paper's worked example in App. B.1 counts them (factor ``ℓ!``).
    """
    reference = next(iter(moments.values()))
    coefficients = {0: reference.new_ones([1] * k)}
    for u in range(1, 1 << k):
        coefficients[u] = -sum(moments[s] * coefficients[u ^ s] for s in submasks(u) if s)
    return coefficients


def centre_product(factors: Sequence[Tensor], moments: Mapping[int, Tensor]) -> Tensor:
    """The centred tensor product of eq. 9 for any number of factors: ``[B, D_1, ..., D_k]``.

    ``ĥ = Σ_{J⊆I} c(I∖J) f^J`` with ``c`` from :func:`centring_coefficients`. As a polynomial
    in the members, the part multiplying ``f^J`` for a proper ``J ⊊ I`` ("the contribution of
    ``J`` inside ``I``", eq. 11) is ``g_U = Σ_{T⊆U} c(U∖T) f^T`` with ``U = I∖J ≠ ∅``.

    Proof that it has zero mean: ``E g_U = Σ_{T⊆U} c(U∖T) m_T = c(U) + Σ_{∅≠T⊆U} m_T c(U∖T)``,
    which is 0 by the recursion defining ``c(U)``. Elementwise over multi-indices, so it holds
    for multi-dimensional members too; ``J = ∅`` gives ``E ĥ = 0``.
    """
    k = len(factors)
    products = subset_products(factors)
    coefficients = centring_coefficients(moments, k)
    full = (1 << k) - 1
    return sum(products[j] * coefficients[full ^ j] for j in submasks(full))


class BlockNorm(nn.Module):
    """Centring (eq. 9, generalised) then scaling to unit mean squared norm (eq. 10) of the
    outer product of k factors of sizes ``dims``; for k = 1 this is VBN (eqs. 5–7).

    Train mode uses batch statistics (gradients flow through them, as in batch norm) and
    updates running estimates of the moments and of the mean squared norm; eval mode uses the
    running estimates only.
    """

    def __init__(self, dims: Sequence[int], momentum: float = 0.1) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.momentum = momentum
        k = len(self.dims)
        for s in range(1, 1 << k):
            shape = [d if s >> j & 1 else 1 for j, d in enumerate(self.dims)]
            self.register_buffer(f"moment_{s}", torch.zeros(shape))
        self.register_buffer("mean_square", torch.ones(()))

    def running_moments(self) -> dict[int, Tensor]:
        return {s: getattr(self, f"moment_{s}") for s in range(1, 1 << len(self.dims))}

    def forward(self, factors: Sequence[Tensor]) -> Tensor:
        """``k`` tensors ``[B, D_j]`` -> normalised block ``[B, D_1, ..., D_k]``."""
        moments = batch_moments(factors) if self.training else self.running_moments()
        centred = centre_product(factors, moments)
        if self.training:
            mean_square = centred.pow(2).flatten(1).sum(dim=1).mean()
            self._update_running(moments, mean_square)
        else:
            mean_square = self.mean_square
        return centred / (mean_square + EPS).sqrt()

    @torch.no_grad()
    def _update_running(self, moments: Mapping[int, Tensor], mean_square: Tensor) -> None:
        for s, moment in moments.items():
            getattr(self, f"moment_{s}").lerp_(moment.detach(), self.momentum)
        self.mean_square.lerp_(mean_square.detach(), self.momentum)


def all_subsets(n_modalities: int, max_order: int = 2) -> list[tuple[int, ...]]:
    """Every subset of ``range(n_modalities)`` with 1..max_order members, by size then order."""
    return [
        subset
        for size in range(1, max_order + 1)
        for subset in itertools.combinations(range(n_modalities), size)
    ]


def _subset_positions(
    modalities: Sequence[str], subsets: Sequence[Sequence[str]] | None
) -> tuple[tuple[int, ...], ...]:
    if subsets is None:
        return tuple(all_subsets(len(modalities)))
    positions = []
    for subset in subsets:
        unknown = set(subset) - set(modalities)
        if unknown or not subset or len(set(subset)) != len(subset):
            raise ValueError(f"subset {list(subset)} must name distinct configured modalities")
        positions.append(tuple(sorted(modalities.index(name) for name in subset)))
    if len(set(positions)) != len(positions):
        raise ValueError(f"subsets repeat a block: {subsets}")
    return tuple(positions)


def term_name(modalities: Sequence[str], subset: Sequence[int]) -> str:
    """A block's name: its members (positions in ``modalities``) joined by ``x``."""
    return "x".join(modalities[m] for m in subset)


def term_names(
    modalities: Sequence[str], subsets: Sequence[Sequence[str]] | None = None
) -> list[str]:
    """The block names of an InTense over ``modalities`` with ``subsets`` (default: every
    singleton and pair), in block order; members in modality order."""
    return [term_name(modalities, subset) for subset in _subset_positions(modalities, subsets)]


def term_members(
    modalities: Sequence[str], subsets: Sequence[Sequence[str]] | None = None
) -> list[tuple[str, ...]]:
    """The modalities of each block of ``term_names``, in block order."""
    return [
        tuple(modalities[m] for m in subset) for subset in _subset_positions(modalities, subsets)
    ]


class InTense(nn.Module):
    """InTense over ``modalities`` (input sizes ``input_dims``) with one block per subset; also
    a config factory (``intermodal.models.intense:InTense``).

    ``subsets``: lists of modality names (default: every singleton and every pair).
    ``hidden_dim`` / ``latent_dim``: the subnetworks' hidden width and representation size
    (a block of k modalities has ``latent_dim**k`` entries; small by default because large
    high-order blocks memorise training rows, see docs/models.md). ``p``: the
    relevance/regulariser exponent (eqs. 3–4). ``regularization``: Λ of eq. 3 (the paper's
    0.05). ``momentum``: of the running statistics. ``task``: cross-entropy over
    ``num_classes`` logits, or MSE on one output (``num_classes`` is then ignored).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        input_dims: Sequence[int],
        num_classes: int = 2,
        subsets: Sequence[Sequence[str]] | None = None,
        hidden_dim: int = 32,
        latent_dim: int = 4,
        p: float = 1.0,
        regularization: float = 0.05,
        task: Task = "classification",
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if len(modalities) != len(input_dims):
            raise ValueError("one input dimension per modality")
        if p < 1:
            raise ValueError(f"p must be >= 1, got {p}")
        check_task(task)
        self.modalities = tuple(modalities)
        self.task = task
        self.p = p
        self.regularization = regularization
        self.subsets = _subset_positions(self.modalities, subsets)
        outputs = num_classes if task == "classification" else 1
        self.encoders = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(d, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, latent_dim)
                )
                for name, d in zip(self.modalities, input_dims, strict=True)
            }
        )
        self.vbn = nn.ModuleDict({name: BlockNorm([latent_dim], momentum) for name in modalities})
        self.block_norms = nn.ModuleDict(
            {
                self._term(subset): BlockNorm([latent_dim] * len(subset), momentum)
                for subset in self.subsets
                if len(subset) > 1
            }
        )
        # Zero blocks: a random start gives larger blocks larger norms, i.e. relevance
        # biased towards high orders before any learning; from zero, every norm is learned.
        self.block_weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(outputs, latent_dim ** len(s))) for s in self.subsets]
        )
        self.bias = nn.Parameter(torch.zeros(outputs))

    def _term(self, subset: Sequence[int]) -> str:
        return term_name(self.modalities, subset)

    @property
    def term_names(self) -> list[str]:
        """Block names in block order, e.g. ``["M1", "M2", "M1xM2"]``."""
        return [self._term(subset) for subset in self.subsets]

    def encode(self, name: str, x: Tensor) -> Tensor:
        """``[B, input_dim]`` -> VBN-normalised representation ``[B, latent_dim]``."""
        return self.vbn[name]([self.encoders[name](x)])

    def blocks(self, embeddings: Mapping[str, Tensor]) -> list[Tensor]:
        """Normalised blocks ``z_I``, flattened: one ``[B, latent_dim**|I|]`` per subset."""
        blocks = []
        for subset in self.subsets:
            factors = [embeddings[self.modalities[m]] for m in subset]
            block = (
                factors[0] if len(factors) == 1 else self.block_norms[self._term(subset)](factors)
            )
            blocks.append(block.flatten(1))
        return blocks

    def block_contributions(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """``c_I = W_I vec(z_I)`` per sample: ``[B, n_blocks, outputs]``."""
        blocks = self.blocks(embeddings)
        return torch.stack([z @ w.T for z, w in zip(blocks, self.block_weights, strict=True)], 1)

    def fuse(self, embeddings: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, outputs]`` = sum of the block contributions + bias."""
        return self.block_contributions(embeddings).sum(dim=1) + self.bias

    def embed(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: self.encode(name, inputs[name]) for name in self.modalities}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.fuse(self.embed(inputs))

    def contributions(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Per-sample block contributions ``[B, n_blocks, outputs]``; summed over blocks plus
        ``bias`` they are the logits."""
        return self.block_contributions(self.embed(inputs))

    def interpret(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``contributions`` [B, n_blocks, outputs] (blocks in ``term_names`` order) and
        ``logits`` [B, outputs] of the same pass."""
        contributions = self.contributions(inputs)
        return {"contributions": contributions, "logits": contributions.sum(dim=1) + self.bias}

    def block_weight_norms(self) -> Tensor:
        """Frobenius norms ``‖W_I‖`` of the fusion layer's blocks: ``[n_blocks]``."""
        # eps inside the root: the gradient of a norm is undefined at an all-zero block
        return torch.stack([(w.pow(2).sum() + EPS**2).sqrt() for w in self.block_weights])

    def relevance(self, p: float | None = None) -> Tensor:
        """β_I of eq. 4 (see the module doc) for every block: ``[n_blocks]``, ``‖β‖_p = 1``."""
        p = self.p if p is None else p
        norms = self.block_weight_norms().detach()
        total = norms.pow(2 * p / (p + 1)).sum().pow(1 / p)
        return norms.pow(2 / (p + 1)) / total.clamp_min(EPS)

    def regularizer(self) -> Tensor:
        """The block L^q term of eq. 3 without Λ: ``(Σ_I ‖W_I‖^q)^(2/q)``, ``q = 2p/(p+1)``."""
        q = 2 * self.p / (self.p + 1)
        return self.block_weight_norms().pow(q).sum().pow(2 / q)

    def training_loss(self, inputs: Mapping[str, Tensor], targets: Tensor) -> Tensor:
        """Task loss + Λ · regulariser (eq. 3) on one minibatch."""
        return (
            task_loss(self.task, self(inputs), targets) + self.regularization * self.regularizer()
        )

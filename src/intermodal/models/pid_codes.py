"""The space PID CVX's codebooks are fitted in: per-modality encoders of small width trained
jointly (late fusion) to predict the PID targets, and a classifier's estimate of how much the
features say about them.

Why jointly: on XOR-like data each modality alone says nothing about the label, so no
per-modality supervised reduction can find the signal; a classifier that sees every modality
at once can. Its per-modality bottleneck ``z_m`` (``width`` values, default 2) is what k-means
then clusters, so the k cells of a modality are spent along the directions the label depends
on instead of on the many label-free directions of a high-dimensional modality.

The model, for modalities ``m = 1..M`` with (preprocessed) inputs ``x_m [n, d_m]`` and ``T``
targets of ``C`` classes:

- encoder ``z_m = W_m x_m`` ``[n, width]`` (linear, the default), or
  ``z_m = W_m relu(H_m x_m + h_m)`` with ``encoder_hidden`` units (the encoders carry no output
  bias: k-means does not see a translation);
- head: ``[z_1, ..., z_M]`` → ``hidden`` → ``hidden`` → ``T · C`` logits (ReLU), one softmax per
  target;
- with more than two modalities, per pair a head of the same form on ``[z_a, z_b]``: the
  classifier of that pair, whose held-out loss is the pair's information (with two, the
  fusion head is the pair's);
- per modality a head of the same form on ``z_m`` alone. The loss is the sum over targets of
  the fusion and pair heads' cross-entropies plus ``unimodal_weight`` times each modality
  head's; early stopping watches the fusion and pair heads' held-out loss. Without
  them the fusion head is free to read a label that one modality determines from a mix of
  both bottlenecks (``x_2``'s bottleneck carrying ``z_2 + z_c``, ``x_1``'s the ``z_c`` that
  cancels it), which the codes then show as synergy; with them each bottleneck keeps what its
  modality knows alone (on XOR there is nothing to keep and they barely pull).

Training: Adam on minibatches of ``batch_size`` rows of a random ``1 − validation_fraction`` of
the sample, counted in steps rather than epochs (a plateau of an XOR-like fit lasts a number of
updates, not of passes, so the same budget suits 5k and 100k rows): every ``eval_every`` steps
the held-out loss is computed, the best weights kept, and training stops after ``patience``
evaluations without an improvement of ``MIN_IMPROVEMENT`` nats, or at ``max_steps``.

The estimate of ``I(x_a, x_b; y)`` per pair and target, in bits, on the held-out rows:
``mean(log2 prior(y_i) − log2 q(y_i | x_i))`` with ``prior`` the class frequencies of the
training rows (+1 each) and ``q`` the classifier: ``H(y) −`` held-out cross-entropy, a lower
bound of the information up to sampling error (a classifier short of the Bayes rule says less).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from torch import Tensor, nn

from intermodal.estimators.discretize import (
    Codebook,
    CodebookConfig,
    best_of_restarts,
    fit_codebook,
    fit_preprocessing,
)
from intermodal.models.training import adam, fit_device
from intermodal.progress import Heartbeat, Progress

MIN_IMPROVEMENT = 1e-4  # nats of held-out loss that count as progress
EVAL_ROWS = 65_536  # rows per forward pass when evaluating


@dataclass(frozen=True)
class EncoderTraining:
    """The joint classifier and how it is trained (see the module docstring)."""

    width: int = 2
    encoder_hidden: int = 0  # 0: linear encoders
    hidden: int = 64
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_steps: int = 20_000
    eval_every: int = 200
    patience: int = 8
    validation_fraction: float = 0.2
    unimodal_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Information:
    """A classifier's held-out estimate of ``I(x; y)`` in bits, its standard error over the
    ``n`` held-out rows and the held-out ``H(y)`` it is measured against."""

    value: float
    stderr: float
    n: int
    entropy: float

    def to_json(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "n": self.n, "entropy": self.entropy}

    @classmethod
    def from_json(cls, data: Mapping) -> Information:
        return cls(
            float(data["value"]), float(data["stderr"]), int(data["n"]), float(data["entropy"])
        )


@dataclass(frozen=True)
class EncoderArrays:
    """One modality's trained encoder as arrays: ``weight [width, h]`` after the optional
    ``hidden_weight [h, d]``, ``hidden_bias [h]`` and ReLU (``h = d`` without them)."""

    weight: np.ndarray
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """``z [n, width]`` float64 of preprocessed ``rows [n, d]``."""
        rows = np.asarray(rows, dtype=np.float64)
        if self.hidden_weight is not None:
            rows = np.maximum(rows @ self.hidden_weight.T + self.hidden_bias, 0.0)
        return rows @ self.weight.T


@dataclass(frozen=True)
class JointFit:
    """A trained joint classifier: each modality's encoder, the information per pair of
    modalities and target, and how long it trained."""

    encoders: dict[str, EncoderArrays]
    information: dict[tuple[str, str], dict[str, Information]]
    steps: int
    seconds: float


class JointEncoders(nn.Module):
    """Per-modality encoders into ``width`` values, one fusion head over all of them, one head
    per pair (more than two modalities) and one per modality."""

    def __init__(
        self, dims: Sequence[int], n_targets: int, num_classes: int, training: EncoderTraining
    ) -> None:
        super().__init__()
        width, hidden = training.width, training.hidden

        def encoder(d: int) -> nn.Module:
            if training.encoder_hidden:
                return nn.Sequential(
                    nn.Linear(d, training.encoder_hidden),
                    nn.ReLU(),
                    nn.Linear(training.encoder_hidden, width, bias=False),
                )
            return nn.Linear(d, width, bias=False)

        outputs = n_targets * num_classes
        self.pairs = list(combinations(range(len(dims)), 2))
        self.encoders = nn.ModuleList([encoder(d) for d in dims])
        self.head = _head(width * len(dims), hidden, outputs)
        pair_heads = len(self.pairs) if len(dims) > 2 else 0
        self.pair_heads = nn.ModuleList(
            [_head(2 * width, hidden, outputs) for _ in range(pair_heads)]
        )
        self.unimodal = nn.ModuleList([_head(width, hidden, outputs) for _ in dims])
        self.n_targets = n_targets
        self.num_classes = num_classes

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``[n, T, C]`` of the fusion head."""
        return self.heads(inputs)[0][0]

    def heads(self, inputs: Sequence[torch.Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Logits ``[n, T, C]`` of the fusion head and the pair heads, and of each modality's
        own head."""
        z = [encode(x) for encode, x in zip(self.encoders, inputs, strict=True)]
        joint = [self.head(torch.cat(z, 1))]
        # pair heads exist only with more than two modalities: zip stops at none
        for head, (a, b) in zip(self.pair_heads, self.pairs, strict=False):
            joint.append(head(torch.cat([z[a], z[b]], 1)))
        alone = [h(v) for h, v in zip(self.unimodal, z, strict=True)]
        shape = (-1, self.n_targets, self.num_classes)
        return [v.view(shape) for v in joint], [v.view(shape) for v in alone]

    def encoder_arrays(self) -> list[EncoderArrays]:
        def arrays(module: nn.Module) -> EncoderArrays:
            if isinstance(module, nn.Linear):
                return EncoderArrays(_numpy(module.weight))
            first, _, last = module
            return EncoderArrays(_numpy(last.weight), _numpy(first.weight), _numpy(first.bias))

        return [arrays(module) for module in self.encoders]


def _head(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float64)


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row cross-entropy ``[n, T]`` (nats) of logits ``[n, T, C]``, targets ``[n, T]``."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _losses(
    model: JointEncoders, inputs: Sequence[torch.Tensor], targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy (nats) of the fusion and pair heads together ``[n]`` (what early
    stopping watches) and of each pair's classifier ``[n, P, T]``, in chunks of ``EVAL_ROWS``
    rows."""
    watched, pairs = [], []
    with torch.no_grad():
        for start in range(0, len(targets), EVAL_ROWS):
            rows = slice(start, start + EVAL_ROWS)
            chunk = [x[rows] for x in inputs]
            joint, _ = model.heads(chunk)
            losses = torch.stack([_cross_entropy(v, targets[rows]) for v in joint], 1)
            watched.append(losses.sum(dim=(1, 2)))
            pairs.append(losses[:, 1:] if model.pair_heads else losses)
    return torch.cat(watched), torch.cat(pairs)


def train_joint(
    inputs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    num_classes: int,
    training: EncoderTraining,
    name: str,
    progress: Progress,
    device: torch.device | None = None,
) -> JointFit:
    """Train the joint classifier of ``inputs`` (by modality, ``[n, d_m]`` each, preprocessed;
    at least two) on every target of ``targets`` (``[n]`` class ids each) and return its
    encoders (CPU arrays) and the held-out information per pair and target."""
    modalities = list(inputs)
    if len(modalities) < 2:
        raise ValueError(f"the joint classifier needs two modalities or more, got {modalities}")
    device = fit_device() if device is None else device
    start = time.perf_counter()
    n = len(next(iter(targets.values())))
    if n < 2:
        raise ValueError(f"the joint classifier needs at least 2 rows, got {n}")
    order = np.random.default_rng(training.seed).permutation(n)
    n_held = min(max(1, round(n * training.validation_fraction)), n - 1)
    held, train = np.sort(order[:n_held]), order[n_held:]
    names = list(targets)
    y = np.stack([np.asarray(targets[t], dtype=np.int64) for t in names], axis=1)  # [n, T]
    x = [
        torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(device)
        for v in inputs.values()
    ]
    y_all = torch.from_numpy(y).to(device)
    held_rows = torch.from_numpy(held).to(device)
    x_held = [v[held_rows] for v in x]
    y_held = y_all[held_rows]
    train_rows = torch.from_numpy(train).to(device)

    torch.manual_seed(training.seed)
    dims = [v.shape[1] for v in inputs.values()]
    model = JointEncoders(dims, len(names), num_classes, training).to(device)
    optimiser = adam(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(training.seed)
    batch = min(training.batch_size, len(train))
    best_loss, best_state, stale, step = math.inf, None, 0, 0
    heartbeat = Heartbeat()
    while step < training.max_steps and stale < training.patience:
        shuffled = train_rows[torch.randperm(len(train), generator=generator).to(device)]
        for rows in shuffled.split(batch):
            model.train()
            optimiser.zero_grad()
            joint, alone = model.heads([v[rows] for v in x])
            labels = y_all[rows]
            loss = sum(_cross_entropy(v, labels).sum(1).mean() for v in joint)
            if training.unimodal_weight:
                loss += training.unimodal_weight * sum(
                    _cross_entropy(v, labels).sum(1).mean() for v in alone
                )
            loss.backward()
            optimiser.step()
            step += 1
            if step % training.eval_every and step < training.max_steps:
                continue
            model.eval()
            held_loss = float(_losses(model, x_held, y_held)[0].mean())
            if held_loss < best_loss - MIN_IMPROVEMENT:
                best_loss, stale = held_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            if heartbeat.due():
                progress(f"  {name}: step {step}, held-out loss {held_loss:.4f} nats")
            if stale >= training.patience or step >= training.max_steps:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    ce = _losses(model, x_held, y_held)[1].cpu().numpy().astype(np.float64)  # [n_held, P, T]
    information: dict[tuple[str, str], dict[str, Information]] = {}
    for index, target in enumerate(names):
        counts = np.bincount(y[train, index], minlength=num_classes)[:num_classes] + 1.0
        prior_loss = -np.log(counts / counts.sum())[y[held, index]]
        for pair_index, (a, b) in enumerate(model.pairs):
            gain = (prior_loss - ce[:, pair_index, index]) / math.log(2)
            stderr = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.nan
            pair = (modalities[a], modalities[b])
            information.setdefault(pair, {})[target] = Information(
                float(gain.mean()), stderr, len(gain), float(prior_loss.mean() / math.log(2))
            )
    seconds = time.perf_counter() - start
    summary = "; ".join(
        f"({', '.join(pair)}) " + ", ".join(f"{t} {i.value:.3f} bits" for t, i in values.items())
        for pair, values in information.items()
    )
    progress(f"  {name}: {step} steps in {seconds:.1f} s; held-out information {summary}")
    model.cpu()
    return JointFit(
        dict(zip(modalities, model.encoder_arrays(), strict=True)), information, step, seconds
    )


def encoded_codebook(
    rows: np.ndarray,
    mean: np.ndarray | None,
    scale: np.ndarray | None,
    components: np.ndarray | None,
    encoder: EncoderArrays,
    config: CodebookConfig,
) -> Codebook:
    """The k-means codebook of a modality in its encoder's space: ``rows [m, p]`` are the
    preprocessed sample (``mean``, ``scale``, ``components``: the preprocessing), the encoder's
    first matrix is composed with the PCA components and its output divided by the bottleneck's
    overall standard deviation (one number, so a direction the encoder barely uses stays
    short) before ``config.n_clusters`` k-means restarts."""
    if len(rows) < config.n_clusters:
        raise ValueError(
            f"k-means needs at least n_clusters = {config.n_clusters} rows, got {len(rows)}"
        )
    z = encoder(rows)
    spread = float(np.sqrt(((z - z.mean(axis=0)) ** 2).sum(axis=1).mean()))
    spread = spread if spread > 0 else 1.0
    weight = encoder.weight / spread
    hidden_weight = encoder.hidden_weight
    if hidden_weight is None:
        weight = weight if components is None else weight @ components
    elif components is not None:
        hidden_weight = hidden_weight @ components
    return Codebook(
        kind="kmeans",
        mean=mean,
        scale=scale,
        components=weight,
        centers=best_of_restarts(z / spread, config.n_clusters, config.seed),
        hidden_weight=hidden_weight,
        hidden_bias=encoder.hidden_bias,
    )


def fit_joint_codebooks(
    samples: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    num_classes: int,
    config: CodebookConfig,
    training: EncoderTraining,
    progress: Progress,
) -> tuple[dict[str, Codebook], dict[tuple[str, str], dict[str, Information]]]:
    """Every modality's codebook in the space of the joint classifier trained on all of
    ``samples`` (``[m, d_m]`` each; the same rows as ``targets``), and that classifier's
    held-out information per pair and target. Scalar modalities keep their histogram (they
    are inputs of the classifier all the same)."""
    prepared = {
        name: fit_preprocessing(
            np.asarray(rows, dtype=np.float64), config.standardize, config.pca_components
        )
        for name, rows in samples.items()
    }
    fitted = train_joint(
        {name: values[3] for name, values in prepared.items()},
        targets,
        num_classes,
        training,
        "joint encoders of " + ", ".join(samples),
        progress,
    )
    codebooks = {}
    for name, rows in samples.items():
        if rows.shape[1] == 1:
            codebooks[name] = fit_codebook(rows, config)
        else:
            mean, scale, components, transformed = prepared[name]
            codebooks[name] = encoded_codebook(
                transformed, mean, scale, components, fitted.encoders[name], config
            )
    return codebooks, fitted.information


def feature_information(
    samples: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    num_classes: int,
    standardize: bool,
    training: EncoderTraining,
    progress: Progress,
) -> dict[tuple[str, str], dict[str, Information]]:
    """The held-out information per pair and target of the joint classifier of ``samples``
    (standardised features when ``standardize``), for codes that are not fitted in its
    space."""
    inputs = {
        name: fit_preprocessing(np.asarray(rows, dtype=np.float64), standardize, None)[3]
        for name, rows in samples.items()
    }
    name = "classifier of " + ", ".join(samples)
    return train_joint(inputs, targets, num_classes, training, name, progress).information

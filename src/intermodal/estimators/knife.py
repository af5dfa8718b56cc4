"""KNIFE differential-entropy estimator (Pichler et al. 2022) for per-sample LSMI entropies.

A mixture of ``K`` Gaussians ``p_θ(x) = Σ_k w_k N(x; μ_k, Σ_k)`` is fitted by minimising the
mean of ``−log p_θ(x)`` over a sample; the per-sample value ``h(x) = −log p_θ(x)`` (nats) is the
pointwise entropy that LSMI combines across modalities. Its mean over fresh samples estimates
(an upper bound of) the differential entropy ``h(X)``.

Each kernel is parametrised by its precision factor ``P_k = (I + L_k) · diag(s_k)``, with
``L_k`` strictly lower-triangular and ``s_k = exp(log_scale_k) > 0``, so the precision is
``Λ_k = P_kᵀ P_k`` (always positive definite) and ``log|det P_k| = Σ_j log_scale_kj`` (the
unit-lower-triangular factor has determinant 1). ``diagonal=True`` drops ``L_k``.

``fit_entropy_model`` standardises (mean and population std; zero-variance features keep scale
1, as ``discretize.fit_kmeans``) and optionally PCA-projects the rows before training, so ``h``
is the entropy of the standardised (and projected) features: differential entropy shifts by
``Σ log σ_j`` under rescaling, and standardising makes modalities measured in different units
comparable. ``EntropyModel.to_state``/``from_state`` give plain arrays for ``np.savez`` and a
state dict for ``torch.save``/``torch.load(..., weights_only=True)`` (no pickle).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from intermodal.estimators.discretize import _checked, _projected, fit_preprocessing
from intermodal.progress import Heartbeat

ENTROPY_CHUNK_ROWS = 65_536
# exp(±10) spans 2e-5 … 2e4 kernel widths per unit of (standardised) feature: wide enough for any
# sensible fit, while stopping a kernel from collapsing onto one (duplicated) training row, where
# the mixture likelihood is unbounded, and keeping exp and squared norms finite in float32.
LOG_SCALE_BOUND = 10.0
LOG_2PI = math.log(2.0 * math.pi)


class KNIFE(nn.Module):
    """Gaussian mixture density on ``R^dim`` with ``n_components`` kernels.

    Parameters: ``logits [K]`` (mixture weights via softmax), ``means [K, d]``,
    ``log_scales [K, d]`` (diagonal ``s_k`` of the precision factor) and, unless ``diagonal``,
    ``lower [K, d, d]`` of which only the strictly lower triangle ``L_k`` is used. The precision
    factor is ``P_k = (I + L_k) · diag(exp(log_scales_k))`` and the precision ``P_kᵀ P_k``.
    """

    def __init__(self, dim: int, n_components: int = 5, diagonal: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        if n_components < 1:
            raise ValueError(f"n_components must be at least 1, got {n_components}")
        self.dim = dim
        self.n_components = n_components
        self.diagonal = diagonal
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.zeros(n_components, dim))
        self.log_scales = nn.Parameter(torch.zeros(n_components, dim))
        # Registered as None when diagonal, so the state dict simply has no "lower" entry.
        lower = None if diagonal else nn.Parameter(torch.zeros(n_components, dim, dim))
        self.register_parameter("lower", lower)

    def strict_lower(self) -> Tensor | None:
        """``L_k`` ``[K, d, d]`` (zero on and above the diagonal), or None when diagonal."""
        if self.lower is None:
            return None
        return torch.tril(self.lower, diagonal=-1)

    def clamped_log_scales(self) -> Tensor:
        """``log_scales`` ``[K, d]`` clamped to ``±LOG_SCALE_BOUND`` (see there for why)."""
        return self.log_scales.clamp(-LOG_SCALE_BOUND, LOG_SCALE_BOUND)

    def log_density(self, x: Tensor) -> Tensor:
        """``log p_θ(x)`` ``[N]`` of rows ``x [N, d]``; the largest intermediate is
        ``[N, K, d]``."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [N, {self.dim}], got {tuple(x.shape)}")
        log_scales = self.clamped_log_scales()
        # z = diag(s_k)(x − μ_k), then P_k(x − μ_k) = z + L_k z as a batched product per kernel,
        # so no [N, K, d, d] tensor is ever formed.
        z = (x[:, None, :] - self.means[None]) * log_scales.exp()[None]  # [N, K, d]
        lower = self.strict_lower()
        if lower is not None:
            z = z + torch.einsum("kij,nkj->nki", lower, z)
        log_kernels = (
            torch.log_softmax(self.logits, dim=0)
            - 0.5 * self.dim * LOG_2PI
            + log_scales.sum(dim=1)
            - 0.5 * z.square().sum(dim=2)
        )  # [N, K]
        return torch.logsumexp(log_kernels, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Per-sample entropy ``h(x) = −log p_θ(x)`` ``[N]`` (nats) of rows ``x [N, d]``."""
        return -self.log_density(x)

    def initialise(self, sample: Tensor, generator: torch.Generator | None = None) -> None:
        """Start from ``sample [m, d]`` (``m ≥ K``): means at ``K`` distinct random rows, every
        kernel as wide as the data (``log_scales = −log std`` per feature, constant features
        std 1), ``L_k = 0`` and uniform weights."""
        if sample.ndim != 2 or sample.shape[1] != self.dim:
            raise ValueError(f"sample must have shape [m, {self.dim}], got {tuple(sample.shape)}")
        if len(sample) < self.n_components:
            raise ValueError(
                f"initialising needs at least n_components = {self.n_components} rows, "
                f"got {len(sample)}"
            )
        rows = torch.randperm(len(sample), generator=generator)[: self.n_components]
        std = sample.std(dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        with torch.no_grad():
            self.means.copy_(sample[rows])
            self.log_scales.copy_((-std.log()).clamp(-LOG_SCALE_BOUND, LOG_SCALE_BOUND)[None])
            self.logits.zero_()
            if self.lower is not None:
                self.lower.zero_()


@dataclass(frozen=True)
class KnifeConfig:
    """How one modality's entropy model is fitted (``pca_components`` None: no PCA)."""

    n_components: int = 5
    diagonal: bool = False
    standardize: bool = True
    pca_components: int | None = None
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise ValueError(f"n_components must be at least 1, got {self.n_components}")
        if self.pca_components is not None and self.pca_components < 1:
            raise ValueError(f"pca_components must be at least 1, got {self.pca_components}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")


@dataclass(frozen=True, eq=False)
class EntropyModel:
    """A fitted entropy model: rows ``[n, d]`` are centred by ``mean [d]``, divided by
    ``scale [d]`` and projected on ``components [p, d]`` (each only if set; float64), then
    scored by ``knife`` (in eval mode)."""

    knife: KNIFE
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    components: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Feature dimension ``d`` of the rows ``entropy`` accepts."""
        if self.components is not None:
            return self.components.shape[1]
        return self.knife.dim

    def to(self, device: torch.device) -> EntropyModel:
        """This model with its KNIFE on ``device`` (where ``entropy`` computes)."""
        self.knife.to(device)
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``[n, d]`` in the space the KNIFE models, ``[n, d']`` float64."""
        return _projected(rows, self.mean, self.scale, self.components)

    def entropy(self, rows: np.ndarray, chunk_rows: int = ENTROPY_CHUNK_ROWS) -> np.ndarray:
        """Per-sample ``h = −log p_θ(transform(rows))`` ``[n]`` float64, in nats, of
        ``rows [n, d]``, ``chunk_rows`` rows at a time.

        ``h`` is the entropy of the standardised (and projected) features, not of the raw ones,
        so modalities in different units are comparable."""
        rows = _checked(rows, self.dim)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        dtype, device = self.knife.logits.dtype, self.knife.logits.device
        out = np.empty(len(rows), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(rows), chunk_rows):
                z = torch.from_numpy(self.transform(rows[start : start + chunk_rows]))
                h = self.knife(z.to(device, dtype))
                out[start : start + len(z)] = h.double().cpu().numpy()
        return out

    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Tensor]]:
        """Preprocessing arrays (those set, plus ``config = [dim, n_components, diagonal]``
        int64) for ``np.savez``, and the KNIFE's state dict for ``torch.save``."""
        arrays = {
            "config": np.array(
                [self.knife.dim, self.knife.n_components, int(self.knife.diagonal)], np.int64
            )
        }
        for name in ("mean", "scale", "components"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        state = {name: value.detach().clone() for name, value in self.knife.state_dict().items()}
        return arrays, state

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], state_dict: Mapping[str, Tensor]
    ) -> EntropyModel:
        """Inverse of ``to_state``; accepts the ``NpzFile`` from ``np.load``."""
        dim, n_components, diagonal = (int(v) for v in np.asarray(arrays["config"]))
        knife = KNIFE(dim, n_components, diagonal=bool(diagonal))
        knife.to(state_dict["logits"].dtype)
        knife.load_state_dict(state_dict)
        knife.eval()

        def field(name: str) -> np.ndarray | None:
            return np.asarray(arrays[name], dtype=np.float64) if name in arrays else None

        return cls(
            knife=knife, mean=field("mean"), scale=field("scale"), components=field("components")
        )


def _validated_rows(rows: np.ndarray, config: KnifeConfig) -> np.ndarray:
    """``rows`` as float64 ``[m, d]``, or a ``ValueError`` saying why they cannot be fitted."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise ValueError(f"rows must have shape [m, d] with d ≥ 1, got {rows.shape}")
    if not np.issubdtype(rows.dtype, np.number):
        raise ValueError(f"rows must be numeric, got dtype {rows.dtype}")
    if not np.all(np.isfinite(rows)):
        raise ValueError("rows have NaN or infinite values")
    if len(rows) < config.n_components:
        raise ValueError(
            f"KNIFE needs at least n_components = {config.n_components} rows, got {len(rows)}"
        )
    if config.pca_components is not None and config.pca_components > rows.shape[1]:
        raise ValueError(
            f"pca_components = {config.pca_components} exceeds the feature dimension "
            f"{rows.shape[1]}"
        )
    return rows.astype(np.float64)


def fit_entropy_model(
    rows: np.ndarray,
    config: KnifeConfig,
    progress: Callable[[str], None] | None = None,
    device: torch.device | str = "cpu",
) -> EntropyModel:
    """Standardiser → PCA → KNIFE fitted on ``rows [m, d]``: Adam(``lr``) on minibatches of
    ``batch_size`` rows, reshuffled every epoch, seeded by ``config.seed``. ``progress`` gets
    the mean training ``h`` of an epoch (averaged over its minibatches while they are being
    fitted) every ``progress.HEARTBEAT_SECONDS`` and after the last epoch. Trains on
    ``device``; the model comes back on the CPU."""
    rows = _validated_rows(rows, config)
    mean, scale, components, rows = fit_preprocessing(
        rows, config.standardize, config.pca_components
    )

    data = torch.from_numpy(rows.astype(np.float32)).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    knife = KNIFE(data.shape[1], config.n_components, diagonal=config.diagonal).to(device)
    knife.initialise(data, generator)
    optimiser = torch.optim.Adam(knife.parameters(), lr=config.lr, fused=True)  # one kernel a step
    heartbeat, start = Heartbeat(), time.perf_counter()
    knife.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(data), generator=generator).to(device)
        total = 0.0
        for start_row in range(0, len(data), config.batch_size):
            batch = data[order[start_row : start_row + config.batch_size]]
            loss = knife(batch).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        if progress is not None and (heartbeat.due() or epoch == config.epochs):
            progress(
                f"[knife] epoch {epoch}/{config.epochs}: mean h {total / len(data):.3f} nats"
                f" ({time.perf_counter() - start:.1f} s)"
            )
    knife.eval()
    return EntropyModel(knife=knife.cpu(), mean=mean, scale=scale, components=components)

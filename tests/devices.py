"""Running an operator on a device other than the CPU, in CI, which has only the CPU.

``OnStandInDevice`` runs torch under a ``TorchFunctionMode`` with the operator's device set to
``meta``, a real torch device that has shapes but no values. Every op an operator runs is then
checked as CUDA would check it, and more strictly:

- an op whose tensors are on two devices (a model on the device fed a CPU tensor, a CPU index
  into a device tensor) is recorded as a stray;
- a matrix product or log-sum-exp on the CPU (the work that belongs on the device) is a stray;
- a module called with any parameter or buffer off the device is a stray.

What leaves the device (``.cpu()``, ``.to("cpu")``, ``.item()``, ``float()``, ``bool()``)
comes back as zeros of the right shape and type, so the operator runs to its end: its output
has the right columns and rows, its values mean nothing.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch
from torch import Tensor, nn
from torch.fx.experimental import _config as fx_config
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from intermodal.measures import job_measures
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig

STAND_IN = torch.device("meta")
# what the device does: these on a CPU tensor mean the work stayed off the device
HEAVY = {
    torch.mm,
    torch.bmm,
    torch.matmul,
    torch.addmm,
    torch.baddbmm,
    torch.einsum,
    torch.logsumexp,
    torch.cdist,
    nn.functional.linear,
    Tensor.mm,
    Tensor.bmm,
    Tensor.matmul,
    Tensor.__matmul__,
    Tensor.logsumexp,
}
# what moves tensors between devices (``Module.to`` swaps parameters through the last one)
MOVING = {Tensor.to, Tensor.cuda, Tensor.copy_, torch._has_compatible_shallow_copy_type}
LEAVING_AS_NUMBER = {
    Tensor.item: 0,
    Tensor.__float__: 0.0,
    Tensor.__int__: 0,
    Tensor.__bool__: True,  # checks pass, iterations converge at once
}


def _target(args: tuple, kwargs: dict) -> torch.device | None:
    """The device a ``Tensor.to`` call moves to, if it names one."""
    for value in (*args[1:], kwargs.get("device"), kwargs.get("other")):
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
        if isinstance(value, Tensor):
            return value.device
    return None


def _zeros_like_on_cpu(tensor: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return torch.zeros(tensor.shape, dtype=dtype or tensor.dtype)


class OnStandInDevice(TorchFunctionMode):
    """Within it: torch ops are checked against ``STAND_IN`` and ``strays`` lists those that
    would fail or run on the CPU on a real accelerator; ``device_ops`` counts ops on it."""

    def __init__(self) -> None:
        super().__init__()
        self.strays: list[str] = []
        self.device_ops = 0
        self.module_calls = 0
        self._hook: Any = None
        self._nonzero: Any = None

    def __enter__(self) -> OnStandInDevice:
        self._hook = nn.modules.module.register_module_forward_pre_hook(self._check_module)
        # a row selection's size depends on values the stand-in lacks: take every row
        self._nonzero = fx_config.patch(meta_nonzero_assume_all_nonzero=True)
        self._nonzero.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()
        self._nonzero.__exit__(*exc)
        super().__exit__(*exc)

    def _check_module(self, module: nn.Module, _: tuple) -> None:
        self.module_calls += 1
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(tensor.device != STAND_IN for tensor in own):
            self.strays.append(f"{type(module).__name__} called with its weights off the device")

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        tensors = [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, Tensor)]
        on_device = [t for t in tensors if t.device == STAND_IN]
        if func in LEAVING_AS_NUMBER and on_device:
            return LEAVING_AS_NUMBER[func]
        if func is Tensor.tolist and on_device:
            return _zeros_like_on_cpu(args[0]).tolist()
        if func is Tensor.cpu and on_device:
            return _zeros_like_on_cpu(args[0])
        if func is Tensor.to and on_device and _target(args, kwargs) == torch.device("cpu"):
            dtypes = [a for a in (*args[1:], kwargs.get("dtype")) if isinstance(a, torch.dtype)]
            return _zeros_like_on_cpu(args[0], dtypes[0] if dtypes else None)
        moving = func in MOVING
        off_device = [t for t in tensors if t.device != STAND_IN and t.dim() > 0]
        if on_device and off_device and not moving:
            self.strays.append(f"{_name(func)} mixes {STAND_IN} with {off_device[0].device}")
        elif func in HEAVY and off_device:
            self.strays.append(f"{_name(func)} ran on {off_device[0].device}")
        if on_device:
            self.device_ops += 1
        return func(*args, **kwargs)


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


def assert_operators_keep_to_the_device(
    job: JobConfig, batch: pa.Table, background: str | None = None, numpy_only: tuple[str, ...] = ()
) -> None:
    """Each measure of ``job`` scores ``batch`` with its device set to the stand-in: no stray
    op, some work on the device (unless the measure is in ``numpy_only`` and the job has no
    model), and the same columns and rows as on the CPU."""
    for measure in job_measures(job):
        on_cpu = ScoreOperator(job, [measure], background)(batch)
        with OnStandInDevice() as mode:
            scored = ScoreOperator(job, [measure], background, device=STAND_IN)(batch)
        assert mode.strays == [], (measure.name, sorted(set(mode.strays)))
        assert scored.schema == on_cpu.schema and scored.num_rows == on_cpu.num_rows
        if job.model is not None or measure.name not in numpy_only:
            assert mode.device_ops > 0, measure.name

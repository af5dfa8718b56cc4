"""Per-actor set-up shared by every operator: torch threads, device, allocator behaviour."""

from __future__ import annotations

import ctypes

import torch

from intermodal.schemas.config import ComputeConfig

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    Every batch allocates and frees the same few large temporaries. Under glibc's defaults an
    actor thread's arena hands them back to the kernel after each batch and faults them in
    again on the next (measured: half the actor's CPU time in the kernel, and a fragmented
    heap of several GB). Keeping them makes the steady state allocation-free. A no-op where
    the C library is not glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest value glibc accepts
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def use_actor_threads(compute: ComputeConfig) -> None:
    """Size torch's threads to the actor: ``compute.torch_threads``, else its CPUs (Ray sets
    ``OMP_NUM_THREADS`` to them, and torch read it before the actor existed)."""
    torch.set_num_threads(compute.torch_threads or max(1, int(compute.cpus_per_actor)))


def select_device(gpus: float) -> torch.device:
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")

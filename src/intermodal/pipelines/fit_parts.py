"""The Ray pieces every fit part goes through, in a module that imports only Ray and the
config schema: ``PartMemo`` is an actor, and an actor's process imports the module of its
class before it can start (the measures and torch would cost it seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

from intermodal.schemas.config import FitResources


def submit_part(resources: FitResources, fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """``fn(*args)`` as a Ray task of ``resources``."""
    # spread over the nodes: parts are independent, and packing them onto the node of the
    # fit task (Ray's default until that node is half busy) leaves the others idle
    task = fit_part.options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, scheduling_strategy="SPREAD"
    )
    return task.remote(threads_of(resources), fn, *args)


@ray.remote(num_cpus=0)
class PartMemo:
    """The parts of one fit round by content key: the first request submits, later ones get
    the same running (or finished) part. It owns the parts, so it lives until the round ends."""

    def __init__(self) -> None:
        self.parts: dict[str, ray.ObjectRef] = {}
        self.requests = 0
        self.runs = 0  # parts submitted, resubmitted ones too: those are not reused

    def submit(
        self, key: str, resources: FitResources, fn: Callable[..., Any], args: list[Any]
    ) -> list[ray.ObjectRef]:
        self.requests += 1
        if key not in self.parts:
            self.parts[key] = submit_part(resources, fn, args)
            self.runs += 1
        return [self.parts[key]]

    def resubmit(
        self,
        key: str,
        lost: list[ray.ObjectRef],
        resources: FitResources,
        fn: Callable[..., Any],
        args: list[Any],
    ) -> list[ray.ObjectRef]:
        """The part of ``key`` again after ``lost`` (its ref, in a list so Ray does not fetch
        it) failed for want of an object: the fit that first submitted it owned its arguments
        and died with its node. Submitted anew with the caller's ``args`` unless another
        caller already did."""
        if self.parts[key] == lost[0]:
            self.parts[key] = submit_part(resources, fn, args)
            self.runs += 1
        return [self.parts[key]]

    def counts(self) -> tuple[int, int]:
        """(requests, parts run)."""
        return self.requests, self.runs


def threads_of(resources: FitResources) -> int:
    """torch threads of a fit part: its whole CPUs, at least one."""
    return max(1, int(resources.cpus))


@ray.remote
def fit_part(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """One part, with as many torch threads as CPUs it holds."""
    import torch  # in the part's process only (the part's own module imports it anyway)

    torch.set_num_threads(threads)
    return fn(*args)

"""What the running Ray cluster can give a job: settings it can never satisfy are refused
before any work, instead of a silent wait for resources that will not come."""

from __future__ import annotations

import ray

from intermodal.schemas.config import ActorRange, ComputeConfig


def free_cpus_needed(total_cpus: float) -> float:
    """CPUs the score actors must leave to the read and write tasks: one, or half of a
    one-CPU machine (a pool holding every CPU starves them and the job hangs, ray#44687)."""
    return 1.0 if total_cpus >= 2 else total_cpus / 2


def _alive_nodes() -> list[dict]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def actor_pool(compute: ComputeConfig) -> tuple[int, int]:
    """``(min, max)`` score actors: a fixed size, the configured range, or for ``auto`` from 1
    up to what the cluster's CPUs (less those reads and writes need) and GPUs hold."""
    if isinstance(compute.actors, int):
        return compute.actors, compute.actors
    if isinstance(compute.actors, ActorRange):
        return compute.actors.min, compute.actors.max
    nodes = _alive_nodes()
    total_cpus = sum(resources.get("CPU", 0.0) for resources in nodes)
    room = total_cpus - free_cpus_needed(total_cpus)
    most = int(room // compute.cpus_per_actor)
    if compute.gpus_per_actor > 0:
        total_gpus = sum(resources.get("GPU", 0.0) for resources in nodes)
        most = min(most, int(total_gpus // compute.gpus_per_actor))
    return 1, max(1, most)


def check_compute(compute: ComputeConfig) -> None:
    """ValueError naming the ``compute.*`` setting the cluster cannot satisfy: GPUs it does not
    have, more CPUs per actor or fit part than any node has, or actors that would hold the CPUs
    the read and write tasks need."""
    nodes = _alive_nodes()
    total_cpus = sum(resources.get("CPU", 0.0) for resources in nodes)
    total_gpus = sum(resources.get("GPU", 0.0) for resources in nodes)
    largest_cpus = max((resources.get("CPU", 0.0) for resources in nodes), default=0.0)
    largest_gpus = max((resources.get("GPU", 0.0) for resources in nodes), default=0.0)
    where = "this cluster has none" if total_gpus == 0 else f"its largest node has {largest_gpus:g}"
    for key, gpus, work in (
        ("gpus_per_actor", compute.gpus_per_actor, "score"),
        ("fit.gpus", compute.fit.gpus, "fit"),
    ):
        if gpus > largest_gpus:
            raise ValueError(f"compute.{key} = {gpus:g}: {where}; set it to 0 to {work} on CPUs")
    for key, cpus in (("cpus_per_actor", compute.cpus_per_actor), ("fit.cpus", compute.fit.cpus)):
        if cpus > largest_cpus:
            raise ValueError(
                f"compute.{key} = {cpus:g}: the largest node has {largest_cpus:g} CPUs"
            )
    held = actor_pool(compute)[1] * compute.cpus_per_actor
    free = free_cpus_needed(total_cpus)
    if held > total_cpus - free:
        raise ValueError(
            f"compute.actors (at most) × compute.cpus_per_actor = {held:g} of the cluster's "
            f"{total_cpus:g} CPUs would leave fewer than {free:g} for reading and writing, and "
            "the job would wait forever; use fewer actors or a smaller cpus_per_actor (e.g. "
            "0.5 with torch_threads 1)"
        )

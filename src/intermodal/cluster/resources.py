"""What the Ray cluster can give a job, now and once its autoscaler has added nodes.

On a fixed cluster the nodes alive are all there is: a setting they cannot satisfy is refused
before any work, instead of a silent wait for resources that will not come. On an autoscaling
cluster (KubeRay, the cluster launcher, managed Ray) a setting is refused only when no node
type could ever satisfy it; otherwise the job asks the autoscaler for the nodes its score
actors need and waits for them, up to ``compute.wait_for_nodes_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml
from ray.autoscaler.sdk import request_resources

from intermodal.progress import Progress
from intermodal.schemas.config import ActorRange, ComputeConfig

# where the cluster launcher leaves the autoscaler's config on the head, where drivers of
# submitted jobs run
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"
HEAD_RESOURCE = "node:__internal_head__"  # a resource only the head node has
POLL_SECONDS = 1.0
REPORT_SECONDS = 15.0  # how often the wait for nodes says how long it has waited


class NodesDidNotArrive(RuntimeError):
    """The autoscaler did not add the nodes the job needs within its limit."""


@dataclass(frozen=True)
class NodeType:
    """A worker node type of the autoscaler: what one node has and how many there may be."""

    name: str
    resources: Mapping[str, float]
    max_count: float  # math.inf: no limit


@dataclass(frozen=True)
class ClusterReach:
    """The nodes alive and, on an autoscaling cluster, the node types it can add."""

    alive: list[dict[str, float]]
    node_types: list[NodeType]
    autoscaling: bool

    def shapes(self) -> list[Mapping[str, float]]:
        """Every node the job could ever be given: those alive and one of each node type."""
        return [*self.alive, *(t.resources for t in self.node_types if t.max_count > 0)]

    def total(self, resource: str) -> float:
        """How much of ``resource`` the cluster can reach: the alive nodes' sum, or on an
        autoscaling cluster whose node types are known, the head's and every type's at its
        maximum count (whichever is larger)."""
        alive = sum(node.get(resource, 0.0) for node in self.alive)
        if not self.node_types:
            return alive
        head = sum(node.get(resource, 0.0) for node in self.alive if HEAD_RESOURCE in node)
        grown = head + sum(
            t.max_count * t.resources[resource]
            for t in self.node_types
            if t.resources.get(resource)
        )
        return max(alive, grown)


@dataclass(frozen=True)
class Pool:
    """The score actor pool: Ray Data's ``ActorPoolStrategy`` sizes (``largest`` None: no
    limit)."""

    smallest: int
    largest: int | None
    initial: int


def free_cpus_needed(total_cpus: float) -> float:
    """CPUs the score actors must leave to the read and write tasks: one, or half of a
    one-CPU machine (a pool holding every CPU starves them and the job hangs, ray#44687)."""
    return 1.0 if total_cpus >= 2 else total_cpus / 2


def _alive_nodes() -> list[dict]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def reported_node_types() -> list[NodeType]:
    """The node groups an autoscaler reported to Ray's control store (managed Ray does; Ray
    Data reads the same record); [] when none was reported."""
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older or newer Ray without the record: the other sources remain
        return []
    if config is None:
        return []
    return [
        NodeType(
            group.name,
            {key: float(value) for key, value in group.resources.items()},
            math.inf if group.max_count == -1 else float(group.max_count),
        )
        for group in config.node_group_configs
    ]


def launcher_node_types(path: str | Path) -> list[NodeType]:
    """The worker node types of an autoscaler config in the cluster launcher's format
    (``available_node_types``, each with ``resources`` and ``max_workers``; the cluster's
    ``max_workers`` caps every type)."""
    config = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    cap = config.get("max_workers", math.inf)
    head = config.get("head_node_type")
    return [
        NodeType(
            name,
            {key: float(value) for key, value in (spec.get("resources") or {}).items()},
            float(min(spec.get("max_workers", cap), cap)),
        )
        for name, spec in (config.get("available_node_types") or {}).items()
        if name != head
    ]


def cluster_reach(compute: ComputeConfig) -> ClusterReach:
    """The cluster as this job can judge it: node types from what an autoscaler reported to
    Ray, else from ``compute.autoscaler_config`` (default: the cluster launcher's copy on the
    head, when present). A cluster with a node type that can add nodes is autoscaling; one
    whose node types are unknown is judged by its alive nodes, as a fixed one. (Ray's
    autoscaler reports a round on every cluster, a fixed one's too, so its report alone does
    not tell the two apart.)"""
    types = reported_node_types()
    path = compute.autoscaler_config or LAUNCHER_CONFIG
    if not types and (compute.autoscaler_config or Path(path).expanduser().exists()):
        types = launcher_node_types(path)
    autoscaling = any(t.max_count > 0 for t in types)
    return ClusterReach(_alive_nodes(), types if autoscaling else [], autoscaling)


def actor_bundle(compute: ComputeConfig) -> dict[str, float]:
    """What one score actor holds."""
    return {"CPU": compute.cpus_per_actor, "GPU": compute.gpus_per_actor}


def actor_pool(compute: ComputeConfig, reach: ClusterReach | None = None) -> Pool:
    """The score actors: a fixed size, the configured range, or for ``auto`` from 1 up to what
    the reachable cluster's CPUs (less those reads and writes need) and GPUs hold. On an
    autoscaling cluster ``auto`` starts at that bound: Ray Data adds actors only where the
    nodes alive have room and never asks the autoscaler for more (Ray 2.60), so a pool started
    small would stay within the nodes alive at its start."""
    if isinstance(compute.actors, int):
        return Pool(compute.actors, compute.actors, compute.actors)
    if isinstance(compute.actors, ActorRange):
        actors = compute.actors
        return Pool(actors.min, actors.max, actors.initial or actors.min)
    reach = reach or cluster_reach(compute)
    total_cpus = reach.total("CPU")
    most = (total_cpus - free_cpus_needed(total_cpus)) / compute.cpus_per_actor
    if compute.gpus_per_actor > 0:
        most = min(most, reach.total("GPU") / compute.gpus_per_actor)
    if math.isinf(most):
        return Pool(1, None, 1)
    largest = max(1, int(most))
    return Pool(1, largest, largest if reach.autoscaling else 1)


def _fits(shape: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(shape.get(key, 0.0) >= amount for key, amount in bundle.items() if amount > 0)


def check_compute(compute: ComputeConfig, reach: ClusterReach | None = None) -> ClusterReach:
    """ValueError naming the ``compute.*`` setting the cluster can never satisfy: GPUs or CPUs
    per actor or fit part that no node (alive, or of an autoscaler's node type) has, or actors
    that would hold the CPUs the read and write tasks need. Returns the reach it judged."""
    reach = reach or cluster_reach(compute)
    if reach.autoscaling:
        _check_node_types(compute, reach)
    else:
        _check_alive_nodes(compute, reach)
    if compute.scores_on_tasks:  # each task reads and writes its own shard: nothing to starve
        return reach
    largest = actor_pool(compute, reach).largest
    total_cpus = reach.total("CPU")
    held = math.inf if largest is None else largest * compute.cpus_per_actor
    free = free_cpus_needed(total_cpus)
    if held > total_cpus - free:
        grown = " it can grow to" if reach.autoscaling else ""
        raise ValueError(
            f"compute.actors (at most) × compute.cpus_per_actor = {held:g} of the{grown} "
            f"cluster's {total_cpus:g} CPUs would leave fewer than {free:g} for reading and "
            "writing, and the job would wait forever; use fewer actors or a smaller "
            "cpus_per_actor (e.g. 0.5 with torch_threads 1)"
        )
    return reach


def _check_alive_nodes(compute: ComputeConfig, reach: ClusterReach) -> None:
    """A fixed cluster: each of the job's resource amounts must fit its largest node."""
    nodes = reach.alive
    total_gpus = sum(resources.get("GPU", 0.0) for resources in nodes)
    largest_cpus = max((resources.get("CPU", 0.0) for resources in nodes), default=0.0)
    largest_gpus = max((resources.get("GPU", 0.0) for resources in nodes), default=0.0)
    where = "this cluster has none" if total_gpus == 0 else f"its largest node has {largest_gpus:g}"
    for key, gpus, work in (
        ("gpus_per_actor", compute.gpus_per_actor, "score"),
        ("fit.gpus", compute.fit.gpus, "fit"),
    ):
        if gpus > largest_gpus:
            raise ValueError(
                f"compute.{key} = {gpus:g}: {where}; set it to 0 to {work} on CPUs (on an "
                "autoscaling cluster, compute.autoscaler_config names the node types it can add)"
            )
    for key, cpus in (("cpus_per_actor", compute.cpus_per_actor), ("fit.cpus", compute.fit.cpus)):
        if cpus > largest_cpus:
            raise ValueError(
                f"compute.{key} = {cpus:g}: the largest node has {largest_cpus:g} CPUs"
            )


def _check_node_types(compute: ComputeConfig, reach: ClusterReach) -> None:
    """An autoscaling cluster: a score actor's and a fit part's resources must fit one node,
    alive or of some node type."""
    kinds = ", ".join(f"{t.name} ({describe(t.resources)})" for t in reach.node_types)
    for keys, bundle in (
        (("cpus_per_actor", "gpus_per_actor"), actor_bundle(compute)),
        (("fit.cpus", "fit.gpus"), {"CPU": compute.fit.cpus, "GPU": compute.fit.gpus}),
    ):
        if any(_fits(shape, bundle) for shape in reach.shapes()):
            continue
        settings = " and ".join(
            f"compute.{key} = {bundle[resource]:g}"
            for key, resource in zip(keys, ("CPU", "GPU"), strict=True)
            if bundle[resource] > 0
        )
        raise ValueError(
            f"{settings}: no node of this cluster, alive or of its autoscaler's node types "
            f"({kinds}), has that much; ask for what one node type has"
        )


def describe(resources: Mapping[str, float]) -> str:
    """``{"CPU": 4, "GPU": 1}`` as "1 GPU, 4 CPUs" (GPUs first, zeros and Ray's internal
    resources left out)."""
    named = [("GPU", "GPU"), ("CPU", "CPU")]
    parts = [
        f"{resources[key]:g} {word}{'' if resources[key] == 1 else 's'}"
        for key, word in named
        if resources.get(key)
    ]
    return ", ".join(parts) or "no CPU or GPU"


def _actors_that_fit(nodes: list[dict[str, float]], bundle: Mapping[str, float]) -> int:
    """How many actors of ``bundle`` the nodes hold, each on one node."""
    wanted = [(key, amount) for key, amount in bundle.items() if amount > 0]
    return sum(int(min(node.get(key, 0.0) / amount for key, amount in wanted)) for node in nodes)


def request_pool(compute: ComputeConfig, reach: ClusterReach) -> None:
    """On an autoscaling cluster: ask the autoscaler for room for the pool's first actors now,
    so their nodes boot while the fits run. The request holds until ``release_request``."""
    if reach.autoscaling:
        pool = actor_pool(compute, reach)
        request_resources(bundles=[actor_bundle(compute)] * pool.initial)


def release_request(reach: ClusterReach) -> None:
    """Withdraw the job's request, so the autoscaler may remove the nodes once idle."""
    if reach.autoscaling and ray.is_initialized():
        request_resources(bundles=[])


def wait_for_pool(compute: ComputeConfig, reach: ClusterReach, progress: Progress) -> None:
    """On an autoscaling cluster: wait until the nodes alive hold the pool's minimum of
    actors, saying every ``REPORT_SECONDS`` how long it has waited; ``NodesDidNotArrive``
    after ``compute.wait_for_nodes_seconds``."""
    if not reach.autoscaling:
        return
    bundle = actor_bundle(compute)
    needed = actor_pool(compute, reach).smallest
    started = time.monotonic()
    last_report = -math.inf
    while (missing := needed - _actors_that_fit(_alive_nodes(), bundle)) > 0:
        waited = time.monotonic() - started
        what = "a GPU" if bundle["GPU"] > 0 else f"{bundle['CPU']:g} CPUs"
        if waited >= compute.wait_for_nodes_seconds:
            raise NodesDidNotArrive(
                f"the autoscaler added no room for {missing} more score actor(s) "
                f"({describe(bundle)} each) within compute.wait_for_nodes_seconds = "
                f"{compute.wait_for_nodes_seconds:g}; check `ray status` for nodes that fail "
                "to start, or raise the limit"
            )
        if time.monotonic() - last_report >= REPORT_SECONDS:
            last_report = time.monotonic()
            progress(
                f"[cluster] waiting for nodes with {what} for {missing} score actor(s): "
                f"{waited:.0f} s"
            )
        time.sleep(POLL_SECONDS)

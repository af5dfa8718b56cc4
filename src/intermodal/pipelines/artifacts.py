"""Fitting measures' artifacts as Ray work, and the marker that says what they were fitted on.

Each measure's fit is a Ray task that reads its sample on a worker and submits the fit's
independent parts (a model per modality, pair or target) as further tasks with
``compute.fit``'s resources, so fits of several measures and their parts share the cluster;
the driver submits and waits."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
import torch
from ray.actor import ActorHandle

from intermodal import __version__, storage
from intermodal.cluster import cluster_cpus, on_this_node
from intermodal.measures import Measure
from intermodal.measures.base import FitSample
from intermodal.models.classifiers import prune_classifier_store
from intermodal.pipelines.fit_parts import PartMemo, submit_part, threads_of
from intermodal.pipelines.inputs import Shard, fingerprint, labelled_sample, sample_table
from intermodal.pipelines.run import ship_measures
from intermodal.progress import Progress, print_progress
from intermodal.schemas.config import FitResources, JobConfig


class FitMarker:
    """``artifacts/<measure>/fitted_on.json``: what a fit depended on (its settings, the
    modalities, the input fingerprint). Removed when a fit starts and written when it ends, so
    a present, matching marker means complete artifacts fitted on this input and settings."""

    def __init__(self, job: JobConfig, shards: list[Shard], measure: Measure) -> None:
        self.uri = storage.join(measure.folder(job), "fitted_on.json")
        self.content = {
            "intermodal": __version__,  # another release may fit differently
            measure.name: measure.fit_key(job),
            "modalities": [m.model_dump(mode="json") for m in job.modalities],
            "input": fingerprint(shards),
        }

    def clear(self) -> None:
        storage.remove(self.uri)

    def write(self) -> None:
        storage.write_json(self.content, self.uri)

    def matches(self) -> bool:
        return storage.exists(self.uri) and storage.read_json(self.uri) == self.content


def fitted(job: JobConfig, measure: Measure, shards: list[Shard]) -> bool:
    """Whether ``measure`` fits nothing or has artifacts fitted on this input and settings."""
    return measure.fit_sample(job) is None or FitMarker(job, shards, measure).matches()


RELAY_SECONDS = 0.5  # how often the driver passes on the fits' progress lines
# how often a fit submits a shared part again after losing it (each time, to a node's death)
# before it gives up: a bound, so that no loss can keep a fit waiting for ever
SHARED_PART_RESUBMITS = 3


@ray.remote(num_cpus=0)
class ProgressRelay:
    """The progress lines of the fits under way in one driver's Ray session, kept by the run
    that reads them until it takes them."""

    def __init__(self) -> None:
        self.lines: defaultdict[str, list[str]] = defaultdict(list)

    def put(self, run: str, line: str) -> None:
        self.lines[run].append(line)

    def take(self, run: str) -> list[str]:
        return self.lines.pop(run, [])


RELAY_NAME = "intermodal-progress-relay"
_relay_lock = threading.Lock()  # Ray refuses to create one named actor from two threads at once
# the driver's handle: Ray stops an actor, named or not, that no handle refers to any more
_relay_held: list[ActorHandle] = []


def progress_relay() -> ActorHandle:
    """The driver's relay, started by its first fit and reused by the later ones (named in the
    driver's namespace and held here, it lives as long as the driver's Ray session): one
    process for all of them, where each fit started a queue actor of its own, a fresh process
    of seconds each time."""
    with _relay_lock:
        relay = ProgressRelay.options(
            name=RELAY_NAME, get_if_exists=True, **on_this_node()
        ).remote()
        # the handle that created it is the one that keeps it: a found one only borrows it
        if not _relay_held or _relay_held[0]._actor_id != relay._actor_id:
            _relay_held[:] = [relay]  # the first fit, or the first of a new Ray session
        return _relay_held[0]


class RelayedProgress:
    """A progress callback for Ray tasks: lines go to the relay under the fit's run, and the
    driver passes them to its own callback, so they read as the driver's (no worker prefix)
    and reach any callback. Each line waits for the relay: the driver's last take comes after
    the fit's last line."""

    def __init__(self, relay: ActorHandle, run: str) -> None:
        self.relay = relay
        self.run = run

    def __call__(self, message: str) -> None:
        ray.get(self.relay.put.remote(self.run, message))


@dataclass
class OwnPart:
    """A part the fit task runs itself when it gathers it, beside the parts it submitted."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def run(self) -> Any:
        # what a task's arguments get from Ray: shared values (top-level refs) resolved
        return self.fn(*(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in self.args))


class RayFitWorkers:
    """Fit parts as Ray tasks with ``compute.fit``'s CPUs and GPUs, each with as many torch
    threads as CPUs it holds (small models lose more to idle threads than they gain). Parts
    submitted with a key go through the fit round's ``PartMemo``, so measures whose fits
    need the same part (LSMI's and PID BATCH's classifiers on the same sample and settings)
    share one run of it.

    Without GPUs the fit task, which holds a part's CPUs, runs parts itself (``OwnPart``)
    instead of waiting idle: the first of each submit-and-gather round, and those beyond
    what the cluster's CPUs run at once (``slots`` parts, its own included), one after
    another when it gathers them. Every part in a task of its own needed worker processes
    beyond the CPUs (the waiting fit task keeps its process, and a queued part took the CPU
    it lent, in a fresh process), and each fresh process pays seconds of imports. Shared
    parts always run as tasks: another fit may be waiting for them.

    A worker node lost while fitting takes its parts and fits with it: Ray runs them again
    elsewhere (its default ``max_retries``), a fit again from its start. Parts are seeded, so a
    part run again gives the same result."""

    def __init__(
        self,
        resources: FitResources,
        progress: Progress,
        memo: ActorHandle | None,
        slots: int = 1,
    ) -> None:
        self.resources = resources
        self.progress = progress
        self.memo = memo
        self.slots = slots
        # this fit's requests to the memo by the part it got: what to submit again if lost
        self.shared: dict[ray.ObjectRef, tuple[str, Callable[..., Any], tuple[Any, ...]]] = {}
        self.own = 0  # parts this task runs itself in the current round
        self.submitted = 0  # parts of the current round submitted as tasks

    def share(self, value: Any) -> Any:
        return ray.put(value)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.resources.gpus == 0 and (self.own == 0 or self.submitted + 1 >= self.slots):
            self.own += 1
            return OwnPart(fn, args)
        self.submitted += 1
        return submit_part(self.resources, fn, args)

    def submit_once(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.memo is None:  # the round's only fit: nothing to share with
            return self.submit(fn, *args)
        # the arguments travel in a list: Ray would fetch top-level object refs into the memo
        (part,) = ray.get(self.memo.submit.remote(key, self.resources, fn, [*args]))
        self.shared[part] = (key, fn, args)
        self.submitted += 1
        return part

    def gather(self, handles: list[Any]) -> list[Any]:
        self.own = self.submitted = 0  # the next submit starts a new round
        # this task's own parts first, while the submitted ones run
        own = {id(h): h.run() for h in handles if isinstance(h, OwnPart)}
        return [own[id(h)] if isinstance(h, OwnPart) else self._result(h) for h in handles]

    def _result(self, part: Any) -> Any:
        """A part's result. A shared part may have been submitted by another fit (another
        measure's, or an earlier attempt of this one) whose arguments died with its node, so
        that it fails however often Ray retries it: this fit submits it again with its own."""
        for _ in range(SHARED_PART_RESUBMITS):
            try:
                return ray.get(part)
            except ray.exceptions.ObjectLostError:  # its owner died, or its lineage did
                if part not in self.shared:
                    raise
                key, fn, args = self.shared.pop(part)
                resubmit = self.memo.resubmit.remote(key, [part], self.resources, fn, [*args])
                (part,) = ray.get(resubmit)
                self.shared[part] = (key, fn, args)
        return ray.get(part)


@ray.remote
def fit(
    job: JobConfig,
    measure: Measure,
    plan: FitSample,
    shards: list[Shard],
    duplicates: pa.Array,
    progress: Progress,
    memo: ActorHandle | None,
) -> None:
    """A measure's fit: read its sample on this worker, fit (parts as further tasks, some in
    this task: ``RayFitWorkers``), save. It waits on its parts in ``ray.get``, where Ray
    lends its CPU to them."""
    resources = job.compute.fit
    torch.set_num_threads(threads_of(resources))
    # parts the cluster runs at once, this task's own included (a part holds >= 1 CPU)
    slots = max(1, int(cluster_cpus() // resources.cpus))
    if plan.labelled:
        sample = labelled_sample(
            job, shards, plan.rows, plan.seed, duplicates, plan.minimum, plan.purpose
        )
    else:
        sample = sample_table(job, shards, plan.rows, plan.seed, duplicates)
    measure.fit(job, sample, progress, RayFitWorkers(resources, progress, memo, slots))


def fit_measures(
    job: JobConfig,
    measures: list[Measure],
    shards: list[Shard],
    duplicates: pa.Array,
    progress: Progress = print_progress,
    share_parts: bool = True,
) -> list[str]:
    """Fit and save the artifacts of ``measures``, side by side as Ray tasks; returns the names
    of those that fit anything. The driver only submits and waits. Parts that several
    measures need are fitted once unless ``share_parts`` is off (benches compare the two)."""
    plans = {m.name: m.fit_sample(job) for m in measures}
    learning = [m for m in measures if plans[m.name] is not None]
    if not learning:
        return []
    ship_measures(learning)
    markers = {m.name: FitMarker(job, shards, m) for m in learning}
    for marker in markers.values():
        marker.clear()
    resources = job.compute.fit
    progress(
        f"[fit] {', '.join(m.title for m in learning)} on Ray, {resources.cpus:g} CPU and "
        f"{resources.gpus:g} GPU per part"
    )
    # both on the driver's node: a worker node lost while fitting must not take them along
    relay = progress_relay()
    # only fits of two or more measures can share parts (an actor costs a process to start)
    sharing = share_parts and len(learning) > 1
    memo = PartMemo.options(**on_this_node()).remote() if sharing else None
    relayed = RelayedProgress(relay, uuid.uuid4().hex)
    tasks = {
        m.name: fit.options(num_cpus=resources.cpus, name=f"fit {m.name}").remote(
            job, m, plans[m.name], shards, duplicates, relayed, memo
        )
        for m in learning
    }
    try:
        pending = list(tasks.values())
        while pending:
            _, pending = ray.wait(pending, timeout=RELAY_SECONDS)
            _relay(relayed, progress)
        for name, task in tasks.items():
            try:
                ray.get(task)
            except ray.exceptions.RayTaskError as error:
                # the measure's own error (a too-small sample, a bad setting), not Ray's wrapper
                raise error.cause from None
            markers[name].write()
        # a refit with other settings leaves classifiers no measure uses; no fit runs now
        prune_classifier_store(job.output)
        requests, runs = (0, 0) if memo is None else ray.get(memo.counts.remote())
        if runs < requests:
            progress(f"[fit] {requests - runs} of {requests} shared parts were reused, not refit")
    finally:
        _relay(relayed, progress)
        if memo is not None:
            ray.kill(memo)
    return list(tasks)


def _relay(relayed: RelayedProgress, progress: Progress) -> None:
    for line in ray.get(relayed.relay.take.remote(relayed.run)):
        progress(line)

"""The only place that starts or attaches to Ray.

Local Ray by default (a laptop, CI, the demo); the cluster named by ``RAY_ADDRESS`` when set
(``ray job submit`` sets it for the driver).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import ray

ANNOUNCING_LOGGERS = (
    "ray.data._internal.execution.streaming_executor",
    "ray.data.dataset",
    "ray.data._internal.logging",  # that a dataset started while another runs (the demo's runs)
)
IDLE_WORKERS_BEYOND_CPUS = 2  # embedded local Ray keeps this many more workers warm
CONNECT_SECONDS = 5.0  # how long the address check waits for the cluster's port to answer


T = TypeVar("T")


class RayStartError(RuntimeError):
    """Ray could not be started or reached; the message says what to try."""


class WaitingForCPUsFilter(logging.Filter):
    """Drops Ray Data's warning that the cluster "does not have any available CPUs" and "will
    hang": a stage of ours starts while the previous one (fits, score actors) is still giving
    its CPUs back, a moment later. A pool that really would hang is refused before any work
    (``resources.check_compute``), and a run that waits on other jobs shows it in its progress."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


def check_reachable(address: str) -> None:
    """RayStartError at once when nothing answers at a ``host:port`` (or ``ray://host:port``)
    address: ``ray.init`` would retry such an address for minutes. ``auto``, ``local`` and
    other forms are left to Ray."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise RayStartError(
            f"nothing answers at RAY_ADDRESS={address} ({error.strerror or error}); is the "
            "cluster up, and is this its head's GCS address (`ray status` on the head prints "
            "it) or its Ray Client address (ray://host:10001)?"
        ) from None


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start embedded local Ray, or attach to ``RAY_ADDRESS``; no-op when already up. A failure
    is one ``RayStartError`` line, not Ray's traceback."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Ray's notice that token auth is on prints on every start; auth itself stays as Ray sets
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    # Ray Data announces every dataset's start, plan, finish and sink (a path to its logs, the
    # plan's operators): five INFO lines per stage that our one progress line per stage
    # repeats. Its progress (bars in a terminal, log blocks without) is another logger.
    for announcer in ANNOUNCING_LOGGERS:
        logging.getLogger(announcer).setLevel(logging.WARNING)
    dataset_logger = logging.getLogger("ray.data.dataset")
    if not any(isinstance(f, WaitingForCPUsFilter) for f in dataset_logger.filters):
        dataset_logger.addFilter(WaitingForCPUsFilter())
    if not sys.stdout.isatty():
        # without a terminal its progress is a 12-line block per dataset at its start (all
        # zeros) and every 10 s after; `score` logs a line of rows scored instead
        logging.getLogger("ray.data._internal.progress").setLevel(logging.WARNING)
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(logging_level=logging.WARNING)
        else:
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                # keep a few idle workers beyond one per CPU: a score actor takes a worker for
                # good, and Ray's default (one per CPU) kills the next ones after 1 s idle, so
                # every later fit, score and aggregate stage paid a fresh worker's imports
                # (a small run on warm Ray: 8.5 s → 4.2 s)
                _system_config={"num_workers_soft_limit": cpus + IDLE_WORKERS_BEYOND_CPUS},
            )
    except Exception as error:  # Ray raises many types for a start that failed
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        hint = (
            f"is the cluster at RAY_ADDRESS={address} up and reachable?"
            if address
            else "a busy machine can time out Ray's start: try again; `ray stop` clears a "
            "stale local Ray; Ray needs a writable temporary folder (RAY_TMPDIR, else /tmp)"
        )
        raise RayStartError(f"could not start Ray ({reason}); {hint}") from None


def beside_ray_start(work: Callable[[], T], warm: Sequence[str] = ()) -> T:
    """``work()`` (driver work that needs no Ray: imports, reading the config, training a
    model in the driver) in a thread while this thread starts embedded local Ray, which takes
    seconds of waiting on its processes, then has its workers import the modules ``warm``
    (``warm_workers``); returns what ``work`` returns. ``work``'s error is raised first (it is
    the one to fix), after Ray has started. Ray already up or a cluster to attach to
    (``RAY_ADDRESS``): ``work()``, then Ray, and no warming (a cluster's workers are not this
    job's alone). ``work`` must not run numpy's matrix products: OpenBLAS's fork handler waits
    for a product in flight in another thread, and Ray's start forks (the demo hung there when
    it generated its data beside it; torch's training and imports never hung it)."""
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        result = work()
        ensure_ray()
        return result
    # Ray must start in the main thread: started from another, its driver hung later
    with ThreadPoolExecutor(1, thread_name_prefix="beside-ray-start") as pool:
        done = pool.submit(work)
        try:
            ensure_ray()
        except RayStartError:
            done.result()
            raise
        warm_workers(warm)
        return done.result()


@ray.remote(num_cpus=1)
def _import_modules(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def warm_workers(modules: Sequence[str]) -> None:
    """One task per CPU of embedded local Ray that imports ``modules`` (not waited for), so
    the worker processes Ray started with are warm by the time the driver, still importing
    or planning, submits the job's first tasks: otherwise each of them paid its imports
    then, one after another (the 10k LSMI job: about 1.5 s less)."""
    for _ in range(int(cluster_cpus()) if modules else 0):
        _import_modules.remote(list(modules))


def cluster_cpus() -> float:
    """The CPUs of the cluster Ray is attached to (those of nodes alive now)."""
    return ray.cluster_resources().get("CPU", 0.0)


def on_this_node() -> dict:
    """Ray options that keep an actor on this process's node: the run's bookkeeping actors
    (progress relays, the fit round's shared parts) live as long as the driver, not as long
    as a worker node an autoscaler may take back or a spot instance may lose."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()

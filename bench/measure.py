"""Measuring a pipeline step for the bench scripts: seconds, the step process's peak RSS and the
largest Ray worker private RSS seen while it ran; and running a step in a fresh child process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from intermodal.schemas.config import JobConfig

RSS_SAMPLE_SECONDS = 0.1


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _descends_from_this_process(pid: int) -> bool:
    """Whether ``pid`` belongs to the Ray this process started (its workers are descendants):
    another job's Ray on the same machine must not count."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def worker_rss_mib() -> float:
    """Largest private resident memory (``RssAnon``) among the running Ray worker processes
    (``ray::`` in their title) of the Ray this process started. Shared pages — the object
    store's mapped blocks, which every worker that touches a block counts in its VmRSS — are
    left out: they are not the process's own growth."""
    largest = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
            if b"ray::" not in cmdline and b"default_worker" not in cmdline:
                continue
            if not _descends_from_this_process(int(status.parent.name)):
                continue
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    largest = max(largest, int(line.split()[1]))
        except (OSError, ValueError):  # the process ended while we looked
            continue
    return largest / 1024


def measured(step: Callable[[], object]) -> dict[str, float]:
    """Seconds of ``step``, this process's peak RSS and the largest Ray worker private RSS."""
    peak = {"worker": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(RSS_SAMPLE_SECONDS):
            peak["worker"] = max(peak["worker"], worker_rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"seconds": seconds, "driver_mib": driver, "worker_mib": peak["worker"]}


def run_child(script: str, arguments: Sequence[str]) -> dict[str, float]:
    """``python script arguments`` in a fresh process; its last stdout line parsed as JSON."""
    done = subprocess.run(
        [sys.executable, script, *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured_step(
    step: str, config: JobConfig, progress: Callable[[str], None]
) -> dict[str, float]:
    """``measured`` of one pipeline step of ``config`` (``fit``, ``score`` or ``aggregate``) on
    local Ray, started before the clock runs."""
    from intermodal.cluster import ensure_ray
    from intermodal.pipelines.aggregate import run_aggregate
    from intermodal.pipelines.fit import run_fit
    from intermodal.pipelines.score import run_score

    ensure_ray()
    steps = {
        "fit": lambda: run_fit(config, progress=progress),
        # a whole scoring pass, even where an earlier run of the bench left finished shards
        "score": lambda: run_score(config, progress=progress, restart=True),
        "aggregate": lambda: run_aggregate(config.output, progress=progress),
    }
    return measured(steps[step])

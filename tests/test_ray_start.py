"""Starting embedded Ray beside the driver's own start-up work (``beside_ray_start``), and its
workers importing what the job's tasks will need, in a process of its own: the test session's
Ray is already up, and this is about starting one."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, threading, time
import ray
from intermodal.cluster import beside_ray_start

seen = {}

def work():
    seen["thread"] = threading.current_thread() is not threading.main_thread()
    seen["ray_was_up"] = ray.is_initialized()
    time.sleep(0.5)  # still running when Ray's start returns or not: either way it is awaited
    raise ValueError("bad config")

WARM = "intermodal.pipelines.score_stage"  # torch and the measures: seconds to import

@ray.remote(num_cpus=1)
def imported():
    import sys
    time.sleep(1)  # both CPUs' workers, side by side
    return WARM in sys.modules

try:
    beside_ray_start(work, warm=[WARM])
except ValueError as error:
    seen["error"] = str(error)
seen["ray_up"] = ray.is_initialized()
seen["warm_workers"] = ray.get([imported.remote() for _ in range(2)], timeout=120)
# Ray started from another thread hung its driver here; started in the main thread it answers
seen["task"] = ray.get(ray.remote(lambda: 1).remote(), timeout=60)
seen["again"] = beside_ray_start(lambda: 2)  # Ray up: the work alone
print(json.dumps(seen))
"""


def test_work_runs_in_a_thread_while_ray_starts_and_its_error_is_raised() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "thread": True,
        "ray_was_up": False,
        "error": "bad config",
        "ray_up": True,  # the work's error comes after Ray's start, which was not cut short
        "warm_workers": [True, True],  # both workers had imported the modules asked for
        "task": 1,
        "again": 2,  # Ray up: the work alone, in this thread
    }

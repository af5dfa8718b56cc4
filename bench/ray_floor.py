"""What any command that starts local Ray pays before its work: a fresh process that imports
``intermodal.cluster``, starts embedded local Ray (``ensure_ray``), runs one task that imports
torch (what every fit and score worker does first) and exits, timed from outside, ``--repeats``
times. Set it beside a job's in-process time: a command can be no faster than this plus its
work.

    python bench/ray_floor.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHILD = """
import time
started = time.perf_counter()
import ray
from intermodal.cluster import ensure_ray
ensure_ray()
up = time.perf_counter()

@ray.remote
def imports_torch() -> None:
    import torch  # noqa: F401

ray.get(imports_torch.remote())
done = time.perf_counter()
print(f"{up - started:.2f} {done - up:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    wholes = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
        )
        whole = time.perf_counter() - start
        wholes.append(whole)
        start_up, task = (float(v) for v in child.stdout.split())
        print(
            f"whole command {whole:.2f} s: imports and Ray's start {start_up:.2f} s, "
            f"one task importing torch {task:.2f} s, the rest Python's start and Ray's stop"
        )
    print(f"median {statistics.median(wholes):.2f} s over {args.repeats}")


if __name__ == "__main__":
    main()

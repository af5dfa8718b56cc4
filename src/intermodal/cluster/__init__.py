"""The only place that starts or attaches to Ray.

Local Ray by default (a laptop, CI, the demo); the cluster named by ``RAY_ADDRESS`` when set
(``ray job submit`` sets it for the driver).
"""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start embedded local Ray, or attach to ``RAY_ADDRESS``; no-op when already up."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()

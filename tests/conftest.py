"""Shared fixtures: one local Ray for the session; small real Parquet inputs in tmp dirs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def one_torch_thread():
    """Tiny models train fastest on one thread, and Ray's workers share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    """Embedded local Ray, started once (ray.init costs seconds); pipelines reuse it."""
    import ray

    from intermodal.cluster import ensure_ray, shutdown_ray

    ensure_ray(num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    shutdown_ray()

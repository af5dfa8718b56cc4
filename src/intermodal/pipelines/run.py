"""How measures travel to Ray's workers."""

from __future__ import annotations

import sys

import ray

from intermodal.measures import Measure
from intermodal.progress import Progress
from intermodal.rundir import RunPaths

__all__ = ["Progress", "RunPaths", "ship_measures"]  # until validation/ imports them directly


def ship_measures(measures: list[Measure]) -> None:
    """Let Ray's workers unpickle ``measures`` whose module they cannot import (a measure
    registered from a notebook or a test module): cloudpickle then sends such a module's code
    by value instead of by name. Measures of installed packages travel by name as usual."""
    for measure in measures:
        module = sys.modules[type(measure).__module__]
        # __main__ already travels by value; intermodal's own modules by name
        if module.__name__ != "__main__" and not module.__name__.startswith("intermodal."):
            ray.cloudpickle.register_pickle_by_value(module)

"""The validation suites (``intermodal validate SUITE``): each reproduces a paper's ground truth
through the full pipeline. Listed here without importing them, so the command line offers the
names at once and loads only the suite it runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Suite:
    entrypoint: str  # module:function, called as function(out, experiments=, n_samples=)
    default_samples: int  # rows per generated data set
    units: str  # what its estimates are
    options: dict[str, Any] = field(default_factory=dict)  # further keywords of the function

    def run(self, out: str, experiments: list[str] | None, n_samples: int) -> pl.DataFrame:
        module, _, function = self.entrypoint.partition(":")
        run: Callable[..., pl.DataFrame] = getattr(importlib.import_module(module), function)
        return run(out, experiments=experiments, n_samples=n_samples, **self.options)


_PID = "intermodal.validation.pid:run_pid_suite"
_FUSION = "intermodal.validation.fusion"
# intense and i2moe: the sizes the model tests' must-shows train on, seconds on a CPU
SUITES = {
    "intershap": Suite("intermodal.validation.intershap:run_intershap_suite", 20_000, "%"),
    "pid": Suite(_PID, 100_000, "bits"),
    "pid_batch": Suite(_PID, 20_000, "bits", {"estimator": "pid_batch"}),
    "lsmi": Suite("intermodal.validation.lsmi:run_lsmi_suite", 20_000, "nats"),
    "intense": Suite(f"{_FUSION}:run_intense_suite", 6000, "relevance; checks 1/0"),
    "i2moe": Suite(f"{_FUSION}:run_i2moe_suite", 3000, "mean expert weight; checks 1/0"),
    "raw": Suite("intermodal.validation.raw:run_raw_suite", 4000, "%, nats, bits; checks 1/0"),
}

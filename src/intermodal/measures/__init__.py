"""The measures and their registry.

``MEASURES`` maps a name to its ``Measure``, in the order score columns, global tables and
report sections follow. A new measure is one module (a ``Measure`` subclass) and one
``register`` call; the generic layers find it here, and a job config is validated against it
(``parse_config``, ``load_config``): the one table of which measures exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intermodal.measures.base import Measure
from intermodal.measures.i2moe import I2MoE
from intermodal.measures.intense import InTense
from intermodal.measures.intershap import InterSHAP, InterSHAPConfig
from intermodal.measures.lsmi import LSMI
from intermodal.measures.pid_batch import PIDBatch
from intermodal.measures.pid_cvx import PIDCVX
from intermodal.schemas.config import JobConfig, read_config, validate_config

MEASURES: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    """Add ``measure`` to the registry (replacing one of the same name); returns it. Its
    settings key must not be a job key or another measure's; measures without settings have
    no key to clash."""
    taken = {m.section for m in MEASURES.values() if m.name != measure.name}
    if measure.section is not None and (
        measure.section in JobConfig.model_fields or measure.section in taken
    ):
        raise ValueError(f"measure '{measure.name}': config key '{measure.section}' is taken")
    MEASURES[measure.name] = measure
    return measure


def unregister(name: str) -> None:
    """Remove a measure registered with ``register`` (a notebook's or a test's)."""
    MEASURES.pop(name, None)


def parse_config(data: Any, source: str = "<config>") -> JobConfig:
    """Validate a mapping as a job config of the registered measures; a ``ConfigError`` names
    ``source`` and the dotted key of every mistake."""
    return validate_config(data, source, MEASURES)


def load_config(uri: str | Path) -> JobConfig:
    """Read and validate a YAML job config from a path or fsspec URI."""
    return parse_config(read_config(uri), str(uri))


def coalition_settings(job: JobConfig) -> InterSHAPConfig:
    """How masked modalities are replaced in the coalition pass every measure reading
    coalition values shares: InterSHAP's settings (``masking``, ``background_size``, ...)."""
    return job.section(InterSHAP.section)


def job_measures(job: JobConfig) -> list[Measure]:
    """The job's measures in registry order (the order of their columns and tables)."""
    return [measure for name, measure in MEASURES.items() if name in job.measures]


for _measure in (InterSHAP(), PIDCVX(), LSMI(), PIDBatch(), I2MoE(), InTense()):
    register(_measure)

__all__ = [
    "MEASURES",
    "Measure",
    "coalition_settings",
    "job_measures",
    "load_config",
    "parse_config",
    "register",
    "unregister",
]

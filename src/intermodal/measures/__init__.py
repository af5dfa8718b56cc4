"""The measures and their registry.

``MEASURES`` maps a name to its ``Measure``, in the order score columns, global tables and
report sections follow. A new measure is one module (a ``Measure`` subclass) and one
``register`` call; the generic layers find it here. ``register`` also tells the job config
about the measure's name, settings section and checks (``schemas.config``).
"""

from __future__ import annotations

from intermodal.measures.base import Measure
from intermodal.measures.i2moe import I2MoE
from intermodal.measures.intense import InTense
from intermodal.measures.intershap import InterSHAP, InterSHAPConfig
from intermodal.measures.lsmi import LSMI
from intermodal.measures.pid_batch import PIDBatch
from intermodal.measures.pid_cvx import PIDCVX
from intermodal.schemas.config import (
    MEASURE_SCHEMAS,
    JobConfig,
    MeasureSchema,
    register_measure_schema,
)

MEASURES: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    """Add ``measure`` to the registry (replacing one of the same name); returns it."""
    register_measure_schema(
        MeasureSchema(
            measure.name, measure.section, measure.settings, measure.check, measure.label_reason
        )
    )
    MEASURES[measure.name] = measure
    return measure


def unregister(name: str) -> None:
    """Remove a measure registered with ``register`` (a notebook's or a test's)."""
    MEASURES.pop(name, None)
    MEASURE_SCHEMAS.pop(name, None)


def coalition_settings(job: JobConfig) -> InterSHAPConfig:
    """How masked modalities are replaced in the coalition pass every measure reading
    coalition values shares: InterSHAP's settings (``masking``, ``background_size``, ...)."""
    return job.section(InterSHAP.section)


def job_measures(job: JobConfig) -> list[Measure]:
    """The job's measures in registry order (the order of their columns and tables)."""
    return [measure for name, measure in MEASURES.items() if name in job.measures]


for _measure in (InterSHAP(), PIDCVX(), LSMI(), PIDBatch(), I2MoE(), InTense()):
    register(_measure)

__all__ = ["MEASURES", "Measure", "coalition_settings", "job_measures", "register", "unregister"]

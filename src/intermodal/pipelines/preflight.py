"""Checks on the driver before Ray starts: what would otherwise fail inside an actor, late and
as hundreds of lines of tracebacks, fails here at once with one line naming the key or file.

The configured model is built with its kwargs, its weights loaded (``weights_only=True``),
and run on a few real rows of the input; its output must have ``num_classes`` values per row.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pyarrow as pa
import ray
import torch

from intermodal.models.protocol import build_model
from intermodal.operators.context import as_tensors
from intermodal.pipelines.inputs import Shard, job_preprocess
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import modality_arrays
from intermodal.schemas.validation import PREPROCESS_COLUMN, first_line, validate_rows

PREFLIGHT_ROWS = 4  # rows of the input the model is tried on


def check_preprocess(job: JobConfig, shard: Shard) -> None:
    """ValueError with one line when ``model.preprocess`` fails on every one of the first rows
    of the first shard: a broken function stops the job here instead of rejecting every row.
    A few rows it cannot read (a corrupt image) are rejected later, each with its reason."""
    preprocess = job_preprocess(job)
    if preprocess is None:
        return
    first = next(shard.reader.iter_groups(shard.uri)).slice(0, PREFLIGHT_ROWS)
    no_duplicates = pa.array([], first.schema.field(job.id_column).type)
    valid, rejects = validate_rows(first, job, no_duplicates, shard.uri, 0, preprocess)
    failed = [r for r in rejects.column("columns").to_pylist() if PREPROCESS_COLUMN in r]
    if valid.num_rows == 0 and len(failed) == first.num_rows > 0:
        raise ValueError(
            f"model.preprocess '{job.model.preprocess}' failed on each of the first "  # type: ignore[union-attr]
            f"{first.num_rows} rows of {shard.uri}: {rejects.column('reason')[0].as_py()}"
        )


def check_model(job: JobConfig, rows: pa.Table) -> None:
    """Build the configured model and run it on ``rows`` (normalised input); ValueError with
    one line naming ``model.*`` or ``num_classes`` when anything is wrong."""
    settings = job.model
    if settings is None:
        return
    model = build_model(settings.factory, settings.kwargs, settings.weights, job.modality_names)
    rows = rows.slice(0, PREFLIGHT_ROWS)
    inputs = as_tensors(job, modality_arrays(job, rows), torch.device("cpu"))
    try:
        with torch.no_grad():
            logits = model.fuse({name: model.encode(name, x) for name, x in inputs.items()})
    except Exception as error:  # any failure of the user's code on real rows
        raise ValueError(
            f"model '{settings.factory}' failed on {rows.num_rows} rows of the input shaped "
            f"as modalities[].shape says: {type(error).__name__}: {first_line(error)}"
        ) from None
    if logits.dim() != 2 or logits.shape != (rows.num_rows, job.num_classes):
        raise ValueError(
            f"num_classes is {job.num_classes}, but model '{settings.factory}' outputs shape "
            f"{tuple(logits.shape)} for {rows.num_rows} rows; it must output "
            f"[rows, num_classes] logits"
        )


@ray.remote(num_cpus=0)
def _import_error(module_name: str) -> str | None:
    """On a Ray worker: why ``module_name`` does not import there, or None."""
    try:
        importlib.import_module(module_name)
    except Exception as error:  # anything the module's import raises counts
        return f"{type(error).__name__}: {first_line(error)}"
    return None


def _found_through_a_relative_path(module_name: str) -> bool:
    """Whether the module's top-level package comes from a relative ``sys.path`` entry (the
    current directory, ``PYTHONPATH=.``), which a process elsewhere resolves differently."""
    spec = importlib.util.find_spec(module_name.split(".")[0])
    origin = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
    if not origin:
        return False
    return any(
        not os.path.isabs(entry) and Path(origin).is_relative_to(Path(entry).resolve())
        for entry in sys.path
    )


def check_model_on_workers(job: JobConfig) -> None:
    """ValueError when the model's module, which imports here, does not import on Ray's workers
    (e.g. it is found through the current directory or a relative PYTHONPATH, and the workers
    run elsewhere): one worker tries, instead of every actor failing later. Embedded local
    Ray's workers share this environment, so there the worker is asked only when the module
    comes from a relative path; on a cluster (``RAY_ADDRESS``) always."""
    if job.model is None:
        return
    module_name = job.model.factory.partition(":")[0]
    if not (os.environ.get("RAY_ADDRESS") or _found_through_a_relative_path(module_name)):
        return
    reason = ray.get(_import_error.remote(module_name))
    if reason is not None:
        raise ValueError(
            f"model.factory '{job.model.factory}': '{module_name}' imports here but not on "
            f"Ray's workers ({reason}); make it importable from any directory: install it "
            "(pip install -e; on every node of a cluster) or put its directory on PYTHONPATH "
            "as an absolute path (docs/usage.md, step 2)"
        )

"""Runs built once per test session and shared: one small run with every measure (InterSHAP,
PID CVX, LSMI, PID BATCH) for the report, partition, export and device tests, and one
``intermodal demo`` for the CLI and the rendered report (each takes tens of seconds)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from jobs import QUICK_ENCODERS  # tests/jobs.py

from intermodal.cli import main
from intermodal.measures import parse_config
from intermodal.pipelines.job import run_job
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

DIMS = {"x1": 8, "x2": 8}
ROWS = 2000
NULL_LABELS = 20  # unlabelled rows: null LSMI terms


def _write_data(uri: str) -> None:
    """OR circuit in x1, x2, a site group, a few unlabelled rows; 3 shards."""
    table = generate_circuit(CircuitSpec(op="or", n_samples=ROWS, dims=8, noise=0.1, seed=1))
    labels = table.column("label").to_pylist()
    labels[:NULL_LABELS] = [None] * NULL_LABELS
    sites = np.where(np.random.default_rng(0).random(ROWS) < 0.4, "north", "south")
    table = pa.table(
        {
            "sample_id": table.column("sample_id"),
            "label": pa.array(labels, pa.int64()),
            "site": pa.array(sites),
            "x1": table.column("x1"),
            "x2": table.column("x2"),
        }
    )
    write_table_shards(table, uri, n_shards=3)


def all_measures_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The run directory (scored on the first call of the session, reused after)."""
    root = Path(tmp_path_factory.getbasetemp()) / "all_measures"
    run = root / "run"
    if (run / "global" / "lsmi.parquet").exists():
        return str(run)
    data = str(root / "data")
    _write_data(data)
    config = parse_config(
        {
            "dataset": "or_circuit",
            "input": data,
            "output": str(run),
            "num_classes": 2,
            "group_columns": ["site"],
            "modalities": [{"name": m, "shape": [d]} for m, d in DIMS.items()],
            "measures": ["intershap", "pid_cvx", "lsmi", "pid_batch"],
            # an untrained FCNN: InterSHAP and the model PID need some model, not a good one
            "model": {
                "name": "fcnn_untrained",
                "factory": "intermodal.models.fcnn:build_fcnn",
                "kwargs": {
                    "modalities": list(DIMS),
                    "dims": list(DIMS.values()),
                    "num_classes": 2,
                    "fusion": "early",
                },
            },
            "intershap": {"background_size": 8},
            "pid_cvx": {"n_clusters": 4, "fit_rows": 2000, "encoders": QUICK_ENCODERS},
            "lsmi": {
                "folds": 3,
                "fit_rows": 2000,
                "classifier": {"hidden": 16, "epochs": 3, "lr": 1e-2},
                "entropy": {"n_components": 2, "epochs": 2, "lr": 1e-2},
            },
            "pid_batch": {
                "block_size": 256,
                "epochs": 1,
                "folds": 3,
                "fit_rows": 2000,
                "classifier": {"hidden": 16, "epochs": 3, "lr": 1e-2},
            },
            "compute": {"batch_size": 500},
        }
    )
    run_job(config, progress=lambda _: None)
    return str(run)


def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """``intermodal demo`` on 2,000 samples: its output folder, what it printed and its exit
    code (run on the first call of the session, reused after)."""
    out = Path(tmp_path_factory.getbasetemp()) / "demo"
    printed = out / "printed.txt"
    if not printed.exists():
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = main(["demo", "--out", str(out), "--samples", "2000"])
        printed.write_text(f"{code}\n{stdout.getvalue()}")
    code, text = printed.read_text().split("\n", 1)
    return out, text, int(code)

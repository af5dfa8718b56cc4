"""``validate lsmi``: paper 001 Table 1 through the full pipeline (fit → score → aggregate).

Each experiment generates circuit-logic data (``synthetic.lsmi_data``: two fair bits and the
gate embedded in ``CIRCUIT_DIMS`` dimensions with N(0, 0.1²) noise per feature), writes it as
Parquet shards and runs ``score`` with ``measures: [lsmi]`` and no model: KNIFE entropies and
5-fold cross-fitted classifiers are fitted on every row, then every row is scored by the
classifiers of its held-out fold. The estimate is the whole-dataset ``adjusted_mean`` row of
term ``<T>`` and modalities ``[x1, x2]`` (nats), the truth 001 Table 1 (``CIRCUIT_TRUTH``).
"""

from __future__ import annotations

import polars as pl

from intermodal import storage
from intermodal.measures import parse_config
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import PID_TERMS
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CIRCUIT_TRUTH, CircuitSpec, generate_circuit
from intermodal.validation.experiments import overall_terms, run_job
from intermodal.validation.rows import chosen_experiments, validation_row, write_validation

EXPERIMENTS = ["xor", "or", "xor_not"]
CIRCUIT_DIMS = 8
CIRCUIT_NOISE = 0.1
N_SHARDS = 4


def lsmi_job(experiment: str, data_uri: str, run_uri: str, n_samples: int) -> JobConfig:
    return parse_config(
        {
            "dataset": f"lsmi_{experiment}",
            "input": data_uri,
            "output": run_uri,
            "num_classes": 2,
            "modalities": [{"name": name, "shape": [CIRCUIT_DIMS]} for name in ("x1", "x2")],
            "measures": ["lsmi"],
            "lsmi": {"fit_rows": n_samples},
        }
    )


def run_lsmi_suite(
    out: str,
    experiments: list[str] | None = None,
    n_samples: int = 20_000,
    seed: int = 0,
    progress: Progress = print,
) -> pl.DataFrame:
    """Run the experiments (default: all three) and write ``out/validation.parquet``."""
    rows = []
    for experiment in chosen_experiments(experiments, EXPERIMENTS):
        spec = CircuitSpec(
            op=experiment, n_samples=n_samples, dims=CIRCUIT_DIMS, noise=CIRCUIT_NOISE, seed=seed
        )
        data_uri = storage.join(out, "data", experiment)
        table = generate_circuit(spec).select(["sample_id", "label", "x1", "x2"])
        write_table_shards(table, data_uri, N_SHARDS)
        job = lsmi_job(experiment, data_uri, storage.join(out, "runs", experiment), n_samples)
        table = run_job(job, progress)
        estimates = overall_terms(table, "lsmi", "adjusted_mean", modalities=("x1", "x2"))
        rows += [
            validation_row(
                "lsmi", experiment, term, estimates[term], CIRCUIT_TRUTH[experiment][term]
            )
            for term in PID_TERMS
        ]
    return write_validation(out, rows)

"""``demo``: HD-XOR synergy and uniqueness (M = 2), the XOR function and a trained early-fusion
FCNN, each scored (InterSHAP and exact PID of labels and predictions) and aggregated into its
own run directory, then one summary table.

Each run's PID is of the inputs its model reads, named in the column ``pid_on``: the XOR
function's rows are the clean bit columns ``m<i>_bits`` (one or two 0/1 values per modality),
the FCNN's the high-dimensional features ``m<i>`` (200 and 100 values). ``labels_I_codes/
features`` puts what the PID codes keep about the label, ``I(code_0, code_1; y)``, next to a
held-out classifier's estimate of ``I(x_0, x_1; y)`` on the same inputs (bits)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import polars as pl
import pyarrow as pa

from intermodal import storage
from intermodal.cluster import beside_ray_start, cluster_cpus
from intermodal.measures.pid_cvx import CODES_INFORMATION, FEATURE_INFORMATION
from intermodal.models.training import TrainConfig
from intermodal.pipelines.job import run_job
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.report import Chapter, chapter, write_combined_report
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, PRED
from intermodal.synthetic.hdxor import HDXORSpec
from intermodal.validation.experiments import (
    SplitData,
    fcnn_job,
    headline,
    overall_terms,
    pid_headline,
    split_hdxor,
    train_fcnn,
    xor_function_job,
)

DEMO_SETTINGS = ("synergy", "uniqueness")
DEMO_MEASURES = ("intershap", "pid_cvx")
PID_MEASURE = DEMO_MEASURES[1]  # of the labels and of the model's predictions
# The demo shows what the tool reports; its settings are for a run of about half a minute,
# not for the figures the validation suites hold to (docs/choices.md): the FCNN's validation
# accuracy is within 0.005 of its 30-epoch value by epoch 10, and the PID encoders stop 600
# steps after their best held-out loss (the default waits 1,600 for an XOR-like plateau to end;
# on the demo's data the best comes within the first 1,000).
DEMO_TRAINING = TrainConfig(epochs=10, batch_size=256, lr=1e-3)
DEMO_SECTIONS = {PID_MEASURE: {"encoders": {"patience": 3}}}
# one run draws its report chapter at a time: matplotlib does not promise more
DRAWING = threading.Lock()


def pid_inputs(job: JobConfig) -> str:
    """What a run's PID is computed on: its modalities' input columns and sizes,
    ``m0_bits, m1_bits (1 + 1 values)``."""
    columns = ", ".join(m.source_column for m in job.modalities)
    sizes = " + ".join(str(m.size) for m in job.modalities)
    return f"{columns} ({sizes} values)"


def information_headline(table: pa.Table, pair: tuple[str, str]) -> str:
    """``I(codes; label)/I(features; label)`` of one pair over the whole dataset, bits, as
    ``0.83/0.79``."""
    values = [
        overall_terms(table, PID_MEASURE, statistic, LABEL, pair)[""]
        for statistic in (CODES_INFORMATION, FEATURE_INFORMATION)
    ]
    return "/".join(f"{value:.2f}" for value in values)


@dataclass(frozen=True)
class DemoRun:
    """One of the demo's runs: its job and, for a model it trained, the validation accuracy."""

    job: JobConfig
    validation_accuracy: float | None = None

    @property
    def name(self) -> str:
        return self.job.output.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DemoResult:
    """The summary table, a row per run, and each run's report chapter."""

    table: pl.DataFrame
    chapters: list[Chapter]


def write_data(out: str, n_samples: int) -> list[SplitData]:
    """Both data sets, their test rows written as shards."""
    return [
        split_hdxor(
            HDXORSpec(setting=setting, n_modalities=2, n_samples=n_samples, seed=seed),
            storage.join(out, "data", f"hdxor_{setting}"),
        )
        for seed, setting in enumerate(DEMO_SETTINGS)
    ]


def train_runs(
    out: str, splits: list[SplitData], background_size: int, progress: Progress
) -> list[DemoRun]:
    """Both FCNNs trained (in this process); the four runs."""
    runs = []
    for split in splits:
        setting = split.spec.setting
        fcnn_run = storage.join(out, f"fcnn_{setting}")
        weights = storage.join(RunPaths(fcnn_run).artifacts, "fcnn_early.pt")
        trained = train_fcnn(split, weights, "early", DEMO_TRAINING, progress)
        xor_run = storage.join(out, f"xor_{setting}")
        runs += [
            DemoRun(
                xor_function_job(split, xor_run, background_size, DEMO_MEASURES, DEMO_SECTIONS)
            ),
            DemoRun(
                fcnn_job(
                    split, fcnn_run, weights, "early", background_size, DEMO_MEASURES, DEMO_SECTIONS
                ),
                trained.validation_accuracy,
            ),
        ]
    return runs


def run_demo(
    out: str, n_samples: int = 20_000, background_size: int = 128, progress: Progress = print
) -> DemoResult:
    # the data before Ray starts: numpy's matrix products must not run while Ray forks its
    # processes (OpenBLAS's fork handler waits for a product in flight: the demo hung there)
    splits = write_data(out, n_samples)
    # the training (seconds, torch, in this process) while Ray starts
    runs = beside_ray_start(partial(train_runs, out, splits, background_size, progress))
    # runs side by side, one per CPU: a run's PID fit trains its encoders on one CPU while
    # another run scores, aggregates or draws its report chapter
    printing = threading.Lock()

    def one_run(run: DemoRun) -> tuple[dict, Chapter]:
        def prefixed(line: str) -> None:
            with printing:  # one print is a write of the line and one of its newline
                progress(f"{run.name} | {line}")

        table = run_job(run.job, prefixed)
        with DRAWING:
            drawn = chapter(run.job.output)
        return summary_row(run, table), drawn

    at_once = max(1, min(len(runs), int(cluster_cpus())))
    with ThreadPoolExecutor(at_once, thread_name_prefix="demo-run") as pool:
        done = list(pool.map(one_run, runs))
    return DemoResult(pl.DataFrame([row for row, _ in done]), [drawn for _, drawn in done])


def summary_row(run: DemoRun, table: pa.Table) -> dict:
    """The run's row of the summary table (its columns: the module docstring)."""
    job = run.job
    scores = headline(table)
    pair = (job.modality_names[0], job.modality_names[1])
    return {
        "run": run.name,
        "model": job.model_name,
        "val_acc": run.validation_accuracy,
        "intershap_global_%": round(100 * scores["global"], 1),
        "local_mean_%": round(100 * scores["local_mean"], 1),
        "pid_on": pid_inputs(job),
        "pid_labels": pid_headline(table, PID_MEASURE, LABEL, pair),
        "pid_model": pid_headline(table, PID_MEASURE, PRED, pair),
        "labels_I_codes/features": information_headline(table, pair),
    }


def demo_report(out: str, chapters: list[Chapter]) -> str:
    """One report page for all of the demo's runs, ``OUT/report/index.html``."""
    return write_combined_report(chapters, out, "intermodal demo: HD-XOR synergy and uniqueness")

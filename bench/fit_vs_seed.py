"""Learned measures against the seed repositories: fit + score time and estimates, same data.

Per task, in one process, interleaved (seed, then ours, ``--repeats`` times; median seconds):

* **seed**: the seed repository's own entry point (``bench/seeds.py``, imported from a
  checkout, never copied) with its default hyper-parameters, one torch thread: it trains on the
  first rows and evaluates on the held-out rest.
* **ours, 1 thread**: the measure's ``fit`` (its parts one after another, ``InlineWorkers``) on
  every row and the score operator over every row (cross-fitted, so each row is scored by
  models that never saw it), one torch thread, in this process: the same code the pipeline
  runs, without Ray. Estimates: the measure's whole-dataset terms from those scores.
* **ours, pipeline**: ``run_score`` + ``run_aggregate`` on local Ray, as shipped (fit parts as
  Ray tasks of one CPU each, side by side on this machine's cores); Ray is started beforehand.

``--busy`` adds the 1-thread and pipeline runs again while another CPU-bound process (a Python
loop) runs, and prints busy ÷ quiet.

Tasks (the issue's data): LSMI on circuit-logic XOR and OR (two fair bits embedded in 16
dimensions, N(0, 0.1²) noise, ``synthetic.lsmi_data``; seed: 8,000 train + 2,000 held out;
truth 001 Table 1, nats) and PID BATCH on bitwise XOR (``synthetic.pid_data``, 16-d, noise 0.1;
seed: 10,000 train + 2,000 test; truth 003 Table 1, bits). Error: the largest |estimate − truth|
over R, U1, U2, S.

    python bench/fit_vs_seed.py --lsmi-repo /tmp/seeds/LSMI_Estimator --pid-repo /tmp/seeds/PID
    python bench/fit_vs_seed.py ... --quick    # 2,000 rows, LSMI XOR only

``--cli``: LSMI only, both sides as commands timed whole, interleaved (the seed's entry point in
a fresh process via ``bench/seeds.py``; ``intermodal score`` of the job, which starts local
Ray, fits, scores and aggregates):

    python bench/fit_vs_seed.py --cli --lsmi-repo /tmp/seeds/LSMI_Estimator \
        --seed-lib /tmp/seeds/lib --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from seeds import TERMS, run_lsmi_seed, run_pid_batch_seed  # bench/seeds.py
from tables import print_finished, show  # bench/tables.py

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.measures import MEASURES, parse_config
from intermodal.measures.base import InlineWorkers, global_table
from intermodal.pipelines.aggregate import file_state
from intermodal.pipelines.job import run_job
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig, dump_config
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CIRCUIT_TRUTH, CircuitSpec, generate_circuit
from intermodal.synthetic.pid_data import BitwiseSpec, generate_bitwise
from intermodal.validation.experiments import overall_terms

HERE = Path(__file__).resolve().parent
DIMS, NOISE = 16, 0.1
PID_TRUTH = {"xor": {"R": 0.0, "U1": 0.0, "U2": 0.0, "S": 1.0}}  # bits, 003 Table 1
SPIN = "while True: pass"


@dataclass(frozen=True)
class Task:
    name: str
    measure: str
    table: pa.Table  # sample_id, label, x1, x2
    held_out: int  # the seed's last rows held out
    truth: dict[str, float]
    units: str

    def arrays(self, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = self.table.slice(
            rows.start or 0, (rows.stop or self.table.num_rows) - (rows.start or 0)
        )
        return (
            modality_values(part.column("x1"), DIMS),
            modality_values(part.column("x2"), DIMS),
            part.column("label").to_numpy(),
        )


def quiet(_: str) -> None:
    """Progress of the timed fits: not printed (printing is not what is timed)."""


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tasks(rows: int, quick: bool) -> list[Task]:
    found = []
    for op in ["xor"] if quick else ["xor", "or"]:
        table = generate_circuit(CircuitSpec(op=op, n_samples=rows, dims=DIMS, noise=NOISE, seed=0))
        found.append(Task(f"LSMI {op}", "lsmi", table, rows // 5, CIRCUIT_TRUTH[op], "nats"))
    if not quick:
        n = rows + rows // 5
        table = generate_bitwise(BitwiseSpec(op="xor", n_samples=n, dims=DIMS, noise=NOISE, seed=0))
        found.append(Task("PID BATCH xor", "pid_batch", table, rows // 5, PID_TRUTH["xor"], "bits"))
    return [
        Task(
            t.name,
            t.measure,
            t.table.select(["sample_id", "label", "x1", "x2"]),
            t.held_out,
            t.truth,
            t.units,
        )
        for t in found
    ]


def job(task: Task, data: str, out: str) -> JobConfig:
    return parse_config(
        {
            "dataset": task.name.replace(" ", "_"),
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [DIMS]} for m in ("x1", "x2")],
            "measures": [task.measure],
            task.measure: {"fit_rows": task.table.num_rows},
        }
    )


def our_terms(task: Task, table: pa.Table) -> dict[str, float]:
    statistic = "adjusted_mean" if task.measure == "lsmi" else "pid"
    terms = overall_terms(table, task.measure, statistic, "label", ("x1", "x2"))
    return {t: terms[t] for t in TERMS}


def run_seed(task: Task, repos: argparse.Namespace) -> dict[str, float]:
    n = task.table.num_rows
    train, test = task.arrays(slice(0, n - task.held_out)), task.arrays(slice(n - task.held_out, n))
    if task.measure == "lsmi":
        return run_lsmi_seed(repos.lsmi_repo, train, test)
    return run_pid_batch_seed(repos.pid_repo, train, test, num_labels=2)


def run_in_process(task: Task, root: str) -> dict[str, float]:
    """Fit and score every row in this process, one torch thread; terms from the scores."""
    config = job(task, root, storage.join(root, "in_process"))
    measure = MEASURES[task.measure]
    start = time.perf_counter()
    measure.fit(config, task.table, quiet, InlineWorkers(quiet))
    scores = ScoreOperator(config, [measure])(task.table)
    seconds = time.perf_counter() - start
    uri = storage.join(root, "in_process", "scores.parquet")
    storage.write_table(scores, uri)
    state = file_state(uri, config, [measure])
    summaries, own = state[measure.name]
    table = global_table(measure.finalize(config, own, summaries))
    return {"seconds": seconds, **our_terms(task, table)}


def run_pipeline(task: Task, root: str, attempt: str) -> dict[str, float]:
    data = storage.join(root, "data")
    config = job(task, data, storage.join(root, f"pipeline-{attempt}"))
    start = time.perf_counter()
    table = run_job(config, progress=lambda _: None)
    return {"seconds": time.perf_counter() - start, **our_terms(task, table)}


def run_seed_command(task: Task, root: str, args: argparse.Namespace) -> dict[str, float]:
    """The seed's entry point as a command of its own (``bench/seeds.py``): wall time of the
    whole process, its start and imports included, as a user's run of the seed script."""
    data = Path(root, "seed_data.npz")
    if not data.exists():
        x1, x2, y = task.arrays(slice(0, task.table.num_rows))
        np.savez(data, x1=x1, x2=x2, y=y, held_out=task.held_out)
    command = [sys.executable, str(HERE / "seeds.py"), "lsmi", "--repo", str(args.lsmi_repo)]
    command += ["--data", str(data)]
    if args.seed_lib is not None:
        command += ["--seed-lib", str(args.seed_lib)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    terms = json.loads(done.stdout.strip().splitlines()[-1])
    return {**{t: terms[t] for t in TERMS}, "seconds": seconds}


def run_our_command(task: Task, root: str, attempt: str) -> dict[str, float]:
    """``intermodal score`` (fit, score, aggregate) as a command: a fresh process that starts
    its own local Ray, into a new run directory so that it fits."""
    out = storage.join(root, f"command-{attempt}")
    config = Path(root, f"command-{attempt}.yaml")
    config.write_text(dump_config(job(task, storage.join(root, "data"), out)))
    start = time.perf_counter()
    command = [sys.executable, "-m", "intermodal.cli", "score", str(config)]
    subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    table = storage.read_table(storage.join(out, "global", f"{task.measure}.parquet"))
    return {"seconds": seconds, **our_terms(task, table)}


@contextmanager
def busy(enabled: bool) -> Iterator[None]:
    """Another CPU-bound process for the duration, when ``enabled``."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if enabled else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def compare(task: Task, args: argparse.Namespace) -> list[dict]:
    root = tempfile.mkdtemp(prefix="fit_vs_seed_")
    write_table_shards(task.table, storage.join(root, "data"), 4)
    runners: dict[str, Callable[[str], dict]] = {
        "seed": lambda _: run_seed(task, args),
        "ours, 1 thread": lambda _: run_in_process(task, root),
        "ours, pipeline": lambda attempt: run_pipeline(task, root, attempt),
    }
    if args.cli:
        runners = {
            "seed": lambda _: run_seed_command(task, root, args),
            "ours, intermodal score": lambda attempt: run_our_command(task, root, attempt),
        }
    runs: dict[tuple[str, bool], list[dict]] = {}
    for loaded in [False, True] if args.busy else [False]:
        for repeat in range(args.repeats):
            for name, runner in runners.items():
                if loaded and name == "seed":
                    continue
                with busy(loaded):
                    result = runner(f"{repeat}-{loaded}")
                log(
                    f"[bench] {task.name}: {name}{' (busy)' if loaded else ''} "
                    f"{result['seconds']:.1f} s"
                )
                runs.setdefault((name, loaded), []).append(result)
    seed_seconds = statistics.median(r["seconds"] for r in runs[("seed", False)])
    rows = []
    for (name, loaded), results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        last = results[-1]
        quiet = statistics.median(r["seconds"] for r in runs[(name, False)])
        rows.append(
            {
                "task": task.name,
                "run": name + (" (busy)" if loaded else ""),
                "seconds": seconds,
                "seed/this": seed_seconds / seconds,
                "busy/quiet": seconds / quiet if loaded else None,
                **{t: last[t] for t in TERMS},
                "max error": max(abs(last[t] - task.truth[t]) for t in TERMS),
                "units": task.units,
            }
        )
    return rows


def warm_up() -> None:
    """Pay torch's one-off costs (its optimiser imports the compiler stack on first use) before
    anything is timed, so neither side is charged for them."""
    table = generate_circuit(CircuitSpec(op="xor", n_samples=200, dims=2, seed=1))
    config = parse_config(
        {
            "dataset": "warm",
            "input": "/tmp",
            "output": tempfile.mkdtemp(),
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [2]} for m in ("x1", "x2")],
            "measures": ["lsmi"],
            "lsmi": {"fit_rows": 200, "classifier": {"epochs": 1}, "entropy": {"epochs": 1}},
        }
    )
    rows = table.select(["sample_id", "label", "x1", "x2"])
    MEASURES["lsmi"].fit(config, rows, quiet, InlineWorkers(quiet))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lsmi-repo", type=Path, required=True, help="LSMI_Estimator checkout")
    parser.add_argument("--pid-repo", type=Path, help="pliang279/PID checkout (not for --cli)")
    parser.add_argument(
        "--seed-lib", type=Path, help="folder with hydra-core and omegaconf for LSMI_Estimator"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows per data set")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--busy", action="store_true", help="also time ours next to a CPU hog")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, LSMI XOR only")
    parser.add_argument(
        "--cli",
        action="store_true",
        help="LSMI only: the seed's entry point and `intermodal score`, each a command of its "
        "own, timed whole",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pid_repo is None and not args.cli:
        raise SystemExit("--pid-repo is needed unless --cli")
    if args.quick:
        args.rows = 2000
    if args.seed_lib is not None:
        sys.path.insert(0, str(args.seed_lib.resolve()))
    if args.cli:
        main_cli(args)
        return
    torch.set_num_threads(1)
    ensure_ray()
    warm_up()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows = [row for task in tasks(args.rows, args.quick) for row in compare(task, args)]
    show(
        f"Fit + score, ours vs the seed repositories, {args.rows} rows (+ {args.rows // 5} "
        f"for PID's test split), median of {args.repeats}",
        pl.DataFrame(rows),
        [
            "seed: its entry point with its defaults, 1 torch thread, trained on the first rows,",
            "  terms of the held-out rows; ours, 1 thread: fit + score of every row in-process;",
            "  ours, pipeline: run_score + run_aggregate on local Ray (fit parts side by side);",
            "  busy: the same next to another CPU-bound process. LSMI nats, PID BATCH bits.",
        ],
        float_precision=3,
    )
    print_finished(started, load_before)


def main_cli(args: argparse.Namespace) -> None:
    """Both sides as commands, interleaved: what a user waits for, start-up included."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    lsmi_tasks = [t for t in tasks(args.rows, args.quick) if t.measure == "lsmi"]
    rows = [row for task in lsmi_tasks for row in compare(task, args)]
    show(
        f"LSMI as commands, ours vs the seed repository, {args.rows} rows, median of "
        f"{args.repeats}",
        pl.DataFrame(rows).drop("busy/quiet"),
        [
            "seed: a fresh process running its entry point (its defaults, torch's default",
            "  threads), trained on the first 80 %, terms of the held-out rows;",
            "  ours: `intermodal score job.yaml` in a fresh process: local Ray started, fit,",
            "  score, aggregate. Seconds are the whole command's; LSMI nats.",
        ],
        float_precision=3,
    )
    print_finished(started, load_before)


if __name__ == "__main__":
    main()

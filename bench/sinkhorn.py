"""Sinkhorn projection (PID BATCH): batched log-domain ``sinkhorn`` against per-slice solves.

Inputs per shape ``[C, m, m]`` and dtype, as PID BATCH builds them for ``C`` labels and a
minibatch of ``m`` rows: ``log_a ~ --kernel-scale · N(0, 1)`` and, from two random "classifiers"
(softmax of N(0, 1) logits, one per modality), row marginals ``p̂(y | x1_i) / m`` and column
marginals ``p̂(y | x2_j) / m`` whose totals per label differ, rescaled to their mean mass with
``common_mass`` once, outside the timings, so that every method gets the same equal-mass
problem. All methods stop at the same tolerance ``--tol``:

* ours: ``intermodal.estimators.sinkhorn.sinkhorn_with_error`` on the whole ``[C, m, m]`` batch
  (the row error it reports is shown);
* loop: the same function on each ``[m, m]`` slice in a Python loop (the reference code's
  per-label loop, with our solver inside);
* POT: ``ot.sinkhorn(a, b, M=−log_a, reg=1, method="sinkhorn_log", stopThr=tol)`` per slice on
  numpy arrays (on the CPU whatever ``--device``); its stopping test is the L2 norm of the
  column-marginal error every 10 iterations, at least as strict as our max-abs row error.

Median seconds of ``--repeats`` calls each, the three timed side by side on the same inputs;
a method whose first call takes over ``REPEAT_BELOW_S`` runs once. The plans are compared
(ours against POT) by their largest absolute and relative-to-largest-entry difference.

    python bench/sinkhorn.py                      # C 2 10, m 64 256 1024, float64 and float32
    python bench/sinkhorn.py --repeats 2 --sizes 64 256
    python bench/sinkhorn.py --device cuda        # ours and loop on the GPU, POT on the CPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import ot
import polars as pl
import torch
from tables import show  # bench/tables.py, beside this script

from intermodal.estimators.sinkhorn import common_mass, sinkhorn_with_error

DESCRIPTION = "Sinkhorn projection: batched log-domain sinkhorn against per-slice loops and POT."
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# a method is rerun (median taken) only while one call is cheaper than this
REPEAT_BELOW_S = 5.0
# POT stops on its own test; this only bounds a run that would never get there
POT_MAX_ITERS = 100_000

T = TypeVar("T")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def random_problem(
    labels: int, m: int, kernel_scale: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_a [C, m, m]`` and common-mass log marginals ``[C, m]`` (CPU, float64)."""
    log_a = kernel_scale * torch.randn(labels, m, m, generator=generator, dtype=torch.float64)
    logits_1, logits_2 = torch.randn(2, m, labels, generator=generator, dtype=torch.float64)
    log_row = torch.log_softmax(logits_1, dim=-1).T - np.log(m)
    log_col = torch.log_softmax(logits_2, dim=-1).T - np.log(m)
    log_row, log_col = common_mass(log_row, log_col)
    return log_a, log_row, log_col


def timed(call: Callable[[], T], repeats: int, synchronize: Callable[[], None]) -> tuple[float, T]:
    """(median seconds, last result) of ``repeats`` calls (one when the first is slow)."""
    seconds = []
    while True:
        started = time.perf_counter()
        result = call()
        synchronize()
        seconds.append(time.perf_counter() - started)
        if len(seconds) >= repeats or seconds[0] > REPEAT_BELOW_S:
            return statistics.median(seconds), result


def pot_per_slice(
    log_a: np.ndarray, log_row: np.ndarray, log_col: np.ndarray, tol: float
) -> tuple[np.ndarray, int]:
    """POT's log-domain Sinkhorn on each slice: plans ``[C, m, m]`` and the most iterations."""
    plans, most = [], 0
    for a, b, kernel in zip(np.exp(log_row), np.exp(log_col), log_a, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence shows in the |Δ| column
            plan, info = ot.sinkhorn(
                a,
                b,
                -kernel,
                reg=1.0,
                method="sinkhorn_log",
                numItermax=POT_MAX_ITERS,
                stopThr=tol,
                log=True,
            )
        plans.append(plan)
        most = max(most, int(info["niter"]) + 1)
    return np.stack(plans), most


def bench_row(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    dtype_name: str,
    args: argparse.Namespace,
) -> dict[str, object]:
    """One table row: the three methods on ``problem`` cast to ``dtype_name``."""
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    log_a, log_row, log_col = (x.to(DTYPES[dtype_name]) for x in problem)
    labels, m, _ = log_a.shape
    on_device = [x.to(device) for x in (log_a, log_row, log_col)]
    options = {"n_iters": args.max_iters, "tol": args.tol, "check_every": args.check_every}

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        return sinkhorn_with_error(*on_device, **options)

    def loop() -> list[torch.Tensor]:
        slices = zip(*on_device, strict=True)
        return [sinkhorn_with_error(*one, **options)[0] for one in slices]

    if device.type == "cuda":  # kernels and allocator warmed outside the timings
        ours()
        loop()
        synchronize()
    with torch.no_grad():
        ours_s, (log_q, error) = timed(ours, args.repeats, synchronize)
        loop_s, _ = timed(loop, args.repeats, synchronize)
    arrays = [x.numpy() for x in (log_a, log_row, log_col)]
    pot_s, (pot_plans, pot_iters) = timed(
        lambda: pot_per_slice(*arrays, args.tol), args.repeats, lambda: None
    )
    plan = log_q.exp().cpu().numpy()
    difference = float(np.abs(plan - pot_plans).max())
    return {
        "shape": f"{labels}x{m}x{m}",
        "dtype": dtype_name,
        "ours s": ours_s,
        "loop s": loop_s,
        "POT s": pot_s,
        "loop/ours": loop_s / ours_s,
        "POT/ours": pot_s / ours_s,
        "ours row err": f"{float(error.max()):.1e}",
        "POT iters": pot_iters,
        "max |Δ| plan": f"{difference:.1e}",
        "max |Δ| / max q": f"{difference / float(plan.max()):.1e}",
    }


def bench_table(args: argparse.Namespace) -> pl.DataFrame:
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for m in args.sizes:
        for labels in args.labels:
            problem = random_problem(labels, m, args.kernel_scale, generator)
            for dtype_name in args.dtypes:
                row = bench_row(problem, dtype_name, args)
                rows.append(row)
                log(f"[bench] {row['shape']} {dtype_name} done, ours {row['ours s']:.3f} s")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--labels", type=int, nargs="+", default=[2, 10], help="C values")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="m values")
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=["float64", "float32"]
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for ours and loop (cpu, cuda, cuda:1, ...)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help=f"calls per method (median); one where the first takes over {REPEAT_BELOW_S:g} s",
    )
    parser.add_argument(
        "--tol", type=float, default=1e-6, help="stopping tolerance of every method"
    )
    parser.add_argument("--check-every", type=int, default=10, help="ours: iterations per check")
    parser.add_argument("--max-iters", type=int, default=10_000, help="ours: n_iters")
    parser.add_argument("--kernel-scale", type=float, default=1.0, help="log_a = scale · N(0, 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, as numpy's exp and logsumexp under POT)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = bench_table(args)
    notes = [
        f"ours / loop / POT s: median of {args.repeats} calls (one call where the first takes "
        f"over {REPEAT_BELOW_S:g} s); ours and loop on {args.device} under torch.no_grad, "
        f"{torch.get_num_threads()} torch threads; POT on numpy (CPU) per slice",
        f"stopping: tol {args.tol:g}; ours max-abs row error, checked every "
        f"{args.check_every} iterations (ours row err: the error it stopped at); POT L2 norm of "
        "the column error, checked after iterations 1, 11, 21, … (POT iters: most over slices)",
        "max |Δ| plan: largest |q_ours − q_POT| over the batch; / max q: relative to the largest "
        "plan entry",
        f"torch {torch.__version__}, POT {ot.__version__}, numpy {np.__version__}",
    ]
    title = (
        f"Sinkhorn projection, log_a = {args.kernel_scale:g}·N(0, 1), softmax marginals "
        f"rescaled to common mass (seed {args.seed})"
    )
    with pl.Config(tbl_rows=-1):  # every row (show sets the rest of the layout)
        show(title, table, notes, float_precision=4)
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

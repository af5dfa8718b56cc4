"""Exact PID solve: ``pid_from_joint`` against the paper's CVX program written plainly.

On Dirichlet-random joints ``p(x1, x2, y)`` (dense, and a sparse variant with about half of the
cells set to zero and the rest renormalised), per shape:

* ours: ``intermodal.estimators.pid_cvx.pid_from_joint`` (one flat variable over the support,
  sparse marginal matrices), median seconds of ``--repeats`` calls, the whole call timed.
* plain: paper 003 App. B.1 as the reference code states it (pliang279/PID ``synthetic/rus.py``,
  re-stated here from the paper, not copied): one dense non-negative ``[k1, k2]`` variable
  ``Q_y`` per label, minimise ``Σ_y Σ rel_entr(Q_y, Σ_y' Q_y')`` (= −H_q(Y | X1, X2)), one scalar
  constraint per ``(x1, y)`` and per ``(x2, y)`` added in Python loops, ``problem.solve()`` with
  cvxpy's default solver choice. Construction + solve in a child process stopped after
  ``--max-seconds``; median of ``--repeats`` runs while a run takes under 10 s, else one run.

Both maximisers go through the same identities (bits) so the difference shows the optimisers.

    python bench/pid_cvx.py                     # shapes 10x10x5, 20x20x10, 50x50x10
    python bench/pid_cvx.py --max-seconds 30    # give the plain program less time
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import cvxpy as cp
import numpy as np
import polars as pl
from tables import show  # bench/tables.py, beside this script

from intermodal.estimators.pid_cvx import pid_from_joint

DESCRIPTION = "Exact PID: pid_from_joint against the paper's CVX program written plainly."
DEFAULT_SHAPES = ["10x10x5", "20x20x10", "50x50x10"]
SPARSE_FRACTION = 0.5
# the plain program is rerun (median taken) only while one run is cheaper than this
PLAIN_REPEAT_BELOW_S = 10.0


@dataclass(frozen=True)
class PlainRun:
    """The plain program's maximiser ``q [k1, k2, ky]`` and how it went."""

    q: np.ndarray
    seconds: float
    solver_s: float
    solver: str
    status: str


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def random_joint(shape: tuple[int, int, int], sparse: bool, rng: np.random.Generator) -> np.ndarray:
    p = rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
    if sparse:
        p[rng.random(shape) < SPARSE_FRACTION] = 0.0
    return p / p.sum()


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information_bits(pxy: np.ndarray) -> float:
    return entropy_bits(pxy.sum(axis=1)) + entropy_bits(pxy.sum(axis=0)) - entropy_bits(pxy)


def pid_terms(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``[R, U1, U2, S]`` (bits) of ``p`` from a maximiser ``q``, by the identities that
    ``pid_from_joint`` uses (``I_q(X1, X2; Y)`` through ``p``'s ``H(Y)``)."""
    info1 = mutual_information_bits(p.sum(axis=1))
    info2 = mutual_information_bits(p.sum(axis=0))
    info12 = mutual_information_bits(p.reshape(-1, p.shape[2]))
    info_q = entropy_bits(p.sum(axis=(0, 1))) - (entropy_bits(q) - entropy_bits(q.sum(axis=2)))
    return np.array([info1 + info2 - info_q, info_q - info2, info_q - info1, info12 - info_q])


def plain_program(p: np.ndarray) -> PlainRun:
    """Paper 003 App. B.1 written plainly: dense Q_y per label, loops of scalar constraints."""
    started = time.perf_counter()
    k1, k2, ky = p.shape
    p1y, p2y = p.sum(axis=1), p.sum(axis=0)
    q = [cp.Variable((k1, k2), nonneg=True) for _ in range(ky)]
    q12 = sum(q)
    objective = sum(cp.sum(cp.rel_entr(q[y], q12)) for y in range(ky))
    constraints = []
    for y in range(ky):
        for x1 in range(k1):
            constraints.append(cp.sum(q[y][x1, :]) == p1y[x1, y])
        for x2 in range(k2):
            constraints.append(cp.sum(q[y][:, x2]) == p2y[x2, y])
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve()
    seconds = time.perf_counter() - started
    q_star = np.stack([np.maximum(q[y].value, 0.0) for y in range(ky)], axis=2)
    stats = problem.solver_stats
    return PlainRun(q_star, seconds, stats.solve_time, stats.solver_name, problem.status)


def _plain_child(p: np.ndarray, sender: Connection) -> None:
    sender.send(plain_program(p))


def plain_capped(p: np.ndarray, max_seconds: float) -> PlainRun | None:
    """``plain_program`` in a forked child; None if it has not returned after ``max_seconds``."""
    receiver, sender = mp.get_context("fork").Pipe(duplex=False)
    child = mp.get_context("fork").Process(target=_plain_child, args=(p, sender))
    child.start()
    result = receiver.recv() if receiver.poll(max_seconds) else None
    child.kill()
    child.join()
    return result


def plain_median(p: np.ndarray, max_seconds: float, repeats: int) -> PlainRun | None:
    """``plain_capped`` up to ``repeats`` times (once when a run takes over
    ``PLAIN_REPEAT_BELOW_S``); the run of median time, None when the first hit the cap."""
    runs = []
    while len(runs) < repeats:
        run = plain_capped(p, max_seconds)
        if run is None:
            return None
        runs.append(run)
        if run.seconds > PLAIN_REPEAT_BELOW_S:
            break
    runs.sort(key=lambda run: run.seconds)
    return runs[len(runs) // 2]


def ours_median(p: np.ndarray, repeats: int) -> tuple[float, np.ndarray, str, str]:
    """Median seconds of ``pid_from_joint``, its ``[R, U1, U2, S]`` (bits), solver, status."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = pid_from_joint(p, base=2)
        times.append(time.perf_counter() - started)
    terms = np.array(list(result.terms))
    return statistics.median(times), terms, result.solver, result.status


def parse_shape(text: str) -> tuple[int, int, int]:
    k1, k2, ky = (int(part) for part in text.lower().split("x"))
    return k1, k2, ky


def bench_table(
    shapes: Sequence[tuple[int, int, int]], repeats: int, max_seconds: float, seed: int
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for shape in shapes:
        for sparse in (False, True):
            p = random_joint(shape, sparse, rng)
            ours_s, ours_terms, ours_solver, ours_status = ours_median(p, repeats)
            plain = plain_median(p, max_seconds, repeats)
            row = {
                "shape": "x".join(map(str, shape)),
                "variant": "sparse" if sparse else "dense",
                "zeros %": 100 * float(np.mean(p == 0)),
                "I bits": mutual_information_bits(p.reshape(-1, shape[2])),
                "ours s": ours_s,
                "ours solver": f"{ours_solver}/{ours_status}",
            }
            if plain is None:
                row |= {
                    "plain in solver s": None,
                    "plain s": None,
                    "plain/ours": None,
                    "max |Δ| bits": None,
                    "plain solver": f"skipped (> {max_seconds:g} s)",
                }
            else:
                difference = np.abs(pid_terms(p, plain.q) - ours_terms).max()
                row |= {
                    "plain in solver s": plain.solver_s,
                    "plain s": plain.seconds,
                    "plain/ours": plain.seconds / ours_s,
                    "max |Δ| bits": f"{difference:.1e}",
                    "plain solver": f"{plain.solver}/{plain.status}",
                }
            rows.append(row)
            log(f"[bench] {row['shape']} {row['variant']} done, ours {ours_s:.2f} s")
    return pl.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--shapes", nargs="+", default=DEFAULT_SHAPES, help="k1xk2xky per joint shape"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="calls of ours (median); also plain runs while one takes under 10 s",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="cap on one plain construction + solve; skipped (noted) beyond it",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    table = bench_table(
        [parse_shape(s) for s in args.shapes], args.repeats, args.max_seconds, args.seed
    )
    notes = [
        f"ours s: median of {args.repeats} whole pid_from_joint calls (validation, program "
        "construction, solve, terms)",
        f"plain s: median of {args.repeats} runs (one run where it takes over "
        f"{PLAIN_REPEAT_BELOW_S:g} s), each expressions + constraint loops + problem.solve() "
        f"with cvxpy's default solver, in a forked child stopped after {args.max_seconds:g} s; "
        "plain in "
        "solver s: the solver's own time (the rest is cvxpy building and canonicalising)",
        "max |Δ| bits: largest difference of R, U1, U2, S, both maximisers through the same "
        "identities",
        f"cvxpy {cp.__version__}, installed solvers {', '.join(cp.installed_solvers())}",
    ]
    title = (
        f"Exact PID, Dirichlet(1) joints (seed {args.seed}), sparse: ~"
        f"{SPARSE_FRACTION:.0%} of cells zeroed then renormalised"
    )
    show(title, table, notes, float_precision=3)
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

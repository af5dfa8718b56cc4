"""InterSHAP against the research code it comes from: time and accuracy on equal threads.

The seed repository's ``MultiModalExplainer`` (github.com/LauraWenderoth/InterSHAP, imported
from a local checkout given by ``--seed-repo``, never copied) and ``intermodal.intershap`` on
the same early-fusion FCNN weights (300 → 150 → 75 → 2, the seed's ``EarlyFusionFeedForwardNN``
loaded with our trained ``FCNN``'s tensors), the same HD-XOR data (M = 2, 150 features per
modality) and the same background pool, one torch thread each, interleaved, median of 5.

* seed: its defaults, 1000 random background draws per coalition (with replacement) from the
  first 3000 rows of the pool, batch 100; timed from constructing the explainer (its base
  values) to its local scores (``shaply_interaction_values`` + ``interaction_metric``).
* ours: ``intermodal.intershap`` with K background rows (a fresh random subset of the pool per
  repeat), from the call to the result; one row per K.
* today: the path before the block split, ``CoalitionValues(split=False)`` and the same
  estimators, at the first K.
* error: per-sample mean |local InterSHAP − reference| and mean |Shapley value − reference| in
  points (×100), against the exact expectation over all 3000 pool rows computed with
  ``naive_coalition_values`` (the whole model per coalition, no caching, no split); mean and
  standard error over the repeats. One run's error is noisy (every sample shares the same
  background draws), hence 5 repeats by default.

    python bench/intershap_vs_seed.py --seed-repo /tmp/InterSHAP
    python bench/intershap_vs_seed.py --seed-repo /tmp/InterSHAP --quick   # seconds

The checkout needs torch, numpy, pandas, tqdm and shap (all on PyPI) in this environment.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tables import print_finished, show  # bench/tables.py, beside this script

from intermodal import intershap
from intermodal.estimators.intershap import explained_values, intershap_table
from intermodal.models.fcnn import FCNN, build_fcnn
from intermodal.models.training import TrainConfig, train_classifier
from intermodal.operators.coalitions import CoalitionValues, naive_coalition_values
from intermodal.schemas.tables import modality_values
from intermodal.synthetic.hdxor import HDXORSpec, generate

NAMES = ["m0", "m1"]
DIMS = [150, 150]
NUM_CLASSES = 2
POOL = 3000  # the seed's max_samples: its base values and draws use the first 3000 rows
SEED_DRAWS = 1000  # the seed's random_masking default
SEED_BATCH = 100  # the seed's batch_size default
REFERENCE_CHUNK = 10  # samples per naive reference call: 10 × 3000 masked rows per coalition


@dataclass(frozen=True)
class Data:
    train: dict[str, np.ndarray]
    train_labels: np.ndarray
    pool: dict[str, np.ndarray]  # background pool, POOL rows
    test: dict[str, np.ndarray]
    test_labels: np.ndarray


@dataclass(frozen=True)
class Scores:
    """Per-sample local InterSHAP [N] and Shapley values [N, M] of the explained output."""

    local: np.ndarray
    shapley: np.ndarray


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def hdxor_data(setting: str, n_train: int, n_test: int) -> Data:
    spec = HDXORSpec(
        setting=setting, n_modalities=2, n_samples=n_train + POOL + n_test, dims=DIMS, seed=0
    )
    table = generate(spec)
    features = {m: modality_values(table.column(m), d) for m, d in zip(NAMES, DIMS, strict=True)}
    labels = table.column("label").to_numpy()
    parts = [slice(0, n_train), slice(n_train, n_train + POOL), slice(n_train + POOL, None)]
    train, pool, test = ({m: x[part] for m, x in features.items()} for part in parts)
    return Data(train, labels[parts[0]], pool, test, labels[parts[2]])


def trained_fcnn(data: Data, epochs: int) -> FCNN:
    torch.manual_seed(0)
    model = build_fcnn(NAMES, DIMS, NUM_CLASSES, "early")
    result = train_classifier(
        model, data.train, data.train_labels, TrainConfig(epochs=epochs), progress=log
    )
    log(f"[bench] FCNN validation accuracy {result.validation_accuracy:.3f}")
    return model.eval()


def seed_model(seed_repo: Path, ours: FCNN) -> torch.nn.Module:
    """The seed's ``EarlyFusionFeedForwardNN`` with our FCNN's weights."""
    from utils.models import EarlyFusionFeedForwardNN  # seed repository, on sys.path

    model = EarlyFusionFeedForwardNN(sum(DIMS), NUM_CLASSES)
    head = ours.head
    layers = {"fc1": head[0], "fc2": head[2], "fc3": head[4]}
    state = {
        f"{name}.{p}": getattr(layer, p)
        for name, layer in layers.items()
        for p in ("weight", "bias")
    }
    model.load_state_dict(state)
    return model.eval()


class SeedDataset(torch.utils.data.Dataset):
    """The item interface the seed's explainer reads (what its ``MMDataset`` gives with
    early fusion): ``(concatenated features, label)``, and ``set_length``."""

    def __init__(self, features: dict[str, np.ndarray], labels: np.ndarray) -> None:
        self.x = np.concatenate([features[m] for m in NAMES], axis=1)
        self.y = labels

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.x[index], dtype=torch.float), torch.tensor(self.y[index])

    def set_length(self, length: int) -> None:
        self.x, self.y = self.x[:length], self.y[:length]


def run_seed(model: torch.nn.Module, data: Data, draws: int, repeat: int) -> Scores:
    from synergy_evaluation.interaction_values import MultiModalExplainer  # seed repository

    random.seed(repeat)  # the seed draws its background rows with the random module
    explainer = MultiModalExplainer(
        model=model,
        data=SeedDataset(data.pool, np.zeros(POOL, dtype=np.int64)),
        modality_shapes=DIMS,
        classes=NUM_CLASSES,
        max_samples=POOL,
        concat=True,
        device="cpu",
        random_masking=draws,
        batch_size=SEED_BATCH,
    )
    explanation = explainer(SeedDataset(data.test, data.test_labels))
    explainer.shaply_interaction_values()
    local = explainer.interaction_metric("best")["cross_modal_rel_abs"]
    return Scores(np.asarray(local), np.asarray(explanation.values, dtype=np.float64))


def scores_of(probabilities: np.ndarray) -> Scores:
    values, _ = explained_values(probabilities, "predicted", None)
    columns = intershap_table(values, NAMES, "predicted", NUM_CLASSES)
    shapley = np.column_stack([columns[f"shapley_{m}"] for m in NAMES])
    return Scores(columns["intershap_local"], shapley)


def run_ours(model: FCNN, data: Data, background: dict[str, np.ndarray]) -> Scores:
    result = intershap(model, data.test, background)
    return Scores(result.local[:, 0], result.shapley[:, 0])


def run_today(model: FCNN, data: Data, background: dict[str, np.ndarray]) -> Scores:
    """The in-process path before the block split: general masked rows, same estimators."""
    coalitions = CoalitionValues(
        model, {m: torch.from_numpy(x) for m, x in background.items()}, split=False
    )
    probabilities = coalitions({m: torch.from_numpy(x) for m, x in data.test.items()})
    return scores_of(probabilities.numpy())


def reference(model: FCNN, data: Data) -> Scores:
    """Exact expectation over every pool row, through the whole model per coalition."""
    background = {m: torch.from_numpy(x) for m, x in data.pool.items()}
    inputs = {m: torch.from_numpy(x) for m, x in data.test.items()}
    n = len(data.test_labels)
    chunks = [
        naive_coalition_values(
            model, {m: x[start : start + REFERENCE_CHUNK] for m, x in inputs.items()}, background
        )
        for start in range(0, n, REFERENCE_CHUNK)
    ]
    return scores_of(torch.cat(chunks).numpy())


def points_off(scores: Scores, truth: Scores) -> tuple[float, float]:
    """Mean absolute error of local InterSHAP and of the Shapley values, in points."""
    local = float(np.abs(scores.local - truth.local).mean()) * 100
    shapley = float(np.abs(scores.shapley - truth.shapley).mean()) * 100
    return local, shapley


def timed(run: Callable[[], Scores]) -> tuple[float, Scores]:
    started = time.perf_counter()
    scores = run()
    return time.perf_counter() - started, scores


def compare(setting: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = hdxor_data(setting, args.train_rows, args.samples)
    model = trained_fcnn(data, args.epochs)
    seed = seed_model(args.seed_repo, model)
    started = time.perf_counter()
    truth = reference(model, data)
    log(f"[bench] {setting}: reference over {POOL} rows in {time.perf_counter() - started:.1f} s")
    rng = np.random.default_rng(0)
    runs: dict[str, list[tuple[float, tuple[float, float]]]] = {}
    for repeat in range(args.repeats):
        contenders: list[tuple[str, Callable[[], Scores]]] = [
            ("seed", partial(run_seed, seed, data, args.seed_draws, repeat))
        ]
        for k in args.background:
            rows = rng.choice(POOL, size=k, replace=False)
            subset = {m: x[rows] for m, x in data.pool.items()}
            contenders.append((f"ours K={k}", partial(run_ours, model, data, subset)))
            if k == args.background[0]:
                contenders.append((f"today K={k}", partial(run_today, model, data, subset)))
        for name, run in contenders:
            seconds, scores = timed(run)
            runs.setdefault(name, []).append((seconds, points_off(scores, truth)))
            log(f"[bench] {setting} repeat {repeat}: {name} {seconds:.3f} s")
    seed_seconds = statistics.median(s for s, _ in runs["seed"])
    rows = []
    for name, measured in runs.items():
        seconds = statistics.median(s for s, _ in measured)
        local, shapley = (np.array([errors[i] for _, errors in measured]) for i in (0, 1))
        rows.append(
            {
                "setting": setting,
                "method": name,
                "seconds": seconds,
                "seed/this": seed_seconds / seconds,
                "local err pts": local.mean(),
                "local se": stderr(local),
                "shapley err pts": shapley.mean(),
                "shapley se": stderr(shapley),
            }
        )
    return rows


def stderr(values: np.ndarray) -> float:
    """Standard error of a mean over the repeats (each repeat draws new background rows)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


NOTES = """seed: {draws} random draws per coalition (with replacement), batch {batch}; ours: \
intermodal.intershap with K rows of the pool (block split); today: CoalitionValues(split=False) \
+ the same estimators
seconds: construction to local scores; seed/this: the seed's seconds over this row's
err pts: mean |value - reference| x 100 over samples, reference = exact expectation over all \
{pool} pool rows (naive_coalition_values); se: standard error of that mean over the repeats"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed-repo", type=Path, required=True, help="InterSHAP checkout")
    parser.add_argument(
        "--settings", nargs="+", default=["synergy", "uniqueness", "redundancy", "random"]
    )
    parser.add_argument("--samples", type=int, default=200, help="explained test samples")
    parser.add_argument(
        "--background", type=int, nargs="+", default=[1000, 500, 250], help="our K values"
    )
    parser.add_argument("--seed-draws", type=int, default=SEED_DRAWS)
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved runs: median time, mean error"
    )
    parser.add_argument("--quick", action="store_true", help="one setting, 40 samples, 1 repeat")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.settings, args.samples, args.repeats, args.epochs = ["synergy"], 40, 1, 3
    sys.path.insert(0, str(args.seed_repo.resolve()))
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for setting in args.settings:
        show(
            f"InterSHAP vs the seed's MultiModalExplainer: HD-XOR {setting}, M = 2, "
            f"early-fusion FCNN 300→150→75→2, {args.samples} samples, pool {POOL} rows, one "
            f"torch thread, median of {args.repeats}",
            pl.DataFrame(compare(setting, args)),
            NOTES.format(draws=args.seed_draws, batch=SEED_BATCH, pool=POOL).split("\n"),
            float_precision=3,
        )
    print_finished(started, load_before)


if __name__ == "__main__":
    main()

"""``validate intershap``: ground-truth experiments through the full pipeline.

Truth: paper 000 Table 2 for M = 2 (XOR function and early-fusion FCNN, %); for the XOR
function with M = 3 and 4, which the paper does not tabulate, the exact value under the data
distribution, computed here by enumerating every bit pattern (no sampling, no pipeline).
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import torch

from intermodal import storage
from intermodal.estimators.intershap import global_terms, local_intershap
from intermodal.estimators.shapley import interaction_matrix
from intermodal.models.training import TrainConfig
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.synthetic.hdxor import HDXORSpec, xor_function_model
from intermodal.validation.experiments import (
    fcnn_job,
    headline,
    run_job,
    split_hdxor,
    train_fcnn,
    xor_function_job,
)
from intermodal.validation.rows import chosen_experiments, validation_row, write_validation

# paper 000 Table 2 (M = 2), in %: (global, local)
PAPER_TABLE_2 = {
    "xor_m2_synergy": (99.7, 96.9),
    "xor_m2_uniqueness": (0.0, 1.8),
    "fcnn_m2_uniqueness": (0.2, 3.4),
    "fcnn_m2_synergy": (98.0, 85.8),
    "fcnn_m2_redundancy": (38.6, 37.3),
    "fcnn_m2_random": (57.8, 40.0),
}
XOR_EXPERIMENTS = [f"xor_m{m}_{s}" for m in (2, 3, 4) for s in ("synergy", "uniqueness")]
FCNN_EXPERIMENTS = [f"fcnn_m2_{s}" for s in ("uniqueness", "synergy", "redundancy", "random")]
# the paper's FCNN training (App. A): Adam 1e-4, weight decay 1e-4, batch 400, 200 epochs
PAPER_TRAINING = TrainConfig(epochs=200, batch_size=400, lr=1e-4, weight_decay=1e-4)


def bit_distribution(setting: str, n_modalities: int) -> tuple[np.ndarray, np.ndarray]:
    """Every bit pattern the XOR function reads ``[P, M, n_bits]`` and its probability ``[P]``
    under the HD-XOR generator (the irrelevant bits of uniqueness are fixed at 0)."""
    if setting == "uniqueness":
        pairs = np.array(list(itertools.product((0, 1), repeat=2)), dtype=np.float32)
        patterns = np.zeros((4, n_modalities, 2), dtype=np.float32)
        patterns[:, 0] = pairs
        return patterns, np.full(4, 0.25)
    bits = np.array(list(itertools.product((0, 1), repeat=n_modalities)), dtype=np.float32)
    if n_modalities == 2:
        return bits[:, :, None], np.full(4, 0.25)
    one_hot = bits.sum(axis=1) == 1  # balanced classes: half the mass on one-hot patterns
    weights = np.where(one_hot, 0.5 / one_hot.sum(), 0.5 / (~one_hot).sum())
    return bits[:, :, None], weights


def exact_xor_intershap(setting: str, n_modalities: int) -> tuple[float, float]:
    """Exact (global, mean local) InterSHAP of the XOR function, in %: every bit pattern is a
    sample, and masked modalities take the bits of every pattern weighted by its probability."""
    patterns, weights = bit_distribution(setting, n_modalities)
    model = xor_function_model(setting, n_modalities)
    n_patterns = len(patterns)
    sample, other = np.divmod(np.arange(n_patterns * n_patterns), n_patterns)
    values = np.zeros((n_patterns, 1 << n_modalities, 2))
    with torch.no_grad():
        for coalition in range(1 << n_modalities):
            inputs = {
                f"m{m}": torch.from_numpy(patterns[sample if coalition >> m & 1 else other, m])
                for m in range(n_modalities)
            }
            probabilities = torch.softmax(model(inputs).double(), dim=-1).numpy()
            values[:, coalition] = np.einsum(
                "sbc,b->sc", probabilities.reshape(n_patterns, n_patterns, 2), weights
            )
    predicted = values[:, -1].argmax(axis=-1)
    matrices = interaction_matrix(values[np.arange(n_patterns), :, predicted])
    global_score = global_terms(np.tensordot(weights, matrices, axes=1)).intershap
    return 100 * global_score, 100 * float(weights @ local_intershap(matrices))


def _truth(experiment: str) -> tuple[float, float]:
    if experiment in PAPER_TABLE_2:
        return PAPER_TABLE_2[experiment]
    _, m, setting = experiment.split("_")
    return exact_xor_intershap(setting, int(m[1:]))


def run_intershap_suite(
    out: str,
    experiments: list[str] | None = None,
    n_samples: int = 20_000,
    xor_background: int = 1000,
    fcnn_background: int = 256,
    training: TrainConfig = PAPER_TRAINING,
    progress: Progress = print,
) -> pl.DataFrame:
    """Run the experiments (default: all ten) and write ``out/validation.parquet``."""
    experiments = chosen_experiments(experiments, [*XOR_EXPERIMENTS, *FCNN_EXPERIMENTS])
    rows = []
    for experiment in experiments:
        kind, m, setting = experiment.split("_")
        spec = HDXORSpec(setting=setting, n_modalities=int(m[1:]), n_samples=n_samples, seed=0)
        # the paper explains 2000 test rows of 20,000 (15 %): keep that proportion
        split = split_hdxor(spec, storage.join(out, "data", experiment), test_fraction=0.15)
        run_uri = storage.join(out, "runs", experiment)
        if kind == "xor":
            job = xor_function_job(split, run_uri, xor_background)
        else:
            weights = storage.join(RunPaths(run_uri).artifacts, "fcnn_early.pt")
            train_fcnn(split, weights, "early", training, progress)
            job = fcnn_job(split, run_uri, weights, "early", fcnn_background)
        estimate = headline(run_job(job, progress))
        truth = dict(zip(("global", "local_mean"), _truth(experiment), strict=True))
        rows += [
            validation_row("intershap", experiment, term, 100 * estimate[term], truth[term])
            for term in ("global", "local_mean")
        ]
    return write_validation(out, rows)

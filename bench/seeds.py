"""Running the seed repositories' LSMI and PID BATCH estimators on given arrays, by import.

Nothing of the seeds' estimation logic is here: each runner puts a checkout on ``sys.path``,
imports the seed's own modules and calls its own entry point with its default
hyper-parameters. What a call changes, and undoes afterwards, is infrastructure the seeds
hard-code for a GPU box: LSMI_Estimator's DataLoaders use 16 worker processes and PID's one
(both made 0 here, a CPU run on 2 cores), PID calls ``.cuda()`` everywhere (made a no-op), and
LSMI's config says ``device: cuda`` (set to cpu). Both seeds print every epoch or batch; the
output is dropped. ``seconds`` is the seed's entry point alone (its data already in memory).

* GeWu-Lab/LSMI_Estimator: ``main_lsmi.estimation_main(cfg, data_path)`` with the seed's own
  ``cfgs/train.yaml`` (three classifiers trained jointly and two KNIFEs, 30 epochs each, batch
  32, no cross-fitting); it returns nothing, so ``main_lsmi.LSMI_estimation`` is wrapped to
  record the adjusted means (nats) it returns for the train and the held-out split. Needs
  ``hydra-core`` and ``omegaconf`` (``main_lsmi`` imports hydra).
* pliang279/PID: ``estimators/ce_alignment_information.critic_ce_alignment`` as the seed's
  synthetic script calls it (discriminators 40 epochs, alignment 10 epochs, batch 256); it
  returns (R, U1, U2, S) in nats per full test batch, averaged here.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

TERMS = ("R", "U1", "U2", "S")


def _import_from(directory: Path, names: list[str]) -> list[Any]:
    """Modules ``names`` from ``directory``; a module of that name from elsewhere (LSMI's
    generic ``utils``) is dropped from ``sys.modules`` first."""
    directory = directory.resolve()
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    modules = []
    for name in names:
        cached = sys.modules.get(name)
        origin = getattr(cached, "__file__", None)
        if cached is not None and (origin is None or Path(origin).resolve().parent != directory):
            del sys.modules[name]
        modules.append(importlib.import_module(name))
    return modules


@contextlib.contextmanager
def _patched(owner: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, old)


def _in_process_loaders(owner: Any, attr: str) -> contextlib.AbstractContextManager:
    """``owner.attr`` (a DataLoader class) builds loaders without worker processes."""
    base = getattr(owner, attr)

    class Loader(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(num_workers=0, pin_memory=False)
            kwargs.pop("worker_init_fn", None)
            super().__init__(*args, **kwargs)

    return _patched(owner, attr, Loader)


def _float(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def run_lsmi_seed(repo: Path, train: tuple, test: tuple) -> dict[str, Any]:
    """The seed's LSMI pipeline on ``train``/``test`` = ``(x1 [n, d1], x2 [n, d2], y [n])``;
    ``R``..``S``: the held-out split's adjusted means, nats."""
    from omegaconf import OmegaConf  # the seed's config format

    utils, main_lsmi = _import_from(repo, ["utils", "main_lsmi"])
    (x1, x2, y), (x1_test, x2_test, y_test) = train, test
    cfg = OmegaConf.load(repo / "cfgs" / "train.yaml")
    cfg.device = "cpu"
    cfg.input_size_1, cfg.input_size_2 = int(x1.shape[1]), int(x2.shape[1])
    cfg.n_classes = int(max(np.max(y) + 1, cfg.n_classes))
    recorded: list[tuple[float, ...]] = []
    original = main_lsmi.LSMI_estimation

    def recording(*args: Any, **kwargs: Any) -> Any:
        means = original(*args, **kwargs)
        recorded.append(tuple(float(v) for v in means))
        return means

    with tempfile.TemporaryDirectory(prefix="lsmi_seed_") as tmp:
        path = Path(tmp) / "data.pt"  # the seed's data format (its README)
        torch.save(
            {
                "train_modal_1_features": _float(x1),
                "train_modal_2_features": _float(x2),
                "train_targets": torch.tensor(np.asarray(y), dtype=torch.long),
                "val_modal_1_features": _float(x1_test),
                "val_modal_2_features": _float(x2_test),
                "val_targets": torch.tensor(np.asarray(y_test), dtype=torch.long),
            },
            path,
        )
        utils.setup_seed(cfg.random_seed)  # what the seed's main() does first
        with (
            _patched(main_lsmi, "LSMI_estimation", recording),
            _in_process_loaders(torch.utils.data, "DataLoader"),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            start = time.perf_counter()
            main_lsmi.estimation_main(cfg, str(path))
            seconds = time.perf_counter() - start
    _, held_out = recorded
    return {"seconds": seconds, **dict(zip(TERMS, held_out, strict=True))}


def run_pid_batch_seed(repo: Path, train: tuple, test: tuple, num_labels: int) -> dict[str, Any]:
    """The seed's BATCH estimator on ``train``/``test`` = ``(x1, x2, y)``; ``R``..``S``: the
    mean over full test batches, in bits (the seed's script divides its nats by ln 2)."""
    (alignment,) = _import_from(repo / "estimators", ["ce_alignment_information"])
    (x1, x2, y), (x1_test, x2_test, y_test) = train, test
    labels = torch.tensor(np.asarray(y).reshape(-1, 1), dtype=torch.long)
    train_set = alignment.MultimodalDataset([_float(x1), _float(x2)], labels)
    test_labels = torch.tensor(np.asarray(y_test).reshape(-1, 1), dtype=torch.long)
    test_set = alignment.MultimodalDataset([_float(x1_test), _float(x2_test)], test_labels)

    def on_cpu(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self

    torch.manual_seed(42)  # as the seed's script
    with (
        _patched(torch.Tensor, "cuda", on_cpu),
        _patched(torch.nn.Module, "cuda", on_cpu),
        _in_process_loaders(alignment, "DataLoader"),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        start = time.perf_counter()
        results, _, _ = alignment.critic_ce_alignment(
            _float(x1), _float(x2), labels, num_labels, train_set, test_set
        )
        seconds = time.perf_counter() - start
    bits = [float(v) / math.log(2) for v in results.mean(dim=0)]
    return {"seconds": seconds, **dict(zip(TERMS, bits, strict=True))}


def main() -> None:
    """``python bench/seeds.py lsmi --repo R --data D.npz [--seed-lib L]``: the seed's LSMI
    entry point as a command of its own (``fit_vs_seed.py --cli`` times this process whole:
    Python's start, the seed's imports and its run). ``D`` holds ``x1, x2, y`` and
    ``held_out`` (the last rows the seed reports on). Prints one JSON line."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("estimator", choices=["lsmi"])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seed-lib", type=Path, help="folder with hydra-core and omegaconf")
    args = parser.parse_args()
    if args.seed_lib is not None:
        sys.path.insert(0, str(args.seed_lib.resolve()))
    arrays = np.load(args.data)
    n, held_out = len(arrays["y"]), int(arrays["held_out"])
    x1, x2, y = arrays["x1"], arrays["x2"], arrays["y"]
    train = (x1[: n - held_out], x2[: n - held_out], y[: n - held_out])
    test = (x1[n - held_out :], x2[n - held_out :], y[n - held_out :])
    print(json.dumps(run_lsmi_seed(args.repo, train, test)))


if __name__ == "__main__":
    main()

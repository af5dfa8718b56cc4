"""Cross-fitted classifiers: stable folds, independent fold models, held-out scoring."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from intermodal.models.classifiers import (
    CLASSIFIER_INDEX,
    Classifiers,
    ClassifierTraining,
    FoldedMLP,
    fold_of,
    load_classifier_states,
    log_proba_of_labels,
    own_fold_probabilities,
    prune_classifier_store,
    save_classifiers,
    train_classifiers,
    train_folded,
)
from intermodal.models.training import InlineWorkers

FAST = ClassifierTraining(hidden=16, epochs=8, batch_size=128, lr=1e-2)


def test_folds_are_stable_balanced_and_seeded() -> None:
    ids = pa.array(np.arange(20_000, dtype=np.int64))
    folds = fold_of(ids, 5, seed=0)
    np.testing.assert_array_equal(folds, fold_of(pa.chunked_array([ids[:7], ids[7:]]), 5, 0))
    assert set(np.unique(folds)) == {0, 1, 2, 3, 4}
    assert np.bincount(folds).min() > 3800  # about 4000 each
    assert not np.array_equal(folds, fold_of(ids, 5, seed=1))
    words = pa.array([f"id-{i}" for i in range(5000)])
    string_folds = fold_of(words, 4, seed=0)
    np.testing.assert_array_equal(string_folds, fold_of(words, 4, seed=0))
    assert np.bincount(string_folds).min() > 1100


def test_forward_equals_separate_mlps() -> None:
    model = FoldedMLP(3, 5, 2, folds=4, seed=1)
    x = torch.randn(7, 3)
    logits = model(x)
    assert logits.shape == (4, 7, 2)
    for k in range(4):
        hidden = x
        for layer, (weight, bias) in enumerate(zip(model.weights, model.biases, strict=True)):
            hidden = hidden @ weight[k] + bias[k]
            if layer < 2:
                hidden = torch.relu(hidden)
        torch.testing.assert_close(logits[k], hidden)


def test_own_fold_rows_go_to_their_fold_model_only() -> None:
    model = FoldedMLP(3, 5, 2, folds=4, seed=2)
    x, folds = torch.randn(50, 3), torch.randint(0, 4, (50,))
    expected = torch.log_softmax(model(x)[folds, torch.arange(50)], dim=-1)
    torch.testing.assert_close(model.own_fold_log_proba(x, folds), expected)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y, fold_of(pa.array(np.arange(n)), 3, seed=0)


def test_a_fold_model_never_depends_on_its_own_rows() -> None:
    x, y, folds = _data(1500, 0)
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    first = train_folded(x, y, folds, 3, 2, FAST)
    second = train_folded(x, flipped, folds, 3, 2, FAST)
    # model 0 saw neither version of fold 0's labels: same weights; the others did
    for a, b in zip(first.weights, second.weights, strict=True):
        torch.testing.assert_close(a[0], b[0])
        assert not torch.allclose(a[1], b[1])


def test_out_of_fold_predictions_learn_the_task() -> None:
    x, y, folds = _data(3000, 1)
    messages: list[str] = []
    model = train_folded(x, y, folds, 3, 2, FAST, name="x", progress=messages.append)
    assert messages and "out-of-fold accuracy" in messages[-1]
    log_p = log_proba_of_labels(model, x, folds, y)
    assert log_p.shape == (3000,) and np.all(log_p <= 0)
    assert np.exp(log_p).mean() > 0.85
    assert float(messages[-1].rsplit(" ", 1)[1]) > 0.9


def test_state_dict_round_trip(tmp_path) -> None:
    x, y, folds = _data(600, 2)
    model = train_folded(x, y, folds, 3, 2, FAST)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    restored = FoldedMLP(4, FAST.hidden, 2, 3)
    restored.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    restored.eval()
    np.testing.assert_array_equal(
        log_proba_of_labels(model, x, folds, y), log_proba_of_labels(restored, x, folds, y)
    )


@pytest.mark.parametrize("bad", [0.0, 1.0])
def test_confidently_wrong_predictions_are_floored(bad: float) -> None:
    model = FoldedMLP(1, 2, 2, folds=2)
    with torch.no_grad():
        model.biases[-1].copy_(torch.tensor([[[0.0, 1e4]], [[0.0, 1e4]]]))
        for weight in model.weights:
            weight.zero_()
    log_p = log_proba_of_labels(model, np.array([[bad]]), np.array([0]), np.array([0]))
    assert np.isfinite(log_p).all() and log_p[0] == pytest.approx(np.log(1e-12))


def test_early_stopping_keeps_uninformative_predictions_near_the_prior() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    y = rng.integers(0, 2, 3000)
    folds = fold_of(pa.array(np.arange(3000)), 5, seed=0)
    config = ClassifierTraining(hidden=64, epochs=30, batch_size=128, lr=1e-2)
    model = train_folded(x, y, folds, 5, 2, config)
    spread = np.abs(own_fold_probabilities(model, x, folds)[:, 1] - 0.5)
    # the plug-in information of such outputs stays far below what an over-fit MLP reports
    assert spread.mean() < 0.1


def test_training_stops_once_the_held_out_loss_stalls() -> None:
    """Uninformative features: the held-out loss stops improving after a few epochs, training
    stops ``patience`` epochs later, and the kept weights are those of the best epoch."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = rng.integers(0, 2, 2000)
    folds = fold_of(pa.array(np.arange(2000)), 5, seed=0)
    lines: list[str] = []
    stopped = train_folded(
        x, y, folds, 5, 2, ClassifierTraining(epochs=40, patience=3), progress=lines.append
    )
    assert "stopped after" in lines[-1]
    epochs = int(lines[-1].split("stopped after ")[1].split()[0])
    assert epochs < 40
    # a run capped at that many epochs without patience ends with the same kept weights
    capped = train_folded(x, y, folds, 5, 2, ClassifierTraining(epochs=epochs, patience=40))
    for kept, same in zip(stopped.parameters(), capped.parameters(), strict=True):
        torch.testing.assert_close(kept, same)


class KeyRecordingWorkers(InlineWorkers):
    """Runs parts inline and records the content keys they were submitted under."""

    def __init__(self) -> None:
        super().__init__(progress=lambda _: None)
        self.keys: list[str] = []

    def submit_once(self, key, fn, *args):
        self.keys.append(key)
        return fn(*args)


def test_classifier_parts_are_keyed_by_everything_they_depend_on() -> None:
    """Two measures share a classifier only when its rows, labels, folds and settings agree."""
    rng = np.random.default_rng(5)
    features = {"a": rng.normal(size=(60, 3)), "b": rng.normal(size=(60, 2))}
    labels = rng.integers(0, 2, 60)
    folds = fold_of(pa.array(np.arange(60)), 3, seed=0)
    config = ClassifierTraining(epochs=1, hidden=4)

    def keys(**changes) -> list[str]:
        arguments = {"features": features, "labels": labels, "folds": folds, "training": config}
        arguments.update(changes)
        workers = KeyRecordingWorkers()
        train_classifiers(
            [("a",), ("b",), ("a", "b")],
            arguments["features"],
            arguments["labels"],
            arguments["folds"],
            3,
            2,
            arguments["training"],
            workers,
        )
        return workers.keys

    same = keys()
    assert len(set(same)) == 3 and keys() == same
    changed_b = keys(features={**features, "b": features["b"] + 1e-9})
    assert changed_b[0] == same[0] and changed_b[1] != same[1] and changed_b[2] != same[2]
    for change in (
        {"labels": 1 - labels},
        {"folds": (folds + 1) % 3},
        {"training": ClassifierTraining(epochs=2, hidden=4)},
    ):
        assert not set(keys(**change)) & set(same)


def test_the_store_keeps_each_classifier_once_and_drops_what_no_index_names(tmp_path) -> None:
    run = str(tmp_path)
    model = FoldedMLP(3, 4, 2, 2)
    shared = Classifiers({"a": model}, {"a": "d1"})
    save_classifiers(shared, run, f"{run}/artifacts/lsmi/{CLASSIFIER_INDEX}")
    both = Classifiers(
        {"label/a": model, "label/a__b": model}, {"label/a": "d1", "label/a__b": "d2"}
    )
    save_classifiers(both, run, f"{run}/artifacts/pid_batch/{CLASSIFIER_INDEX}")
    store = tmp_path / "artifacts" / "classifiers"
    assert sorted(p.name for p in store.iterdir()) == ["d1.pt", "d2.pt"]
    loaded = load_classifier_states(run, f"{run}/artifacts/pid_batch/{CLASSIFIER_INDEX}")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded["label/a__b"][name], tensor)
    (store / "d0.pt").write_bytes((store / "d1.pt").read_bytes())  # left by an earlier fit
    prune_classifier_store(run)
    assert sorted(p.name for p in store.iterdir()) == ["d1.pt", "d2.pt"]
    save_classifiers(Classifiers({}, {}), run, f"{run}/artifacts/pid_batch/{CLASSIFIER_INDEX}")
    prune_classifier_store(run)
    assert sorted(p.name for p in store.iterdir()) == ["d1.pt"]

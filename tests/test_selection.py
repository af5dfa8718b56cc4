"""Model selection by PID (paper 003 §4.4): the distance and the leave-one-out by hand on
arrays, and ``library build`` / ``select`` end to end on a tiny library the builder writes
(two datasets × two families, real pipeline runs), with the bad inputs ``select`` refuses."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from intermodal.cli import main
from intermodal.estimators.model_selection import leave_one_out, pid_distance
from intermodal.measures import parse_config
from intermodal.pipelines.job import run_job
from intermodal.schemas.tables import PID_TERMS
from intermodal.selection.library import build_library
from intermodal.selection.recipe import BuildSizes

TINY = BuildSizes(
    n_train=300, n_heldout=300, epochs=2, encoder_steps=200, families=("early", "intense")
)
DATASETS = ("DR", "DS")


def test_distance_is_the_sum_of_share_differences() -> None:
    a, b = np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.0, 3.0, 0.0, 1.0])
    # shares (0.5, 0, 0, 0.5) and (0, 0.75, 0, 0.25): 0.5 + 0.75 + 0 + 0.25
    assert pid_distance(a, b) == pytest.approx(1.5, abs=1e-15)
    assert pid_distance(a, 7 * a) == 0.0
    assert np.isnan(pid_distance(a, np.zeros(4)))


def test_leave_one_out_recommends_the_best_family_of_the_closest_other_dataset() -> None:
    terms = np.array([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0, 1.0]])
    accuracy = np.array([[0.9, 0.8], [0.7, 0.75], [0.6, 0.9]])
    result = leave_one_out(terms, accuracy, top=2)
    # 0 ↔ 1 are 0.2 apart, 2 is 2 away from both (ties keep the first)
    assert result.closest.tolist() == [1, 0, 0]
    assert result.distance == pytest.approx([0.2, 0.2, 2.0])
    assert result.recommended.tolist() == [1, 0, 0]  # best on 1: family 1; on 0: family 0
    assert result.ratio == pytest.approx([0.8 / 0.9, 0.7 / 0.75, 0.6 / 0.9])
    # both families of a two-family library: the worse of the two on each dataset
    assert result.worst_of_top == pytest.approx([0.8 / 0.9, 0.7 / 0.75, 0.6 / 0.9])


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Path:
    root = tmp_path_factory.mktemp("library") / "lib"
    build_library(str(root), TINY, DATASETS, progress=lambda _: None)
    return root


def _labels_pid(run: Path) -> np.ndarray:
    rows = pl.read_parquet(run / "global" / "pid_cvx.parquet").filter(
        (pl.col("statistic") == "pid") & (pl.col("target") == "label") & (pl.col("group_by") == "")
    )
    values = dict(zip(rows["term"], rows["value"], strict=True))
    return np.array([values[t] for t in PID_TERMS])


@pytest.mark.slow
def test_library_records_accuracy_and_alpha_of_each_family(library: Path) -> None:
    manifest = json.loads((library / "library.json").read_text())
    assert [d["name"] for d in manifest["datasets"]] == list(DATASETS)
    for entry in manifest["datasets"]:
        labels = _labels_pid(library / entry["run"])
        shares = labels / labels.sum()
        for family in TINY.families:
            recorded = entry["families"][family]
            assert 0.0 <= recorded["accuracy"] <= 1.0
            assert (library / recorded["weights"]).exists()
            model = np.array([recorded["pid_pred"][t] for t in PID_TERMS])
            assert recorded["alpha"] == pytest.approx(float(shares @ model), abs=1e-12)


@pytest.mark.slow
def test_select_matches_a_hand_computation_on_the_library(library: Path, tmp_path: Path) -> None:
    manifest = json.loads((library / "library.json").read_text())
    run = library / "DS" / "run"
    new = _labels_pid(run)
    code, printed, _ = _cli(
        "select", str(run), "--library", str(library), "--out", str(tmp_path / "s.json")
    )
    assert code == 0
    chosen = json.loads((tmp_path / "s.json").read_text())
    by_hand = {
        entry["name"]: float(
            np.abs(new / new.sum() - (t := _labels_pid(library / entry["run"])) / t.sum()).sum()
        )
        for entry in manifest["datasets"]
    }
    assert {d["dataset"]: d["distance"] for d in chosen["distances"]} == pytest.approx(
        by_hand, abs=1e-12
    )
    closest = min(by_hand, key=by_hand.__getitem__)
    assert chosen["closest"] == closest == "DS"
    families = next(e for e in manifest["datasets"] if e["name"] == closest)["families"]
    ranked = sorted(families, key=lambda f: -families[f]["accuracy"])
    assert [r["family"] for r in chosen["recommended"]] == ranked
    assert "closest: DS" in printed
    assert chosen["normalised_pid"] == pytest.approx(
        dict(zip(PID_TERMS, new / new.sum(), strict=True))
    )


@pytest.mark.slow
def test_select_without_a_library_prints_the_rules_and_the_report_shows_them(
    library: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(library / "DR" / "run", run)
    code, printed, _ = _cli("select", str(run))
    assert code == 0
    chosen = json.loads((run / "selection.json").read_text())
    assert chosen["library"] is None and set(chosen["rules"]) == set(PID_TERMS)
    assert chosen["largest"] == "R" and f"* R {chosen['normalised_pid']['R']:.2f}" in printed
    assert _cli("report", str(run))[0] == 0
    assert "Model selection" in (run / "report" / "index.html").read_text()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_select_refuses_runs_without_pid_of_the_labels(library: Path, tmp_path: Path) -> None:
    no_pid = tmp_path / "no_pid"
    shutil.copytree(library / "DR" / "run", no_pid)
    (no_pid / "global" / "pid_cvx.parquet").unlink()
    code, _, err = _cli("select", str(no_pid), "--library", str(library))
    assert code == 2 and "no PID in global/" in _one_error_line(err)

    # a real run of the library's early FCNN on DS's rows, scored without labels
    manifest = json.loads((library / "library.json").read_text())
    early = next(e for e in manifest["datasets"] if e["name"] == "DS")["families"]["early"]
    predictions_only = tmp_path / "predictions_only"
    config = parse_config(
        {
            "dataset": "ds_unlabelled",
            "input": str(library / "DS" / "data"),
            "output": str(predictions_only),
            "num_classes": 2,
            "label_column": None,
            "modalities": [{"name": m, "shape": [32]} for m in ("x1", "x2")],
            "measures": ["pid_cvx"],
            "pid_cvx": {"space": "features", "n_clusters": 4},
            "model": {
                "name": "early",
                "factory": early["factory"],
                "kwargs": early["kwargs"],
                "weights": str(library / early["weights"]),
            },
        }
    )
    run_job(config, progress=lambda _: None)
    code, _, err = _cli("select", str(predictions_only), "--library", str(library))
    assert code == 2 and "only of the model's predictions" in _one_error_line(err)


@pytest.mark.slow
def test_select_refuses_a_library_with_a_broken_run(library: Path, tmp_path: Path) -> None:
    broken = tmp_path / "lib"
    shutil.copytree(library, broken)
    (broken / "DS" / "run" / "global" / "pid_cvx.parquet").write_bytes(b"not parquet")
    run = str(library / "DR" / "run")
    code, _, err = _cli("select", run, "--library", str(broken))
    assert code == 2 and "dataset DS: cannot read" in _one_error_line(err)
    code, _, err = _cli("select", run, "--library", str(tmp_path))
    assert code == 2 and "not a model library" in _one_error_line(err)

"""The command line: help everywhere, clear errors, the validation suite and the demo."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from scored_runs import all_measures_run, demo_run  # tests/scored_runs.py

from intermodal.cli import main

COMMANDS = ["demo", "score", "submit", "fit", "aggregate", "validate", "report", "partition"]


@pytest.mark.parametrize(
    "command", [[], *([name] for name in COMMANDS), ["export"], ["export", "distill-weights"]]
)
def test_help_everywhere(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: intermodal" in capsys.readouterr().out


def test_bad_config_exits_with_a_message(tmp_path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("dataset: x\nmodalitys: []\n")
    assert main(["score", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"{config}: invalid configuration" in error and "modalitys: unknown key" in error


def test_the_installed_command_exits_with_mains_code_and_reports_no_leak(
    tmp_path, tmp_path_factory
) -> None:
    """``intermodal`` (the console entry point, which skips the interpreter's last garbage
    collections) in a fresh process: ``main``'s message and exit code, and an aggregation
    whose KLL sketches the bindings would report as 600 lines of leaks, were they still
    alive at exit."""
    command = Path(sys.executable).parent / "intermodal"
    missing = tmp_path / "no_run"
    done = subprocess.run([command, "report", missing], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{missing}/manifest.json: missing" in done.stderr

    run = tmp_path / "run"
    shutil.copytree(all_measures_run(tmp_path_factory), run)
    done = subprocess.run([command, "aggregate", run], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "global statistics (whole dataset" in done.stdout
    assert "leaked" not in done.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_intershap_reproduces_the_xor_ground_truth(tmp_path, capsys) -> None:
    experiments = ["xor_m2_synergy", "xor_m2_uniqueness", "xor_m3_synergy", "xor_m4_uniqueness"]
    args = ["validate", "intershap", "--out", str(tmp_path), "--samples", "4000"]
    assert main([*args, *(f"--experiment={e}" for e in experiments)]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert table.columns == ["suite", "experiment", "term", "estimate", "truth", "abs_error"]
    assert set(table["experiment"]) == set(experiments)

    def estimate(experiment: str, term: str = "global") -> float:
        row = table.filter((pl.col("experiment") == experiment) & (pl.col("term") == term))
        return row["estimate"].item()

    assert estimate("xor_m2_synergy") >= 99.5
    assert estimate("xor_m2_uniqueness") <= 0.5
    assert estimate("xor_m4_uniqueness") <= 0.5
    # M = 3 synergy against the exact enumeration (92.6 %), within background noise
    m3 = table.filter((pl.col("experiment") == "xor_m3_synergy") & (pl.col("term") == "global"))
    assert m3["truth"].item() == pytest.approx(92.61, abs=0.01)
    assert m3["abs_error"].item() < 2.0
    assert "xor_m3_synergy" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_pid_reproduces_table_1_through_the_pipeline(tmp_path, capsys) -> None:
    args = ["validate", "pid", "--out", str(tmp_path), "--samples", "20000"]
    assert main([*args, "--experiment=and", "--experiment=xor", "--experiment=DS"]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert table.columns == ["suite", "experiment", "term", "estimate", "truth", "abs_error"]
    bitwise = table.filter(pl.col("experiment").is_in(["and", "xor"]))
    assert len(bitwise) == 8 and bitwise["abs_error"].max() < 0.02
    largest = table.filter(pl.col("term") == "generating_term_largest")
    assert largest["experiment"].to_list() == ["DS"] and largest["estimate"].item() == 1.0
    assert "validation: pid" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_pid_batch_runs_batch_and_cvx_through_the_pipeline(tmp_path, capsys) -> None:
    args = ["validate", "pid_batch", "--out", str(tmp_path), "--samples", "4000"]
    assert main([*args, "--experiment=xor", "--experiment=DU1"]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert set(table["suite"]) == {"pid_batch"}
    xor = table.filter(pl.col("experiment") == "xor")
    assert xor["term"].to_list() == ["R", "U1", "U2", "S"]
    assert xor["abs_error"].max() < 0.1  # 4,000 rows; the full suite uses 20,000
    checks = table.filter(pl.col("experiment") == "DU1").filter(pl.col("truth") == 1.0)
    assert checks["term"].to_list() == ["generating_term_largest", "largest_agrees_with_cvx"]
    assert checks["estimate"].to_list() == [1.0, 1.0]
    assert "validation: pid_batch (bits" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_lsmi_reproduces_table_1_through_the_pipeline(tmp_path, capsys) -> None:
    args = ["validate", "lsmi", "--out", str(tmp_path), "--samples", "8000"]
    assert main([*args, "--experiment=or", "--experiment=xor_not"]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert table.columns == ["suite", "experiment", "term", "estimate", "truth", "abs_error"]
    assert len(table) == 8 and table["abs_error"].max() < 0.02
    assert "validation: lsmi (nats" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_demo_scores_the_xor_function_and_a_trained_fcnn(tmp_path_factory) -> None:
    out, printed, code = demo_run(tmp_path_factory)
    assert code == 0
    for run in ("xor_synergy", "xor_uniqueness", "fcnn_synergy", "fcnn_uniqueness"):
        assert (out / run / "global" / "intershap.parquet").exists()
        assert (out / run / "manifest.json").exists()
        assert run in printed
    assert "intershap_global_%" in printed and "pid_labels" in printed
    assert f"report of every run: {out / 'report' / 'index.html'}" in printed


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_intense_finds_the_xor_pair_through_the_pipeline(tmp_path, capsys) -> None:
    args = ["validate", "intense", "--out", str(tmp_path), "--samples", "2000"]
    assert main([*args, "--experiment=synthgene_tri"]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert table.columns == ["suite", "experiment", "term", "estimate", "truth", "abs_error"]
    relevance = table.filter(pl.col("truth").is_null() & ~pl.col("term").str.contains("_"))
    terms = ["M1", "M2", "M3", "M1xM2", "M1xM3", "M2xM3", "M1xM2xM3"]
    assert relevance["term"].to_list() == terms
    assert relevance["estimate"].sum() == pytest.approx(1.0)  # ‖β‖_1 = 1 with p = 1
    checks = table.filter(pl.col("truth") == 1.0)
    assert checks["term"].to_list() == ["M1xM2_share_at_least_0.8", "M1xM2_largest"]
    assert checks["estimate"].to_list() == [1.0, 1.0]
    assert "validation: intense (relevance" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_i2moe_puts_each_expected_expert_first(tmp_path, capsys) -> None:
    args = ["validate", "i2moe", "--out", str(tmp_path), "--samples", "1500"]
    assert main(args) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    for experiment in ("hdxor_synergy", "hdxor_uniqueness"):
        rows = table.filter(pl.col("experiment") == experiment)
        weights = rows.filter(pl.col("term").is_in(["uni_1", "uni_2", "syn", "red"]))
        assert weights["term"].to_list() == ["uni_1", "uni_2", "syn", "red"]
        assert weights["estimate"].sum() == pytest.approx(1.0, abs=1e-9)  # mean weights
        accuracies = rows.filter(pl.col("term").str.starts_with("accuracy_"))
        assert accuracies["term"].to_list() == [
            "accuracy_uni_1",
            "accuracy_uni_2",
            "accuracy_syn",
            "accuracy_red",
            "accuracy_mixture",
        ]
        assert accuracies["estimate"].is_between(0, 1).all()
    checks = table.filter(pl.col("truth").is_not_null())
    assert checks["term"].to_list() == [
        "syn_largest",
        "uni_1_largest",
        "agreement_shares_sum_to_1",
        "syn_accuracy_at_least_0.9",
        "uni_accuracy_near_chance",
        "agreement_shares_sum_to_1",
    ]
    leading = checks.filter(pl.col("term").str.ends_with("_largest"))
    assert leading["estimate"].to_list() == [1.0, 1.0]
    assert "validation: i2moe (mean expert weight" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_validate_lsmi_gaussian_mixture_matches_the_exact_density(tmp_path) -> None:
    args = ["validate", "lsmi", "--out", str(tmp_path), "--samples", "8000"]
    assert main([*args, "--experiment=gmm_rho_0.4"]) == 0
    table = pl.read_parquet(tmp_path / "validation.parquet")
    assert table["term"].to_list() == ["R", "U1", "U2", "S"]
    assert table["abs_error"].max() < 0.02  # against the grid integral of the true density

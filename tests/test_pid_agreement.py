"""PID agreement α (paper 003 eq. 6) by hand against the estimator and the pipeline's
``alpha`` rows of PID CVX and PID BATCH."""

from __future__ import annotations

from itertools import product

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from jobs import xor_function_job  # tests/jobs.py
from scored_runs import all_measures_run  # tests/scored_runs.py

from intermodal.estimators.pid_agreement import normalised_pid, pid_agreement
from intermodal.measures import parse_config
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.score import run_score
from intermodal.synthetic.hdxor import write_table_shards

TERMS = ("R", "U1", "U2", "S")
# y = x1 AND x2 of two fair independent bits: I(x1; y) = I(x2; y) = h(1/4) − 1/2 is all
# redundant, the rest of I(x1, x2; y) = h(1/4) synergy; y = x1 XOR x2 is 1 bit of synergy
BINARY_ENTROPY_QUARTER = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))
AND_PID = np.array([BINARY_ENTROPY_QUARTER - 0.5, 0.0, 0.0, 0.5])
XOR_PID = np.array([0.0, 0.0, 0.0, 1.0])
# α_I = (I_label / Σ I_label) · I_model: only synergy is in both
AND_XOR_ALPHA = {"R": 0.0, "U1": 0.0, "U2": 0.0, "S": 0.5 / BINARY_ENTROPY_QUARTER}
AND_XOR_ALPHA["total"] = AND_XOR_ALPHA["S"]


def test_agreement_weighs_the_models_terms_by_the_datasets_shares() -> None:
    dataset = np.array([1.0, 0.5, 0.0, 0.5])
    model = np.array([0.2, 0.4, 0.3, 0.8])
    expected = [0.5 * 0.2, 0.25 * 0.4, 0.0, 0.25 * 0.8]
    np.testing.assert_allclose(pid_agreement(dataset, model), [*expected, sum(expected)])
    batch = pid_agreement(np.stack([dataset, AND_PID]), np.stack([model, XOR_PID]))
    assert batch.shape == (2, 5)
    np.testing.assert_allclose(batch[1], list(AND_XOR_ALPHA.values()))
    assert np.isnan(normalised_pid(np.zeros(4))).all()


@pytest.mark.usefixtures("ray_session")
def test_pipeline_alpha_equals_the_hand_computed_one(tmp_path) -> None:
    """Exactly balanced bits labelled by AND, the model computing XOR: the empirical joints are
    the gates' exact joints, so the PIDs and α are known in closed form."""
    cells = list(product((0, 1), repeat=2)) * 100
    bits = np.array(cells, dtype=np.float32)
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(len(cells)), pa.int64()),
            "m0_bits": pa.array(bits[:, :1].tolist(), pa.list_(pa.float32(), 1)),
            "m1_bits": pa.array(bits[:, 1:].tolist(), pa.list_(pa.float32(), 1)),
            "label": pa.array([a & b for a, b in cells], pa.int64()),
        }
    )
    data, out = str(tmp_path / "data"), str(tmp_path / "run")
    write_table_shards(table, data, n_shards=2)
    job = xor_function_job(
        data,
        out,
        label_column="label",
        measures=["pid_cvx"],
        pid_cvx={"space": "features", "n_clusters": 2, "fit_rows": len(cells)},
    )
    run_score(parse_config(job), progress=lambda _: None)
    table = pl.from_arrow(run_aggregate(out, progress=lambda _: None))
    alpha = table.filter(pl.col("statistic") == "alpha")
    assert set(alpha["target"]) == {"pred"} and set(alpha["group_by"]) == {""}
    assert set(alpha["n"]) == {len(cells)}
    found = dict(alpha.select("term", "value").iter_rows())
    assert found.keys() == AND_XOR_ALPHA.keys()
    for term, value in AND_XOR_ALPHA.items():
        assert found[term] == pytest.approx(value, abs=1e-9), term


@pytest.mark.usefixtures("ray_session")
def test_both_pid_measures_write_alpha_of_their_own_pids(tmp_path_factory) -> None:
    """Every pair and group with both PIDs gets α, computed here from the run's ``pid`` rows."""
    run = all_measures_run(tmp_path_factory)
    table = pl.read_parquet(f"{run}/global/*.parquet")
    for measure in ("pid_cvx", "pid_batch"):
        rows = table.filter(pl.col("measure") == measure)
        pid = rows.filter((pl.col("statistic") == "pid") & pl.col("term").is_in(TERMS))
        alpha = rows.filter(pl.col("statistic") == "alpha")
        places = pid.select("modalities", "group_by", "group").unique().rows()
        assert alpha.height == 5 * len(places) > 0
        for modalities, group_by, group in places:

            def terms(frame: pl.DataFrame, target: str, where=(modalities, group_by, group)):
                chosen = frame.filter(
                    (pl.col("target") == target)
                    & (pl.col("modalities") == where[0])
                    & (pl.col("group_by") == where[1])
                    & (pl.col("group") == where[2])
                )
                return dict(chosen.select("term", "value").iter_rows()), chosen["n"].min()

            (label, label_n), (model, model_n) = terms(pid, "label"), terms(pid, "pred")
            found, n = terms(alpha, "pred")
            total = sum(label.values())
            expected = {term: label[term] / total * model[term] for term in TERMS}
            expected["total"] = sum(expected.values())
            assert found == pytest.approx(expected, abs=1e-12)
            assert n == min(label_n, model_n)

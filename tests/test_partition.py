"""partition: exact quantile sizes with ties, exactly-once membership, thresholds, the dominant
LSMI term, the leading I2MoE expert, the input join, errors; on synthetic score dirs and a small
run of every measure."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scored_runs import NULL_LABELS, all_measures_run  # tests/scored_runs.py

from intermodal.estimators.lsmi import SHIFT_SIGNS
from intermodal.measures.lsmi import pair_constant
from intermodal.pipelines.partition import (
    NULL_PARTITION,
    Rule,
    cut_rank,
    key_value,
    run_partition,
    value_bits,
)
from intermodal.schemas.tables import PID_TERMS

pytestmark = pytest.mark.usefixtures("ray_session")


def _written(out) -> pl.DataFrame:
    return pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)


def _expected_by_rank(values: pl.DataFrame, by: str, quantiles, names) -> pl.DataFrame:
    """Independent assignment: sort by (value, id), cut the ranks at ⌊q·n⌋."""
    valid = values.filter(pl.col(by).is_not_null() & pl.col(by).is_not_nan())
    ranked = valid.sort([by, "id_key"]).with_row_index("rank")
    n = ranked.height
    cuts = [int(np.floor(round(q * n, 9))) for q in quantiles]
    index = np.searchsorted(np.array(cuts), ranked["rank"].to_numpy(), side="right")
    return ranked.select("sample_id").with_columns(pl.Series("partition", np.array(names)[index]))


def test_value_bits_order_floats_and_invert() -> None:
    values = np.array([3.5, -0.0, 0.0, -2.0, np.inf, -np.inf, 1e-300, -1e-300, 7.0])
    bits = value_bits(values)
    assert np.all(np.diff(values[np.argsort(bits, kind="stable")]) >= 0)
    assert bits[1] == bits[2]  # -0.0 is 0.0
    assert [key_value(int(b)) for b in bits] == [float(v) + 0.0 for v in values]


def test_cut_rank_takes_the_decimal_quantile() -> None:
    assert cut_rank(0.29, 100) == 29  # 0.29 * 100 is 28.999... in binary
    assert cut_rank(0.5, 7) == 3
    assert cut_rank(0.999, 10) == 9


@pytest.mark.parametrize(
    "rule",
    [
        dict(by="x"),
        dict(by="x", quantiles=(0.5,), thresholds=(1.0,)),
        dict(by="x", quantiles=(0.5, 0.2)),
        dict(by="x", quantiles=(1.0,)),
        dict(by="dominant", quantiles=(0.5,)),
        dict(by="i2moe", thresholds=(0.5,)),
    ],
)
def test_rules_refuse_what_they_cannot_mean(rule) -> None:
    with pytest.raises(ValueError):
        Rule(**rule)


def _fake_run(tmp_path, ids: pa.Array, values: np.ndarray, files: int = 3) -> str:
    """A run directory with only scores/: ``sample_id`` and ``value`` in several files."""
    run = tmp_path / "fake_run"
    (run / "scores").mkdir(parents=True)
    table = pa.table({"sample_id": ids, "value": pa.array(values, from_pandas=True)})
    for i, part in enumerate(np.array_split(np.arange(len(values)), files)):
        pq.write_table(table.take(part), run / "scores" / f"part-{i}.parquet", row_group_size=500)
    return str(run)


@pytest.mark.parametrize("id_kind", ["int", "string"])
def test_quantile_sizes_are_exact_under_heavy_ties(tmp_path, id_kind) -> None:
    rng = np.random.default_rng(3)
    n = 5003
    values = rng.integers(0, 7, n).astype(float)  # 7 values: every cut falls inside a tie
    values[rng.random(n) < 0.02] = np.nan
    ids = rng.permutation(n) * 3 - 4000
    id_array = pa.array(ids) if id_kind == "int" else pa.array([f"s{i}" for i in ids])
    run = _fake_run(tmp_path, id_array, values)
    out = tmp_path / "parts"
    quantiles = (0.1, 0.25, 0.5, 0.9)
    # a tiny collect limit makes the search descend through the id's digits too
    summary = run_partition(run, str(out), Rule("value", quantiles), collect_limit=4)
    written = _written(out)
    valid = int(np.isfinite(values).sum())
    assert written.height == n and written["sample_id"].n_unique() == n
    assert written.filter(pl.col("partition") == NULL_PARTITION).height == n - valid
    sizes = dict(written.group_by("partition").len().iter_rows())
    edges = [0, *(cut_rank(q, valid) for q in quantiles), valid]
    for i, name in enumerate(["p0", "p1", "p2", "p3", "p4"]):
        assert sizes[name] == edges[i + 1] - edges[i]
        row = summary.filter(pl.col("partition") == name)
        assert row["rows"].item() == row["expected_rows"].item() == sizes[name]
    if id_kind == "int":  # integer ids break ties in their own order
        frame = pl.DataFrame({"sample_id": ids, "value": values, "id_key": ids})
        expected = _expected_by_rank(frame, "value", quantiles, ["p0", "p1", "p2", "p3", "p4"])
        joined = expected.join(written, on="sample_id", suffix="_written")
        assert joined.height == valid
        assert (joined["partition"] == joined["partition_written"]).all()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return all_measures_run(tmp_path_factory)


def test_quantiles_of_a_score_column_match_a_sort(run, tmp_path) -> None:
    by = "lsmi_R_x1__x2"
    summary = run_partition(run, str(tmp_path / "q"), Rule(by, (0.5,)), progress=lambda _: None)
    written = _written(tmp_path / "q")
    scores = pl.read_parquet(f"{run}/scores").with_columns(id_key=pl.col("sample_id"))
    expected = _expected_by_rank(scores, by, (0.5,), ["low", "high"])
    joined = expected.join(written, on="sample_id", suffix="_written")
    assert (joined["partition"] == joined["partition_written"]).all()
    assert written["sample_id"].sort().equals(scores["sample_id"].sort())
    assert written.filter(pl.col("partition") == NULL_PARTITION).height == NULL_LABELS
    low = summary.filter(pl.col("partition") == "low")
    assert low["value_to"].item() == written.filter(pl.col("partition") == "high")[by].min()


def test_thresholds_split_by_value(run, tmp_path) -> None:
    rule = Rule("intershap_local", thresholds=(0.05, 0.1))
    run_partition(run, str(tmp_path / "t"), rule, progress=lambda _: None)
    written = _written(tmp_path / "t")
    values = written["intershap_local"]
    expected = np.digitize(values.to_numpy(), [0.05, 0.1])  # v < T below, v ≥ T above
    assert (written["partition"].to_numpy() == np.array(["p0", "p1", "p2"])[expected]).all()
    assert written.height == pl.read_parquet(f"{run}/scores").height


def test_dominant_is_the_largest_adjusted_lsmi_term(run, tmp_path) -> None:
    summary = run_partition(run, str(tmp_path / "d"), Rule("dominant"), progress=lambda _: None)
    written = _written(tmp_path / "d").sort("sample_id")
    constant = pair_constant(run, ("x1", "x2"))
    scores = pl.read_parquet(f"{run}/scores").sort("sample_id")
    names = ["redundancy", "uniqueness_x1", "uniqueness_x2", "synergy"]
    terms = np.column_stack(
        [
            scores[f"lsmi_{t}_x1__x2"].to_numpy() + sign * constant
            for t, sign in zip(PID_TERMS, SHIFT_SIGNS, strict=True)
        ]
    )
    labelled = ~np.isnan(terms).any(axis=1)
    expected = np.where(labelled, np.array(names)[np.nan_to_num(terms, nan=0).argmax(1)], "null")
    assert (written["partition"].to_numpy() == expected).all()
    assert summary["rows"].sum() == scores.height


def test_i2moe_puts_each_sample_with_its_largest_weight(tmp_path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(4), size=2000)
    weights[7] = np.nan  # a row without weights goes to the null partition
    experts = ["uni_a", "uni_b", "syn", "red"]
    run = tmp_path / "fake_run"
    (run / "scores").mkdir(parents=True)
    table = pa.table(
        {"sample_id": pa.array(np.arange(2000)), "i2moe_pred": pa.array(np.zeros(2000, int))}
        | {f"i2moe_w_{e}": pa.array(weights[:, i], from_pandas=True) for i, e in enumerate(experts)}
    )
    for i, part in enumerate(np.array_split(np.arange(2000), 3)):
        pq.write_table(table.take(part), run / "scores" / f"part-{i}.parquet")
    summary = run_partition(str(run), str(tmp_path / "x"), Rule("i2moe"), progress=lambda _: None)
    written = _written(tmp_path / "x").sort("sample_id")
    leader = np.array(experts)[np.nan_to_num(weights, nan=0).argmax(axis=1)]
    expected = np.where(np.isnan(weights).any(axis=1), NULL_PARTITION, leader)
    assert (written["partition"].to_numpy() == expected).all()
    assert written["sample_id"].to_list() == list(range(2000))  # each sample exactly once
    assert summary["partition"].to_list() == [*experts, NULL_PARTITION]
    assert summary["rows"].to_list() == [*(int((expected == e).sum()) for e in experts), 1]
    plain = _fake_run(tmp_path / "plain", pa.array(range(10)), np.ones(10))
    with pytest.raises(ValueError, match="no I2MoE weight columns"):
        run_partition(plain, str(tmp_path / "y"), Rule("i2moe"))


def test_with_input_joins_the_input_rows(run, tmp_path) -> None:
    rule = Rule("intershap_local", thresholds=(0.1,))
    run_partition(run, str(tmp_path / "j"), rule, with_input=True, progress=lambda _: None)
    written = _written(tmp_path / "j").sort("sample_id")
    inputs = pl.read_parquet(f"{run}/../data").sort("sample_id")
    assert written["sample_id"].equals(inputs["sample_id"])
    assert written["x1"].equals(inputs["x1"]) and written["site"].equals(inputs["site"])


def test_errors_name_the_file_and_column(run, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"--by no_such_column: no such column in .*scores"):
        run_partition(run, str(tmp_path / "e"), Rule("no_such_column", (0.5,)))
    with pytest.raises(ValueError, match="not a number"):
        run_partition(run, str(tmp_path / "e"), Rule("site", (0.5,)))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a partition output"):
        run_partition(run, str(tmp_path / "busy"), Rule("intershap_local", (0.5,)))
    assert (tmp_path / "busy" / "keep.txt").exists()

"""global/ in long form with typed columns: one row per statistic, the documented polars and
duckdb queries filter by columns alone, every statistic is documented, and tables of the
previous release are upgraded to the new form."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scored_runs import all_measures_run  # tests/scored_runs.py

from intermodal import storage
from intermodal.charts.run import RunData
from intermodal.measures.lsmi import pair_constant
from intermodal.schemas.legacy import upgrade_legacy_global
from intermodal.schemas.tables import GLOBAL_KEY, GLOBAL_SCHEMA

SCHEMA_DOC = Path(__file__).parents[1] / "docs" / "schema.md"


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session) -> str:
    return all_measures_run(tmp_path_factory)


def _global(run: str) -> pl.DataFrame:
    return pl.read_parquet(f"{run}/global/*.parquet")


def test_one_row_per_statistic_with_typed_columns(run) -> None:
    table = _global(run)
    assert table.schema == pl.Schema(pl.from_arrow(GLOBAL_SCHEMA.empty_table()).schema)
    assert table.select(GLOBAL_KEY).is_duplicated().sum() == 0
    assert set(table["measure"]) == {"intershap", "pid_cvx", "lsmi", "pid_batch"}
    modalities = {"x1", "x2"}
    assert set(table["modalities"].explode().drop_nulls()) <= modalities
    # no value is written twice: a measure's own statistics never repeat a column's mean
    summaries = {"mean", "p10", "p50", "p90"}
    statistics = {
        m: set(table.filter(pl.col("measure") == m)["statistic"]) - summaries
        for m in table["measure"].unique()
    }
    assert statistics == {
        "intershap": {"intershap"},
        "pid_cvx": {"pid", "codes_information", "feature_information", "alpha"},
        "lsmi": {"adjusted_mean", "adjustment"},
        "pid_batch": {"pid", "alpha"},
    }
    intershap = table.filter(pl.col("statistic") == "intershap")
    assert set(intershap["term"]) == {
        "global",
        "modalities",
        "interactions",
        "behaviour",
        "modality",
    }
    assert set(table.filter(pl.col("statistic").is_in(summaries))["column"]) >= {
        "intershap_local",
        "interaction_x1__x2",
        "lsmi_S_x1__x2",
        "pid_batch_model_R_x1__x2",
    }


def test_documented_queries_filter_by_columns(run) -> None:
    table = _global(run)
    label_synergy = table.filter(
        (pl.col("measure") == "pid_cvx")
        & (pl.col("target") == "label")
        & (pl.col("statistic") == "pid")
        & (pl.col("term") == "S")
        & (pl.col("modalities") == ["x1", "x2"])
        & (pl.col("group_by") == "")
    )
    assert label_synergy.height == 1
    per_label = table.filter(
        (pl.col("measure") == "lsmi")
        & (pl.col("statistic") == "adjusted_mean")
        & (pl.col("term") == "R")
        & (pl.col("modalities") == ["x1", "x2"])
        & (pl.col("group_by") == "label")
    ).select("group", "value", "stderr")
    assert sorted(per_label["group"]) == ["0", "1"]
    # the raw mean is the column's own row, the adjusted one is shifted by the constant
    raw = table.filter(
        (pl.col("measure") == "lsmi")
        & (pl.col("statistic") == "mean")
        & (pl.col("column") == "lsmi_R_x1__x2")
        & (pl.col("group_by") == "")
    ).row(0, named=True)
    assert (raw["term"], raw["modalities"], raw["target"]) == ("R", ["x1", "x2"], "label")
    adjusted = table.filter(
        (pl.col("statistic") == "adjusted_mean")
        & (pl.col("column") == "lsmi_R_x1__x2")
        & (pl.col("group_by") == "")
    )
    constant = pair_constant(run, ("x1", "x2"))
    assert adjusted["value"].item() == pytest.approx(raw["value"] + constant, abs=1e-12)

    duckdb = pytest.importorskip("duckdb")
    found = duckdb.sql(
        f"select value from '{run}/global/*.parquet' "
        "where measure = 'pid_cvx' and target = 'label' and statistic = 'pid' and term = 'S' "
        "and modalities = ['x1', 'x2'] and group_by = ''"
    ).fetchall()
    assert found == [(label_synergy["value"].item(),)]


def _documented_global() -> str:
    text = SCHEMA_DOC.read_text()
    section = text.split("\n## global/\n", 1)[1].split("\n## artifacts/", 1)[0]
    return re.sub(r"```.*?```", "", section, flags=re.DOTALL)  # the tables, not the examples


def test_every_statistic_and_term_is_documented(run) -> None:
    documented = set(re.findall(r"`([^`]+)`", _documented_global()))
    table = _global(run)
    assert set(table["statistic"]) <= documented
    terms = set(table["term"]) - {""}
    assert terms <= documented, terms - documented
    assert set(table["target"]) - {""} <= documented


def test_run_data_reads_the_typed_columns(run) -> None:
    data = RunData(run)
    assert data.terms("pid_cvx", "pid", target="pred", modalities=("x1", "x2")).keys() == {
        "R",
        "U1",
        "U2",
        "S",
        "I",
    }
    pairs = data.pairs("pid_batch", "pid", target="label")
    assert list(pairs) == [("x1", "x2")] and list(pairs["x1", "x2"]) == ["R", "U1", "U2", "S"]
    with pytest.raises(ValueError, match="several rows per term"):
        data.terms("pid_cvx", "pid")  # a term per target: name it


# real rows of the previous release's tables (whole dataset unless a group is named)
OLD_ROWS = [
    ("intershap", "global", 0.083145, 2000, None),
    ("intershap", "local_mean", 0.117124, 2000, 0.001316),
    ("intershap", "modality_x1", 0.386025, 2000, None),
    ("intershap", "mean_interaction_x1__x2", -0.000198, 2000, 0.000021),
    ("intershap", "mean[interaction_x1__x2]", -0.000198, 2000, 0.000021),
    ("intershap", "mean[intershap_local]", 0.117124, 2000, 0.001316),
    ("intershap", "global__class1", 0.137805, 600, None),
    ("intershap", "mean[shapley_M2__class1]", 0.003152, 600, 0.000265),
    ("lsmi", "adjustment[x1,x2]", 0.122101, 1980, None),
    ("lsmi", "R[x1,x2]", -0.122101, 1980, 0.010392),
    ("lsmi", "R_adjusted[x1,x2]", 0.0, 1980, 0.010392),
    ("lsmi", "mean[lsmi_R_x1__x2]", -0.122101, 1980, 0.010392),
    ("pid_batch", "S[x1,x2]", -0.044690, 2000, 0.000680),
    ("pid_batch_model", "S[x1,x2]", -0.041943, 2000, 0.000681),
    ("pid_batch", "p50[pid_batch_model_S_x1__x2]", -0.041194, 2000, None),
    ("pid_cvx", "S[x1,x2]", 0.483818, 1980, None),
    ("pid_cvx_model", "R[x1,x2]", 0.000945, 2000, None),
    ("i2moe", "weight[uni_M1]", 0.171779, 600, 0.000580),
    ("i2moe", "mean[i2moe_w_uni_M1]", 0.171779, 600, 0.000580),
    ("intense", "relevance[M1xM3]", 0.137910, 600, None),
    ("intense", "contribution[M1xM3]", -0.000299, 600, 0.000040),
    ("intense", "mean[intense_c_M1xM3]", -0.000299, 600, 0.000040),
    ("intense", "mean[intense_bias]", 0.027727, 600, 0.000209),
]
# what each becomes: (measure, target, statistic, term, modalities, column), None: dropped
NEW_ROWS = [
    ("intershap", "predicted", "intershap", "global", [], ""),
    None,
    ("intershap", "predicted", "intershap", "modality", ["x1"], ""),
    None,
    ("intershap", "predicted", "mean", "interaction", ["x1", "x2"], "interaction_x1__x2"),
    ("intershap", "predicted", "mean", "local", [], "intershap_local"),
    ("intershap", "class1", "intershap", "global", [], ""),
    ("intershap", "class1", "mean", "shapley", ["M2"], "shapley_M2__class1"),
    ("lsmi", "label", "adjustment", "", ["x1", "x2"], ""),
    None,
    ("lsmi", "label", "adjusted_mean", "R", ["x1", "x2"], "lsmi_R_x1__x2"),
    ("lsmi", "label", "mean", "R", ["x1", "x2"], "lsmi_R_x1__x2"),
    ("pid_batch", "label", "pid", "S", ["x1", "x2"], ""),
    ("pid_batch", "pred", "pid", "S", ["x1", "x2"], ""),
    ("pid_batch", "pred", "p50", "S", ["x1", "x2"], "pid_batch_model_S_x1__x2"),
    ("pid_cvx", "label", "pid", "S", ["x1", "x2"], ""),
    ("pid_cvx", "pred", "pid", "R", ["x1", "x2"], ""),
    None,
    ("i2moe", "", "mean", "uni_M1", ["M1"], "i2moe_w_uni_M1"),
    ("intense", "", "relevance", "M1xM3", ["M1", "M3"], ""),
    None,
    ("intense", "", "mean", "M1xM3", ["M1", "M3"], "intense_c_M1xM3"),
    ("intense", "", "mean", "bias", [], "intense_bias"),
]


def _old_table() -> pa.Table:
    rows = [
        {"measure": m, "term": t, "group_by": "", "group": "", "value": v, "n": n, "stderr": e}
        for m, t, v, n, e in OLD_ROWS
    ]
    rows.append(
        {
            "measure": "pid_cvx",
            "term": "S[x1,x2]",
            "group_by": "site",
            "group": "north",
            "value": 0.49,
            "n": 790,
            "stderr": None,
        }
    )
    schema = pa.schema(
        [
            pa.field("measure", pa.string(), nullable=False),
            pa.field("term", pa.string(), nullable=False),
            pa.field("group_by", pa.string(), nullable=False),
            pa.field("group", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("n", pa.int64(), nullable=False),
            pa.field("stderr", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_old_tables_are_upgraded_to_the_new_form() -> None:
    upgraded = upgrade_legacy_global(_old_table())
    assert upgraded.schema == GLOBAL_SCHEMA
    labels = ("measure", "target", "statistic", "term", "modalities", "column")
    got = [(tuple(row[c] for c in labels), row) for row in upgraded.to_pylist()]
    kept = [(old, new) for old, new in zip(OLD_ROWS, NEW_ROWS, strict=True) if new is not None]
    for (facts, row), (old, new) in zip(got, kept, strict=False):
        assert facts == new, old
        assert (row["value"], row["n"], row["stderr"]) == (old[2], old[3], old[4])
        assert (row["group_by"], row["group"]) == ("", "")
    assert len(got) == len(kept) + 1
    facts, grouped = got[-1]
    assert facts == ("pid_cvx", "label", "pid", "S", ["x1", "x2"], "")
    assert (grouped["group_by"], grouped["group"], grouped["value"]) == ("site", "north", 0.49)
    assert upgrade_legacy_global(upgraded) is upgraded  # the new form passes as it is
    # blocks split by the run's modality names, which may hold an "x"
    config = {"modalities": [{"name": "xa"}, {"name": "b"}], "intershap": {"target": "label"}}
    old = _old_table().slice(0, 1).to_pylist()
    old += [{**old[0], "measure": "intense", "term": "relevance[xaxb]", "stderr": None}]
    table = pa.Table.from_pylist(old, schema=_old_table().schema)
    rows = upgrade_legacy_global(table, config).to_pylist()
    assert rows[0]["target"] == "label"  # InterSHAP's explained output, from the config
    assert rows[1]["modalities"] == ["xa", "b"]


def test_readers_upgrade_old_tables(run, tmp_path) -> None:
    """A run whose global/ is of the previous release reads as the new form."""
    copy = tmp_path / "old_run"
    copy.mkdir()
    (copy / "manifest.json").write_text(Path(run, "manifest.json").read_text())
    old = _old_table()
    for measure in ("lsmi", "pid_cvx"):
        rows = old.filter(pc.equal(old.column("measure"), measure))
        storage.write_table(rows, str(copy / "global" / f"{measure}.parquet"))
    assert pair_constant(str(copy), ("x1", "x2")) == 0.122101
    data = RunData(str(copy))
    assert data.terms("pid_cvx", "pid", target="label") == {"S": 0.483818}
    assert data.terms("lsmi", "mean", modalities=("x1", "x2")) == {"R": -0.122101}

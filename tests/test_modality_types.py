"""Modalities the model receives as other tensor types than float32 vectors: a dtype, and a
variable first axis padded to max_length with a mask beside it (token ids of different
lengths). Rows that do not fit are rejected with a reason; measures that fit on float features
refuse such modalities before any work."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from intermodal import storage
from intermodal.measures import parse_config
from intermodal.operators.context import as_tensors, constant_arrays
from intermodal.pipelines.aggregate import run_aggregate
from intermodal.pipelines.score import run_score
from intermodal.rundir import RunPaths
from intermodal.schemas.config import ConfigError
from intermodal.schemas.tables import PID_TERMS, length_column, mask_key, modality_arrays
from intermodal.schemas.validation import validate_rows
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.tokens import MARKER, TokenXORSpec, generate_token_xor

TEXT = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 4, "pad_value": 0}


FLAG = {"name": "flag", "shape": [1]}
MODEL = {"name": "xor", "factory": "intermodal.synthetic.tokens:token_xor_model"}


def _job(text: dict, **settings) -> object:
    """A job of the modality ``text`` beside ``FLAG``, explaining the token XOR model."""
    return parse_config(
        {
            "dataset": "types",
            "input": "unused",
            "output": "unused",
            "num_classes": 2,
            "label_column": None,
            "modalities": [text, FLAG],
            "model": MODEL,
            "measures": ["intershap"],
            "intershap": {"target": "predicted"},
            **settings,
        }
    )


def _validate(job, column: pa.Array) -> tuple[pa.Table, list[dict]]:
    """Validated rows of a batch whose modality column ``text`` is ``column``."""
    n = len(column)
    flag = pa.array([[1.0]] * n, pa.list_(pa.float32()))
    batch = pa.table({"sample_id": pa.array(range(n), pa.int64()), "text": column, "flag": flag})
    valid, rejects = validate_rows(batch, job, pa.array([], pa.int64()), "f.parquet", 0)
    return valid, rejects.select(["row_index", "columns", "reason"]).to_pylist()


def test_token_lists_are_padded_with_their_lengths_and_too_long_rows_rejected() -> None:
    job = _job(TEXT)
    tokens = pa.array([[5, 6], [7, 8, 9, 10], [1, 2, 3, 4, 5], None, []], pa.list_(pa.int64()))
    valid, rejects = _validate(job, tokens)
    assert valid.schema.field("text").type == pa.list_(pa.int64(), 4)
    assert valid.column("text").to_pylist() == [[5, 6, 0, 0], [7, 8, 9, 10], [0, 0, 0, 0]]
    assert valid.column(length_column("text")).to_pylist() == [2, 4, 0]
    assert rejects == [
        {"row_index": 2, "columns": "text", "reason": "5 steps exceed max_length 4"},
        {"row_index": 3, "columns": "text", "reason": "value is null"},
    ]
    arrays = modality_arrays(job, valid)
    inputs = as_tensors(job, arrays, torch.device("cpu"))
    assert inputs["text"]["mask"].tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [False, False, False, False],
    ]
    assert inputs["text"]["values"].dtype == torch.int64


def test_truncation_keeps_the_first_steps_and_steps_may_have_a_shape() -> None:
    truncated = _job({**TEXT, "truncate": True})
    valid, rejects = _validate(truncated, pa.array([[1, 2, 3, 4, 5, 6]], pa.list_(pa.int64())))
    assert rejects == []
    assert valid.column("text").to_pylist() == [[1, 2, 3, 4]]
    assert valid.column(length_column("text")).to_pylist() == [4]
    pairs = _job({"name": "text", "shape": [None, 2], "max_length": 2, "pad_value": -1})
    flat = pa.array([[0.5, 1.5], [1, 2, 3, 4], [1.0, 2.0, 3.0]], pa.list_(pa.float64()))
    valid, rejects = _validate(pairs, flat)
    assert valid.column("text").to_pylist() == [[0.5, 1.5, -1, -1], [1, 2, 3, 4]]
    assert rejects == [
        {"row_index": 2, "columns": "text", "reason": "3 values are not whole steps of 2"}
    ]
    nested = pa.array([[[0.5, 1.5]], [[1, 2], [3, 4]]], pa.list_(pa.list_(pa.float32(), 2)))
    valid, _ = _validate(pairs, nested)
    assert valid.column("text").to_pylist() == [[0.5, 1.5, -1, -1], [1, 2, 3, 4]]
    assert valid.column(length_column("text")).to_pylist() == [1, 2]


def test_values_the_dtype_cannot_hold_are_rejected_with_a_reason() -> None:
    small = _job({"name": "text", "shape": [3], "dtype": "uint8"})
    column = pa.array([[1, 2, 3], [1, 256, 3], [1.5, 2, 3], [-1, 0, 0]], pa.list_(pa.float64()))
    valid, rejects = _validate(small, column)
    assert valid.column("text").to_pylist() == [[1, 2, 3]]
    assert [r["reason"] for r in rejects] == ["1 values that are not uint8"] * 3
    half = _job({"name": "text", "shape": [2], "dtype": "float16"})
    valid, rejects = _validate(half, pa.array([[1.0, 70000.0], [1.0, 2.0]], pa.list_(pa.float32())))
    assert valid.column("text").to_pylist() == [[1.0, 2.0]]
    assert rejects[0]["reason"] == "1 NaN/inf values"  # beyond float16's range


def test_finite_values_whose_sum_overflows_are_kept_and_the_all_valid_batch_is_not_copied():
    # the quick finiteness test (one float64 sum) overflows here: the element-wise check decides
    wide = _job({"name": "text", "shape": [2], "dtype": "float64"})
    column = pa.array([[1e308, 1e308], [-1e308, np.inf]], pa.list_(pa.float64()))
    valid, rejects = _validate(wide, column)
    assert valid.column("text").to_pylist() == [[1e308, 1e308]]
    assert [r["reason"] for r in rejects] == ["1 NaN/inf values"]
    single = _job({"name": "text", "shape": [2], "dtype": "float32"})
    column = pa.array([[0.5, 1.5], [2.5, 3.5]], pa.list_(pa.float32()))
    valid, _ = _validate(single, column)
    kept = valid.column("text").chunk(0).values
    assert kept.buffers()[1].address == column.values.buffers()[1].address


def test_the_zero_baseline_of_a_sequence_has_no_steps() -> None:
    arrays = constant_arrays(_job({**TEXT, "pad_value": 3}), {})
    assert arrays["text"].tolist() == [[3, 3, 3, 3]] and arrays["text.mask"].tolist() == [[0] * 4]
    assert arrays["flag"].tolist() == [[0.0]] and arrays["flag"].dtype == np.float32


def test_settings_that_cannot_hold_are_refused_in_one_line() -> None:
    cases = {
        "only the first axis may be null": {"name": "t", "shape": [2, None], "max_length": 2},
        "needs max_length": {"name": "t", "shape": [None]},
        "truncate applies to a variable first axis": {"name": "t", "shape": [2], "truncate": True},
        "pad_value 0.5 is not a int64 value": {**TEXT, "pad_value": 0.5},
    }
    for message, modality in cases.items():
        with pytest.raises(ConfigError, match=message):
            _job(modality)
    for measure, reads in {
        "pid_cvx": "clusters the modality values",
        "pid_batch": "trains its encoders",
        "i2moe": "trains its fusion model",
        "lsmi": "fits its classifiers",
    }.items():
        with pytest.raises(ConfigError, match=rf"'{measure}' {reads}.*text \(int64, variable"):
            _job(TEXT, measures=[measure], label_column="label")
    with pytest.raises(ConfigError, match="masking 'mean' averages rows"):
        _job(TEXT, intershap={"masking": "mean"})


def _token_job(data, output, text: dict, **model) -> dict:
    return {
        "dataset": "tokens",
        "input": str(data),
        "output": str(output),
        "num_classes": 2,
        "modalities": [text, FLAG],
        "model": {**MODEL, **model},
        "measures": ["intershap"],
        "intershap": {"background_size": 16},
    }


@pytest.mark.usefixtures("ray_session")
def test_token_ids_score_as_the_same_information_in_a_float_column(tmp_path) -> None:
    """InterSHAP of a model that reads token ids through their mask (padded with the marker
    token itself, so a model that saw the padding would be wrong) equals InterSHAP of the same
    rows with the text's bit given as a float: every row's scores, and the predictions equal
    the labels."""
    table = generate_token_xor(TokenXORSpec(n_samples=600, max_tokens=12, seed=4))
    data = tmp_path / "data"
    write_table_shards(table, str(data), n_shards=2)
    tokens = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 12}
    layouts = {
        "tokens": {**tokens, "pad_value": MARKER},
        "bit": {"name": "text", "column": "text_bit", "shape": [1]},
    }
    scores = {}
    for layout, text in layouts.items():
        job = _token_job(data, tmp_path / layout, text)
        manifest = run_score(parse_config(job), progress=lambda _: None)
        assert manifest["rows"]["scored"] == 600
        scores[layout] = pl.read_parquet(tmp_path / layout / "scores").sort("sample_id")
    assert scores["tokens"]["pred"].to_list() == scores["tokens"]["label"].to_list()
    assert scores["tokens"].equals(scores["bit"])
    written = pq.read_schema(next((tmp_path / "tokens" / "scores").glob("*.parquet")))
    assert "text.length" not in written.names  # the normalised layout stays internal


@pytest.mark.usefixtures("ray_session")
def test_preprocessing_runs_where_rows_are_read_and_rejects_the_rows_it_fails_on(
    tmp_path,
) -> None:
    """Text as strings, tokenized by ``model.preprocess``: rows it raises on are rejected with
    its error, every other row scores exactly as from the token-id column; a function that fails
    on every row stops the job before Ray starts, in one line."""
    table = generate_token_xor(TokenXORSpec(n_samples=400, max_tokens=12, seed=5))
    strings = table.column("text_string").to_pylist()
    strings[7], strings[300] = "4 x 9", "12 3.5"
    table = table.set_column(table.schema.get_field_index("text_string"), "text_string", [strings])
    data = tmp_path / "data"
    write_table_shards(table, str(data), n_shards=2)
    tokens = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 12}
    split = "intermodal.synthetic.tokens:split_token_text"
    from_ids = _token_job(data, tmp_path / "ids", tokens)
    from_text = _token_job(
        data, tmp_path / "text", {**tokens, "column": "text_string"}, preprocess=split
    )
    manifests = [
        run_score(parse_config(job), progress=lambda _: None) for job in (from_ids, from_text)
    ]
    assert manifests[1]["rows"]["scored"] == 398
    rejects = pl.read_parquet(tmp_path / "text" / "rejects").sort("row_index")
    assert rejects["columns"].to_list() == ["model.preprocess"] * 2
    assert rejects["reason"].to_list() == [
        "model.preprocess raised ValueError: invalid literal for int() with base 10: 'x'",
        "model.preprocess raised ValueError: invalid literal for int() with base 10: '3.5'",
    ]
    ids = pl.read_parquet(tmp_path / "ids" / "scores").filter(~pl.col("sample_id").is_in([7, 300]))
    text = pl.read_parquet(tmp_path / "text" / "scores")
    assert text.sort("sample_id").equals(ids.sort("sample_id"))

    broken = _token_job(
        data,
        tmp_path / "broken",
        {**tokens, "column": "text_string"},
        preprocess=split,
        preprocess_kwargs={"separator": ","},
    )
    with pytest.raises(ValueError, match=r"model.preprocess '.*split_token_text' failed on each"):
        run_score(parse_config(broken), progress=lambda _: None)


@pytest.mark.usefixtures("ray_session")
def test_lsmi_and_pid_batch_read_token_ids_through_the_models_encoder(tmp_path) -> None:
    """On token XOR the model's encoder makes each modality one bit: LSMI and PID BATCH on
    those encoder features find synergy the largest term."""
    table = generate_token_xor(TokenXORSpec(n_samples=2400, max_tokens=12, seed=6))
    data = tmp_path / "data"
    write_table_shards(table, str(data), n_shards=2)
    tokens = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 12}
    job = {
        **_token_job(data, tmp_path / "run", tokens),
        "measures": ["lsmi", "pid_batch"],
        "lsmi": {"features": "encoder", "folds": 3, "classifier": {"batch_size": 32, "lr": 0.01}},
        "pid_batch": {
            "features": "encoder",
            "epochs": 5,
            "folds": 3,
            "classifier": {"batch_size": 32, "lr": 0.01},
        },
    }
    run_score(parse_config(job), progress=lambda _: None)
    glob = pl.from_arrow(run_aggregate(job["output"], progress=lambda _: None)).filter(
        (pl.col("group_by") == "") & (pl.col("target") == "label")
    )
    for measure, statistic in (("lsmi", "adjusted_mean"), ("pid_batch", "pid")):
        terms = glob.filter((pl.col("measure") == measure) & (pl.col("statistic") == statistic))
        values = dict(zip(terms["term"], terms["value"], strict=True))
        assert max(PID_TERMS, key=values.__getitem__) == "S", (measure, values)
    with pytest.raises(ConfigError, match=r"pid_batch\.features 'encoder' needs a model"):
        parse_config({**job, "model": None, "measures": ["pid_batch"]})


def test_a_baseline_must_fit_its_modality() -> None:
    for baseline, message in (
        ({"txt": "empty"}, r"intershap\.baseline\.txt: no such modality"),
        ({"text": 0}, r"modality 'text' \(int64, variable length\) needs \"empty\""),
        ({"flag": "empty"}, r"modality 'flag' \(float32\) needs a number"),
    ):
        with pytest.raises(ConfigError, match=message):
            _job(TEXT, intershap={"baseline": baseline})
    with pytest.raises(ConfigError, match=r"intershap\.baseline\.x = 0\.5 is not a uint8 value"):
        _job({"name": "x", "shape": [2], "dtype": "uint8"}, intershap={"baseline": {"x": 0.5}})


@pytest.mark.usefixtures("ray_session")
def test_baselines_replace_the_background_rows_of_their_modalities(tmp_path) -> None:
    """A baseline for every modality masks as ``masking: zeros`` does (same scores); one for the
    text alone leaves the flag's background rows sampled from the input."""
    table = generate_token_xor(TokenXORSpec(n_samples=300, max_tokens=12, seed=7))
    data = tmp_path / "data"
    write_table_shards(table, str(data), n_shards=1)
    tokens = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 12}
    runs = {
        "zeros": {"masking": "zeros"},
        "constants": {"baseline": {"text": "empty", "flag": 0}},
        "text_only": {"baseline": {"text": "empty"}, "background_size": 8},
    }
    scores = {}
    for name, intershap in runs.items():
        job = {**_token_job(data, tmp_path / name, tokens), "intershap": intershap}
        run_score(parse_config(job), progress=lambda _: None)
        scores[name] = pl.read_parquet(tmp_path / name / "scores").sort("sample_id")
    assert scores["constants"].equals(scores["zeros"])
    background = storage.read_arrays(RunPaths(str(tmp_path / "text_only")).background)
    assert not background[mask_key("text")].any()
    flags = table.column("flag").to_pylist()
    assert len(background["flag"]) == 8 and all([v] in flags for v in background["flag"][:, 0])

"""HD-XOR experiments shared by ``demo`` and ``validate``: data splits, job configs for the
XOR function and FCNN models, training, and a run's headline numbers."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import torch

from intermodal import storage
from intermodal.measures import parse_config
from intermodal.models.fcnn import build_fcnn
from intermodal.models.training import TrainConfig, TrainResult, train_classifier
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import PID_TERMS, modality_values
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards

XOR_FACTORY = "intermodal.synthetic.hdxor:xor_function_model"
FCNN_FACTORY = "intermodal.models.fcnn:build_fcnn"


@dataclass(frozen=True)
class SplitData:
    spec: HDXORSpec
    train: pa.Table  # kept in memory for training
    test_uri: str  # sharded Parquet, the pipeline's input


def split_hdxor(
    spec: HDXORSpec, data_uri: str, test_fraction: float = 0.3, n_shards: int = 4
) -> SplitData:
    """Generate the data set; the last ``test_fraction`` of rows is written as shards."""
    table = generate(spec)
    n_test = round(table.num_rows * test_fraction)
    n_train = table.num_rows - n_test
    write_table_shards(table.slice(n_train), data_uri, n_shards)
    return SplitData(spec, table.slice(0, n_train), data_uri)


def _job(
    split: SplitData,
    run_uri: str,
    name: str,
    modalities: list[dict],
    model: dict,
    background_size: int,
    measures: tuple[str, ...] = ("intershap",),
    sections: Mapping[str, dict] | None = None,
) -> JobConfig:
    """The job of one model on the split's test shards; ``sections`` adds measures' settings
    sections (``{"pid_cvx": {...}}``)."""
    return parse_config(
        {
            **(sections or {}),
            "dataset": f"hdxor_{split.spec.setting}_m{split.spec.n_modalities}",
            "input": split.test_uri,
            "output": run_uri,
            "num_classes": 2,
            "modalities": modalities,
            "measures": list(measures),
            "model": {"name": name, **model},
            "intershap": {"background_size": background_size, "seed": split.spec.seed},
        }
    )


def xor_function_job(
    split: SplitData,
    run_uri: str,
    background_size: int,
    measures: tuple[str, ...] = ("intershap",),
    sections: Mapping[str, dict] | None = None,
) -> JobConfig:
    """The controlled XOR function, evaluated on the clean ``m<i>_bits`` columns."""
    spec = split.spec
    n_bits = 1 if spec.setting == "synergy" else 2
    modalities = [
        {"name": m, "column": f"{m}_bits", "shape": [n_bits]} for m in spec.modality_names
    ]
    kwargs = {
        "setting": spec.setting,
        "n_modalities": spec.n_modalities,
        "unique_modality": spec.unique_modality,
    }
    model = {"factory": XOR_FACTORY, "kwargs": kwargs}
    return _job(
        split, run_uri, "xor_function", modalities, model, background_size, measures, sections
    )


def fcnn_job(
    split: SplitData,
    run_uri: str,
    weights_uri: str,
    fusion: str,
    background_size: int,
    measures: tuple[str, ...] = ("intershap",),
    sections: Mapping[str, dict] | None = None,
) -> JobConfig:
    spec = split.spec
    modalities = [
        {"name": m, "shape": [d]}
        for m, d in zip(spec.modality_names, spec.feature_dims, strict=True)
    ]
    kwargs = {
        "modalities": spec.modality_names,
        "dims": spec.feature_dims,
        "num_classes": 2,
        "fusion": fusion,
    }
    model = {"factory": FCNN_FACTORY, "kwargs": kwargs, "weights": weights_uri}
    return _job(
        split, run_uri, f"fcnn_{fusion}", modalities, model, background_size, measures, sections
    )


def train_fcnn(
    split: SplitData, weights_uri: str, fusion: str, train: TrainConfig, progress: Progress
) -> TrainResult:
    """Train an FCNN on the split's training rows; saves its state_dict at ``weights_uri``."""
    spec = split.spec
    # the initial weights from the data set's seed: before, they came from whatever the
    # process had drawn earlier, so one experiment's model changed with what ran before it
    torch.manual_seed(spec.seed)
    model = build_fcnn(spec.modality_names, spec.feature_dims, 2, fusion)
    inputs = {
        m: modality_values(split.train.column(m), d)
        for m, d in zip(spec.modality_names, spec.feature_dims, strict=True)
    }
    labels = split.train.column("label").to_numpy()
    progress(f"[train] fcnn_{fusion} on hdxor_{spec.setting}: {len(labels)} rows")
    result = train_classifier(model, inputs, labels, train, progress)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fs, path = storage.filesystem(weights_uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return result


def overall_terms(
    table: pa.Table,
    measure: str,
    statistic: str,
    target: str | None = None,
    modalities: Sequence[str] | None = None,
) -> dict[str, float]:
    """Term → value of one statistic of a measure over the whole dataset, from a global table
    (of ``target`` and about ``modalities`` when given; ``()`` for rows about none);
    ValueError where two rows share a term (name the target or the modalities)."""
    frame = pl.DataFrame(pl.from_arrow(table))
    rows = frame.filter(
        (pl.col("measure") == measure)
        & (pl.col("statistic") == statistic)
        & (pl.col("group_by") == "")
    )
    if target is not None:
        rows = rows.filter(pl.col("target") == target)
    if modalities is not None:
        wanted = pl.lit(list(modalities), dtype=pl.List(pl.String))
        rows = rows.filter(pl.col("modalities") == wanted)
    terms = rows["term"].to_list()
    if len(set(terms)) != len(terms):
        raise ValueError(f"{measure} {statistic}: several rows per term {terms}")
    return dict(zip(terms, rows["value"].to_list(), strict=True))


def pid_headline(table: pa.Table, measure: str, target: str, pair: tuple[str, str]) -> str:
    """``R/U1/U2/S`` of one pair over the whole dataset, of ``target`` (``label``, ``pred``),
    in bits, as ``0.00/0.83/0.00/0.04``."""
    terms = overall_terms(table, measure, "pid", target, pair)
    return "/".join(f"{terms[term]:.2f}" for term in PID_TERMS)


def headline(table: pa.Table, target: str = "predicted") -> dict[str, float]:
    """Global and mean local InterSHAP (fractions) of the whole dataset, of one explained
    output (``target``: ``predicted``, ``label``, ``class<k>``)."""
    dataset = overall_terms(table, "intershap", "intershap", target, ())
    means = overall_terms(table, "intershap", "mean", target, ())
    return {"global": dataset["global"], "local_mean": means["local"]}

"""Exports for the next job: per-sample distillation weights from LSMI (paper 001 §4.3.2) and
InterSHAP as a ``shap.Explanation`` (paper 000 §4.3).

Distillation weights. Per sample and modality pair ``(a, b)`` the four LSMI terms are taken
adjusted by the pair's dataset constant ``c`` (``global/lsmi.parquet``, term
``adjustment[a,b]``): ``r + c, u1 − c, u2 − c, s + c``, the scale on which the run reports its
means. Negative pointwise terms (information the sample's modalities mislead about) carry no
knowledge to distil and are clipped to 0; the clipped terms are divided by their sum, so the
four weights are ≥ 0 and sum to 1 per sample. A sample whose clipped terms are all 0 gets
1/4 each (no term to prefer); a sample without a label (null LSMI terms) gets null weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from intermodal import storage
from intermodal.cluster import ensure_ray
from intermodal.pipelines.run import Progress, RunPaths
from intermodal.schemas.tables import (
    LSMI_TERMS,
    SAMPLE_ID,
    interaction_column,
    interaction_pairs,
    lsmi_column,
)

if TYPE_CHECKING:
    import shap

SHIFT_SIGNS = {"r": 1.0, "u1": -1.0, "u2": -1.0, "s": 1.0}  # adjusted: r + c, u1 − c, ...
WEIGHTS_FILE = "distill_weights.json"
INTERACTIONS = "interactions"


def weight_column(term: str, first: str, second: str) -> str:
    """Output column of one distillation weight: ``w_<term>_<a>__<b>`` (terms as in scores)."""
    return f"w_{term}_{first}__{second}"


def dominant_names(pair: tuple[str, str]) -> list[str]:
    """Names of the LSMI terms of a pair, in ``LSMI_TERMS`` order, for people to read."""
    a, b = pair
    return ["redundancy", f"uniqueness_{a}", f"uniqueness_{b}", "synergy"]


def lsmi_score_pairs(scores_file: str) -> list[tuple[str, str]]:
    """The modality pairs with LSMI columns in a score file (at least one, else an error)."""
    names = storage.parquet_file(scores_file).schema_arrow.names
    prefix = "lsmi_r_"
    pairs = [tuple(n[len(prefix) :].split("__")) for n in names if n.startswith(prefix)]
    if not pairs:
        raise ValueError(f"{scores_file}: no LSMI columns (lsmi_r_<a>__<b>); was lsmi measured?")
    return pairs  # type: ignore[return-value]


def lsmi_pair(
    pairs: list[tuple[str, str]], wanted: tuple[str, str] | None, source: str
) -> tuple[str, str]:
    """The pair to use: ``wanted`` if given (and present), else the only one."""
    if wanted is not None:
        if tuple(wanted) not in pairs:
            raise ValueError(f"--pair {','.join(wanted)}: {source} has LSMI pairs {pairs}")
        return tuple(wanted)  # type: ignore[return-value]
    if len(pairs) > 1:
        raise ValueError(f"{source} has LSMI pairs {pairs}: choose one with --pair a,b")
    return pairs[0]


def lsmi_constant(run_dir: str, pair: tuple[str, str]) -> float:
    """The pair's dataset adjustment constant from ``global/lsmi.parquet``."""
    uri = storage.join(RunPaths(run_dir).global_, "lsmi.parquet")
    try:
        table = storage.read_table(uri, columns=["term", "group_by", "value"])
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{uri}: missing; run `intermodal aggregate {run_dir}`") from error
    term = f"adjustment[{pair[0]},{pair[1]}]"
    rows = table.filter(pc.equal(table.column("term"), term))
    if rows.num_rows != 1:
        raise ValueError(f"{uri}: no single row with term {term}")
    return float(rows.column("value")[0].as_py())


def adjusted_lsmi(batch: pa.Table, pair: tuple[str, str], constant: float) -> dict[str, np.ndarray]:
    """Per row, the pair's LSMI terms shifted by the dataset constant (NaN where null)."""
    return {
        term: batch.column(lsmi_column(term, *pair)).cast(pa.float64()).to_numpy()
        + SHIFT_SIGNS[term] * constant
        for term in LSMI_TERMS
    }


def normalised_weights(terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clipped terms over their sum; 1/4 each where all clip to 0; NaN where a term is NaN."""
    clipped = np.clip(np.column_stack([terms[t] for t in LSMI_TERMS]), 0.0, None)
    total = clipped.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total > 0, clipped / total, 1.0 / len(LSMI_TERMS))
    weights[np.isnan(total[:, 0])] = np.nan
    return {term: weights[:, i] for i, term in enumerate(LSMI_TERMS)}


def weights_stage(batch: pa.Table, constants: dict[str, float]) -> pa.Table:
    """Ray Data stage over score rows: ``sample_id`` and the weights of every pair."""
    columns: dict[str, pa.Array] = {SAMPLE_ID: batch.column(SAMPLE_ID)}
    for key, constant in constants.items():
        pair = tuple(key.split(","))
        weights = normalised_weights(adjusted_lsmi(batch, pair, constant))  # type: ignore[arg-type]
        for term, values in weights.items():
            columns[weight_column(term, *pair)] = pa.array(values, pa.float64(), from_pandas=True)
    return pa.table(columns)


def run_distill_weights(run_dir: str, out: str, progress: Progress = print) -> pl.DataFrame:
    """Write ``OUT/*.parquet`` (``sample_id``, ``w_<term>_<a>__<b>`` per LSMI pair) and
    ``OUT/distill_weights.json``; returns the mean weight per pair and term."""
    paths = RunPaths(run_dir)
    files = storage.list_parquet(paths.scores)
    if not files:
        raise ValueError(f"{paths.scores}: no score files")
    pairs = lsmi_score_pairs(files[0])
    constants = {f"{a},{b}": lsmi_constant(run_dir, (a, b)) for a, b in pairs}
    fs, path = storage.filesystem(out)
    if fs.exists(path) and fs.ls(path):
        if not fs.exists(f"{path}/{WEIGHTS_FILE}"):
            raise ValueError(f"--out {out}: not empty and not a distill-weights output")
        storage.remove(out)
    ensure_ray()
    progress(f"[export] distillation weights of {len(pairs)} pair(s) → {out}")
    columns = [SAMPLE_ID, *(lsmi_column(t, a, b) for a, b in pairs for t in LSMI_TERMS)]
    scores_fs, scores_path = storage.filesystem(paths.scores)
    rows = (
        ray.data.read_parquet(scores_path, filesystem=storage.arrow_filesystem(scores_fs))
        .select_columns(columns)
        .map_batches(weights_stage, batch_format="pyarrow", fn_kwargs={"constants": constants})
    )
    rows.write_parquet(path, filesystem=storage.arrow_filesystem(fs))
    sums, counts, total = written_sums(out)
    summary = pl.DataFrame(
        [
            {
                "pair": f"{a},{b}",
                "adjustment": constants[f"{a},{b}"],
                **{
                    f"mean_w_{t}": sums[weight_column(t, a, b)]
                    / max(counts[weight_column(t, a, b)], 1)
                    for t in LSMI_TERMS
                },
                "rows": total,
                "null_rows": total - counts[weight_column("r", a, b)],
            }
            for a, b in pairs
        ]
    )
    storage.write_json(
        {
            "run_dir": run_dir,
            "normalisation": "max(adjusted term, 0) / sum over r, u1, u2, s; 1/4 each when all "
            "are 0; null without a label (see intermodal.export)",
            "adjustment": constants,
        },
        storage.join(out, WEIGHTS_FILE),
    )
    return summary


def written_sums(out: str) -> tuple[dict[str, float], dict[str, int], int]:
    """Per weight column of the written files: the sum and count of non-null values, and the
    rows; one record batch at a time."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    rows = 0
    for uri in storage.list_parquet(out):
        for batch in storage.parquet_file(uri).iter_batches():
            rows += batch.num_rows
            for name in batch.schema.names:
                if name.startswith("w_"):
                    column = batch.column(name)
                    sums[name] = sums.get(name, 0.0) + (pc.sum(column).as_py() or 0.0)
                    counts[name] = counts.get(name, 0) + len(column) - column.null_count
    return sums, counts, rows


def _import_shap():
    try:
        import shap
    except ImportError as error:
        raise ImportError(
            "to_shap_explanation needs the 'shap' package: pip install 'intermodal[shap]'"
        ) from error
    return shap


def to_shap_explanation(
    run_dir: str, sample_ids: Sequence[object] | None = None, suffix: str = ""
) -> shap.Explanation:
    """InterSHAP of a run's samples as a ``shap.Explanation`` for shap's waterfall and force
    plots (paper 000 §4.3): one value per modality, its main effect φ_mm, and one for all
    cross-modal interactions, Σ_{a≠b} φ_ab; ``base_values`` is v(∅). For every sample
    ``base_values + values.sum()`` is v(all), the explained probability.

    Rows are in ``sample_id`` order; ``sample_ids`` selects samples (default: all of
    ``scores/``, held in memory);
    ``suffix`` picks the explained class of a ``target: all`` run (``"__class1"``).
    """
    shap = _import_shap()
    config = storage.read_json(RunPaths(run_dir).manifest)["config"]
    if "intershap" not in config["measures"]:
        raise ValueError(f"{run_dir}: InterSHAP was not measured (measures: {config['measures']})")
    modalities = [m["name"] for m in config["modalities"]]
    pairs = interaction_pairs(modalities)
    full, empty = f"intershap_value_full{suffix}", f"intershap_value_empty{suffix}"
    matrix = [interaction_column(modalities[i], modalities[j], suffix) for i, j in pairs]
    fs, path = storage.filesystem(RunPaths(run_dir).scores)
    table = pq.read_table(
        path,
        columns=[SAMPLE_ID, full, empty, *matrix],
        filters=None if sample_ids is None else pc.field(SAMPLE_ID).isin(list(sample_ids)),
        filesystem=storage.arrow_filesystem(fs),
    ).sort_by(SAMPLE_ID)
    terms = {name: table.column(name).to_numpy() for name in matrix}
    main = [terms[interaction_column(m, m, suffix)] for m in modalities]
    # the scores keep the upper triangle: each off-diagonal φ_ab stands for φ_ab and φ_ba
    cross = sum(
        (
            2 * terms[interaction_column(modalities[i], modalities[j], suffix)]
            for i, j in pairs
            if i != j
        ),
        start=np.zeros(table.num_rows),
    )
    return shap.Explanation(
        values=np.column_stack([*main, cross]),
        base_values=table.column(empty).to_numpy(),
        feature_names=[*modalities, INTERACTIONS],
    )

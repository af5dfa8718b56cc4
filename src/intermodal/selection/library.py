"""A model library (paper 003 §4.4, App. C.8): known datasets, each scored once with PID of its
labels, and a few model families trained on it with their held-out accuracy and PID agreement.

Layout of ``LIB/``::

    library.json              the recipe, the sizes, and per dataset its run and its families
    <dataset>/data/           the held-out rows (Parquet shards): the run's input
    <dataset>/run/            a run directory of ``pid_cvx`` on those rows (labels, no model)
    <dataset>/models/<f>.pt   each family's trained weights (``library.json`` names the factory)

The families' PIDs of predictions come from the run's own codebook cells (the score columns
``pid_code_<m>``) and each family's predicted class on the same held-out rows, so the labels and
every family are decomposed over the same cells; ``α`` is paper 003 eq. 6 of the labels' PID
(read from the run's ``global/``) and the family's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from intermodal import storage
from intermodal.estimators.model_selection import leave_one_out
from intermodal.estimators.pid_agreement import pid_agreement
from intermodal.estimators.pid_cvx import pid_from_joint
from intermodal.estimators.stats import JointCounts
from intermodal.measures import parse_config
from intermodal.measures.pid_cvx import PIDCVX, code_column
from intermodal.models import FAMILIES
from intermodal.models.artifacts import save_state
from intermodal.models.families import predict_classes, train_family
from intermodal.pipelines.job import run_job
from intermodal.progress import Progress, print_progress
from intermodal.rundir import RunPaths
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, PID_TERMS, SAMPLE_ID, modality_values
from intermodal.selection.recipe import PAIR, RECIPE, BuildSizes, LibraryDataset
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.pid_data import generate_latent

LIBRARY_FILE = "library.json"
ESTIMATOR = PIDCVX.name
N_SHARDS = 2
DEFAULT_SIZES = BuildSizes()


def library_file(library: str) -> str:
    return storage.join(library, LIBRARY_FILE)


def library_job(
    dataset: LibraryDataset, data_uri: str, run_uri: str, sizes: BuildSizes
) -> JobConfig:
    """The job of one library dataset: ``pid_cvx`` of its labels on its held-out rows."""
    spec = dataset.spec(sizes)
    return parse_config(
        {
            "dataset": f"library_{dataset.name}",
            "input": data_uri,
            "output": run_uri,
            "num_classes": spec.n_classes,
            "modalities": [{"name": m, "shape": [spec.feature_dim]} for m in PAIR],
            "measures": [ESTIMATOR],
            ESTIMATOR: {
                "n_clusters": sizes.n_clusters,
                "fit_rows": sizes.n_heldout,
                "seed": sizes.seed,
                "encoders": {
                    "max_steps": sizes.encoder_steps,
                    "eval_every": min(200, sizes.encoder_steps),
                },
            },
        }
    )


def pid_terms(
    global_table: pl.DataFrame,
    target: str,
    pair: Sequence[str] = PAIR,
    measure: str = ESTIMATOR,
) -> np.ndarray | None:
    """R, U1, U2, S [4] of ``pair`` for ``target`` over the whole dataset, from a run's global
    rows (None when the table lacks one of them)."""
    rows = global_table.filter(
        (pl.col("measure") == measure)
        & (pl.col("statistic") == "pid")
        & (pl.col("group_by") == "")
        & (pl.col("target") == target)
        & (pl.col("modalities") == pl.lit(list(pair), dtype=pl.List(pl.String)))
    )
    values = dict(zip(rows["term"].to_list(), rows["value"].to_list(), strict=True))
    if not all(term in values for term in PID_TERMS):
        return None
    return np.array([values[term] for term in PID_TERMS])


def prediction_pid(codes: pa.Table, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """PID (bits) of ``predictions`` [n] over a run's codebook cells ``codes`` (its score
    columns ``pid_code_<m>`` of the same n rows, in the same order)."""
    a, b = (codes.column(code_column(m)).to_numpy().astype(np.int64) for m in PAIR)
    shape = (int(a.max()) + 1, int(b.max()) + 1, num_classes)
    result = pid_from_joint(JointCounts.of(a, b, predictions, shape).joint(), base=2)
    return dict(zip(PID_TERMS, map(float, result.terms), strict=True))


def _run_codes(run_uri: str, sample_ids: np.ndarray) -> pa.Table:
    """The run's codebook cells of ``sample_ids``, in that order."""
    columns = [SAMPLE_ID, *(code_column(m) for m in PAIR)]
    scores = pl.concat(
        [
            pl.DataFrame(pl.from_arrow(storage.read_table(uri, columns)))
            for uri in storage.list_parquet(RunPaths(run_uri).scores)
        ]
    )
    wanted = pl.DataFrame({SAMPLE_ID: sample_ids})
    joined = wanted.join(scores, on=SAMPLE_ID, how="left", maintain_order="left")
    if joined.null_count().sum_horizontal().item():
        raise ValueError(f"{run_uri}: held-out rows without codebook cells in scores/")
    return joined.to_arrow()


def build_dataset(
    library: str, dataset: LibraryDataset, sizes: BuildSizes, progress: Progress
) -> dict:
    """Generate, score and train one library dataset; its ``library.json`` entry."""
    spec = dataset.spec(sizes)
    table = generate_latent(spec)
    train, heldout = table.slice(0, sizes.n_train), table.slice(sizes.n_train)
    data_uri = storage.join(library, dataset.name, "data")
    run_uri = storage.join(library, dataset.name, "run")
    write_table_shards(heldout, data_uri, N_SHARDS)
    progress(f"[library] {dataset.name}: {ESTIMATOR} of the labels on {heldout.num_rows} rows")
    global_rows = run_job(library_job(dataset, data_uri, run_uri, sizes), progress)
    labels_pid = pid_terms(pl.DataFrame(pl.from_arrow(global_rows)), LABEL)
    if labels_pid is None:
        raise RuntimeError(f"{run_uri}: the run wrote no PID of the labels")
    inputs = {m: modality_values(train.column(m), spec.feature_dim) for m in PAIR}
    heldout_inputs = {m: modality_values(heldout.column(m), spec.feature_dim) for m in PAIR}
    heldout_labels = heldout.column(LABEL).to_numpy()
    codes = _run_codes(run_uri, heldout.column(SAMPLE_ID).to_numpy())
    families = {}
    for family in sizes.families:
        progress(f"[library] {dataset.name}: training {family} on {train.num_rows} rows")
        model = train_family(
            family,
            inputs,
            train.column(LABEL).to_numpy(),
            spec.n_classes,
            sizes.epochs,
            sizes.seed,
            lambda line, family=family: progress(f"[library] {dataset.name} {family}{line}"),
        )
        weights = storage.join(dataset.name, "models", f"{family}.pt")
        save_state(model.module.state_dict(), storage.join(library, weights))
        predictions = predict_classes(model.module, heldout_inputs)
        model_pid = prediction_pid(codes, predictions, spec.n_classes)
        alpha = pid_agreement(labels_pid, np.array([model_pid[t] for t in PID_TERMS]))
        families[family] = {
            "accuracy": float((predictions == heldout_labels).mean()),
            "alpha": float(alpha[-1]),
            "pid_pred": model_pid,
            "factory": model.factory,
            "kwargs": model.kwargs,
            "weights": weights,
        }
        progress(
            f"[library] {dataset.name} {family}: held-out accuracy "
            f"{families[family]['accuracy']:.3f}, alpha {families[family]['alpha']:.3f}"
        )
    return {
        "name": dataset.name,
        "description": dataset.description,
        "mix": dataset.mix,
        "run": storage.join(dataset.name, "run"),
        "families": families,
    }


def build_library(
    library: str,
    sizes: BuildSizes = DEFAULT_SIZES,
    datasets: Sequence[str] | None = None,
    progress: Progress = print_progress,
) -> str:
    """Build the shipped recipe (``datasets``: a subset of its names, default all) into
    ``library``; returns the URI of its ``library.json``."""
    known = {dataset.name: dataset for dataset in RECIPE}
    chosen = list(datasets or known)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"no library datasets {unknown}; the recipe has: {', '.join(known)}")
    if len(chosen) < 2:
        raise ValueError("a library needs at least two datasets")
    unknown_families = [f for f in sizes.families if f not in FAMILIES]
    if unknown_families:
        raise ValueError(f"unknown families {unknown_families}; known: {', '.join(FAMILIES)}")
    if storage.holds_files(library) and not storage.exists(library_file(library)):
        raise ValueError(f"{library}: not empty and not a model library")
    entries = []
    for index, name in enumerate(chosen, start=1):
        progress(f"[library] dataset {index}/{len(chosen)}: {name}")
        entries.append(build_dataset(library, known[name], sizes, progress))
    manifest = {
        "recipe": "paper 003 Table 2 latent data sets",
        "estimator": ESTIMATOR,
        "pair": list(PAIR),
        "families": list(sizes.families),
        "sizes": sizes.as_dict(),
        "datasets": entries,
    }
    storage.write_json(manifest, library_file(library))
    return library_file(library)


@dataclass(frozen=True)
class Library:
    """A library as ``select`` reads it: per dataset its labels' PID (from its run), and per
    family its held-out accuracy and α."""

    uri: str
    estimator: str
    families: list[str]
    datasets: list[str]
    terms: np.ndarray  # [D, 4] the labels' PID of each dataset, bits
    accuracy: np.ndarray  # [D, F]
    alpha: np.ndarray  # [D, F]


def _dataset_terms(library: str, entry: dict) -> np.ndarray:
    """The labels' PID [4] of one dataset, from its run's ``global/``; ValueError naming the
    run when it cannot be read."""
    run = storage.join(library, entry["run"])
    table = storage.join(RunPaths(run).global_, f"{ESTIMATOR}.parquet")
    if not storage.exists(table):
        raise ValueError(f"library {library}: dataset {entry['name']}: no {table}")
    try:
        terms = pid_terms(pl.DataFrame(pl.from_arrow(storage.read_table(table))), LABEL)
    except Exception as error:  # a truncated or foreign file: say which, in one line
        raise ValueError(
            f"library {library}: dataset {entry['name']}: cannot read {table} "
            f"({type(error).__name__})"
        ) from None
    if terms is None:
        raise ValueError(
            f"library {library}: dataset {entry['name']}: {table} has no PID of the labels "
            f"of {','.join(PAIR)}"
        )
    return terms


def read_library(library: str) -> Library:
    """The library at ``library``; ValueError (one line) when it is not one or a run is
    broken."""
    manifest_uri = library_file(library)
    if not storage.exists(manifest_uri):
        raise ValueError(
            f"{library}: not a model library (no {LIBRARY_FILE}; build one with "
            "'intermodal library build')"
        )
    manifest = storage.read_json(manifest_uri)
    families = manifest["families"]
    entries = manifest["datasets"]
    missing = [
        f"{entry['name']}/{family}"
        for entry in entries
        for family in families
        if family not in entry["families"]
    ]
    if missing:
        raise ValueError(f"library {library}: no accuracy recorded for {', '.join(missing)}")
    return Library(
        uri=library,
        estimator=manifest["estimator"],
        families=families,
        datasets=[entry["name"] for entry in entries],
        terms=np.array([_dataset_terms(library, entry) for entry in entries]),
        accuracy=np.array([[e["families"][f]["accuracy"] for f in families] for e in entries]),
        alpha=np.array([[e["families"][f]["alpha"] for f in families] for e in entries]),
    )


def leave_one_out_table(library: Library) -> pl.DataFrame:
    """Per dataset treated as new: its closest other dataset, the distance, the family
    recommended there, its accuracy on the dataset, the dataset's best family and accuracy,
    their ratio, and the lowest ratio among the three best families there."""
    result = leave_one_out(library.terms, library.accuracy)
    best = library.accuracy.argmax(axis=1)
    rows = np.arange(len(library.datasets))
    return pl.DataFrame(
        {
            "dataset": library.datasets,
            "closest": [library.datasets[c] for c in result.closest],
            "distance": result.distance,
            "recommended": [library.families[f] for f in result.recommended],
            "recommended_accuracy": library.accuracy[rows, result.recommended],
            "best": [library.families[f] for f in best],
            "best_accuracy": library.accuracy[rows, best],
            "ratio": result.ratio,
            "top3_worst_ratio": result.worst_of_top,
        }
    )


def alpha_accuracy_correlation(library: Library) -> tuple[float, float]:
    """Pearson and Spearman correlation of α and held-out accuracy over every (dataset,
    family) pair of the library."""
    alpha, accuracy = library.alpha.ravel(), library.accuracy.ravel()
    pearson = float(np.corrcoef(alpha, accuracy)[0, 1])
    ranks = [pl.Series(values).rank("average").to_numpy() for values in (alpha, accuracy)]
    spearman = float(np.corrcoef(*ranks)[0, 1])
    return pearson, spearman

"""Jobs on a multi-node local Ray cluster (``ray.cluster_utils.Cluster``), run by
``tests/test_cluster.py`` in a process of its own (a cluster cannot share a process with the
test session's embedded Ray). Prints one JSON line: where the fit parts and the score actors
ran, how the cluster's scores compare with a single-process fit and score of the same job, and
what a run that lost a worker node part-way wrote.

    python tests/cluster_job.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.cluster_utils import Cluster

from intermodal import storage
from intermodal.measures import MEASURES, parse_config, register
from intermodal.measures.base import BatchOperator, FitSample, FitWorkers, InlineWorkers, Measure
from intermodal.pipelines.score import run_score
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

ROWS, DIMS, PARTS = 2400, 4, 6
BATCH_SECONDS = 0.2  # a score batch takes a while, so every actor gets some and a kill lands


def quiet(_: str) -> None:
    """Progress not shown."""


def node_of_this_process(_: int) -> str:
    """A fit part that takes a while, as real ones do: the node it ran on."""
    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()


class Placement(Measure):
    """Records where its fit parts ran (``artifacts/placement/nodes.json``) and, per row, the
    node of the score actor that scored it."""

    name = "placement"

    def fit_sample(self, job: JobConfig) -> FitSample:
        return FitSample(10, 0, 1, "placement", labelled=False)

    def fit(self, job: JobConfig, sample: pa.Table, progress: Any, workers: FitWorkers) -> None:
        nodes = workers.gather([workers.submit(node_of_this_process, i) for i in range(PARTS)])
        storage.write_json({"nodes": nodes}, storage.join(self.folder(job), "nodes.json"))

    def fields(self, job: JobConfig) -> list[pa.Field]:
        return [pa.field("placement_node", pa.string())]

    def operator(self, job: JobConfig, shared: Any) -> BatchOperator:
        node = ray.get_runtime_context().get_node_id()

        def score(context: Any) -> dict[str, Any]:
            time.sleep(BATCH_SECONDS)
            return {"placement_node": pa.array([node] * context.batch.num_rows)}

        return score


def job(data: str, out: str, measures: list[str], actors: int = 3) -> JobConfig:
    return parse_config(
        {
            "dataset": "cluster",
            "input": data,
            "output": out,
            "num_classes": 2,
            "modalities": [{"name": m, "shape": [DIMS]} for m in ("x1", "x2")],
            "measures": measures,
            "lsmi": {"fit_rows": ROWS, "folds": 3, "classifier": {"epochs": 4}},
            "compute": {"actors": actors, "batch_size": 100},
        }
    )


def single_process(config: JobConfig, table: pa.Table) -> pa.Table:
    """The same LSMI fit and scores in this process, without Ray."""
    lsmi = MEASURES["lsmi"]
    lsmi.fit(config, table, quiet, InlineWorkers(quiet))
    return ScoreOperator(config, [lsmi])(table)


def score_losing_a_node(cluster: Cluster, config: JobConfig) -> dict[str, Any]:
    """Score ``config`` and kill a worker node (its raylet and every worker on it, without
    warning) once the first score file is written; what ``scores/`` and ``rejects/`` hold."""
    node = cluster.list_all_nodes()[1]  # a worker node: the head holds the driver's objects
    outcome: dict[str, Any] = {}

    def score() -> None:
        try:
            run_score(config, progress=lambda _: None)
        except Exception as error:  # the JSON line reports it
            outcome["error"] = repr(error)

    scoring = threading.Thread(target=score)
    scoring.start()
    scores = Path(config.output) / "scores"
    while scoring.is_alive() and not any(scores.glob("*.parquet")):
        time.sleep(0.05)
    killed_while_scoring = scoring.is_alive()
    cluster.remove_node(node, allow_graceful=False)
    scoring.join(timeout=300)
    ids = [  # rejects/ keeps ids as text, whatever their type
        storage.read_table(str(Path(config.output) / folder), columns=["sample_id"])
        .column("sample_id")
        .cast(pa.string())
        .to_numpy(zero_copy_only=False)
        for folder in ("scores", "rejects")
    ]
    all_ids = np.concatenate(ids)
    return {
        "killed_while_scoring": killed_while_scoring,
        "finished_after_the_kill": not scoring.is_alive(),
        "error_after_the_kill": outcome.get("error"),
        "rows_after_the_kill": len(all_ids),
        "distinct_ids_after_the_kill": len(np.unique(all_ids)),
    }


def main(work: Path) -> None:
    register(Placement())
    table = generate_circuit(CircuitSpec(op="xor", n_samples=ROWS, dims=DIMS, seed=0))
    table = table.select(["sample_id", "label", "x1", "x2"])
    data = str(work / "data")
    write_table_shards(table, data, 8)
    # a lost node is noticed in about 1.5 s (Ray's default: 15 s of missed health checks)
    health = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": health}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    run_score(job(data, str(work / "cluster"), ["lsmi", "placement"]), progress=lambda _: None)
    fit_nodes = storage.read_json(str(work / "cluster" / "artifacts" / "placement" / "nodes.json"))
    scores = storage.read_table(str(work / "cluster" / "scores")).sort_by("sample_id")
    lost_node = score_losing_a_node(cluster, job(data, str(work / "killed"), ["placement"], 2))
    ray.shutdown()
    cluster.shutdown()

    reference = single_process(job(data, str(work / "single"), ["lsmi"]), table)
    reference = reference.sort_by("sample_id")
    columns = [c for c in reference.column_names if c.startswith("lsmi_")]
    difference = max(
        float(pc.max(pc.abs(pc.subtract(scores.column(c), reference.column(c)))).as_py())
        for c in columns
    )
    print(
        json.dumps(
            {
                "fit_part_nodes": len(set(fit_nodes["nodes"])),
                "score_actor_nodes": len(set(scores.column("placement_node").to_pylist())),
                "rows": scores.num_rows,
                "ids": np.array_equal(
                    scores.column("sample_id").to_numpy(), reference.column("sample_id").to_numpy()
                ),
                "lsmi_columns": len(columns),
                "largest_difference": difference,
                **lost_node,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))

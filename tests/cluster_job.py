"""Jobs on a multi-node local Ray cluster (``ray.cluster_utils.Cluster``), run by
``tests/test_cluster.py`` in a process of its own (a cluster cannot share a process with the
test session's embedded Ray). Prints one JSON line: where the fit parts and the score actors
ran, how the cluster's scores compare with a single-process fit and score of the same job, and
what runs that lost a worker node part-way (one while fitting, one while scoring) wrote.

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
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from intermodal import storage
from intermodal.measures import MEASURES, parse_config, register
from intermodal.measures.base import BatchOperator, FitSample, FitWorkers, InlineWorkers, Measure
from intermodal.pipelines.fit import run_fit
from intermodal.pipelines.score import run_score
from intermodal.pipelines.score_stage import ScoreOperator
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import write_table_shards
from intermodal.synthetic.lsmi_data import CircuitSpec, generate_circuit

ROWS, DIMS, PARTS = 2400, 4, 6
BATCH_SECONDS = 0.2  # a score batch takes a while, so every actor gets some and a kill lands
SLOW_PARTS, SLOW_PART_SECONDS = 4, 2.0  # fit parts that run long enough for a kill to land


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


def slow_part(starts: str, index: int) -> str:
    """A fit part that records its start on this node (a file ``<index>.<node>`` in
    ``starts``) and takes a while: the node it finished on."""
    node = ray.get_runtime_context().get_node_id()
    Path(starts, f"{index}.{node}").touch()
    time.sleep(SLOW_PART_SECONDS)
    return node


class SlowFit(Measure):
    """A fit that records where each of its attempts ran (``fit.<node>`` in
    ``artifacts/slowfit/starts/``) and whose parts record theirs and take seconds; the nodes
    they finished on go to ``nodes.json``. Its parts are shared parts with a shared argument,
    as LSMI's classifiers are: the argument is the fit's, so it dies with the fit's node."""

    name = "slowfit"

    def fit_sample(self, job: JobConfig) -> FitSample:
        return FitSample(10, 0, 1, "slowfit", labelled=False)

    def fit(self, job: JobConfig, sample: pa.Table, progress: Any, workers: FitWorkers) -> None:
        starts = Path(self.folder(job), "starts")
        starts.mkdir(parents=True, exist_ok=True)
        (starts / f"fit.{ray.get_runtime_context().get_node_id()}").touch()
        folder = workers.share(str(starts))
        parts = [workers.submit_once(f"slow {i}", slow_part, folder, i) for i in range(SLOW_PARTS)]
        storage.write_json({"nodes": workers.gather(parts)}, str(starts.with_name("nodes.json")))


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


@ray.remote
class HoldCPUs:
    """Holds the CPUs it was given on its node while it lives."""

    def ready(self) -> None:
        """Returns once the actor runs, so its CPUs are held."""


def fit_losing_a_node(cluster: Cluster, config: JobConfig) -> dict[str, Any]:
    """Fit ``config`` (LSMI and ``slowfit``) on one worker node, every other node's CPUs held,
    and kill that node (without warning) once a ``slowfit`` part runs there: both fits and
    their running parts die with it. Then free the other nodes for the fits to run again, and
    add a node, so that later runs have as many nodes as before. What the fit did."""
    victim, *others = cluster.worker_nodes
    cpus = {node["NodeID"]: node["Resources"]["CPU"] for node in ray.nodes() if node["Alive"]}
    holds = [
        HoldCPUs.options(
            num_cpus=cpus[node.node_id],
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote()
        for node in (cluster.head_node, *others)
    ]
    ray.get([hold.ready.remote() for hold in holds])
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            run_fit(config, progress=quiet)
        except Exception as error:  # the JSON line reports it
            outcome["error"] = repr(error)

    def started() -> list[tuple[str, str, float]]:
        """(part index or "fit", node, when) of every attempt so far."""
        files = list(starts.iterdir()) if starts.exists() else []
        return [(*path.name.split(".", 1), path.stat().st_mtime) for path in files]

    fitting = threading.Thread(target=fit)
    fitting.start()
    starts = Path(config.output) / "artifacts" / "slowfit" / "starts"
    killed = False
    while fitting.is_alive() and not killed:
        killed = any(  # a part that started less than half its run ago still runs
            what != "fit" and time.time() - when < SLOW_PART_SECONDS / 2
            for what, _, when in started()
        )
        time.sleep(0.05)
    if killed:
        cluster.remove_node(victim, allow_graceful=False)
    for hold in holds:
        ray.kill(hold)
    fitting.join(timeout=300)
    cluster.add_node(num_cpus=2)
    attempts = started()
    on_killed = {
        int(what) for what, node, _ in attempts if what != "fit" and node == victim.node_id
    }
    nodes = starts.with_name("nodes.json")  # not written by a fit that failed
    finished = storage.read_json(str(nodes))["nodes"] if nodes.exists() else [None] * SLOW_PARTS
    return {
        "killed_while_fitting": killed,
        "finished_after_the_fit_kill": not fitting.is_alive(),
        "error_after_the_fit_kill": outcome.get("error"),
        "fit_nodes": len({node for what, node, _ in attempts if what == "fit"}),
        "parts_on_the_killed_node": len(on_killed),
        "parts_finished_elsewhere": sum(
            1 for i in on_killed if finished[i] not in (None, victim.node_id)
        ),
    }


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
    register(SlowFit())
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
    lost_in_fit = fit_losing_a_node(cluster, job(data, str(work / "refit"), ["lsmi", "slowfit"]))
    lost_node = score_losing_a_node(cluster, job(data, str(work / "killed"), ["placement"], 2))
    ray.shutdown()
    cluster.shutdown()

    reference = single_process(job(data, str(work / "single"), ["lsmi"]), table)
    reference = reference.sort_by("sample_id")
    # LSMI's scores from the fit that lost a node, scored here as a score actor would
    refit = job(data, str(work / "refit"), ["lsmi"])
    refit_scores = ScoreOperator(refit, [MEASURES["lsmi"]])(table).sort_by("sample_id")
    columns = [c for c in reference.column_names if c.startswith("lsmi_")]

    def difference(other: pa.Table) -> float:
        return max(
            float(pc.max(pc.abs(pc.subtract(scores.column(c), other.column(c)))).as_py())
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
                "largest_difference": difference(reference),
                # against the same fit on the cluster, undisturbed: seeded, so exactly equal
                "refit_difference": difference(refit_scores),
                **lost_in_fit,
                **lost_node,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Job graphs: score, aggregate, demo and validation suites."""

# what a job's fit and score tasks import on a worker (torch, the measures): the modules
# ``cluster.warm_workers`` has embedded Ray's workers import while the driver starts
WORKER_MODULES = ("intermodal.pipelines.artifacts", "intermodal.pipelines.score_stage")

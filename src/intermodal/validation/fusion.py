"""``validate intense`` and ``validate i2moe``: the interpretable fusion models' known answers
through the full pipeline (generate → shards → score with the measure → aggregate → global).

InTense (paper 004 §4.1): on SynthGene the class motif sits in M2, M4, M7 only, so those three
must get the largest relevance; on SynthGene-Tri the label is the XOR of M1 and M2, so
``M1xM2`` must hold the largest relevance and at least ``XOR_PAIR_SHARE`` of the relevance of
the interaction terms (the paper's claim, and tests/test_intense.py's).

I2MoE (paper 002) on HD-XOR with two modalities: on synergy data the synergy expert must get
the largest mean weight, on uniqueness data (only ``m0`` informative) the uniqueness expert of
``m0``.

Each model is trained on every row of its data set (``fit_rows`` = the sample count) and then
scores those rows: the estimates are in-sample, as the model tests measure them.
"""

from __future__ import annotations

from itertools import combinations

import polars as pl
import pyarrow as pa

from intermodal import storage
from intermodal.measures import parse_config
from intermodal.pipelines.job import run_job
from intermodal.pipelines.run import Progress
from intermodal.schemas.config import JobConfig
from intermodal.synthetic.hdxor import HDXORSpec, generate, write_table_shards
from intermodal.synthetic.synthgene import (
    SynthGeneSpec,
    SynthGeneTriSpec,
    generate_synthgene,
    generate_synthgene_tri,
)
from intermodal.validation.experiments import overall_terms
from intermodal.validation.rows import (
    check_row,
    chosen_experiments,
    validation_row,
    write_validation,
)

N_SHARDS = 4
INTENSE_EXPERIMENTS = ["synthgene", "synthgene_tri"]
I2MOE_EXPERIMENTS = ["hdxor_synergy", "hdxor_uniqueness"]
SYNTHGENE_INFORMATIVE = {"M2", "M4", "M7"}
XOR_PAIR = "M1xM2"
XOR_PAIR_SHARE = 0.8
# the settings of tests/test_intense.py's must-shows (hidden 32, batch 64, lr 3e-3)
INTENSE_EPOCHS = {"synthgene": 8, "synthgene_tri": 10}
HDXOR_DIMS = [100, 100]
# the model's expert names on HD-XOR (modalities m0, m1) → the suite's terms
I2MOE_TERMS = {"uni_m0": "uni_1", "uni_m1": "uni_2", "syn": "syn", "red": "red"}
I2MOE_LEADER = {"hdxor_synergy": "syn", "hdxor_uniqueness": "uni_1"}
SYNERGY_EXPERT_ACCURACY = 0.9  # the synergy expert alone on XOR data (paper 002 §6.2)
CHANCE_MARGIN = 0.1  # a uniqueness expert on XOR data: within this of 0.5


def _job(
    measure: str,
    dataset: str,
    data_uri: str,
    run_uri: str,
    modalities: list[dict],
    settings: dict,
) -> JobConfig:
    return parse_config(
        {
            "dataset": dataset,
            "input": data_uri,
            "output": run_uri,
            "num_classes": 2,
            "modalities": modalities,
            "measures": [measure],
            measure: settings,
        }
    )


def _relevance(
    out: str, experiment: str, n_samples: int, seed: int, progress: Progress
) -> dict[str, float]:
    """Relevance per InTense term of one SynthGene experiment, through the pipeline."""
    if experiment == "synthgene":
        spec = SynthGeneSpec(n_samples=n_samples, seed=seed)
        table = generate_synthgene(spec)
        subsets = [[name] for name in spec.modality_names]
    else:
        tri = SynthGeneTriSpec(n_samples=n_samples, seed=seed)
        table = generate_synthgene_tri(tri)
        # every subset: the pair must win against the other pairs and the triple too
        names = tri.modality_names
        subsets = [list(s) for k in (1, 2, 3) for s in combinations(names, k)]
    names = [name for name in table.column_names if name.startswith("M")]
    size = table.schema.field(names[0]).type.list_size
    data_uri = storage.join(out, "data", experiment)
    write_table_shards(table, data_uri, N_SHARDS)
    settings = {
        "subsets": subsets,
        "epochs": INTENSE_EPOCHS[experiment],
        "fit_rows": n_samples,
        "seed": seed,
    }
    modalities = [{"name": name, "shape": [size]} for name in names]
    run_uri = storage.join(out, "runs", experiment)
    job = _job("intense", experiment, data_uri, run_uri, modalities, settings)
    return overall_terms(run_job(job, progress), "intense", "relevance")


def _intense_checks(experiment: str, relevance: dict[str, float]) -> list[dict]:
    ranked = sorted(relevance, key=relevance.get, reverse=True)
    if experiment == "synthgene":
        top3 = set(ranked[:3]) == SYNTHGENE_INFORMATIVE
        return [check_row("intense", experiment, "top3_are_M2_M4_M7", top3)]
    interactions = {term: value for term, value in relevance.items() if "x" in term}
    share = relevance[XOR_PAIR] / sum(interactions.values())
    return [
        validation_row("intense", experiment, f"{XOR_PAIR}_share_of_interactions", share),
        check_row(
            "intense",
            experiment,
            f"{XOR_PAIR}_share_at_least_{XOR_PAIR_SHARE}",
            share >= XOR_PAIR_SHARE,
        ),
        check_row("intense", experiment, f"{XOR_PAIR}_largest", ranked[0] == XOR_PAIR),
    ]


def run_intense_suite(
    out: str,
    experiments: list[str] | None = None,
    n_samples: int = 6000,
    seed: int = 0,
    progress: Progress = print,
) -> pl.DataFrame:
    """Run the InTense experiments (default: both) and write ``out/validation.parquet``: the
    relevance of every term, then the checks."""
    rows = []
    for experiment in chosen_experiments(experiments, INTENSE_EXPERIMENTS):
        relevance = _relevance(out, experiment, n_samples, seed, progress)
        rows += [
            validation_row("intense", experiment, term, value) for term, value in relevance.items()
        ]
        rows += _intense_checks(experiment, relevance)
    return write_validation(out, rows)


def _i2moe_run(
    out: str, experiment: str, n_samples: int, seed: int, progress: Progress
) -> pa.Table:
    """The global table of I2MoE on one HD-XOR experiment, through the pipeline."""
    setting = experiment.removeprefix("hdxor_")
    spec = HDXORSpec(setting=setting, n_samples=n_samples, dims=HDXOR_DIMS, seed=seed)
    table = generate(spec).select(["sample_id", "label", *spec.modality_names])
    data_uri = storage.join(out, "data", experiment)
    write_table_shards(table, data_uri, N_SHARDS)
    modalities = [
        {"name": name, "shape": [size]}
        for name, size in zip(spec.modality_names, spec.feature_dims, strict=True)
    ]
    settings = {"fit_rows": n_samples, "seed": seed}
    run_uri = storage.join(out, "runs", experiment)
    job = _job("i2moe", experiment, data_uri, run_uri, modalities, settings)
    return run_job(job, progress)


def _expert_analysis(experiment: str, table: pa.Table) -> list[dict]:
    """Paper 002 §6.2 on the run: each expert's accuracy alone and the mixture's (estimates),
    whether the agreement shares sum to 1, and on synergy data whether the synergy expert alone
    is at least ``SYNERGY_EXPERT_ACCURACY`` accurate while each uniqueness expert stays within
    ``CHANCE_MARGIN`` of chance (one bit of XOR is no better than a coin)."""
    accuracy = overall_terms(table, "i2moe", "expert_accuracy")
    mixture = overall_terms(table, "i2moe", "accuracy")[""]
    shares = overall_terms(table, "i2moe", "expert_agreement")
    rows = [
        *(
            validation_row("i2moe", experiment, f"accuracy_{term}", accuracy[expert])
            for expert, term in I2MOE_TERMS.items()
        ),
        validation_row("i2moe", experiment, "accuracy_mixture", mixture),
        check_row(
            "i2moe", experiment, "agreement_shares_sum_to_1", abs(sum(shares.values()) - 1) < 1e-9
        ),
    ]
    if experiment == "hdxor_synergy":
        chance = all(abs(accuracy[f"uni_{m}"] - 0.5) <= CHANCE_MARGIN for m in ("m0", "m1"))
        rows += [
            check_row(
                "i2moe",
                experiment,
                f"syn_accuracy_at_least_{SYNERGY_EXPERT_ACCURACY}",
                accuracy["syn"] >= SYNERGY_EXPERT_ACCURACY,
            ),
            check_row("i2moe", experiment, "uni_accuracy_near_chance", chance),
        ]
    return rows


def run_i2moe_suite(
    out: str,
    experiments: list[str] | None = None,
    n_samples: int = 3000,
    seed: int = 0,
    progress: Progress = print,
) -> pl.DataFrame:
    """Run the I2MoE experiments (default: both) and write ``out/validation.parquet``: the
    mean weight of every expert and whether the expected expert leads, then the expert
    analysis of each (``_expert_analysis``)."""
    rows, analysis = [], []
    for experiment in chosen_experiments(experiments, I2MOE_EXPERIMENTS):
        table = _i2moe_run(out, experiment, n_samples, seed, progress)
        means = overall_terms(table, "i2moe", "mean")  # term: the expert
        weights = {term: means[expert] for expert, term in I2MOE_TERMS.items()}
        rows += [
            validation_row("i2moe", experiment, term, value) for term, value in weights.items()
        ]
        leader = I2MOE_LEADER[experiment]
        largest = max(weights, key=weights.get)
        rows.append(check_row("i2moe", experiment, f"{leader}_largest", largest == leader))
        analysis += _expert_analysis(experiment, table)
    return write_validation(out, rows + analysis)

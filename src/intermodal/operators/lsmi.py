"""The LSMI operator for ``Dataset.map_batches`` on an actor pool: per row and pair of
modalities the pointwise r, u1, u2, s (nats) from the fitted ``artifacts/lsmi/``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from intermodal.estimators.lsmi import pointwise
from intermodal.models.classifiers import fold_of, log_proba_of_labels
from intermodal.operators.intershap import keep_freed_memory
from intermodal.pipelines.fit_lsmi import (
    classifier_keys,
    joined,
    key_name,
    load_artifacts,
    lsmi_features,
    lsmi_model,
    lsmi_pairs,
)
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, LSMI_TERMS, SAMPLE_ID, lsmi_column


class LSMIOperator:
    """Loads the entropy models and fold classifiers once; ``__call__`` appends the LSMI
    columns to a normalised input batch (modality columns are kept for later stages)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = JobConfig.model_validate(config)
        keep_freed_memory()
        torch.set_num_threads(
            self.config.compute.torch_threads or max(1, int(self.config.compute.cpus_per_actor))
        )
        self.model = lsmi_model(self.config)
        self.artifacts = load_artifacts(self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        artifacts = self.artifacts
        features = lsmi_features(self.config, batch, self.model)
        labelled = pc.is_valid(batch.column(LABEL)).to_numpy(zero_copy_only=False)
        # rows without a label get a placeholder class; their terms are written as null
        labels = batch.column(LABEL).fill_null(0).to_numpy().astype(np.int64)
        folds = fold_of(batch.column(SAMPLE_ID), artifacts.folds, artifacts.seed)
        entropy = {name: model.entropy(features[name]) for name, model in artifacts.entropy.items()}
        log_p = {
            key_name(key): log_proba_of_labels(
                artifacts.classifiers[key_name(key)], joined(features, key), folds, labels
            )
            for key in classifier_keys(self.config)
        }
        log_prior = artifacts.log_prior[labels]
        for a, b in lsmi_pairs(self.config):
            terms = pointwise(
                entropy[a], entropy[b], log_p[a], log_p[b], log_p[key_name((a, b))], log_prior
            )
            for term in LSMI_TERMS:
                values = pa.array(terms[term], pa.float64(), mask=~labelled)
                batch = batch.append_column(
                    pa.field(lsmi_column(term, a, b), pa.float64()), [values]
                )
        return batch

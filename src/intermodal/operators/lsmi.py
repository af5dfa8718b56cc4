"""The LSMI operator for ``Dataset.map_batches`` on an actor pool: per row and pair of
modalities the pointwise r, u1, u2, s (nats) from the fitted ``artifacts/lsmi/``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from intermodal.estimators.lsmi import pointwise
from intermodal.models.classifiers import LOG_PROBABILITY_FLOOR, fold_of, log_proba_of_labels
from intermodal.models.lsmi_artifacts import (
    classifier_keys,
    joined,
    key_name,
    load_artifacts,
    lsmi_features,
    lsmi_model,
    lsmi_pairs,
)
from intermodal.operators.coalitions import CoalitionValues
from intermodal.operators.intershap import ModelOperator, keep_freed_memory, use_actor_threads
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import LABEL, LSMI_TERMS, SAMPLE_ID, lsmi_column


class LSMIOperator:
    """Loads the entropy models and fold classifiers once (or, with ``lsmi.classifiers:
    model``, the model and its masked coalitions over ``background``); ``__call__`` appends the
    LSMI columns to a normalised input batch (modality columns are kept for later stages)."""

    def __init__(
        self, config: dict[str, Any], background: dict[str, np.ndarray] | None = None
    ) -> None:
        self.config = JobConfig.model_validate(config)
        compute = self.config.compute
        keep_freed_memory()
        use_actor_threads(compute)
        self.model = lsmi_model(self.config)
        self.artifacts = load_artifacts(self.config)
        self.coalitions: _CoalitionSource | None = None
        if self.config.lsmi.classifiers == "model":
            if background is None:
                raise ValueError("lsmi.classifiers 'model' needs background rows")
            self.coalitions = _CoalitionSource(config, background)

    def _log_probabilities(
        self, batch: pa.Table, features: dict[str, np.ndarray], labels: np.ndarray
    ) -> dict[str, np.ndarray]:
        """``log p(y | ·)`` of each row's label per classifier key (``<m>``, ``<a>__<b>``)."""
        keys = classifier_keys(self.config)
        if self.coalitions is not None:
            return self.coalitions.log_probabilities(batch, labels, keys)
        folds = fold_of(batch.column(SAMPLE_ID), self.artifacts.folds, self.artifacts.seed)
        return {
            key_name(key): log_proba_of_labels(
                self.artifacts.classifiers[key_name(key)], joined(features, key), folds, labels
            )
            for key in keys
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        artifacts = self.artifacts
        features = lsmi_features(self.config, batch, self.model)
        labelled = pc.is_valid(batch.column(LABEL)).to_numpy(zero_copy_only=False)
        # rows without a label get a placeholder class; their terms are written as null
        labels = batch.column(LABEL).fill_null(0).to_numpy().astype(np.int64)
        entropy = {name: model.entropy(features[name]) for name, model in artifacts.entropy.items()}
        log_p = self._log_probabilities(batch, features, labels)
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


class _CoalitionSource(ModelOperator):
    """``p(y | x_S)`` from the model with the modalities outside ``S`` masked: the coalition
    values InterSHAP uses, read as classifiers (valid for a model trained with modality
    masking, so that a masked input means "modality unknown")."""

    def __init__(self, config: dict[str, Any], background: dict[str, np.ndarray]) -> None:
        super().__init__(config)
        self.values = CoalitionValues(self.model, self._tensors(background))
        self.bit = {name: 1 << index for index, name in enumerate(self.config.modality_names)}

    def log_probabilities(
        self, batch: pa.Table, labels: np.ndarray, keys: list[tuple[str, ...]]
    ) -> dict[str, np.ndarray]:
        probabilities = self.values(self._inputs(batch)).cpu().numpy()  # [B, 2**M, C]
        rows = np.arange(len(labels))
        result = {}
        for key in keys:
            coalition = sum(self.bit[name] for name in key)
            picked = probabilities[rows, coalition, labels]
            result[key_name(key)] = np.log(np.maximum(picked, np.exp(LOG_PROBABILITY_FLOOR)))
        return result

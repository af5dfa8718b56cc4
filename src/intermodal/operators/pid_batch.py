"""The PID BATCH operator: per block of ``pid_batch.block_size`` rows, pair of modalities and
target (labels; predictions with a model) the BATCH estimate (bits) from the fitted
``artifacts/pid_batch/``, written on every row of the block with the block's id (``aggregate``
averages over blocks). Scoring needs no label: the fitted classifiers stand for the target."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from intermodal.estimators.pid_batch import TERMS, block_pid
from intermodal.models.classifiers import fold_of, own_fold_probabilities
from intermodal.models.lsmi_artifacts import classifier_keys, joined, key_name, lsmi_pairs
from intermodal.models.pid_batch import blocks
from intermodal.models.pid_batch_artifacts import input_features, load_batch_artifacts
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import BATCH_BLOCK, SAMPLE_ID, batch_column

BLOCK_ID_RANGE = 1 << 62  # block ids: a hash of the block's first sample id
BLOCK_ID_SEED = 0x5EED


class PIDBatchOperator:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = JobConfig.model_validate(config)
        self.artifacts = load_batch_artifacts(self.config)

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        config, artifacts = self.config, self.artifacts
        features = input_features(config, batch)
        folds = fold_of(batch.column(SAMPLE_ID), artifacts.folds, artifacts.seed)
        ids = batch.column(SAMPLE_ID).combine_chunks()
        slices = blocks(batch.num_rows, config.pid_batch.block_size)
        block_ids = np.empty(batch.num_rows, dtype=np.int64)
        for block in slices:
            block_ids[block] = fold_of(ids.slice(block.start, 1), BLOCK_ID_RANGE, BLOCK_ID_SEED)[0]
        batch = batch.append_column(pa.field(BATCH_BLOCK, pa.int64()), [block_ids])
        for target, models in artifacts.targets.items():
            probabilities = {
                key_name(key): torch.from_numpy(
                    own_fold_probabilities(
                        models.classifiers[key_name(key)], joined(features, key), folds
                    )
                )
                for key in classifier_keys(config)
            }
            for a, b in lsmi_pairs(config):
                encoder_a, encoder_b = models.encoders[key_name((a, b))]
                terms = {term: np.empty(batch.num_rows) for term in TERMS}
                for block in slices:
                    x_a, x_b = (torch.from_numpy(np.array(features[m][block])) for m in (a, b))
                    values = block_pid(
                        encoder_a(x_a).double(),
                        encoder_b(x_b).double(),
                        probabilities[a][block],
                        probabilities[b][block],
                        probabilities[key_name((a, b))][block],
                        n_iters=config.pid_batch.sinkhorn_iters,
                        tol=config.pid_batch.sinkhorn_tol,
                    )
                    for term, value in values.items():
                        terms[term][block] = value / np.log(2)  # bits, as pid_cvx
                for term, values in terms.items():
                    field = pa.field(batch_column(term, a, b, target), pa.float64())
                    batch = batch.append_column(field, [values])
        return batch

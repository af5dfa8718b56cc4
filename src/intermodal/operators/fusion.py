"""The I2MoE and InTense operators: each loads its trained model from ``artifacts/<measure>/``
once per actor and appends its columns to a normalised input batch.

Both run the model in float64: the weights then sum to 1 and the contributions plus the bias
to the logit to rounding error of float64, not of float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from intermodal.models.fusion_artifacts import FusionMeasure, fusion_inputs, load_fusion_model
from intermodal.operators.intershap import keep_freed_memory, use_actor_threads
from intermodal.schemas.config import JobConfig
from intermodal.schemas.tables import (
    I2MOE_PRED,
    INTENSE_BIAS,
    INTENSE_PRED,
    i2moe_weight_column,
    intense_contribution_column,
)


class _FusionOperator:
    measure: FusionMeasure

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = JobConfig.model_validate(config)
        keep_freed_memory()
        use_actor_threads(self.config.compute)
        self.model = load_fusion_model(self.config, self.measure).double()

    def _inputs(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return fusion_inputs(self.config, batch, torch.float64)


def _appended(batch: pa.Table, columns: dict[str, tuple[np.ndarray, pa.DataType]]) -> pa.Table:
    for name, (values, kind) in columns.items():
        batch = batch.append_column(pa.field(name, kind, nullable=False), [values])
    return batch


class I2MoEOperator(_FusionOperator):
    """Appends ``i2moe_w_<expert>`` (each expert's weight) and ``i2moe_pred``."""

    measure = "i2moe"

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        result = self.model.interpret(self._inputs(batch))
        weights = result["weights"].numpy()
        columns = {
            i2moe_weight_column(expert): (weights[:, index], pa.float64())
            for index, expert in enumerate(self.model.expert_names)
        }
        columns[I2MOE_PRED] = (result["logits"].argmax(dim=-1).numpy(), pa.int64())
        return _appended(batch, columns)


class InTenseOperator(_FusionOperator):
    """Appends ``intense_c_<term>`` (each block's contribution to the logit of the predicted
    class), ``intense_bias`` (that class's bias) and ``intense_pred``."""

    measure = "intense"

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        result = self.model.interpret(self._inputs(batch))
        predicted = result["logits"].argmax(dim=-1)
        rows = torch.arange(len(predicted))
        contributions = result["contributions"][rows, :, predicted].numpy()  # [B, n_blocks]
        columns = {
            intense_contribution_column(term): (contributions[:, index], pa.float64())
            for index, term in enumerate(self.model.term_names)
        }
        columns[INTENSE_BIAS] = (self.model.bias[predicted].numpy(), pa.float64())
        columns[INTENSE_PRED] = (predicted.numpy(), pa.int64())
        return _appended(batch, columns)

"""Torch models: the multimodal model protocol, fusion baselines, training."""

# the model families a library compares, by name (``models.families`` builds them): naming
# them, as the command line's choices do, imports no torch
FCNN_FAMILIES = ("early", "intermediate", "late")
FAMILIES = (*FCNN_FAMILIES, "i2moe", "intense")

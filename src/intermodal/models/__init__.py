"""Torch models: the multimodal model protocol, fusion baselines, training."""

"""Synthetic data sets with known multimodal interactions."""

from intermodal.synthetic.hdxor import HDXORSpec, generate, write_shards, xor_function_model

__all__ = ["HDXORSpec", "generate", "write_shards", "xor_function_model"]

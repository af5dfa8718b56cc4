"""Synthetic data sets with known multimodal interactions, a module each (``hdxor``,
``pid_data``, ``lsmi_data``, ...); nothing is imported here, so that reading one imports no
other (``hdxor``'s XOR function is a torch module)."""

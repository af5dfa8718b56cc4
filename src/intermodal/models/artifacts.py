"""Fitted artifacts in a run directory: ``artifacts/<name>/`` holds what ``fit`` learnt for one
measure, as torch state files (and arrays) that the score operators load once per actor."""

from __future__ import annotations

import io

import torch

from intermodal import storage
from intermodal.rundir import ARTIFACTS


def artifact_folder(run_dir: str, name: str) -> str:
    """``<run_dir>/artifacts/<name>``: one measure's fitted artifacts."""
    return storage.join(run_dir, ARTIFACTS, name)


def save_state(state: dict, uri: str) -> None:
    """A (nested) dict of tensors as one torch file at ``uri`` (any fsspec URI)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fs, path = storage.filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def load_state(uri: str) -> dict:
    """``save_state``'s dict; ``weights_only`` loading, so no code can come with it."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as handle:
        return torch.load(io.BytesIO(handle.read()), weights_only=True)

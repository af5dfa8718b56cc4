"""Fitted artifacts of a run: torch state files, and a marker saying what they were fitted on."""

from __future__ import annotations

import io

import torch

from intermodal import __version__, storage
from intermodal.pipelines.inputs import Shard, fingerprint
from intermodal.pipelines.run import RunPaths
from intermodal.schemas.config import JobConfig


class FitMarker:
    """``artifacts/<folder>/fitted_on.json``: what a fit depended on (its settings, the
    modalities, the input fingerprint). Removed when a fit starts and written when it ends, so
    a present, matching marker means complete artifacts fitted on this input and settings."""

    def __init__(self, config: JobConfig, shards: list[Shard], folder: str, settings: dict):
        self.uri = storage.join(RunPaths(config.output).artifacts, folder, "fitted_on.json")
        self.content = {
            "intermodal": __version__,  # another release may fit differently
            folder: settings,
            "modalities": [m.model_dump(mode="json") for m in config.modalities],
            "input": fingerprint(shards),
        }

    def clear(self) -> None:
        storage.remove(self.uri)

    def write(self) -> None:
        storage.write_json(self.content, self.uri)

    def matches(self) -> bool:
        fs, path = storage.filesystem(self.uri)
        return fs.exists(path) and storage.read_json(self.uri) == self.content


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

"""The marker of a fit: what a run's fitted artifacts were fitted on."""

from __future__ import annotations

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

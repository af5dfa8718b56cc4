"""The layout of a run directory: what ``score`` writes where (a utility every layer reads)."""

from __future__ import annotations

from dataclasses import dataclass

from intermodal import storage

ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def scores(self) -> str:
        return storage.join(self.root, "scores")

    @property
    def rejects(self) -> str:
        return storage.join(self.root, "rejects")

    @property
    def global_(self) -> str:
        return storage.join(self.root, "global")

    @property
    def artifacts(self) -> str:
        return storage.join(self.root, ARTIFACTS)

    @property
    def background(self) -> str:
        """The background rows the score actors read (``{modality: [K, size]}``)."""
        return storage.join(self.root, ARTIFACTS, "background.npz")

    @property
    def actors(self) -> str:
        """Where each score actor of the last ``score`` started: a JSON file per start, read
        into the manifest's ``actors``."""
        return storage.join(self.root, ARTIFACTS, "actors")

    @property
    def manifest(self) -> str:
        return storage.join(self.root, "manifest.json")

    @property
    def selection(self) -> str:
        """What ``intermodal select`` recommends for the run's dataset."""
        return storage.join(self.root, "selection.json")

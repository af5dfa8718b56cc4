"""The layout of a run directory and the progress callback every stage reports through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from intermodal import storage
from intermodal.models.artifacts import ARTIFACTS

Progress = Callable[[str], None]


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
    def manifest(self) -> str:
        return storage.join(self.root, "manifest.json")

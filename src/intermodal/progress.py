"""How long work reports: the progress callback every stage takes, and a heartbeat that says
when a loop has been silent long enough to report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[str], None]
HEARTBEAT_SECONDS = 10.0


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Heartbeat:
    """Says when a long loop should report, so a user never waits ``seconds`` in silence."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = HEARTBEAT_SECONDS if seconds is None else seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

"""A clock to hand to the runtime's `clock=` parameters instead of time.time."""

from __future__ import annotations

import threading
import time


class StoppedClock:
    """Wall-clock time stopped where it was made: what the code under test reads as now moves
    only when the test calls advance(). It counts its reads, so that a test can wait until a
    worker has looked at what is due (and found nothing) instead of sleeping to see that
    nothing happens."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self.reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
            return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

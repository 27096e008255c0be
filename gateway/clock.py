"""Time, injectable: every component that reads the clock takes a `Clock`.

Production uses `SYSTEM`; unit tests pass a `ManualClock` and move it forward,
so caches, breakers and refresh schedules are tested without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (stored in Redis, shared by replicas)."""
        ...

    def monotonic(self) -> float:
        """Seconds for in-process durations (caches, deadlines)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SYSTEM: Clock = SystemClock()

"""Clocks: the one seam through which jobwatch and its simulator read time.

Everything that decides on time (the diff, stall detection, the simulator's
job lifecycle) takes a :class:`Clock`, so tests drive time forward without
sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """A source of wall-clock time as seconds since the Unix epoch (UTC)."""

    def time(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to; for tests, the simulator and benchmarks."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (may be negative to model a clock jump back)."""
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        self._now = float(now)

"""Clocks: the one seam through which jobwatch and its simulator read time.

Everything that decides on time (the diff, stall detection, the simulator's
job lifecycle, the poll loops' intervals, overruns and backoff) takes a
:class:`Clock`, so tests drive time forward without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock time, a monotonic clock for durations, and a timer."""

    def time(self) -> float:
        """Seconds since the Unix epoch (UTC); may jump back or forward."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back. For durations and deadlines."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once :meth:`monotonic` has moved ``seconds`` on (cancellable)."""
        ...


class SystemClock:
    """The real clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A wall clock that only moves when told to; for tests, the simulator and benchmarks.

    Only :meth:`time` is manual: :meth:`monotonic` and :meth:`sleep` stay real,
    so loops run on real time (the benchmarks, the simulator's latency).
    ``jobwatch.testing.FakeClock`` drives those too.
    """

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

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

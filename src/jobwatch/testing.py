"""Fakes for people who test code built on jobwatch (and for jobwatch's own tests)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from jobwatch.clock import ManualClock
from jobwatch.events import EventRecord

__all__ = ["FakeClock", "MemorySink"]


class MemorySink:
    """An :class:`~jobwatch.events.EventSink` that keeps every event in a list."""

    def __init__(self) -> None:
        # Events as emitted (``jobwatch.events.Event``, or ``RecordedEvent`` on replay).
        self.events: list[Any] = []

    def emit(self, event: EventRecord) -> None:
        self.events.append(event)

    def kinds(self) -> Counter[str]:
        return Counter(e.kind for e in self.events)

    def of(self, kind: str, job_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if e.kind == kind and (job_id is None or e.to_dict()["job_id"] == job_id)
        ]

    def clear(self) -> None:
        self.events.clear()


class FakeClock(ManualClock):
    """A clock whose wall time, monotonic time and timers all move only in :meth:`advance`.

    ``advance(s)`` with ``s > 0`` moves both clocks and wakes every
    :meth:`sleep` whose deadline has come; a negative ``advance`` or
    :meth:`set` moves the wall clock only (a wall clock jumping back), as a
    real monotonic clock would not follow. Woken tasks run when the test next
    yields to the event loop: :meth:`settle` waits until a given number of
    tasks sleep on this clock again.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        super().__init__(start)
        self._mono = 0.0
        self._order = itertools.count()
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timers.append((self._mono + seconds, next(self._order), fut))
        try:
            await fut
        finally:
            fut.cancel()  # a cancelled sleeper no longer counts as one
            self._timers = [t for t in self._timers if not t[2].done()]

    def advance(self, seconds: float) -> float:
        now = super().advance(seconds)
        if seconds > 0:
            self._mono += seconds
            due = sorted(t for t in self._timers if t[0] <= self._mono)
            self._timers = [t for t in self._timers if t[0] > self._mono]
            for _, _, fut in due:
                if not fut.done():
                    fut.set_result(None)
        return now

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for _, _, fut in self._timers if not fut.done())

    def next_wake(self) -> float | None:
        """Seconds (of this clock) until the next sleeper wakes; ``None`` if nobody sleeps."""
        pending = [deadline for deadline, _, fut in self._timers if not fut.done()]
        return min(pending) - self._mono if pending else None

    async def settle(self, sleepers: int, *, within: float = 10.0) -> None:
        """Yield to the event loop until exactly ``sleepers`` tasks sleep on this clock.

        Woken tasks may do real I/O (HTTP to the simulator) before they sleep
        again, so this waits in real time, at most ``within`` seconds.
        """
        deadline = time.monotonic() + within
        while self.sleepers != sleepers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.sleepers} sleepers after {within} s, not {sleepers}")
            await asyncio.sleep(0.001)

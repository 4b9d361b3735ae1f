"""CPU turns: one CPU-heavy step per turn of the event loop, ``/metrics`` first.

Nothing here knows about AWS: the ListJobs hook (:mod:`jobwatch.listjobs`) and
the poller's page conversion (:mod:`jobwatch.source`) take turns, the
``/metrics`` writer (:mod:`jobwatch.metrics`) holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["BIG_BODY", "BIG_PAGE", "CpuTurns", "Pauser"]

#: Bodies and pages smaller than this are cheap enough to handle without a turn.
BIG_BODY = 64 * 1024
BIG_PAGE = 100


class CpuTurns:
    """Lets one CPU-heavy step run per turn of the event loop, in arrival order.

    Twenty targets whose 1,000-job pages arrive together would otherwise parse
    them all in one turn of the loop (asyncio runs every ready callback before it
    looks at sockets again): 20 x 10 ms during which ``/healthz`` and
    ``/metrics`` wait. A step taken through :meth:`turn` keeps the turn until
    the loop has come round once, so the others wait for theirs and requests
    get answered in between. Throughput is the same: the work was serial anyway.

    :meth:`hold` jumps the queue and keeps every turn until its block ends (the
    block gives the loop a turn now and then itself): ``/metrics`` rendering
    goes first, the polls' pages wait the few tens of milliseconds it takes.

    ``turn(finishing=True)`` is for a step that completes work an earlier turn
    started (a parsed page turned into jobs and diffed): it goes before steps
    that start new work (parsing the next body), so a parsed page waits for one
    turn at most instead of for every other target's parse. What waits between
    the two steps is a page of dicts the garbage collector walks
    (docs/performance.md).
    """

    def __init__(self) -> None:
        self._busy = False
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._finishing: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, *, finishing: bool = False) -> AsyncIterator[None]:
        await self._acquire(self._finishing if finishing else self._waiting)
        try:
            yield
            await asyncio.sleep(0)
        finally:
            self._release()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        await self._acquire(self._urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, queue: deque[asyncio.Future[None]]) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed the turn while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def _release(self) -> None:
        # The turn passes straight to the next waiter (urgent ones first, then
        # finishing ones), so nobody can slip in between; with no one waiting it is free.
        for queue in (self._urgent, self._finishing, self._waiting):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._busy = False


class Pauser:
    """``await pause()`` gives the loop a turn once ``slice_seconds`` have passed.

    For long work on the loop (writing ``/metrics``, the status page and its
    API): call it between pieces; it yields only when the slice is used up.
    """

    def __init__(self, slice_seconds: float) -> None:
        self._slice = slice_seconds
        self._deadline = time.perf_counter() + slice_seconds

    async def __call__(self) -> None:
        if time.perf_counter() >= self._deadline:
            await asyncio.sleep(0)
            self._deadline = time.perf_counter() + self._slice

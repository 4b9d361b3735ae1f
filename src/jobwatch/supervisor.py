"""The poll loops: one :class:`~jobwatch.poller.TargetPoller` and task per target.

:class:`Supervisor` is the one owner of the target set at run time. It keeps
``{target key: (poller, task, stop)}``, and :meth:`Supervisor.reconcile` makes
that map, the :class:`~jobwatch.state.Store` and the client pool's registrations
match the targets wanted now (static configuration, discovery, sharding: see
``targets.py``). A failing loop is logged; it never takes the others down.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from jobwatch.log import get_logger
from jobwatch.model import Target
from jobwatch.poller import TargetPoller
from jobwatch.state import Store

__all__ = ["Supervisor"]

_log = get_logger("jobwatch.supervisor")
Key = tuple[str, str]


@dataclass(slots=True)
class _Loop:
    poller: TargetPoller
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("poll_loop_died", task=task.get_name(), error=repr(task.exception()))


class Supervisor:
    """Owns the poll loops and keeps them, the store and the clients in step.

    ``make_poller`` builds a target's poller; ``on_target`` is told of every
    target that joins or changes before its poller is built (the client pool
    registers its credentials there).
    """

    def __init__(
        self,
        store: Store,
        make_poller: Callable[[Target], TargetPoller],
        on_target: Callable[[Target], None] | None = None,
    ) -> None:
        self._store = store
        self._make_poller = make_poller
        self._on_target = on_target
        self._loops: dict[Key, _Loop] = {}
        self._running = False
        #: Targets added, removed or updated after start-up, by change.
        self.changes: Counter[str] = Counter({"added": 0, "removed": 0, "updated": 0})

    @property
    def targets(self) -> list[Target]:
        """The targets watched now, in the order they joined."""
        return [loop.poller.target for loop in self._loops.values()]

    @property
    def pollers(self) -> Mapping[Key, TargetPoller]:
        return {key: loop.poller for key, loop in self._loops.items()}

    def poller(self, key: Key) -> TargetPoller | None:
        """The poller of target ``key``, if this process watches it."""
        loop = self._loops.get(key)
        return loop.poller if loop is not None else None

    @property
    def tasks(self) -> Mapping[Key, asyncio.Task[None]]:
        """The loops running now, by target key."""
        return {key: loop.task for key, loop in self._loops.items() if loop.task is not None}

    async def reconcile(self, wanted: Iterable[Target], *, count: bool = True) -> None:
        """Make the loops match ``wanted``.

        A target that left loses its loop (a poll in progress is cancelled), its
        series and its part of the state file; one that joined gets a loop (and
        its snapshot from the state file, if the store has one); one whose
        settings changed (role, labels) gets a new loop and keeps its snapshot.
        ``count``: add the changes to :attr:`changes` (not for the first set).
        """
        want = {t.key: t for t in wanted}
        current = {key: loop.poller.target for key, loop in self._loops.items()}
        removed = [key for key in current if key not in want]
        changed = [t for key, t in want.items() if key in current and current[key] != t]
        added = [t for key, t in want.items() if key not in current]
        for key in [*removed, *(t.key for t in changed)]:
            await self._end(key)
        for key in removed:
            self._store.remove(key)
            _log.info("target_removed", aws_account_id=key[0], aws_region=key[1])
        for kind, targets in (("target_updated", changed), ("target_added", added)):
            for t in targets:
                self._store.add(t)
                if self._on_target is not None:
                    self._on_target(t)
                loop = self._loops[t.key] = _Loop(self._make_poller(t), asyncio.Event())
                if self._running:
                    self._spawn(t.key, loop)
                if count:
                    _log.info(kind, aws_account_id=t.account_id, aws_region=t.region)
        if count:
            self.changes.update(added=len(added), removed=len(removed), updated=len(changed))

    def start(self) -> None:
        """Start every loop; targets reconciled in later get theirs at once."""
        self._running = True
        for key, loop in self._loops.items():
            if loop.task is None:
                self._spawn(key, loop)

    async def stop(self, grace: float) -> None:
        """Ask every loop to stop; polls in progress get ``grace`` seconds, then are cancelled."""
        self._running = False
        running = [loop for loop in self._loops.values() if loop.task is not None]
        for loop in running:
            loop.stop.set()
        tasks = [loop.task for loop in running if loop.task is not None]
        for loop in running:
            loop.task = None
            loop.stop = asyncio.Event()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            _log.warning("shutdown_cancelled_polls", count=len(pending))
        for task in done:
            _report_death(task)

    async def poll_once(self) -> None:
        """Poll every target once, concurrently (``jobwatch once`` and tests)."""
        async with asyncio.TaskGroup() as tg:
            for loop in list(self._loops.values()):
                tg.create_task(loop.poller.poll_once())

    def _spawn(self, key: Key, loop: _Loop) -> None:
        loop.task = asyncio.create_task(loop.poller.run(loop.stop), name=f"poll {key[0]}/{key[1]}")

    async def _end(self, key: Key) -> None:
        """End a target's loop now: a poll in progress is cancelled, its result unwanted."""
        loop = self._loops.pop(key, None)
        if loop is None or loop.task is None:
            return
        loop.stop.set()
        loop.task.cancel()
        await asyncio.wait([loop.task])
        _report_death(loop.task)

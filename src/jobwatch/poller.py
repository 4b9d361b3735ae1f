"""One loop per target: poll on a jittered interval, diff, emit, record.

A poll never raises (except cancellation): any failure is logged, counted and
shown on the target's health metrics, and the loop goes on with backoff. Two
polls of one target never overlap because each target has exactly one loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from jobwatch.clock import Clock
from jobwatch.diff import Change, DiffPolicy, TrackedJob, departed, diff
from jobwatch.errors import SourceError
from jobwatch.events import Event, EventRecord
from jobwatch.log import get_logger
from jobwatch.model import (
    KNOWN_OPERATIONS,
    KNOWN_STATUSES,
    NON_TERMINAL_STATUSES,
    Job,
    JobDetail,
    Target,
)
from jobwatch.source import JobSource
from jobwatch.state import Store

__all__ = ["PollSettings", "TargetPoller"]

_log = get_logger("jobwatch.poller")
_KNOWN_OPERATION_SET = frozenset(KNOWN_OPERATIONS)
_KNOWN_STATUS_SET = frozenset(KNOWN_STATUSES)


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval: float = 60.0
    jitter: float = 5.0
    resync_interval: float = 900.0
    #: Longest wait after repeated failures, as a multiple of ``interval``.
    max_backoff_intervals: float = 8.0


class TargetPoller:
    """Polls one target; :meth:`poll_once` is one cycle, :meth:`run` the loop."""

    def __init__(
        self,
        target: Target,
        source: JobSource,
        store: Store,
        publish: Callable[[list[EventRecord]], None],
        clock: Clock,
        policy: DiffPolicy,
        settings: PollSettings,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self._source = source
        self._store = store
        self._publish = publish
        self._clock = clock
        self._policy = policy
        self._settings = settings
        self._rng = rng or random.Random()
        self._log = _log.bind(aws_account_id=target.account_id, aws_region=target.region)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a poll in progress is finished, not abandoned."""
        s = self._settings
        delay = self._rng.uniform(0, s.jitter)
        while not stop.is_set():
            if await _wait(stop, delay):
                return
            started = time.monotonic()
            ok = await self.poll_once()
            took = time.monotonic() - started
            if took > s.interval:
                self._store[self.target.key].overruns += 1
                self._log.warning("poll_overran", seconds=round(took, 3), interval=s.interval)
            failures = self._store[self.target.key].consecutive_failures
            base = s.interval
            if not ok and failures > 1:
                base = min(s.interval * 2 ** (failures - 1), s.interval * s.max_backoff_intervals)
            delay = max(0.0, base - took) + self._rng.uniform(0, s.jitter)

    async def poll_once(self) -> bool:
        """One poll cycle. Returns whether it succeeded; never raises (but on cancel)."""
        key = self.target.key
        state = self._store[key]
        started = time.monotonic()
        now = self._clock.time()
        full = (
            state.jobs is None
            or state.last_full_listing is None
            or now - state.last_full_listing >= self._settings.resync_interval
            or now < state.last_full_listing  # the clock went back: resync
        )
        try:
            changes, jobs = await self._cycle(state.jobs, now, full)
        except SourceError as e:
            self._store.record_failure(key, e.code)
            self._log.warning(
                "poll_failed",
                operation=e.operation,
                error_code=e.code,
                error=e.message[:500],
                throttled=e.throttled,
                consecutive_failures=self._store[key].consecutive_failures,
            )
            return False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one target's bug must not stop the others
            self._store.record_failure(key, type(e).__name__)
            self._log.exception("poll_crashed", error=repr(e)[:500])
            return False
        finally:
            self._store.record_duration(key, time.monotonic() - started)
        self._store.record_success(key, jobs, now, full=full)
        self._store.remember_details(
            key, [d for c, d in changes if c.kind == "job_failed" and d is not None]
        )
        self._store.count_events(Counter(c.kind for c, _ in changes))
        if changes:
            self._publish([Event(change, self.target, now, detail) for change, detail in changes])
        return True

    async def _cycle(
        self, previous: dict[str, TrackedJob] | None, now: float, full: bool
    ) -> tuple[list[tuple[Change, JobDetail | None]], dict[str, TrackedJob]]:
        statuses = None if full else NON_TERMINAL_STATUSES
        listing = await self._source.list_jobs(self.target, statuses)
        details: dict[str, JobDetail] = {}
        gone: set[str] = set()
        if not full and previous:
            # Jobs that left the non-terminal set have (most likely) ended:
            # DescribeJob tells how, without listing 90 days of history.
            for job_id in departed(previous, listing):
                detail = await self._describe(job_id)
                if detail is None:
                    continue
                if isinstance(detail, str):
                    gone.add(job_id)
                    continue
                details[job_id] = detail
                listing.append(detail.job)
        self._note_unknown(listing)
        result = diff(previous, listing, now, self._policy, complete=full, gone=gone)
        out: list[tuple[Change, JobDetail | None]] = []
        for change in result.changes:
            detail = None
            if change.kind == "job_failed":
                jid = change.job.job_id
                found = details.get(jid) or await self._describe(jid)
                detail = found if isinstance(found, JobDetail) else None
            out.append((change, detail))
        return out, result.jobs

    async def _describe(self, job_id: str) -> JobDetail | str | None:
        """DescribeJob, best effort: the detail, ``"gone"`` if AWS has no such job, else None."""
        try:
            return await self._source.describe_job(self.target, job_id)
        except SourceError as e:
            if e.not_found:
                return "gone"
            self._log.warning(
                "describe_failed", job_id=job_id, error_code=e.code, throttled=e.throttled
            )
            return None

    def _note_unknown(self, listing: list[Job]) -> None:
        for job in listing:
            if job.status not in _KNOWN_STATUS_SET and self._store.note_unknown(
                "status", job.status
            ):
                self._log.warning("unknown_value_seen", field="status", value=job.status[:64])
            if (
                job.operation
                and job.operation not in _KNOWN_OPERATION_SET
                and self._store.note_unknown("operation", job.operation)
            ):
                self._log.warning("unknown_value_seen", field="operation", value=job.operation[:64])


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True

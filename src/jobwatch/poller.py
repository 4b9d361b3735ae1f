"""One loop per target: poll on a jittered interval, diff, emit, record.

A poll never raises (except cancellation): any failure is logged, counted and
shown on the target's health metrics, and the loop goes on with backoff. Two
polls of one target never overlap because each target has exactly one loop.
Every wait and duration goes through the injected :class:`~jobwatch.clock.Clock`
(``clock.monotonic``, ``clock.sleep``), so tests drive the loop's timing.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from jobwatch.clock import Clock
from jobwatch.diff import Change, Differ, DiffPolicy, TrackedJob, diff
from jobwatch.errors import SourceError
from jobwatch.events import Event, EventRecord
from jobwatch.log import get_logger
from jobwatch.model import (
    KNOWN_OPERATIONS,
    KNOWN_STATUSES,
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    Job,
    JobDetail,
    Target,
)
from jobwatch.source import PAGE_SIZE, JobSource
from jobwatch.state import Store

__all__ = ["PollSettings", "TargetPoller"]

_log = get_logger("jobwatch.poller")
_KNOWN_OPERATION_SET = frozenset(KNOWN_OPERATIONS)
_KNOWN_STATUS_SET = frozenset(KNOWN_STATUSES)
#: The statuses of jobs that ended, as a ListJobs filter.
TERMINAL_LIST = tuple(s for s in KNOWN_STATUSES if s in TERMINAL_STATUSES)
#: How far before the previous poll :meth:`JobSource.list_recent` looks back:
#: clock skew between jobwatch and AWS, and a listing that lags behind a creation.
RECENT_MARGIN = 300.0
#: A full listing costs one request per page plus parsing up to 1,000 jobs; a
#: DescribeJob one small request. Above this many DescribeJob calls per page a
#: full listing is the cheaper way to learn how departed jobs ended.
DESCRIBES_PER_PAGE = 4
#: Departed jobs are always described below this count.
MIN_DESCRIBES = 8


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval: float = 60.0
    jitter: float = 5.0
    resync_interval: float = 900.0
    #: Longest wait after repeated failures, as a multiple of ``interval``.
    max_backoff_intervals: float = 8.0


def _exclusive(
    poll: Callable[[TargetPoller], Coroutine[Any, Any, bool]],
) -> Callable[[TargetPoller], Coroutine[Any, Any, bool]]:
    """Hold the poller's lock for the whole poll: a push look (:meth:`TargetPoller.look`)
    diffs the same snapshot, so the two must not overlap."""

    @functools.wraps(poll)
    async def exclusive(self: TargetPoller) -> bool:
        async with self._lock:
            return await poll(self)

    return exclusive


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
        self._order_warned = False
        #: A poll and a push look (:meth:`look`) never overlap: each diffs the snapshot.
        self._lock = asyncio.Lock()
        #: True while :meth:`look` publishes (what it reports came from a push event).
        self.looking = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a poll in progress is finished, not abandoned."""
        s = self._settings
        clock = self._clock
        delay = self._rng.uniform(0, s.jitter)
        while not stop.is_set():
            if await _wait(clock, stop, delay):
                return
            started = clock.monotonic()
            ok = await self.poll_once()
            took = clock.monotonic() - started
            if took > s.interval:
                self._store[self.target.key].overruns += 1
                self._log.warning("poll_overran", seconds=round(took, 3), interval=s.interval)
            failures = self._store[self.target.key].consecutive_failures
            base = s.interval
            if not ok and failures > 1:
                base = min(s.interval * 2 ** (failures - 1), s.interval * s.max_backoff_intervals)
            delay = max(0.0, base - took) + self._rng.uniform(0, s.jitter)

    @_exclusive
    async def poll_once(self) -> bool:
        """One poll cycle. Returns whether it succeeded; never raises (but on cancel)."""
        key = self.target.key
        state = self._store[key]
        started = self._clock.monotonic()
        now = self._clock.time()
        full: str | None = None
        if state.jobs is None or state.last_full_listing is None:
            full = "baseline"
        elif now < state.last_full_listing:
            full = "clock_jump"  # the clock went back: resync
        elif now - state.last_full_listing >= self._settings.resync_interval:
            full = "resync"
        since = (state.last_success or now) - RECENT_MARGIN
        try:
            changes, jobs, full = await self._cycle(state.jobs, now, full, since)
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
            self._store.record_duration(key, self._clock.monotonic() - started)
        self._store.record_success(key, jobs, now, full=full is not None)
        if full is not None:
            self._store.full_listings[full] += 1
        self._store.remember_details(
            key, [d for c, d in changes if c.kind == "job_failed" and d is not None]
        )
        self._store.count_events(Counter(c.kind for c, _ in changes))
        if changes:
            self._publish([Event(change, self.target, now, detail) for change, detail in changes])
        return True

    async def _cycle(
        self, previous: dict[str, TrackedJob] | None, now: float, full: str | None, since: float
    ) -> tuple[list[tuple[Change, JobDetail | None]], dict[str, TrackedJob], str | None]:
        """One poll's calls and diff. ``full``: why this poll lists every status
        (None: incremental); the reason it really did, if it changed its mind, is returned."""
        details: dict[str, JobDetail] = {}
        gone: set[str] = set()
        differ = None
        if full is None and previous is not None:
            differ, full = await self._incremental(previous, now, since, details, gone)
        if full is not None or differ is None:
            full = full or "baseline"
            # Every status, page by page into a new differ (an incremental
            # listing that gave up on itself is dropped).
            differ = Differ(previous, now, self._policy)
            await self._source.list_jobs(self.target, None, _Feed(differ, self._note_unknown))
            self._store[self.target.key].last_full_size = differ.listed
        result = differ.finish(complete=full is not None, gone=gone)
        # A failure's detail (reasons, report) comes from DescribeJob: ask for
        # every failed job at once, each within the shared concurrency limit.
        wanted = [
            c.job.job_id
            for c in result.changes
            if c.kind == "job_failed" and c.job.job_id not in details
        ]
        for job_id, found in zip(wanted, await self._describe_all(wanted), strict=True):
            if isinstance(found, JobDetail):
                details[job_id] = found
        out = [
            (c, details.get(c.job.job_id) if c.kind == "job_failed" else None)
            for c in result.changes
        ]
        _keep_failure_codes(result.jobs, out)
        return out, result.jobs, full

    async def _incremental(
        self,
        previous: dict[str, TrackedJob],
        now: float,
        since: float,
        details: dict[str, JobDetail],
        gone: set[str],
    ) -> tuple[Differ, str | None]:
        """The calls of an incremental poll, or the reason to list every status instead.

        Lists the non-terminal jobs, then the jobs that ended and were created
        since the last poll (a job can live and end between two polls), then
        asks DescribeJob about tracked jobs that left the non-terminal set, or
        lists everything when that is cheaper.
        """
        differ = Differ(previous, now, self._policy)
        feed = _Feed(differ, self._note_unknown)
        await self._source.list_jobs(self.target, NON_TERMINAL_STATUSES, feed)
        recent = await self._source.list_recent(self.target, TERMINAL_LIST, since)
        if recent is None:
            log = self._log.warning if not self._order_warned else self._log.info
            self._order_warned = True
            log("listing_order_unexpected", fallback="full_listing")
            return differ, "order"
        # A job in both listings (it ended between the two calls): the first copy wins.
        feed.add(recent)
        missing = differ.departed()
        pages = max(1, -(-self._store[self.target.key].last_full_size // PAGE_SIZE))
        if len(missing) > max(MIN_DESCRIBES, DESCRIBES_PER_PAGE * pages):
            return differ, "departed"
        # Jobs that left the non-terminal set have (most likely) ended:
        # DescribeJob tells how, without listing 90 days of history.
        described: list[Job] = []
        for job_id, detail in zip(missing, await self._describe_all(missing), strict=True):
            if isinstance(detail, JobDetail):
                details[job_id] = detail
                described.append(detail.job)
            elif detail == "gone":
                gone.add(job_id)
        feed.add(described)
        return differ, None

    async def _describe_all(self, job_ids: list[str]) -> list[JobDetail | str | None]:
        """DescribeJob for each of ``job_ids`` concurrently (the source bounds how many)."""
        if not job_ids:
            return []
        return list(await asyncio.gather(*(self._describe(j) for j in job_ids)))

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

    async def look(self, job_id: str, status: str | None = None) -> str:
        """Describe one job now and report what changed, as a poll would (the push path).

        Goes through the same diff as polls (an incomplete listing of one job),
        under the lock polls take. ``status``: what an event said the job became;
        when the snapshot already has the job there, or ended, no call is made.
        Returns ``reported``, ``confirmed`` (nothing new), ``known``, ``not_ready``
        (no baseline yet: the first poll will see the job) or ``failed``.
        """
        async with self._lock:
            state = self._store[self.target.key]
            previous = state.jobs
            if previous is None:
                return "not_ready"
            tracked = previous.get(job_id)
            if tracked is not None and (tracked.job.terminal or tracked.job.status == status):
                return "known"
            found = await self._describe(job_id)
            if found is None or (found == "gone" and tracked is None):
                return "failed" if found is None else "confirmed"
            now = self._clock.time()
            listing = [found.job] if isinstance(found, JobDetail) else []
            gone = {job_id} if found == "gone" else set()
            result = diff(previous, listing, now, self._policy, complete=False, gone=gone)
            current = self._store.targets.get(self.target.key)
            if current is None or current.jobs is not previous:
                return "failed"  # the target left or was reset meanwhile: leave it to the polls
            detail = found if isinstance(found, JobDetail) else None
            _keep_failure_codes(
                result.jobs,
                [(c, detail if c.kind == "job_failed" else None) for c in result.changes],
            )
            self._store.replace_jobs(self.target.key, result.jobs)
            if not result.changes:
                return "confirmed"
            self._store.count_events(Counter(c.kind for c in result.changes))
            if detail is not None and any(c.kind == "job_failed" for c in result.changes):
                self._store.remember_details(self.target.key, [detail])
            self.looking = True
            try:
                self._publish(
                    [
                        Event(c, self.target, now, detail if c.kind == "job_failed" else None)
                        for c in result.changes
                    ]
                )
            finally:
                self.looking = False
            return "reported"

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


class _Feed:
    """A listing's pages into a :class:`Differ`, each job's status and operation
    checked on the way (:meth:`TargetPoller._note_unknown`)."""

    __slots__ = ("_differ", "_note")

    def __init__(self, differ: Differ, note: Callable[[list[Job]], None]) -> None:
        self._differ = differ
        self._note = note

    def add(self, jobs: list[Job]) -> None:
        self._note(jobs)
        self._differ.add(jobs)

    def restart(self) -> None:
        self._differ.restart()


def _keep_failure_codes(
    jobs: dict[str, TrackedJob], changes: list[tuple[Change, JobDetail | None]]
) -> None:
    """Put each newly failed job's first failure code on its tracked job (for alerts)."""
    for change, detail in changes:
        tracked = jobs.get(change.job.job_id)
        if change.kind == "job_failed" and detail and detail.failure_reasons and tracked:
            jobs[change.job.job_id] = replace(tracked, failure_code=detail.failure_reasons[0].code)


async def _wait(clock: Clock, stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds`` on ``clock``; True (at once) if ``stop`` is set meanwhile."""
    if seconds <= 0 or stop.is_set():
        return stop.is_set()
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        stopper.cancel()
    if sleeper.done() and not sleeper.cancelled():
        sleeper.result()  # a clock that failed must not turn the loop into a busy one
    return stop.is_set()

"""The pure core: (previous snapshot, new listing, now) -> (new snapshot, changes).

No I/O, no clock reads, no globals: every input is an argument, so the rules
below are tested exhaustively without a network.

Rules (docs/events.md is the user-facing version):

* The first poll of a target (``previous is None``) records a baseline: no
  ``job_discovered`` flood. A job first seen already ``Failed`` is reported once
  (``job_failed``) if it ended within ``terminal_retention``.
* A job that ended longer than ``terminal_retention`` ago is neither tracked
  nor reported when first seen (this is what keeps a full resync from
  re-reporting history).
* Each real status transition gives exactly one ``job_status_changed``; reaching
  ``Failed`` also gives one ``job_failed``.
* ``job_stalled`` / ``job_stall_recovered`` are edge-triggered on two flags:
  *stalled* (Active with no task progress for ``no_progress``) and *overdue*
  (held in a status longer than its limit).
* ``job_task_failure_ratio_exceeded`` fires once per job.
* A tracked job leaves the snapshot (``job_aged_out``) when a complete listing
  no longer has it, when DescribeJob says it is gone, or when it ended more than
  ``terminal_retention`` ago.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from jobwatch.model import NON_TERMINAL_STATUSES, TERMINAL_STATUSES, Job

__all__ = [
    "EVENT_KINDS",
    "Change",
    "DiffPolicy",
    "DiffResult",
    "Differ",
    "EventKind",
    "TrackedJob",
    "diff",
]

EventKind = Literal[
    "job_discovered",
    "job_status_changed",
    "job_failed",
    "job_stalled",
    "job_stall_recovered",
    "job_task_failure_ratio_exceeded",
    "job_aged_out",
]
#: Every kind, in the order above (the metrics export each one from 0).
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
#: Statuses whose start is no later than the job's creation as far as we can tell.
_STARTS_AT_CREATION = frozenset({"New", "Preparing"})
#: The statuses an incremental listing asks for.
_LISTED = frozenset(NON_TERMINAL_STATUSES)


@dataclass(frozen=True, slots=True)
class DiffPolicy:
    no_progress: float = 1800.0
    status_limits: Mapping[str, float] = field(default_factory=dict)
    task_failure_ratio: float = 0.1
    task_failure_min_tasks: int = 100
    terminal_retention: float = 86400.0


@dataclass(frozen=True, slots=True)
class TrackedJob:
    """A job plus what jobwatch derived about it over time."""

    job: Job
    first_seen: float
    status_since: float
    last_progress_at: float
    stalled: bool = False
    overdue: bool = False
    ratio_exceeded: bool = False
    #: The first failure reason's code, once DescribeJob told it (Failed jobs only).
    failure_code: str = ""

    @property
    def ended_at(self) -> float | None:
        job = self.job
        # Not through job.terminal: /metrics reads this for every job at every scrape.
        if job.status not in TERMINAL_STATUSES:
            return None
        return job.termination_time or self.status_since


@dataclass(frozen=True, slots=True)
class Change:
    """One event, as data. The poller enriches and emits it."""

    kind: EventKind
    job: Job
    previous_status: str | None = None
    seconds_in_previous_status: float | None = None
    stall_reason: Literal["no_progress", "status_overdue"] | None = None
    stalled_seconds: float | None = None
    aged_out_reason: Literal["unlisted", "retention"] | None = None


@dataclass(frozen=True, slots=True)
class DiffResult:
    jobs: dict[str, TrackedJob]
    changes: list[Change]


def _first_seen(job: Job, now: float) -> TrackedJob:
    since = now
    if job.status in _STARTS_AT_CREATION and job.creation_time is not None:
        since = min(now, job.creation_time)
    elif job.terminal and job.termination_time is not None:
        since = job.termination_time
    return TrackedJob(job=job, first_seen=now, status_since=since, last_progress_at=now)


def _ended_long_ago(job: Job, now: float, retention: float) -> bool:
    ended = job.termination_time if job.termination_time is not None else job.creation_time
    # A terminal job with no time at all cannot be placed: treat it as history,
    # otherwise every resync would report it again.
    return ended is None or now - ended > retention


def _evaluate(t: TrackedJob, now: float, policy: DiffPolicy, changes: list[Change]) -> TrackedJob:
    """Apply the stall, overdue and failure-ratio rules to an up-to-date job."""
    job = t.job
    stalled = overdue = False
    if not job.terminal:
        if job.status == "Active":
            stalled = now - t.last_progress_at >= policy.no_progress
        limit = policy.status_limits.get(job.status)
        overdue = limit is not None and now - t.status_since >= limit
    was = t.stalled or t.overdue
    if stalled and not t.stalled:
        changes.append(
            Change(
                "job_stalled",
                job,
                stall_reason="no_progress",
                stalled_seconds=now - t.last_progress_at,
            )
        )
    if overdue and not t.overdue:
        changes.append(
            Change(
                "job_stalled",
                job,
                stall_reason="status_overdue",
                stalled_seconds=now - t.status_since,
            )
        )
    if was and not (stalled or overdue):
        reason: Literal["no_progress", "status_overdue"] = (
            "no_progress" if t.stalled else "status_overdue"
        )
        changes.append(Change("job_stall_recovered", job, stall_reason=reason))
    ratio_exceeded = t.ratio_exceeded
    if (
        not ratio_exceeded
        and job.tasks_run >= policy.task_failure_min_tasks
        and job.task_failure_ratio > policy.task_failure_ratio
    ):
        ratio_exceeded = True
        changes.append(Change("job_task_failure_ratio_exceeded", job))
    if (stalled, overdue, ratio_exceeded) == (t.stalled, t.overdue, t.ratio_exceeded):
        return t
    return replace(t, stalled=stalled, overdue=overdue, ratio_exceeded=ratio_exceeded)


def _update(prev: TrackedJob, job: Job, now: float, changes: list[Change]) -> TrackedJob:
    old = prev.job
    if job == old:
        # The same object for a job that did not change: /metrics keeps its
        # rendered lines by it, and an unchanged job costs no allocation.
        return prev
    status_since = prev.status_since
    last_progress = prev.last_progress_at
    if job.status != old.status:
        changes.append(
            Change(
                "job_status_changed",
                job,
                previous_status=old.status,
                seconds_in_previous_status=max(0.0, now - prev.status_since),
            )
        )
        if job.status == "Failed":
            changes.append(Change("job_failed", job, previous_status=old.status))
        status_since = now
        if job.terminal and job.termination_time is not None and job.termination_time <= now:
            status_since = job.termination_time
        if job.status == "Active":
            last_progress = now
    if job.tasks_run > old.tasks_run:
        last_progress = now
    if job.operation == "" and old.operation:
        # DescribeJob cannot name operations botocore does not know; keep ListJobs'.
        job = replace(job, operation=old.operation)
    return replace(prev, job=job, status_since=status_since, last_progress_at=last_progress)


class Differ:
    """:func:`diff` a page at a time: a listing's jobs need not all be alive at once.

    :meth:`add` each page as it arrives, then :meth:`finish` once the listing is
    done. A job that did not change keeps its tracked object and the listed copy
    is dropped with its page, so a listing of 100,000 jobs holds a page of them,
    not all of them, while its requests are in flight (what the garbage
    collector walks; docs/performance.md). ``Differ(p, now, policy)`` fed every
    job of ``listing`` gives exactly ``diff(p, listing, now, policy, ...)``.
    """

    __slots__ = ("_baseline", "_changes", "_now", "_out", "_policy", "_prev", "listed")

    def __init__(
        self, previous: Mapping[str, TrackedJob] | None, now: float, policy: DiffPolicy
    ) -> None:
        self._baseline = previous is None
        self._prev: Mapping[str, TrackedJob] = previous or {}
        self._now = now
        self._policy = policy
        self._out: dict[str, TrackedJob] = {}
        self._changes: list[Change] = []
        #: Jobs added so far, duplicates included.
        self.listed = 0

    def restart(self) -> None:
        """Forget the pages added so far (the listing starts again from its first page)."""
        self._out = {}
        self._changes = []
        self.listed = 0

    def add(self, listing: Iterable[Job]) -> None:
        """Diff the next jobs of the listing (a page) against the previous snapshot."""
        prev = self._prev
        out = self._out
        changes = self._changes
        now = self._now
        policy = self._policy
        retention = policy.terminal_retention
        baseline = self._baseline
        listed = 0
        for job in listing:
            listed += 1
            if job.job_id in out:
                continue  # AWS listed it twice (pages shifting): the first copy wins
            old = prev.get(job.job_id)
            if old is None:
                if job.terminal and _ended_long_ago(job, now, retention):
                    continue
                tracked = _first_seen(job, now)
                if not baseline:
                    changes.append(Change("job_discovered", job))
                if job.status == "Failed":
                    changes.append(Change("job_failed", job))
            else:
                tracked = _update(old, job, now, changes)
            out[job.job_id] = _evaluate(tracked, now, policy, changes)
        self.listed += listed

    def departed(self) -> list[str]:
        """Tracked jobs in a listed non-terminal status that no page added so far has.

        Asked after an incremental listing: such jobs have most likely ended; the
        caller asks DescribeJob for each and adds the answers (or names them in
        ``gone``). A status jobwatch cannot name in a JobStatuses filter (one AWS
        added later) is never in an incremental listing: such a job waits for
        the next full one.
        """
        out = self._out
        return [jid for jid, t in self._prev.items() if t.job.status in _LISTED and jid not in out]

    def finish(self, *, complete: bool, gone: Collection[str] = ()) -> DiffResult:
        """The new snapshot and every change, once the listing's last page was added.

        ``complete`` and ``gone`` as for :func:`diff`. The differ is spent after it.
        """
        now = self._now
        policy = self._policy
        out = self._out
        changes = self._changes
        retention = policy.terminal_retention
        for jid, old in self._prev.items():
            if jid in out:
                continue
            if complete or jid in gone:
                changes.append(Change("job_aged_out", old.job, aged_out_reason="unlisted"))
                continue
            out[jid] = _evaluate(old, now, policy, changes)

        for jid in [j for j, t in out.items() if t.job.terminal]:
            ended = out[jid].ended_at
            if ended is not None and now - ended > retention:
                changes.append(
                    Change("job_aged_out", out.pop(jid).job, aged_out_reason="retention")
                )
        return DiffResult(jobs=out, changes=changes)


def diff(
    previous: Mapping[str, TrackedJob] | None,
    listing: Iterable[Job],
    now: float,
    policy: DiffPolicy,
    *,
    complete: bool,
    gone: Collection[str] = (),
) -> DiffResult:
    """Compare a new listing with the previous snapshot.

    ``previous`` is ``None`` on a target's first poll (baseline). ``complete``
    says the listing holds every job AWS lists (a full listing); otherwise tracked
    jobs missing from it are kept as they were. ``gone`` names tracked jobs AWS
    no longer knows (DescribeJob said NotFound). :class:`Differ` does the same a
    page at a time.
    """
    differ = Differ(previous, now, policy)
    differ.add(listing)
    return differ.finish(complete=complete, gone=gone)

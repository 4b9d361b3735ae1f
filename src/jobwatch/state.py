"""The one mutable store: what jobwatch knows about every target and job.

Pollers write into it; the metrics collector and the HTTP handlers only read.
Everything runs on one event loop, so no locks are needed: a target's snapshot
is replaced whole at the end of a successful poll, never edited in place.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from jobwatch.diff import EVENT_KINDS, TrackedJob
from jobwatch.model import JobDetail, Target

__all__ = ["FULL_LISTING_REASONS", "POLL_DURATION_BUCKETS", "Store", "TargetState"]

POLL_DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_UNKNOWN_REMEMBERED = 100
#: Why a poll listed every status: the first poll, every resync_interval, the clock
#: going back, ListJobs not newest first, or many jobs ended at once.
FULL_LISTING_REASONS = ("baseline", "resync", "clock_jump", "order", "departed")


@dataclass
class TargetState:
    target: Target
    #: ``None`` until the first successful poll (the baseline).
    jobs: dict[str, TrackedJob] | None = None
    up: bool = False
    attempted: bool = False
    last_success: float | None = None
    last_full_listing: float | None = None
    #: Jobs in the last full listing (how many pages the next one would take).
    last_full_size: int = 0
    last_duration: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    polls: Counter[str] = field(default_factory=Counter)
    overruns: int = 0
    #: HTTP attempts by (operation, outcome).
    api_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: DescribeJob's answer for failed jobs still tracked (the status page shows the
    #: reasons); kept in memory only, never in the state file.
    details: dict[str, JobDetail] = field(default_factory=dict)


class Store:
    """Targets' states plus jobwatch's process-wide counters."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self.targets: dict[tuple[str, str], TargetState] = {t.key: TargetState(t) for t in targets}
        self.events: Counter[str] = Counter(dict.fromkeys(EVENT_KINDS, 0))
        self.unknown_values: Counter[str] = Counter({"status": 0, "operation": 0})
        #: Polls that listed every status, by why (``FULL_LISTING_REASONS``).
        self.full_listings: Counter[str] = Counter(dict.fromkeys(FULL_LISTING_REASONS, 0))
        #: State file writes by outcome; empty (no samples) without a state file.
        self.state_writes: Counter[str] = Counter()
        #: Failed state file writes since the last good one; None without a state file.
        self.state_write_consecutive_failures: int | None = None
        self._unknown_seen: dict[str, set[str]] = {"status": set(), "operation": set()}
        self.poll_buckets: list[int] = [0] * (len(POLL_DURATION_BUCKETS) + 1)
        self.poll_sum = 0.0
        #: Called with a target's key after its snapshot changed or it left
        #: (the state file's committer listens).
        self.on_change: Callable[[tuple[str, str]], None] | None = None

    def __getitem__(self, key: tuple[str, str]) -> TargetState:
        return self.targets[key]

    def add(self, target: Target) -> TargetState:
        """Track ``target`` (one that joined at run time); a known key keeps its snapshot."""
        ts = self.targets.get(target.key)
        if ts is None:
            ts = self.targets[target.key] = TargetState(target)
        else:
            ts.target = target
        return ts

    def remove(self, key: tuple[str, str]) -> None:
        """Forget a target that left: its series and its part of the state file go."""
        if self.targets.pop(key, None) is not None and self.on_change is not None:
            self.on_change(key)

    @property
    def ready(self) -> bool:
        """Every target has finished at least one poll, successful or not."""
        return all(ts.attempted for ts in self.targets.values())

    def record_success(
        self, key: tuple[str, str], jobs: dict[str, TrackedJob], now: float, *, full: bool
    ) -> None:
        ts = self.targets[key]
        ts.jobs = jobs
        if ts.details:
            # Bounded like the snapshot: a job that aged out takes its detail along.
            ts.details = {jid: d for jid, d in ts.details.items() if jid in jobs}
        ts.up = True
        ts.attempted = True
        ts.last_success = now
        if full:
            ts.last_full_listing = now
        ts.consecutive_failures = 0
        ts.last_error = None
        ts.polls["success"] += 1
        if self.on_change is not None:
            self.on_change(key)

    def remember_details(self, key: tuple[str, str], details: Iterable[JobDetail]) -> None:
        """Keep DescribeJob's answers about failed jobs the target's snapshot tracks."""
        ts = self.targets[key]
        jobs = ts.jobs or {}
        for detail in details:
            if detail.job.job_id in jobs:
                ts.details[detail.job.job_id] = detail

    def replace_jobs(self, key: tuple[str, str], jobs: dict[str, TrackedJob]) -> None:
        """A target's snapshot after a push look: not a poll, so its health stays as is."""
        self.targets[key].jobs = jobs
        if self.on_change is not None:
            self.on_change(key)

    def record_failure(self, key: tuple[str, str], error: str) -> None:
        ts = self.targets[key]
        ts.up = False
        ts.attempted = True
        ts.consecutive_failures += 1
        ts.last_error = error
        ts.polls["failure"] += 1

    def record_duration(self, key: tuple[str, str], seconds: float) -> None:
        self.targets[key].last_duration = seconds
        self.poll_buckets[bisect.bisect_left(POLL_DURATION_BUCKETS, seconds)] += 1
        self.poll_sum += seconds

    def record_api_request(self, key: tuple[str, str], operation: str, outcome: str) -> None:
        ts = self.targets.get(key)
        if ts is not None:
            ts.api_requests[(operation, outcome)] += 1

    def note_unknown(self, field_name: str, value: str) -> bool:
        """Remember an enum value AWS sent that jobwatch does not know.

        Returns True the first time a value is seen (the caller logs it once).
        """
        seen = self._unknown_seen[field_name]
        if value in seen:
            return False
        if len(seen) < _UNKNOWN_REMEMBERED:
            seen.add(value)
        self.unknown_values[field_name] += 1
        return True

    def count_events(self, kinds: Mapping[str, int]) -> None:
        self.events.update(kinds)

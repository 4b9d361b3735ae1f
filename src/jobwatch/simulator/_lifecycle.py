"""One job's life: the S3 Batch Operations state machine, evaluated lazily.

A :class:`SimJob` is advanced only when someone looks at it. Between two
changes (a status transition, a timeline event, a runtime action) its
counters are linear in time, so the job keeps an *anchor* (time and counters
at the last change) and computes everything else from it: reading a job at
``t`` costs O(1), and catching up over hours of simulated time costs one step
per change, not one per second. Because changes happen at times computed from
the spec alone, the result does not depend on how often, or when, the job was
looked at.

State machine (durations from :class:`PhaseDurations`)::

    New -> Preparing -> Suspended (confirmation required, until confirmed)
                     -> Ready -> Active -> Completing -> Complete
    Active -> Pausing -> Paused -(unpause)-> Active
    any non-terminal -(fail / 50% rule)-> Failing -> Failed
    any non-terminal -(cancel)-> Cancelling -> Cancelled

The 50% rule: once at least 1,000 tasks have run, a job in which more than
half of the run tasks failed moves to Failing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._model import (
    ACTIVE,
    CANCELLED,
    CANCELLING,
    COMPLETE,
    COMPLETING,
    FAILED,
    FAILING,
    NEW,
    PAUSED,
    PAUSING,
    PREPARING,
    READY,
    SUSPENDED,
    TERMINAL_STATUSES,
    SimJobView,
)
from ._scenario import PhaseDurations, ReportSpec

__all__ = [
    "FAILURE_RULE_MIN_TASKS",
    "FAILURE_RULE_RATIO",
    "RULE_FAILURE_CODE",
    "SUSPENDED_CAUSE",
    "SimJob",
]

#: AWS fails a job once this many tasks ran and more than FAILURE_RULE_RATIO of them failed.
FAILURE_RULE_MIN_TASKS = 1000
FAILURE_RULE_RATIO = 0.5
#: The simulator's wording; AWS's exact FailureCode text for this case is not documented.
RULE_FAILURE_CODE = "TaskFailureThresholdExceeded"
RULE_FAILURE_REASON = (
    "The job failed because more than 50% of its tasks failed after at least 1,000 tasks ran."
)
SUSPENDED_CAUSE = "AwaitingConfirmation"
DEFAULT_FAILURE_CODE = "SimulatedFailure"
DEFAULT_FAILURE_REASON = "The job failed."

_INF = math.inf
# A runaway loop here would be a bug (each step must change the state); fail loudly.
_MAX_STEPS = 100_000

_TRANSIENT = {
    NEW: "new",
    PREPARING: "preparing",
    READY: "ready",
    COMPLETING: "completing",
    PAUSING: "pausing",
    FAILING: "failing",
    CANCELLING: "cancelling",
}
_NEXT = {
    NEW: PREPARING,
    READY: ACTIVE,
    COMPLETING: COMPLETE,
    PAUSING: PAUSED,
    FAILING: FAILED,
    CANCELLING: CANCELLED,
}


class SimJob:
    """A job's spec and its evolving state. Not thread-safe; one event loop owns it.

    Event times in ``events`` are absolute epoch seconds. Callers advance the
    job with :meth:`advance` before reading state, or use :meth:`view`.
    """

    __slots__ = (
        "_active_fails",
        "_events",
        "_next_change",
        "_next_event",
        "_xml_cache",
        "_xml_cache_version",
        "_xml_static",
        "account_id",
        "anchor",
        "confirmation_required",
        "confirmed",
        "creation",
        "description",
        "e0",
        "f0",
        "failure_ratio",
        "failure_reasons",
        "job_id",
        "listener",
        "operation",
        "p0",
        "phase_started",
        "phases",
        "priority",
        "rate",
        "region",
        "report",
        "role_arn",
        "seen",
        "stalled",
        "status",
        "status_update_reason",
        "suspended_cause",
        "suspended_date",
        "termination",
        "total",
        "version",
    )

    def __init__(
        self,
        *,
        account_id: str,
        region: str,
        job_id: str,
        creation: float,
        total: int,
        rate: float,
        failure_ratio: float,
        phases: PhaseDurations,
        operation: str = "S3PutObjectTagging",
        description: str | None = None,
        priority: int = 10,
        confirmation_required: bool = False,
        report: ReportSpec | None = None,
        role_arn: str | None = None,
        events: list[tuple[float, str, dict[str, Any]]] | None = None,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.job_id = job_id
        self.creation = creation
        self.total = total
        self.rate = rate
        self.failure_ratio = failure_ratio
        self.phases = phases
        self.operation = operation
        self.description = description
        self.priority = priority
        self.confirmation_required = confirmation_required
        self.report = report if report is not None else ReportSpec()
        self.role_arn = role_arn or f"arn:aws:iam::{account_id}:role/batch-operations"
        # An event scheduled before the job exists happens as it is created.
        evs = [(max(t, creation), a, p) for t, a, p in (events or [])]
        evs.sort(key=lambda e: e[0])  # stable: same-time events keep file order
        self._events = evs
        self._next_event = 0
        self.status = NEW
        self.phase_started = creation
        self.anchor = creation
        self.p0 = 0.0
        self.f0 = 0.0
        self.e0 = 0.0
        self.stalled = False
        self.confirmed = False
        self.termination: float | None = None
        self.suspended_date: float | None = None
        self.suspended_cause: str | None = None
        self.status_update_reason: str | None = None
        self.failure_reasons: list[tuple[str, str]] = []
        self.version = 0
        #: The latest time the job was evaluated at; reads never go back before it.
        self.seen = creation
        self._xml_static: tuple[str, str, str, str] | None = None
        self._xml_cache: str | None = None
        self._xml_cache_version = -1
        self._active_fails = False
        self._next_change = creation
        #: Told of every status change as it is applied: (job, old, new, time).
        self.listener: Callable[[SimJob, str, str, float], None] | None = None
        self._reschedule()

    # -- reading -------------------------------------------------------------

    def progress(self, now: float) -> tuple[int, int, int, int]:
        """``(total, succeeded, failed, elapsed_active_seconds)`` as the API reports them."""
        p, f, e = self.p0, self.f0, self.e0
        if now < self.seen:  # the clock went back: hold the latest state anyone saw
            now = self.seen
        if self.status == ACTIVE:
            dt = now - self.anchor
            if dt > 0.0:
                e += dt
                if not self.stalled and self.rate > 0.0:
                    dp = min(self.rate * dt, self.total - p)
                    p += dp
                    f += self.failure_ratio * dp
        total = 0 if self.status in (NEW, PREPARING) else self.total
        # A hair of slack so 999.9999999 tasks computed in floats reads as 1000.
        failed = int(f + 1e-6)
        processed = int(p + 1e-6)
        return total, max(0, processed - failed), failed, int(e + 1e-6)

    def exists(self, now: float) -> bool:
        """True once the job has been created."""
        return now >= self.creation

    def listed(self, now: float, retention_seconds: float) -> bool:
        """True when ListJobs shows the job at ``now`` (call :meth:`advance` first)."""
        if now < self.creation:
            return False
        term = self.termination
        return term is None or now < term + retention_seconds

    def view(self, now: float, retention_seconds: float) -> SimJobView:
        """Advance to ``now`` and return the truth as a frozen view."""
        self.advance(now)
        total, ok, failed, elapsed = self.progress(now)
        return SimJobView(
            account_id=self.account_id,
            region=self.region,
            job_id=self.job_id,
            status=self.status,
            operation=self.operation,
            description=self.description,
            priority=self.priority,
            total_tasks=total,
            succeeded=ok,
            failed=failed,
            elapsed_active_seconds=elapsed,
            creation_time=self.creation,
            termination_time=self.termination,
            failure_reasons=tuple(self.failure_reasons),
            status_update_reason=self.status_update_reason,
            suspended_date=self.suspended_date,
            suspended_cause=self.suspended_cause,
            confirmation_required=self.confirmation_required,
            stalled=self.stalled,
            rate=self.rate,
            failure_ratio=self.failure_ratio,
            listed=self.listed(now, retention_seconds),
        )

    # -- moving --------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Apply every transition and timeline event due at or before ``now``.

        Time never runs backwards for a job: after the clock jumps back, the
        job holds the latest state it was evaluated at until the clock catches up.
        """
        if now > self.seen:
            self.seen = now
        if now < self._next_change:
            return
        for _ in range(_MAX_STEPS):
            t_event = self._event_time()
            t_trans = self._transition_time()
            t = min(t_event, t_trans)
            if t > now:
                break
            self._settle(t)
            if t_trans <= t_event:  # a due transition happens before a same-time event
                self._transition(t)
            else:
                _, action, params = self._events[self._next_event]
                self._next_event += 1
                self._apply(action, params, t)
        else:  # pragma: no cover - a bug, not an input
            raise RuntimeError(f"job {self.job_id}: lifecycle did not settle")
        self._reschedule()

    def act(self, action: str, params: dict[str, Any], now: float) -> None:
        """Apply a runtime action (same vocabulary as timeline events) at ``now``."""
        self.advance(now)
        t = max(now, self.anchor)
        self._settle(t)
        self._apply(action, params, t)
        self._reschedule()
        self.advance(now)

    def schedule(self, t: float, action: str, params: dict[str, Any]) -> None:
        """Queue an action at absolute time ``t`` (not before the last change)."""
        t = max(t, self.anchor)
        pending = self._events[self._next_event :]
        pending.append((t, action, params))
        pending.sort(key=lambda e: e[0])
        self._events = self._events[: self._next_event] + pending
        self._reschedule()

    def update_status(self, requested: str, reason: str | None, now: float) -> str | None:
        """UpdateJobStatus semantics; returns an error message when not allowed.

        ``Ready`` confirms a Suspended job; ``Cancelled`` cancels a job that has
        not ended. Anything else is refused as AWS refuses it (JobStatusException).
        """
        self.advance(now)
        if requested == READY:
            if self.status != SUSPENDED:
                return f"Job {self.job_id} is in state {self.status} and cannot be confirmed"
            self.act("confirm", {"reason": reason} if reason else {}, now)
            return None
        if self.status in TERMINAL_STATUSES or self.status in (CANCELLING, FAILING):
            return f"Job {self.job_id} is in state {self.status} and cannot be cancelled"
        self.act("cancel", {"reason": reason} if reason else {}, now)
        return None

    # -- internals -----------------------------------------------------------

    def _event_time(self) -> float:
        i = self._next_event
        return self._events[i][0] if i < len(self._events) else _INF

    def _transition_time(self) -> float:
        status = self.status
        if status == ACTIVE:
            return self._active_end()
        if status == PREPARING:
            return self.phase_started + self.phases.preparing
        attr = _TRANSIENT.get(status)
        if attr is None:  # Suspended, Paused, terminal, or a status we do not know
            return _INF
        duration: float = getattr(self.phases, attr)
        return self.phase_started + duration

    def _active_end(self) -> float:
        """When the current Active run ends: all tasks done, or the 50% rule.

        Records which of the two in ``_active_fails``; the transition uses that
        decision rather than re-testing floats at the boundary.
        """
        p0, f0, rate = self.p0, self.f0, self.rate
        threshold = FAILURE_RULE_MIN_TASKS
        if self.stalled or rate <= 0.0:
            if p0 >= threshold and f0 > FAILURE_RULE_RATIO * p0:
                self._active_fails = True
                return self.anchor
            return _INF
        s_done = max(0.0, (self.total - p0) / rate)
        s_rule = _INF
        if self.total >= threshold:
            s1 = max(0.0, (threshold - p0) / rate)
            a = f0 - FAILURE_RULE_RATIO * p0
            b = (self.failure_ratio - FAILURE_RULE_RATIO) * rate
            if a + b * s1 > 0.0:
                s_rule = s1
            elif b > 0.0:
                s_rule = max(s1, -a / b)
        self._active_fails = s_rule <= s_done
        return self.anchor + min(s_rule, s_done)

    def _settle(self, t: float) -> None:
        """Fold the progress made since the anchor into the counters; re-anchor at ``t``."""
        if t <= self.anchor:
            return
        if self.status == ACTIVE:
            dt = t - self.anchor
            self.e0 += dt
            if not self.stalled and self.rate > 0.0:
                dp = min(self.rate * dt, self.total - self.p0)
                self.p0 += dp
                self.f0 += self.failure_ratio * dp
        self.anchor = t
        self.version += 1

    def _enter(self, status: str, t: float) -> None:
        old = self.status
        self.status = status
        self.phase_started = t
        self.version += 1
        if status in TERMINAL_STATUSES:
            self.termination = t
        else:
            self.termination = None
        if status == SUSPENDED:
            self.suspended_date = t
            self.suspended_cause = SUSPENDED_CAUSE
        if self.listener is not None and old != status:
            self.listener(self, old, status, t)

    def _transition(self, t: float) -> None:
        status = self.status
        if status == ACTIVE:
            if self._active_fails:
                self.failure_reasons.append((RULE_FAILURE_CODE, RULE_FAILURE_REASON))
                self._enter(FAILING, t)
            else:
                self.p0 = float(self.total)  # the float sum may fall a hair short
                self._enter(COMPLETING, t)
        elif status == PREPARING:
            waits = self.confirmation_required and not self.confirmed
            self._enter(SUSPENDED if waits else READY, t)
        else:
            self._enter(_NEXT[status], t)

    def _apply(self, action: str, params: dict[str, Any], t: float) -> None:
        status = self.status
        reason: str | None = params.get("reason")
        self.version += 1
        if action == "fail":
            if status in TERMINAL_STATUSES or status == FAILING:
                return
            self.failure_reasons.append(
                (params.get("code") or DEFAULT_FAILURE_CODE, reason or DEFAULT_FAILURE_REASON)
            )
            self._enter(FAILING, t)
        elif action == "stall":
            self.stalled = True
        elif action == "resume":
            self.stalled = False
        elif action == "pause":
            if status == ACTIVE:
                self._enter(PAUSING, t)
                self._set_reason(reason)
        elif action == "unpause":
            if status in (PAUSED, PAUSING):
                self._enter(ACTIVE, t)
                self._set_reason(reason)
        elif action == "cancel":
            if status not in TERMINAL_STATUSES and status not in (CANCELLING, FAILING):
                self._enter(CANCELLING, t)
                self._set_reason(reason)
        elif action == "confirm":
            self.confirmed = True
            if status == SUSPENDED:
                self._enter(READY, t)
                self._set_reason(reason)
        elif action == "set_status":
            self._enter(str(params["status"]), t)
            self._set_reason(reason)
        elif action == "set_rate":
            self.rate = float(params["rate"])
        elif action == "set_failure_ratio":
            self.failure_ratio = float(params["failure_ratio"])
        else:
            raise ValueError(f"unknown action {action!r}")

    def _set_reason(self, reason: str | None) -> None:
        if reason:
            self.status_update_reason = reason

    def _reschedule(self) -> None:
        self._next_change = min(self._event_time(), self._transition_time())

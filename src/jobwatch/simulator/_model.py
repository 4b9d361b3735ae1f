"""Plain data shared by every part of the simulator: statuses, operations, views.

Nothing here does I/O or reads a clock; these are the words the rest of the
simulator speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from jobwatch import model

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "CANCELLING",
    "COMPLETE",
    "COMPLETING",
    "FAILED",
    "FAILING",
    "JOB_STATUSES",
    "NEW",
    "OPERATIONS",
    "PAUSED",
    "PAUSING",
    "PREPARING",
    "READY",
    "SUSPENDED",
    "TERMINAL_STATUSES",
    "WIRE_OPERATIONS",
    "RequestKey",
    "SimJobView",
]

# The words are jobwatch.model's (the lifecycle order it documents); these names
# are how the simulator's state machine spells them.
(
    NEW,
    PREPARING,
    SUSPENDED,
    READY,
    ACTIVE,
    PAUSING,
    PAUSED,
    COMPLETING,
    COMPLETE,
    FAILING,
    FAILED,
    CANCELLING,
    CANCELLED,
) = model.KNOWN_STATUSES

#: The 13 statuses the S3 Control API documents today (botocore's ``JobStatus`` enum).
JOB_STATUSES: tuple[str, ...] = model.KNOWN_STATUSES

#: Statuses a job never leaves on its own; ``TerminationDate`` is set on entering one.
TERMINAL_STATUSES: frozenset[str] = model.TERMINAL_STATUSES

#: Operation names botocore 1.43 knows (``OperationName`` enum). Jobs may carry others.
OPERATIONS: tuple[str, ...] = model.KNOWN_OPERATIONS

#: The S3 Control operations the simulator answers (names as in botocore and the stats).
WIRE_OPERATIONS: tuple[str, ...] = ("ListJobs", "DescribeJob", "UpdateJobStatus", "CreateJob")


class RequestKey(NamedTuple):
    """One row of the request statistics.

    ``operation`` is a :data:`WIRE_OPERATIONS` name, or ``"Unknown"`` for a path the
    simulator does not serve. ``account``/``region`` are ``""`` when the request did
    not say (for example a request without ``Authorization``). ``outcome`` is ``"ok"``
    for a 2xx answer, the error ``Code`` for an S3-style error answer, or the fault
    kind for an answer that is not an HTTP response at all (``connection_reset``,
    ``hang``) or not a valid one (``malformed_xml``, ``truncated_xml``).
    """

    operation: str
    account: str
    region: str
    outcome: str


@dataclass(frozen=True, slots=True)
class SimJobView:
    """The simulator's truth about one job at one instant (times are epoch seconds, UTC).

    ``total_tasks`` is what the API reports: 0 while the job is ``New`` or
    ``Preparing`` (the manifest is not read yet), the manifest size after that.
    ``listed`` says whether ListJobs shows the job (a terminal job leaves the
    listing ``retention_days`` after its termination).
    """

    account_id: str
    region: str
    job_id: str
    status: str
    operation: str
    description: str | None
    priority: int
    total_tasks: int
    succeeded: int
    failed: int
    elapsed_active_seconds: int
    creation_time: float
    termination_time: float | None
    failure_reasons: tuple[tuple[str, str], ...]
    status_update_reason: str | None
    suspended_date: float | None
    suspended_cause: str | None
    confirmation_required: bool
    stalled: bool
    rate: float
    failure_ratio: float
    listed: bool

    @property
    def terminal(self) -> bool:
        """True when the status is Complete, Failed or Cancelled."""
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the shape ``GET /_sim/jobs`` returns)."""
        return {
            "account_id": self.account_id,
            "region": self.region,
            "job_id": self.job_id,
            "status": self.status,
            "operation": self.operation,
            "description": self.description,
            "priority": self.priority,
            "total_tasks": self.total_tasks,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "elapsed_active_seconds": self.elapsed_active_seconds,
            "creation_time": self.creation_time,
            "termination_time": self.termination_time,
            "failure_reasons": [{"code": c, "reason": r} for c, r in self.failure_reasons],
            "status_update_reason": self.status_update_reason,
            "suspended_date": self.suspended_date,
            "suspended_cause": self.suspended_cause,
            "confirmation_required": self.confirmation_required,
            "stalled": self.stalled,
            "rate": self.rate,
            "failure_ratio": self.failure_ratio,
            "listed": self.listed,
        }

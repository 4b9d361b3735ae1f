"""Plain domain types. No AWS SDK imports: the rest of jobwatch speaks these."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

__all__ = [
    "KNOWN_OPERATIONS",
    "KNOWN_STATUSES",
    "NON_TERMINAL_STATUSES",
    "TERMINAL_STATUSES",
    "Account",
    "FailureReason",
    "Job",
    "JobDetail",
    "ReportLocation",
    "Target",
    "console_url",
    "status_page_url",
]

#: The 13 statuses AWS documents, in lifecycle order (exported zero-filled).
KNOWN_STATUSES: Final[tuple[str, ...]] = (
    "New",
    "Preparing",
    "Suspended",
    "Ready",
    "Active",
    "Pausing",
    "Paused",
    "Completing",
    "Complete",
    "Failing",
    "Failed",
    "Cancelling",
    "Cancelled",
)
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"Complete", "Failed", "Cancelled"})
#: What an incremental poll asks ListJobs for. An unknown status is treated as
#: non-terminal by jobwatch (it is still running as far as we can tell), but it
#: cannot be requested by name: such jobs are picked up by the full resync.
NON_TERMINAL_STATUSES: Final[tuple[str, ...]] = tuple(
    s for s in KNOWN_STATUSES if s not in TERMINAL_STATUSES
)


#: Operations AWS documented (botocore 1.43's ``OperationName`` enum). AWS adds new
#: ones; jobwatch treats any other name as data and logs it once.
KNOWN_OPERATIONS: Final[tuple[str, ...]] = (
    "LambdaInvoke",
    "S3PutObjectCopy",
    "S3PutObjectAcl",
    "S3PutObjectTagging",
    "S3DeleteObjectTagging",
    "S3InitiateRestoreObject",
    "S3PutObjectLegalHold",
    "S3PutObjectRetention",
    "S3ReplicateObject",
    "S3ComputeObjectChecksum",
    "S3UpdateObjectEncryption",
)


@dataclass(frozen=True, slots=True)
class Target:
    """One monitored ``(account, region)`` pair and how to reach it."""

    account_id: str
    region: str
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str = "jobwatch"
    duration_seconds: int = 3600
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.account_id, self.region)

    def __str__(self) -> str:
        return f"{self.account_id}/{self.region}"


@dataclass(frozen=True, slots=True)
class Account:
    """One member account as Organizations listed it."""

    account_id: str
    name: str = ""
    #: ``State`` (ACTIVE, SUSPENDED, PENDING_CLOSURE, CLOSED, PENDING_ACTIVATION),
    #: or the older ``Status`` where ``State`` is missing.
    state: str = "ACTIVE"
    #: Sorted ``(key, value)`` pairs; empty unless tags were asked for.
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """One job as ListJobs (or DescribeJob) reported it. Times are epoch seconds (UTC)."""

    job_id: str
    status: str
    operation: str = ""
    priority: int = 0
    description: str = ""
    creation_time: float | None = None
    termination_time: float | None = None
    tasks_total: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    active_seconds: float = 0.0

    @staticmethod
    def make(
        job_id: str,
        status: str,
        operation: str = "",
        priority: int = 0,
        description: str = "",
        creation_time: float | None = None,
        termination_time: float | None = None,
        tasks_total: int = 0,
        tasks_succeeded: int = 0,
        tasks_failed: int = 0,
        active_seconds: float = 0.0,
    ) -> Job:
        """Build a job with interned status and operation strings."""
        # Statuses and operations repeat across 100k jobs: share one string each.
        return Job(
            job_id,
            sys.intern(status),
            sys.intern(operation),
            priority,
            description,
            creation_time,
            termination_time,
            tasks_total,
            tasks_succeeded,
            tasks_failed,
            active_seconds,
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def tasks_run(self) -> int:
        return self.tasks_succeeded + self.tasks_failed

    @property
    def task_failure_ratio(self) -> float:
        # Not through tasks_run: /metrics reads this for every job at every scrape.
        run = self.tasks_succeeded + self.tasks_failed
        return self.tasks_failed / run if run else 0.0


@dataclass(frozen=True, slots=True)
class FailureReason:
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReportLocation:
    bucket: str | None
    prefix: str | None
    enabled: bool
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class JobDetail:
    """What DescribeJob adds to a listing entry."""

    job: Job
    failure_reasons: tuple[FailureReason, ...] = ()
    status_update_reason: str | None = None
    report: ReportLocation | None = None
    suspended_date: float | None = None
    suspended_cause: str | None = None
    confirmation_required: bool = False


#: The AWS console's host for each partition, by region prefix (the commercial
#: partition is the default). The ISO partitions have no public console.
_CONSOLE_HOSTS: tuple[tuple[str, str | None], ...] = (
    ("cn-", "console.amazonaws.cn"),
    ("us-gov-", "console.amazonaws-us-gov.com"),
    ("us-iso", None),
    ("eu-isoe-", None),
)


def console_url(region: str, job_id: str) -> str | None:
    """The S3 console's page for a Batch Operations job, or None where there is no console."""
    host: str | None = "console.aws.amazon.com"
    for prefix, partition_host in _CONSOLE_HOSTS:
        if region.startswith(prefix):
            host = partition_host
            break
    if host is None:
        return None
    return f"https://{host}/s3/jobs/{quote(job_id, safe='')}?region={quote(region, safe='')}"


def status_page_url(base: str, account: str, region: str, job_id: str) -> str:
    """jobwatch's status page showing one job; ``base`` is ``web.external_url``."""
    query = urlencode({"account": account, "region": region, "job": job_id})
    return f"{base.rstrip('/')}/?{query}"

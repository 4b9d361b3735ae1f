"""Job sources: where listings come from.

:class:`JobSource` is the seam the poller depends on. :class:`S3ControlJobSource`
pages the S3 Control API through a :class:`jobwatch.aws.ClientPool` and turns
botocore's dicts into :mod:`jobwatch.model` types; every SDK failure leaves
here as a :class:`jobwatch.errors.SourceError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from aiohttp import ClientError as HTTPClientError
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from jobwatch.aws import ClientPool, is_throttle
from jobwatch.errors import SourceError
from jobwatch.log import get_logger
from jobwatch.model import FailureReason, Job, JobDetail, ReportLocation, Target
from jobwatch.ratelimit import AccountRateLimiter
from jobwatch.turns import BIG_PAGE

__all__ = ["JobSource", "PageSink", "S3ControlJobSource", "job_from_api"]

_log = get_logger("jobwatch.source")
PAGE_SIZE = 1000
#: Page size of :meth:`S3ControlJobSource.list_recent`: it usually needs a few jobs.
RECENT_PAGE_SIZE = 25
#: How often a listing restarts from the first page after InvalidNextToken.
TOKEN_RESTARTS = 3


class PageSink(Protocol):
    """Where a listing's pages go as they arrive (:class:`jobwatch.diff.Differ` is one)."""

    def add(self, jobs: list[Job]) -> None:
        """The next page's jobs."""
        ...

    def restart(self) -> None:
        """The listing starts again from its first page: forget the pages added so far."""
        ...


class JobSource(Protocol):
    async def list_jobs(
        self, target: Target, statuses: Sequence[str] | None, into: PageSink
    ) -> None:
        """Every job of ``target`` (with one of ``statuses``, or all when ``None``),
        handed to ``into`` a page at a time as each page arrives. A listing that
        has to start again (an expired NextToken) calls ``into.restart()`` first."""
        ...

    async def describe_job(self, target: Target, job_id: str) -> JobDetail:
        """One job's details. Raises SourceError (``not_found`` when AWS no longer has it)."""
        ...

    async def list_recent(
        self, target: Target, statuses: Sequence[str], since: float
    ) -> list[Job] | None:
        """Jobs with one of ``statuses`` created at ``since`` or later.

        Relies on ListJobs' newest-first order and stops at the first older job;
        returns None when a page read is not in that order (the caller must
        take a path that does not rely on it).
        """
        ...


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def job_from_api(d: dict[str, Any], operation: str | None = None) -> Job:
    """A JobListDescriptor (ListJobs) or Job (DescribeJob) dict as a :class:`Job`.

    Raises ``ValueError`` when the entry has no usable ``JobId``.
    """
    # Runs for every job of every page: the usual types take the short way
    # (``type(x) is ...``), anything else goes through _int and _epoch.
    get = d.get
    job_id = get("JobId")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job entry without JobId")
    progress = get("ProgressSummary") or {}
    timers = progress.get("Timers") or {}
    if operation is None:
        op = get("Operation")
        if isinstance(op, str):
            operation = op
        elif isinstance(op, dict) and op:
            # DescribeJob: the operation is the one key of a structure.
            operation = next(iter(op))
        else:
            operation = ""
    status = get("Status")
    description = get("Description")
    priority = get("Priority")
    created = get("CreationTime")
    ended = get("TerminationDate")
    total = progress.get("TotalNumberOfTasks")
    succeeded = progress.get("NumberOfTasksSucceeded")
    failed = progress.get("NumberOfTasksFailed")
    active = timers.get("ElapsedTimeInActiveSeconds")
    return Job.make(
        job_id,
        status if isinstance(status, str) and status else "Unknown",
        operation,
        priority if type(priority) is int else _int(priority),
        description if isinstance(description, str) else "",
        created.timestamp() if type(created) is datetime else _epoch(created),
        ended.timestamp() if type(ended) is datetime else _epoch(ended),
        total if type(total) is int else _int(total),
        succeeded if type(succeeded) is int else _int(succeeded),
        failed if type(failed) is int else _int(failed),
        float(active) if isinstance(active, int | float) else 0.0,
    )


def detail_from_api(d: dict[str, Any]) -> JobDetail:
    job = job_from_api(d)
    reasons = tuple(
        FailureReason(str(r.get("FailureCode", "")), str(r.get("FailureReason", "")))
        for r in d.get("FailureReasons") or ()
        if isinstance(r, dict)
    )
    report = None
    rep = d.get("Report")
    if isinstance(rep, dict):
        report = ReportLocation(
            bucket=rep.get("Bucket"),
            prefix=rep.get("Prefix"),
            enabled=bool(rep.get("Enabled")),
            scope=rep.get("ReportScope"),
        )
    return JobDetail(
        job=job,
        failure_reasons=reasons,
        status_update_reason=d.get("StatusUpdateReason"),
        report=report,
        suspended_date=_epoch(d.get("SuspendedDate")),
        suspended_cause=d.get("SuspendedCause"),
        confirmation_required=bool(d.get("ConfirmationRequired")),
    )


class S3ControlJobSource:
    """ListJobs and DescribeJob through the pool, bounded by a shared semaphore."""

    def __init__(
        self,
        pool: ClientPool,
        limiter: asyncio.Semaphore,
        rate_limiter: AccountRateLimiter | None = None,
    ) -> None:
        self._pool = pool
        self._limiter = limiter
        self._rate = rate_limiter

    def _error(self, target: Target, operation: str, exc: BaseException) -> SourceError:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return SourceError(
                target.account_id,
                target.region,
                operation,
                code,
                str(err.get("Message") or exc),
                throttled=is_throttle(status, code),
                not_found=code in ("NotFoundException", "NoSuchJob") or status == 404,
                invalid_token=code == "InvalidNextTokenException",
            )
        if isinstance(exc, BotoCoreError | ResponseParserError | HTTPClientError):
            return SourceError(
                target.account_id, target.region, operation, type(exc).__name__, str(exc)[:500]
            )
        if isinstance(exc, TimeoutError):
            return SourceError(target.account_id, target.region, operation, "Timeout", "timed out")
        # botocore raises a bare ValueError for a non-number in a long field.
        return SourceError(
            target.account_id, target.region, operation, "InvalidResponse", repr(exc)[:300]
        )

    async def _call(self, target: Target, operation: str, **kwargs: Any) -> dict[str, Any]:
        client = await self._pool.client(target.region)
        method = client.list_jobs if operation == "ListJobs" else client.describe_job
        if self._rate is not None:
            # Before taking a slot: a slowed-down account must not hold one while it waits.
            await self._rate.acquire(target.account_id)
        async with self._limiter:
            try:
                result: dict[str, Any] = await method(AccountId=target.account_id, **kwargs)
            except (
                ClientError,
                BotoCoreError,
                ResponseParserError,
                HTTPClientError,
                ValueError,
                TimeoutError,
            ) as e:
                raise self._error(target, operation, e) from e
        if not isinstance(result, dict):  # pragma: no cover - botocore always gives a dict
            raise SourceError(target.account_id, target.region, operation, "InvalidResponse", "")
        return result

    async def list_jobs(
        self, target: Target, statuses: Sequence[str] | None, into: PageSink
    ) -> None:
        for restart in range(TOKEN_RESTARTS + 1):
            try:
                return await self._list_once(target, statuses, into)
            except SourceError as e:
                if not e.invalid_token or restart == TOKEN_RESTARTS:
                    raise
                into.restart()
                _log.warning(
                    "listing_restarted",
                    aws_account_id=target.account_id,
                    aws_region=target.region,
                    reason=e.code,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _list_once(
        self, target: Target, statuses: Sequence[str] | None, into: PageSink
    ) -> None:
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {"MaxResults": PAGE_SIZE}
            if statuses is not None:
                kwargs["JobStatuses"] = list(statuses)
            if token:
                kwargs["NextToken"] = token
            page = await self._call(target, "ListJobs", **kwargs)
            entries = page.get("Jobs") or ()
            # Each page goes to ``into`` before the next request: its jobs (and
            # the page's dicts) die young instead of reaching the garbage
            # collector's old generation with the rest of a long listing.
            if isinstance(entries, list) and len(entries) > BIG_PAGE:
                async with self._pool.turns.turn(finishing=True):
                    into.add(self._jobs(target, entries))
            else:
                into.add(self._jobs(target, entries))
            token = page.get("NextToken") or None
            del page, entries
            if token is None:
                return
            if token in seen_tokens:
                raise SourceError(
                    target.account_id,
                    target.region,
                    "ListJobs",
                    "NextTokenLoop",
                    "AWS returned a NextToken it had already returned",
                )
            seen_tokens.add(token)

    async def list_recent(
        self, target: Target, statuses: Sequence[str], since: float
    ) -> list[Job] | None:
        jobs: list[Job] = []
        token: str | None = None
        newest_seen = float("inf")
        while True:
            # A small first page is usually all it takes; a burst of short jobs
            # gets full pages after it.
            size = PAGE_SIZE if token else RECENT_PAGE_SIZE
            kwargs: dict[str, Any] = {"MaxResults": size, "JobStatuses": list(statuses)}
            if token:
                kwargs["NextToken"] = token
            page = await self._call(target, "ListJobs", **kwargs)
            found = self._jobs(target, page.get("Jobs") or ())
            # The whole page is checked before any of it is used: in another
            # order, the first old job would end the listing too early.
            for job in found:
                created = job.creation_time
                if created is None or created > newest_seen:
                    return None
                newest_seen = created
            jobs += [j for j in found if j.creation_time is not None and j.creation_time >= since]
            token = page.get("NextToken") or None
            if token is None or newest_seen < since:
                return jobs

    @staticmethod
    def _jobs(target: Target, entries: Any) -> list[Job]:
        jobs: list[Job] = []
        for entry in entries:
            try:
                jobs.append(job_from_api(entry))
            except (ValueError, TypeError, AttributeError) as e:
                _log.warning(
                    "job_entry_skipped",
                    aws_account_id=target.account_id,
                    aws_region=target.region,
                    reason=str(e),
                )
        return jobs

    async def describe_job(self, target: Target, job_id: str) -> JobDetail:
        page = await self._call(target, "DescribeJob", JobId=job_id)
        job = page.get("Job")
        if not isinstance(job, dict):
            raise SourceError(
                target.account_id, target.region, "DescribeJob", "InvalidResponse", "no Job"
            )
        try:
            return detail_from_api(job)
        except (ValueError, TypeError, AttributeError) as e:
            raise SourceError(
                target.account_id, target.region, "DescribeJob", "InvalidResponse", str(e)
            ) from e

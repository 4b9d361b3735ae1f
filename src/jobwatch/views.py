"""What people look at: the store as targets and jobs, filtered, sorted and paged.

The status page (``GET /``), the JSON API (``/api/v1/targets``, ``/api/v1/jobs``;
docs/api.md) and the terminal views (``jobwatch once``, ``jobwatch status``)
all read the store through this module, so they agree on what "needs attention"
means and on every field's name.

Reading 10,000 jobs and more must not hold the event loop: :func:`query_jobs`
gives the loop a turn whenever it has worked for :data:`SLICE_SECONDS`. The store
replaces a target's snapshot whole, never edits it, so a reader that holds a
snapshot across a turn still reads one consistent poll.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobwatch.diff import TrackedJob
from jobwatch.events import bounded, iso
from jobwatch.model import (
    KNOWN_STATUSES,
    TERMINAL_STATUSES,
    JobDetail,
    console_url,
    status_page_url,
)
from jobwatch.state import Store, TargetState
from jobwatch.turns import Pauser

__all__ = [
    "ATTENTION_REASONS",
    "GROUPS",
    "MAX_PER_PAGE",
    "SORT_KEYS",
    "JobQuery",
    "QueryError",
    "dumps",
    "duration_words",
    "job_row",
    "percent_words",
    "query_jobs",
    "targets_document",
]

#: A slice of work on the event loop before it gets a turn (S4: no stall over 50 ms).
SLICE_SECONDS: Final = 0.005
MAX_PER_PAGE: Final = 1000
DEFAULT_PER_PAGE: Final = 100
#: Jobs sorted in one go (about 1 ms each 500); longer listings are merged.
_RUN: Final = 500
#: Why a job needs attention, in the order the page lists them.
ATTENTION_REASONS: Final[tuple[str, ...]] = ("failed", "stalled", "overdue", "task_failure_ratio")
#: The groups of the default order: attention first, then running, then finished.
GROUPS: Final[tuple[str, ...]] = ("attention", "running", "finished")
_GROUP_INDEX: Final = {g: i for i, g in enumerate(GROUPS)}
SORT_KEYS: Final[tuple[str, ...]] = (
    "attention",
    "created",
    "status",
    "account",
    "region",
    "operation",
    "progress",
    "time_in_status",
    "job_id",
)
_STATUS_ORDER = {s: i for i, s in enumerate(KNOWN_STATUSES)}


class QueryError(ValueError):
    """A query parameter jobwatch cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Filters, order and page of a jobs listing (the API's query parameters)."""

    account: str | None = None
    region: str | None = None
    statuses: frozenset[str] = frozenset()
    operation: str | None = None
    text: str | None = None
    job: str | None = None
    attention: bool | None = None
    #: One of :data:`GROUPS`: attention, running (the rest not terminal), finished.
    group: str | None = None
    sort: str = "attention"
    descending: bool = False
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @staticmethod
    def from_params(params: Mapping[str, str], getall: Callable[[str], list[str]]) -> JobQuery:
        """Parse query parameters (docs/api.md); raises :class:`QueryError`."""

        def one(name: str) -> str | None:
            value = params.get(name, "").strip()
            return value or None

        def number(name: str, default: int, low: int, high: int) -> int:
            raw = one(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise QueryError(f"{name}: not a whole number: {raw[:40]!r}") from None
            if not low <= value <= high:
                raise QueryError(f"{name}: must be between {low} and {high}")
            return value

        statuses: set[str] = set()
        for raw in getall("status"):
            statuses.update(s.strip() for s in raw.split(",") if s.strip())
        sort = one("sort") or "attention"
        if sort not in SORT_KEYS:
            raise QueryError(f"sort: one of {', '.join(SORT_KEYS)}")
        order = one("order") or "asc"
        if order not in ("asc", "desc"):
            raise QueryError("order: asc or desc")
        attention_raw = one("attention")
        attention: bool | None = None
        if attention_raw is not None:
            if attention_raw not in ("true", "false", "1", "0"):
                raise QueryError("attention: true or false")
            attention = attention_raw in ("true", "1")
        group = one("group")
        if group is not None and group not in GROUPS:
            raise QueryError(f"group: one of {', '.join(GROUPS)}")
        return JobQuery(
            group=group,
            account=one("account"),
            region=one("region"),
            statuses=frozenset(statuses),
            operation=one("operation"),
            text=one("q"),
            job=one("job"),
            attention=attention,
            sort=sort,
            descending=order == "desc",
            page=number("page", 1, 1, 1_000_000),
            per_page=number("per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
        )


def duration_words(seconds: float | None) -> str:
    """``3725`` -> ``1h 2m``: the two largest units, for people."""
    if seconds is None:
        return "never"
    s = int(max(0.0, seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def percent_words(value: float | None) -> str:
    """``0.4567`` -> ``45.7%``; ``-`` when unknown."""
    return "-" if value is None else f"{value * 100:.1f}%"


def _needs_attention(t: TrackedJob) -> bool:
    """Whether :func:`attention_reasons` has any, without building the list."""
    return t.job.status == "Failed" or t.stalled or t.overdue or t.ratio_exceeded


def attention_reasons(t: TrackedJob) -> list[str]:
    """Why a tracked job needs a person, in :data:`ATTENTION_REASONS` order (empty: it does not)."""
    out = []
    if t.job.status == "Failed":
        out.append("failed")  # tracked jobs ended within terminal_retention
    if t.stalled:
        out.append("stalled")
    if t.overdue:
        out.append("overdue")
    if t.ratio_exceeded:
        out.append("task_failure_ratio")
    return out


def _group(t: TrackedJob) -> str:
    if _needs_attention(t):
        return "attention"
    return "finished" if t.job.status in TERMINAL_STATUSES else "running"


def job_row(
    ts: TargetState,
    t: TrackedJob,
    now: float,
    detail: JobDetail | None = None,
    external_url: str | None = None,
) -> dict[str, Any]:
    """One job as the API writes it (docs/api.md)."""
    job = t.job
    reasons = attention_reasons(t)
    account, region = ts.target.account_id, ts.target.region
    row: dict[str, Any] = {
        "aws_account_id": account,
        "aws_region": region,
        "job_id": job.job_id,
        "status": job.status,
        "operation": job.operation,
        "priority": job.priority,
        "description": bounded(job.description),
        "tasks_total": job.tasks_total,
        "tasks_succeeded": job.tasks_succeeded,
        "tasks_failed": job.tasks_failed,
        "progress": round(job.tasks_run / job.tasks_total, 4) if job.tasks_total else None,
        "task_failure_ratio": round(job.task_failure_ratio, 6),
        "creation_time": iso(job.creation_time),
        "termination_time": iso(job.termination_time),
        "status_since": iso(t.status_since),
        "seconds_in_status": round(max(0.0, now - t.status_since), 3),
        "group": _group(t),
        "attention": reasons,
        "console_url": console_url(region, job.job_id),
        "status_url": (
            status_page_url(external_url, account, region, job.job_id) if external_url else None
        ),
    }
    if job.status == "Failed":
        row["details_available"] = detail is not None
        row["failure_reasons"] = (
            [{"code": r.code, "reason": bounded(r.reason)} for r in detail.failure_reasons]
            if detail
            else []
        )
        row["status_update_reason"] = bounded(detail.status_update_reason) if detail else None
        report = detail.report if detail else None
        row["report"] = (
            {
                "bucket": report.bucket,
                "prefix": report.prefix,
                "enabled": report.enabled,
                "scope": report.scope,
                "location": _report_location(report.bucket, report.prefix),
            }
            if report
            else None
        )
    return row


def _report_location(bucket: str | None, prefix: str | None) -> str | None:
    """``s3://bucket/prefix`` from DescribeJob's bucket ARN (``arn:aws:s3:::bucket``)."""
    if not bucket:
        return None
    name = bucket.rsplit(":::", 1)[-1]
    return f"s3://{name}/{prefix.lstrip('/')}" if prefix else f"s3://{name}/"


def _matches(ts: TargetState, t: TrackedJob, q: JobQuery, text: str | None) -> bool:
    job = t.job
    if q.job is not None and job.job_id != q.job:
        return False
    if q.statuses and job.status not in q.statuses:
        return False
    if q.operation is not None and job.operation != q.operation:
        return False
    if q.attention is not None and _needs_attention(t) != q.attention:
        return False
    if q.group is not None and _group(t) != q.group:
        return False
    if text is not None:
        haystack = f"{job.job_id} {job.description} {job.operation} {ts.target.account_id}"
        return text in haystack.casefold()
    return True


def _sort_key(sort: str, now: float) -> Callable[[TargetState, TrackedJob], tuple[Any, ...]]:
    """A flat tuple per job (flat tuples compare fastest): the order, then the job's identity."""
    if sort == "attention":

        def attention(ts: TargetState, t: TrackedJob) -> tuple[Any, ...]:
            group = _GROUP_INDEX[_group(t)]
            # Within a group, what changed last comes first.
            target = ts.target
            return (group, -t.status_since, target.account_id, target.region, t.job.job_id)

        return attention
    simple: dict[str, Callable[[TargetState, TrackedJob], Any]] = {
        "created": lambda ts, t: t.job.creation_time or 0.0,
        "status": lambda ts, t: _STATUS_ORDER.get(t.job.status, len(_STATUS_ORDER)),
        "account": lambda ts, t: "",
        "region": lambda ts, t: ts.target.region,
        "operation": lambda ts, t: t.job.operation,
        "progress": lambda ts, t: (
            t.job.tasks_run / t.job.tasks_total if t.job.tasks_total else -1.0
        ),
        "time_in_status": lambda ts, t: now - t.status_since,
        "job_id": lambda ts, t: t.job.job_id,
    }
    first = simple[sort]

    def key(ts: TargetState, t: TrackedJob) -> tuple[Any, ...]:
        target = ts.target
        return (first(ts, t), target.account_id, target.region, t.job.job_id)

    return key


async def query_jobs(
    store: Store,
    q: JobQuery,
    now: float,
    *,
    external_url: str | None = None,
) -> dict[str, Any]:
    """The jobs listing: ``total`` matching jobs and the rows of one page (docs/api.md)."""
    pause = Pauser(SLICE_SECONDS)
    text = q.text.casefold() if q.text else None
    picked: list[tuple[TargetState, TrackedJob]] = []
    for ts in list(store.targets.values()):
        target = ts.target
        if q.account is not None and target.account_id != q.account:
            continue
        if q.region is not None and target.region != q.region:
            continue
        jobs = ts.jobs or {}
        for n, t in enumerate(jobs.values()):
            if _matches(ts, t, q, text):
                picked.append((ts, t))
            if n % 256 == 255:
                await pause()
        await pause()
    total = len(picked)
    # Sorting 10,000 keys at once holds the loop 20 ms and more on a busy machine:
    # runs of _RUN are sorted one per turn, then merged lazily up to the page's end.
    key = _sort_key(q.sort, now)
    runs: list[list[tuple[Any, int]]] = []
    for begin in range(0, total, _RUN):
        run = [(key(*picked[n]), n) for n in range(begin, min(begin + _RUN, total))]
        run.sort(reverse=q.descending)
        runs.append(run)
        await pause()
    start = (q.page - 1) * q.per_page
    end = start + q.per_page
    rows = []
    for position, (_, n) in enumerate(heapq.merge(*runs, reverse=q.descending)):
        if position >= end:
            break
        if position >= start:
            ts, t = picked[n]
            rows.append(job_row(ts, t, now, ts.details.get(t.job.job_id), external_url))
        if position % 128 == 127:
            await pause()
    pages = max(1, -(-total // q.per_page))
    return {
        "generated_at": iso(now),
        "total": total,
        "page": q.page,
        "per_page": q.per_page,
        "pages": pages,
        "jobs": rows,
    }


def _status_counts(jobs: Iterable[TrackedJob]) -> dict[str, int]:
    return _status_counts_from(Counter(t.job.status for t in jobs))


def _throttled(ts: TargetState) -> int:
    return sum(n for (_, outcome), n in ts.api_requests.items() if outcome == "throttled")


async def targets_document(store: Store, now: float) -> dict[str, Any]:
    """Every target's health and job counts, and the fleet's totals (docs/api.md)."""
    pause = Pauser(SLICE_SECONDS)
    rows: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    attention: Counter[str] = Counter()
    for ts in sorted(store.targets.values(), key=lambda s: s.target.key):
        jobs = list((ts.jobs or {}).values())
        counts = _status_counts(jobs)
        totals.update(counts)
        for n, t in enumerate(jobs):
            if _needs_attention(t):
                attention.update(attention_reasons(t))
            if n % 256 == 255:
                await pause()
        await pause()
        requests = sum(ts.api_requests.values())
        rows.append(
            {
                "aws_account_id": ts.target.account_id,
                "aws_region": ts.target.region,
                "labels": dict(ts.target.labels),
                "up": ts.up,
                "polled": ts.attempted,
                "last_success": iso(ts.last_success),
                "seconds_since_success": (
                    round(now - ts.last_success, 3) if ts.last_success is not None else None
                ),
                "last_error": ts.last_error,
                "consecutive_failures": ts.consecutive_failures,
                "last_poll_seconds": (
                    round(ts.last_duration, 3) if ts.last_duration is not None else None
                ),
                "api_requests": requests,
                "api_requests_throttled": _throttled(ts),
                "jobs": counts,
            }
        )
    ordered = _status_counts_from(totals)
    return {
        "generated_at": iso(now),
        "targets_up": sum(1 for r in rows if r["up"]),
        "targets_down": sum(1 for r in rows if not r["up"]),
        "jobs_by_status": ordered,
        "attention": {r: attention[r] for r in ATTENTION_REASONS},
        "targets": rows,
    }


def _status_counts_from(counts: Mapping[str, int]) -> dict[str, int]:
    order: Sequence[str] = [s for s in KNOWN_STATUSES if s in counts] + sorted(
        s for s in counts if s not in _STATUS_ORDER
    )
    return {s: counts[s] for s in order}


async def dumps(document: Mapping[str, Any]) -> str:
    """``document`` as compact JSON; a ``jobs`` list is written a row at a time between
    turns of the loop (1,000 rows at once take 10 ms and more)."""
    head = dict(document)
    rows = head.pop("jobs", None)
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    if rows is None:
        return text
    pause = Pauser(SLICE_SECONDS)
    parts = []
    for row in rows:
        parts.append(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
        await pause()
    glue = "," if head else ""
    return f'{text[:-1]}{glue}"jobs":[{",".join(parts)}]}}'

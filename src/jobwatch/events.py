"""Events: the stable, documented record of what happened to a job.

An :class:`Event` is built by the poller from a :class:`jobwatch.diff.Change`
and handed to every :class:`EventSink`. :meth:`Event.to_dict` is the schema in
docs/events.md; sinks must not invent fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from jobwatch.diff import Change, EventKind
from jobwatch.log import get_logger
from jobwatch.model import JobDetail, Target, console_url, status_page_url

__all__ = [
    "MAX_TEXT",
    "Event",
    "EventRecord",
    "EventSink",
    "LogSink",
    "RecordedEvent",
    "emit_all",
    "iso",
    "linked_to_status_page",
]

#: Longest free-text field (descriptions, reasons) an event carries, in characters.
MAX_TEXT = 512
_WARNING_KINDS = frozenset({"job_failed", "job_stalled", "job_task_failure_ratio_exceeded"})


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO-8601 UTC with a ``Z``, or ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def bounded(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """Cut free text from the API to ``limit`` characters (JSON escapes the rest)."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class Event:
    change: Change
    target: Target
    observed_at: float
    detail: JobDetail | None = None
    #: ``web.external_url``: when set, the event links the job on the status page.
    status_page: str | None = None

    @property
    def kind(self) -> EventKind:
        return self.change.kind

    @property
    def level(self) -> str:
        return "warning" if self.kind in _WARNING_KINDS else "info"

    @property
    def event_id(self) -> str:
        """Stable id of this occurrence: the same change seen at the same poll, the same id."""
        c = self.change
        key = "|".join(
            (
                self.target.account_id,
                self.target.region,
                c.job.job_id,
                c.kind,
                c.previous_status or "",
                c.job.status,
                c.stall_reason or "",
                repr(self.observed_at),
            )
        )
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        """The event's fields, in the order and with the names of docs/events.md."""
        c, job = self.change, self.change.job
        out: dict[str, Any] = {
            "event": c.kind,
            "event_id": self.event_id,
            "aws_account_id": self.target.account_id,
            "aws_region": self.target.region,
            "job_id": bounded(job.job_id, 128),
            "operation": bounded(job.operation, 128),
            "status": bounded(job.status, 64),
            "priority": job.priority,
            "description": bounded(job.description),
            "tasks_total": job.tasks_total,
            "tasks_succeeded": job.tasks_succeeded,
            "tasks_failed": job.tasks_failed,
            "task_failure_ratio": round(job.task_failure_ratio, 6),
            "active_seconds": job.active_seconds,
            "creation_time": iso(job.creation_time),
            "termination_time": iso(job.termination_time),
            "observed_at": iso(self.observed_at),
            "console_url": console_url(self.target.region, job.job_id),
        }
        if self.status_page is not None:
            out["status_url"] = status_page_url(
                self.status_page, self.target.account_id, self.target.region, job.job_id
            )
        if self.target.labels:
            out["labels"] = dict(self.target.labels)
        if c.previous_status is not None:
            out["previous_status"] = bounded(c.previous_status, 64)
        if c.seconds_in_previous_status is not None:
            out["seconds_in_previous_status"] = round(c.seconds_in_previous_status, 3)
        if c.stall_reason is not None:
            out["stall_reason"] = c.stall_reason
        if c.stalled_seconds is not None:
            out["stalled_seconds"] = round(c.stalled_seconds, 3)
        if c.aged_out_reason is not None:
            out["aged_out_reason"] = c.aged_out_reason
        if c.kind == "job_failed":
            d = self.detail
            out["failure_reasons"] = (
                [
                    {"code": bounded(r.code, 128), "reason": bounded(r.reason)}
                    for r in d.failure_reasons
                ]
                if d
                else []
            )
            out["status_update_reason"] = bounded(d.status_update_reason) if d else None
            out["report"] = (
                {
                    "bucket": d.report.bucket,
                    "prefix": d.report.prefix,
                    "enabled": d.report.enabled,
                    "scope": d.report.scope,
                }
                if d and d.report
                else None
            )
            out["details_available"] = d is not None
        return out


class EventRecord(Protocol):
    """What a sink receives: an :class:`Event`, or a :class:`RecordedEvent` replayed after
    a restart from the state file's outbox."""

    @property
    def kind(self) -> str: ...

    @property
    def level(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as it was rendered before a restart (see docs/reliability.md)."""

    record: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.record.get("event", ""))

    @property
    def level(self) -> str:
        return "warning" if self.kind in _WARNING_KINDS else "info"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)


class EventSink(Protocol):
    """Where events go. ``emit`` must not block the event loop for long or raise."""

    def emit(self, event: EventRecord) -> None: ...


class LogSink:
    """Writes each event as one structlog line (JSON on stdout by default)."""

    def __init__(self, logger: Any = None) -> None:
        self._log = logger or get_logger("jobwatch.events")

    def emit(self, event: EventRecord) -> None:
        fields = event.to_dict()
        name = fields.pop("event")
        if event.level == "warning":
            self._log.warning(name, **fields)
        else:
            self._log.info(name, **fields)


def emit_all(sinks: Sequence[EventSink], event: EventRecord) -> None:
    log = get_logger("jobwatch")
    for sink in sinks:
        try:
            sink.emit(event)
        except Exception:  # a broken sink must not lose the others' events
            log.exception("event_sink_failed", sink=type(sink).__name__, event_kind=event.kind)


def linked_to_status_page(events: list[EventRecord], external_url: str | None) -> list[EventRecord]:
    """``events`` carrying a ``status_url`` under ``external_url`` (unchanged when None)."""
    if external_url is None:
        return events
    return [replace(e, status_page=external_url) if isinstance(e, Event) else e for e in events]

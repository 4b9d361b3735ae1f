"""The event schema: fields, bounds and escaping."""

from __future__ import annotations

import io
import json

import structlog

from jobwatch.diff import Change
from jobwatch.events import MAX_TEXT, Event, LogSink
from jobwatch.log import configure_logging
from jobwatch.model import FailureReason, Job, JobDetail, ReportLocation, Target

T0 = 1_800_000_000.0
TARGET = Target("111111111111", "eu-west-1", labels=(("team", "storage"),))


def _failed(description: str, reason: str) -> Event:
    job = Job.make("j-1", "Failed", "S3PutObjectCopy", 3, description, T0 - 60, T0, 10, 2, 8, 5.0)
    detail = JobDetail(
        job=job,
        failure_reasons=(FailureReason("Code\n", reason),),
        status_update_reason="why",
        report=ReportLocation("arn:aws:s3:::r", "p/", True, "AllTasks"),
    )
    return Event(Change("job_failed", job, previous_status="Active"), TARGET, T0 + 1, detail)


def test_free_text_is_bounded() -> None:
    doc = _failed("d" * 10_000, "r" * 10_000).to_dict()
    assert len(doc["description"]) == MAX_TEXT
    assert doc["description"].endswith("\u2026")
    assert len(doc["failure_reasons"][0]["reason"]) == MAX_TEXT


def test_schema_of_a_failure() -> None:
    doc = _failed("nightly copy", "Access Denied").to_dict()
    assert list(doc)[:3] == ["event", "event_id", "aws_account_id"]
    assert doc["event"] == "job_failed"
    assert doc["labels"] == {"team": "storage"}
    assert doc["termination_time"] == "2027-01-15T08:00:00Z"
    assert doc["creation_time"] == "2027-01-15T07:59:00Z"
    assert doc["task_failure_ratio"] == 0.8
    assert doc["previous_status"] == "Active"
    assert doc["report"] == {
        "bucket": "arn:aws:s3:::r",
        "prefix": "p/",
        "enabled": True,
        "scope": "AllTasks",
    }
    assert doc["details_available"] is True


def test_log_lines_are_one_json_object_each_whatever_the_text() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        LogSink().emit(_failed('line\nbreak "quoted" \r \x00 \u2028 </script>', "r"))
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["description"] == 'line\nbreak "quoted" \r \x00 \u2028 </script>'
    assert doc["level"] == "warning"
    assert list(doc)[:3] == ["timestamp", "level", "event"]

"""The event schema: fields, bounds and escaping."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import structlog

from jobwatch.diff import EVENT_KINDS, Change
from jobwatch.events import MAX_TEXT, Event, LogSink, linked_to_status_page
from jobwatch.log import configure_logging
from jobwatch.model import FailureReason, Job, JobDetail, ReportLocation, Target, console_url

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


def _representative(kind: str) -> Event:
    """An event of ``kind`` with every field that kind can carry."""
    active = Job.make("j-2", "Active", "S3PutObjectCopy", 1, "d", T0 - 600, None, 100, 50, 5, 300.0)
    changes = {
        "job_discovered": Change("job_discovered", active),
        "job_status_changed": Change(
            "job_status_changed", active, previous_status="Ready", seconds_in_previous_status=9.0
        ),
        "job_stalled": Change(
            "job_stalled", active, stall_reason="no_progress", stalled_seconds=60
        ),
        "job_stall_recovered": Change("job_stall_recovered", active, stall_reason="no_progress"),
        "job_task_failure_ratio_exceeded": Change("job_task_failure_ratio_exceeded", active),
        "job_aged_out": Change("job_aged_out", active, aged_out_reason="retention"),
    }
    if kind == "job_failed":
        return _failed("d", "r")
    return Event(changes[kind], TARGET, T0)


def _documented_examples() -> dict[str, dict[str, object]]:
    text = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    examples = text.split("## Examples, one per kind", 1)[1]
    found = re.findall(r"### `(\w+)`\s+```json\n(.+?)\n```", examples)
    return {kind: json.loads(line) for kind, line in found}


def test_docs_show_one_example_per_kind_with_exactly_its_fields() -> None:
    examples = _documented_examples()
    assert set(examples) == set(EVENT_KINDS)
    for kind, example in examples.items():
        event = _representative(kind)
        written = {"timestamp", "level", "logger", *event.to_dict()}
        assert set(example) == written, kind
        assert example["event"] == kind
        assert example["level"] == event.level


def test_console_url_names_the_partition_host() -> None:
    assert console_url("eu-west-1", "j-1") == (
        "https://console.aws.amazon.com/s3/jobs/j-1?region=eu-west-1"
    )
    assert console_url("cn-north-1", "j-1") == (
        "https://console.amazonaws.cn/s3/jobs/j-1?region=cn-north-1"
    )
    assert console_url("us-gov-west-1", "j/x y").startswith(  # type: ignore[union-attr]
        "https://console.amazonaws-us-gov.com/s3/jobs/j%2Fx%20y?"
    )
    assert console_url("us-isob-east-1", "j-1") is None
    assert _failed("d", "r").to_dict()["console_url"] == console_url("eu-west-1", "j-1")


def test_status_url_only_under_an_external_url() -> None:
    event = _failed("d", "r")
    assert "status_url" not in event.to_dict()
    assert linked_to_status_page([event], None) == [event]
    (linked,) = linked_to_status_page([event], "https://jw.example/ops")
    assert linked.to_dict()["status_url"] == (
        f"https://jw.example/ops/?account={TARGET.account_id}&region={TARGET.region}"
        f"&job={event.change.job.job_id}"
    )
    assert {*linked.to_dict()} - {*event.to_dict()} == {"status_url"}

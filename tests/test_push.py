"""The push fast path over real HTTP: the simulator publishes job events into moto's
SQS on loopback, jobwatch consumes them and describes each job through the diff."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from jobwatch.cli import main
from jobwatch.config import parse_config
from jobwatch.demo import run_demo
from jobwatch.errors import ConfigError
from jobwatch.log import configure_logging
from jobwatch.metrics import PushCollector
from jobwatch.push import parse_event
from jobwatch.simulator import EventPublisher, FaultSpec, PushFaults
from tests.helpers import World, reset_moto, running
from tests.helpers import moto_server as start_moto

A = "111111111111"
OTHER = "222222222222"
R = "us-east-1"
FAST = {"new": "1s", "preparing": "2s", "ready": "1s", "completing": "2s"}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with start_moto() as url:
        yield url


@dataclass
class Sqs:
    endpoint: str
    url: str
    dead_url: str

    def client(self) -> Any:
        return boto3.client("sqs", region_name=R, endpoint_url=self.endpoint)

    def depth(self, url: str) -> int:
        attrs = self.client().get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def send(self, body: str) -> str:
        return str(self.client().send_message(QueueUrl=self.url, MessageBody=body)["MessageId"])


@pytest.fixture
def sqs(moto_server: str) -> Sqs:
    """An empty queue with a dead-letter queue (after 2 receives), as deploy/aws makes."""
    reset_moto(moto_server)
    client = boto3.client("sqs", region_name=R, endpoint_url=moto_server)
    dead = client.create_queue(QueueName="jobwatch-events-dlq")["QueueUrl"]
    dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    url = client.create_queue(
        QueueName="jobwatch-events",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "2"})
        },
    )["QueueUrl"]
    return Sqs(moto_server, url, dead)


def _push_config(sqs: Sqs, **kw: Any) -> dict[str, Any]:
    return {
        "push": {
            "queues": [{"url": sqs.url, "region": R, "dead_letter_url": sqs.dead_url}],
            "endpoint_url": sqs.endpoint,
            "wait": "1s",
            "visibility_timeout": "1s",
            "dead_letter_interval": "1s",
            **kw,
        }
    }


def _scenario(*jobs: dict[str, Any], accounts: tuple[str, ...] = (A,)) -> dict[str, Any]:
    return {
        "accounts": [{"id": a, "jobs": list(jobs) if a == A else []} for a in accounts],
    }


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def pushing(
    scenario: dict[str, Any], sqs: Sqs, faults: PushFaults | None = None, **push: Any
) -> AsyncIterator[tuple[World, EventPublisher]]:
    """A running world whose push consumer runs (the poll loops do not: tests poll)."""
    async with running(scenario, _push_config(sqs, **push)) as w:
        assert w.app.push is not None
        consumer = asyncio.create_task(w.app.push.run())
        async with EventPublisher(
            w.sim, endpoint_url=sqs.endpoint, queue_url=sqs.url, faults=faults, seed=7
        ) as publisher:
            try:
                yield w, publisher
            finally:
                consumer.cancel()
                await asyncio.wait([consumer])


def _messages(w: World, result: str) -> float:
    return w.sample("jobwatch_push_messages_total", result=result) or 0.0


def _handled(w: World) -> float:
    assert w.app.push is not None
    return float(sum(w.app.push.stats.messages.values()))


def _transitions(w: World, job_id: str) -> list[tuple[str, str]]:
    return [
        (d["previous_status"], d["status"])
        for d in (e.to_dict() for e in w.sink.events)
        if d["job_id"] == job_id and d["event"] == "job_status_changed"
    ]


async def test_an_event_is_reported_at_once_through_describe_job_and_the_diff(sqs: Sqs) -> None:
    job = {"id": "job-1", "tasks": 10**7, "rate": 1}
    async with pushing(_scenario(job), sqs) as (w, publisher):
        await w.step(10)  # the baseline
        assert w.tracked(A, R) == {"job-1": "Active"}
        # The events of the job's start (New to Active) arrive after the baseline had it
        # Active: nothing to report.
        early = await publisher.pump()
        await until(lambda: _handled(w) == early)
        assert _messages(w, "reported") == 0
        known = _messages(w, "known")
        lists = w.sim.request_count(operation="ListJobs")
        w.sim.fail_job(A, R, "job-1", code="ManifestNotFound", reason="gone")
        w.sim.advance(3)  # the event carries the failure's time, 3 s before the report
        assert await publisher.pump() == 2  # Failing, then Failed (transitions fall due at once)
        await until(lambda: _handled(w) == early + 2)
        # Reported without a poll: one DescribeJob, no ListJobs.
        assert w.sim.request_count(operation="ListJobs") == lists
        assert w.sim.request_count(operation="DescribeJob") >= 1
        assert _transitions(w, "job-1") == [("Active", "Failed")]
        (failed,) = w.sink.of("job_failed", "job-1")
        assert failed.to_dict()["failure_reasons"][0]["code"] == "ManifestNotFound"
        assert _messages(w, "reported") == 1
        assert _messages(w, "known") == known + 1  # the second event: Failed was known
        assert w.sample("jobwatch_push_lag_seconds_count") == 1
        assert w.sample("jobwatch_push_lag_seconds_sum") == pytest.approx(3.0, abs=0.5)
        assert w.sample("jobwatch_push_transitions_total", found_by="push") == 1
        await until(lambda: sqs.depth(sqs.url) == 0)  # both deleted once handled
        assert w.sample("jobwatch_push_consumer_up", queue=sqs.url) == 1
        assert w.sample("jobwatch_push_last_receive_timestamp_seconds", queue=sqs.url)
        # /metrics writes the push families byte for byte as prometheus_client would.
        assert w.app.push is not None
        collector = PushCollector(w.app.push.stats)
        reference = CollectorRegistry()
        reference.register(collector)
        assert b"".join(await collector.exposition_chunks(0)) == generate_latest(reference)
        # The next poll finds nothing new: the change was reported once.
        before = len(w.sink.events)
        await w.step(10)
        assert len(w.sink.events) == before
        assert w.sample("jobwatch_push_transitions_total", found_by="poll_unannounced") == 0


async def test_a_duplicate_event_is_dropped_by_its_job_event_id(sqs: Sqs) -> None:
    async with pushing(_scenario({"id": "job-1", "tasks": 10**7, "rate": 1}), sqs) as (w, _):
        await w.step(10)
        w.sim.pause_job(A, R, "job-1")
        (view,) = w.sim.jobs(A, R)
        body = json.dumps(
            {
                "version": "0",
                "id": "e-1",
                "detail-type": "AWS Service Event via CloudTrail",
                "source": "aws.s3",
                "account": A,
                "time": "2026-01-01T00:00:10Z",
                "region": R,
                "detail": {
                    "eventSource": "s3.amazonaws.com",
                    "eventName": "JobStatusChanged",
                    "serviceEventDetails": {
                        "jobId": "job-1",
                        "jobArn": f"arn:aws:s3:{R}:{A}:job/job-1",
                        "status": view.status,
                        "jobEventId": "jev-1",
                    },
                },
            }
        )
        sqs.send(body)
        await until(lambda: _handled(w) == 1)
        sqs.send(body)
        await until(lambda: _handled(w) == 2)
        assert _messages(w, "reported") == 1
        assert _messages(w, "duplicate") == 1
        assert len(_transitions(w, "job-1")) == 1
        await until(lambda: sqs.depth(sqs.url) == 0)


async def test_lossy_duplicated_delayed_reordered_events_each_transition_reported_once(
    sqs: Sqs,
) -> None:
    jobs = [
        {"id": "long-1", "tasks": 10**7, "rate": 1},
        {"id": "done-1", "created_at": "15s", "tasks": 40, "rate": 4, "phases": FAST},
        {"id": "done-2", "created_at": "23s", "tasks": 30, "rate": 3, "phases": FAST},
        {
            "id": "fails-1",
            "created_at": "18s",
            "tasks": 10**6,
            "rate": 10,
            "phases": FAST,
            "timeline": [{"at": "30s", "action": "fail", "code": "X", "reason": "broken"}],
        },
        {
            "id": "cancelled",
            "created_at": "20s",
            "tasks": 10**6,
            "rate": 10,
            "phases": FAST,
            "timeline": [{"at": "26s", "action": "cancel", "reason": "oops"}],
        },
    ]
    faults = PushFaults(loss=0.3, duplicate=0.4, delay=4.0, reorder=True)
    async with pushing(_scenario(*jobs), sqs, faults) as (w, publisher):
        await w.step(10)  # the baseline: only "long-1" exists
        for i in range(40):
            w.sim.advance(1)
            sent = publisher.sent
            await publisher.pump()
            await until(lambda: _handled(w) >= publisher.sent)
            assert publisher.sent >= sent
            if i % 10 == 9:
                await w.app.poll_all_once()  # polling reconciles what the events missed
        w.sim.advance(10)
        await publisher.pump()
        await until(lambda: _handled(w) >= publisher.sent)
        await w.app.poll_all_once()
        assert publisher.lost > 0
        assert publisher.sent > publisher.made - publisher.lost  # duplicates
        assert w.tracked(A, R) == w.truth(A, R)
        for job_id in ("done-1", "done-2", "fails-1", "cancelled"):
            chain = _transitions(w, job_id)
            seen = [new for _, new in chain]
            assert len(seen) == len(set(seen)), (job_id, chain)  # no status reported twice
            for (_, new), (prev, _) in itertools.pairwise(chain):
                assert prev == new, (job_id, chain)  # each starts where the last ended
        assert {e.to_dict()["job_id"] for e in w.sink.of("job_discovered")} == {
            "done-1",
            "done-2",
            "fails-1",
            "cancelled",
        }
        assert len(w.sink.of("job_failed", "fails-1")) == 1
        by = {
            p: w.sample("jobwatch_push_transitions_total", found_by=p) or 0
            for p in ("push", "poll", "poll_unannounced")
        }
        assert by["push"] > 0
        # Every transition reported once, by one path or the other.
        assert sum(by.values()) == len(w.sink.of("job_status_changed"))
        assert _messages(w, "duplicate") > 0
        assert _messages(w, "failed") == _messages(w, "unparseable") == 0
        await until(lambda: sqs.depth(sqs.url) == 0)


async def test_an_unparseable_message_is_counted_kept_and_goes_to_the_dead_letter_queue(
    sqs: Sqs,
) -> None:
    async with pushing(_scenario(), sqs) as (w, _):
        await w.step(10)
        with capture_logs() as logs:
            message_id = sqs.send("this is not an event, and secret-ish text")
            await until(lambda: _messages(w, "unparseable") >= 1)
        (line,) = [x for x in logs if x["event"] == "push_message_unparseable"][:1]
        assert line["message_id"] == message_id
        assert "secret-ish" not in json.dumps(logs, default=str)
        # Not deleted: it comes back after the visibility timeout, then the redrive moves it.
        await until(lambda: sqs.depth(sqs.dead_url) == 1, within=20)
        assert _messages(w, "unparseable") == 2  # maxReceiveCount 2
        await until(
            lambda: w.sample("jobwatch_push_dead_letter_messages", queue=sqs.url) == 1, within=5
        )
        assert w.sample("jobwatch_push_consumer_up", queue=sqs.url) == 1


async def test_events_of_unwatched_targets_are_counted_and_deleted(sqs: Sqs) -> None:
    jobs = {"id": "job-1", "tasks": 10**7, "rate": 1}
    scenario = {
        "accounts": [{"id": A, "jobs": [jobs]}, {"id": OTHER, "jobs": [dict(jobs, id="other-1")]}]
    }
    async with running(scenario, {**_push_config(sqs), "targets": [{"account_id": A}]}) as w:
        assert w.app.push is not None
        consumer = asyncio.create_task(w.app.push.run())
        try:
            async with EventPublisher(w.sim, endpoint_url=sqs.endpoint, queue_url=sqs.url) as pub:
                await w.step(10)
                w.sim.cancel_job(OTHER, R, "other-1")
                await pub.pump()
                await until(lambda: _handled(w) >= pub.sent)
                # The other account's job: created, started (3 changes), then cancelling.
                assert _messages(w, "unwatched") == 4
                assert _messages(w, "reported") == 0
                assert w.sim.request_count(operation="DescribeJob", account=OTHER) == 0
                await until(lambda: sqs.depth(sqs.url) == 0)
        finally:
            consumer.cancel()
            await asyncio.wait([consumer])


async def test_an_event_before_the_first_poll_waits_for_the_baseline(sqs: Sqs) -> None:
    async with pushing(_scenario({"id": "job-1", "tasks": 10**7, "rate": 1}), sqs) as (w, pub):
        w.sim.advance(10)
        w.sim.cancel_job(A, R, "job-1")
        await pub.pump()
        await until(lambda: _handled(w) >= pub.sent)
        assert _messages(w, "not_ready") == pub.sent > 0
        assert w.sim.request_count(operation="DescribeJob") == 0
        await w.app.poll_all_once()  # the baseline takes the job as it is: no event
        assert w.sink.events == []
        assert w.tracked(A, R) == {"job-1": "Cancelling"}


async def test_a_failed_describe_leaves_the_message_for_a_later_delivery(sqs: Sqs) -> None:
    async with pushing(_scenario({"id": "job-1", "tasks": 10**7, "rate": 1}), sqs) as (w, pub):
        await w.step(10)
        fault = w.sim.add_fault(
            FaultSpec.model_validate({"kind": "throttle", "operations": ["DescribeJob"]})
        )
        w.sim.cancel_job(A, R, "job-1")
        await pub.pump()
        await until(lambda: _messages(w, "failed") >= 1)
        assert _transitions(w, "job-1") == []
        w.sim.remove_fault(fault)
        await until(lambda: _messages(w, "reported") == 1, within=20)
        assert _transitions(w, "job-1") == [("Active", "Cancelling")]
        await until(lambda: sqs.depth(sqs.url) == 0)


async def test_a_look_waits_for_the_poll_in_progress(sqs: Sqs) -> None:
    async with pushing(_scenario({"id": "job-1", "tasks": 10**7, "rate": 1}), sqs) as (w, pub):
        await w.step(10)
        early = await pub.pump()
        await until(lambda: _handled(w) == early)
        w.sim.add_fault(
            FaultSpec.model_validate({"kind": "latency", "seconds": 1, "operations": ["ListJobs"]})
        )
        w.sim.cancel_job(A, R, "job-1")
        describes = w.sim.request_count(operation="DescribeJob")
        poll = asyncio.create_task(w.app.poll_all_once())
        await asyncio.sleep(0.3)  # the poll is waiting for its ListJobs
        sent = await pub.pump()
        await poll
        await until(lambda: _handled(w) == early + sent)
        # The look waited for the poll, then found its status known: no call, one report.
        assert _transitions(w, "job-1") == [("Active", "Cancelling")]
        assert w.sim.request_count(operation="DescribeJob") == describes
        assert w.sample("jobwatch_push_transitions_total", found_by="poll") == 1


async def test_a_broken_queue_does_not_delay_polls(sqs: Sqs) -> None:
    push = _push_config(sqs)
    push["push"]["endpoint_url"] = "http://127.0.0.1:9"  # nothing listens there
    config = {**push, "interval": "1s", "retry": {"mode": "standard", "max_attempts": 1}}
    async with running(_scenario({"id": "job-1", "tasks": 10**7, "rate": 1}), config) as w:
        run = asyncio.create_task(w.app.run_pollers())
        started = time.monotonic()
        await until(lambda: w.app.store[(A, R)].polls["success"] >= 3, within=10)
        took = time.monotonic() - started
        w.app.request_stop()
        await run
    # Three polls on a 1 s interval (the first at once): the failing consumer slowed nothing.
    assert took < 3.5
    assert w.sample("jobwatch_push_consumer_up", queue=sqs.url) == 0
    assert (w.sample("jobwatch_push_receive_errors_total", queue=sqs.url) or 0) >= 1


# --------------------------------------------------------------------------- parsing, config


def _envelope(**detail: Any) -> str:
    service = {"jobId": "job-9", "status": "Complete", "jobEventId": "x", **detail}
    return json.dumps(
        {
            "detail-type": "AWS Service Event via CloudTrail",
            "source": "aws.s3",
            "account": A,
            "region": R,
            "time": "2026-01-01T00:00:00Z",
            "detail": {
                "eventSource": "s3.amazonaws.com",
                "eventName": "JobStatusChanged",
                "eventTime": "2026-01-01T00:00:05Z",
                "serviceEventDetails": service,
            },
        }
    )


def test_the_target_comes_from_the_job_arn_then_the_envelope() -> None:
    forwarded = parse_event(_envelope(jobArn=f"arn:aws:s3:eu-west-1:{OTHER}:job/job-9"))
    assert forwarded is not None
    assert (forwarded.key, forwarded.job_id, forwarded.status) == (
        (OTHER, "eu-west-1"),
        "job-9",
        "Complete",
    )
    plain = parse_event(_envelope())
    assert plain is not None
    assert plain.key == (A, R)
    assert plain.event_time == 1_767_225_605.0  # detail.eventTime wins over time


@pytest.mark.parametrize(
    "body", ["", "[]", "{}", '{"detail-type": "x", "detail": 3}', "{" * 100_000]
)
def test_bodies_that_are_not_events_raise(body: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_event(body)


def test_other_events_are_ignored() -> None:
    other = json.loads(_envelope())
    other["detail"]["eventName"] = "PutObject"
    assert parse_event(json.dumps(other)) is None


def test_push_config_defaults_and_errors() -> None:
    base = "targets: [{account_id: '111111111111'}]\n"
    config = parse_config(
        base + "push:\n  queues:\n    - url: https://sqs.eu-west-1.amazonaws.com/111111111111/q\n"
    )
    assert config.push is not None
    assert config.push.queues[0].region == "eu-west-1"
    assert (config.push.wait, config.push.batch_size) == (20.0, 10)
    assert parse_config(base).push is None
    with pytest.raises(ConfigError, match="region: required"):
        parse_config(base + "push:\n  queues:\n    - url: http://127.0.0.1:5/111111111111/q\n")
    with pytest.raises(ConfigError, match=r"push\.wait"):
        parse_config(
            base + "push:\n  wait: 30s\n  queues:\n"
            "    - url: https://sqs.eu-west-1.amazonaws.com/111111111111/q\n"
        )
    with pytest.raises(ConfigError, match=r"push\.queues"):
        parse_config(base + "push:\n  queues: []\n")


def test_check_config_shows_the_queues(tmp_path: Path) -> None:
    path = tmp_path / "jobwatch.yaml"
    path.write_text(
        "targets: [{account_id: '111111111111'}]\n"
        "push:\n  queues:\n"
        "    - url: https://sqs.eu-west-1.amazonaws.com/999999999999/jobwatch-events\n"
        "      role_arn: arn:aws:iam::999999999999:role/jobwatch-push\n"
    )
    out = io.StringIO()
    assert main(["check-config", "-c", str(path)], out) == 0
    assert "push: 1 queue(s), long poll 20s, batch 10" in out.getvalue()
    assert (
        "https://sqs.eu-west-1.amazonaws.com/999999999999/jobwatch-events  eu-west-1  "
        "arn:aws:iam::999999999999:role/jobwatch-push"
    ) in out.getvalue()


async def test_demo_with_push_consumes_moto_s_queue() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        with redirect_stdout(out):
            await run_demo("127.0.0.1:0", duration=4.0, push=True)
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert "job events through moto's SQS" in lines[0]
    logged = [json.loads(line) for line in lines[1:]]
    assert {"demo_started", "started"} <= {e["event"] for e in logged}
    assert not [e for e in logged if e["event"].startswith("push_")]  # no receive failed

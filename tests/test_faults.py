"""The fault matrix: every fault the simulator injects, and the ones it cannot.

For each: the healthy target keeps polling on time, the broken one is shown as
such on its health metrics, nothing crashes, and the exposition stays valid.
docs/reliability.md has the table this file proves.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.testing import MemorySink
from tests.helpers import World, running

OK, BAD = "111111111111", "222222222222"
R = "us-east-1"


def _scenario(fault: dict[str, Any]) -> dict[str, Any]:
    return {
        "accounts": [
            {"id": OK, "jobs": [{"id": "healthy-job", "tasks": 10**7, "rate": 1}]},
            {"id": BAD, "jobs": [{"id": "faulty-job", "tasks": 10**7, "rate": 1}]},
        ],
        "faults": [{**fault, "accounts": [BAD], "until": "25s"}],
    }


def _exposition_ok(w: World) -> None:
    text = generate_latest(w.app.registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "s3batch_jobs" in families


#: fault -> (is the faulty target up during the fault?, error code shown)
MATRIX: list[tuple[dict[str, Any], bool, str | None]] = [
    ({"kind": "throttle", "status": 503}, False, "SlowDown"),
    ({"kind": "throttle", "status": 400}, False, "TooManyRequestsException"),
    ({"kind": "throttle", "status": 429}, False, "TooManyRequestsException"),
    ({"kind": "internal_error"}, False, "InternalError"),
    (
        {"kind": "error", "status": 400, "code": "InvalidRequestException"},
        False,
        "InvalidRequestException",
    ),
    ({"kind": "latency", "seconds": 0.3}, True, None),
    ({"kind": "latency", "distribution": "exponential", "mean": 0.05}, True, None),
    ({"kind": "connection_reset"}, False, None),
    ({"kind": "hang", "seconds": 30}, False, "ReadTimeoutError"),
    ({"kind": "truncated_xml"}, False, "ResponseParserError"),
    ({"kind": "malformed_xml"}, False, "ResponseParserError"),
    ({"kind": "access_denied"}, False, "AccessDenied"),
    ({"kind": "unknown_status", "value": "Archiving"}, True, None),
    ({"kind": "unknown_operation", "value": "S3FutureOperation"}, True, None),
]


@pytest.mark.parametrize(
    ("fault", "up", "code"), MATRIX, ids=[f"{m[0]['kind']}-{i}" for i, m in enumerate(MATRIX)]
)
async def test_fault_matrix(fault: dict[str, Any], up: bool, code: str | None) -> None:
    config = {"timeout": "1s", "retry": {"mode": "standard", "max_attempts": 2}}
    async with running(_scenario(fault), config) as w:
        with capture_logs() as logs:
            for _ in range(2):
                await w.step(10)
                assert w.app.store[(OK, R)].last_success == w.clock.time()
                assert w.tracked(OK, R) == {"healthy-job": "Active"}
                bad = w.app.store[(BAD, R)]
                assert bad.up is up
                if code is not None:
                    assert bad.last_error == code
                _exposition_ok(w)
            await w.step(10)  # t = 30 s: the fault window is over
            assert w.app.store[(BAD, R)].up
            assert set(w.tracked(BAD, R)) == {"faulty-job"}
        assert not [e for e in logs if e["event"] == "poll_crashed"]


async def test_connection_refused_marks_every_target_down_and_nothing_crashes() -> None:
    async with running(_scenario({"kind": "latency", "seconds": 0})) as w:
        # The same configuration, pointed at a port nothing listens on.
        cfg = w.app.config.model_copy(update={"endpoint_url": "http://127.0.0.1:1"})
        app = App(cfg, clock=w.clock, sinks=[MemorySink()])
        async with app:
            with capture_logs() as logs:
                await app.poll_all_once()
        assert all(not ts.up for ts in app.store.targets.values())
        assert {ts.last_error for ts in app.store.targets.values()} == {"EndpointConnectionError"}
        assert not [e for e in logs if e["event"] == "poll_crashed"]


@pytest.mark.slow
async def test_a_listing_of_100000_jobs_is_tracked_and_the_other_target_stays_on_time() -> None:
    scenario = {
        "accounts": [
            {"id": OK, "jobs": [{"id": "healthy-job", "tasks": 10**7, "rate": 1}]},
            {"id": BAD, "jobs": [{"id": "big", "count": 100_000, "tasks": 10**7, "rate": 1}]},
        ]
    }
    async with running(scenario, {"timeout": "30s"}) as w:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await w.step(10)
        assert len(w.tracked(BAD, R)) == 100_000
        assert w.app.store[(OK, R)].last_success == w.clock.time()
        await w.step(10)  # an incremental poll over the same 100,000
        assert len(w.tracked(BAD, R)) == 100_000
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        # Bounded: the simulator's own 100,000 jobs live in this process too.
        assert grown_mib < 600, grown_mib
        text = generate_latest(w.app.registry).decode()
        assert text.count("s3batch_job_status{") == 100_001


def _list_jobs_body(jobs: list[dict[str, str]]) -> bytes:
    from xml.sax.saxutils import escape

    members = "".join(
        "<member>"
        f"<JobId>{escape(j['id'])}</JobId><Description>{escape(j['description'])}</Description>"
        "<Operation>S3PutObjectCopy</Operation><Priority>1</Priority>"
        f"<Status>{escape(j['status'])}</Status><CreationTime>2026-01-01T00:00:00Z</CreationTime>"
        "<ProgressSummary><TotalNumberOfTasks>10</TotalNumberOfTasks>"
        "<NumberOfTasksSucceeded>1</NumberOfTasksSucceeded><NumberOfTasksFailed>0"
        "</NumberOfTasksFailed></ProgressSummary></member>"
        for j in jobs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListJobsResult xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
        f"<Jobs>{members}</Jobs></ListJobsResult>"
    ).encode()


async def _raw_endpoint(body: bytes) -> tuple[web.AppRunner, str]:
    """An endpoint that answers every ListJobs with ``body``: for what no simulator sends."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/v20180820/jobs", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _poll_raw(body: bytes) -> tuple[App, MemorySink]:
    runner, url = await _raw_endpoint(body)
    try:
        clock = ManualClock()
        cfg = Config.model_validate(
            {"endpoint_url": url, "timeout": "20s", "targets": [{"account_id": OK}]}
        )
        sink = MemorySink()
        async with App(cfg, clock=clock, sinks=[sink]) as app:
            await app.poll_all_once()
            clock.advance(60)
            await app.poll_all_once()
        return app, sink
    finally:
        await runner.cleanup()


async def test_a_10_mb_response_is_parsed_and_its_free_text_bounded() -> None:
    long_text = "x" * 10_000
    jobs = [
        {"id": f"big-response-{i}", "description": long_text, "status": "Active"}
        for i in range(1000)
    ]
    body = _list_jobs_body(jobs)
    assert len(body) > 10_000_000
    app, _ = await _poll_raw(body)
    jobs_seen = app.store[(OK, R)].jobs or {}
    assert len(jobs_seen) == 1000
    assert app.store[(OK, R)].up


ODD = [
    {
        "id": 'quote"back\\slash',
        "description": "new\nline\ttab\rcr <&> \u00e9\U0001f600",
        "status": "Active",
    },
    {"id": "space id ünïcode", "description": "\u202eright-to-left", "status": "Failed"},
    {"id": "x" * 200, "description": "", "status": "Archiving"},
]


async def test_odd_characters_in_ids_and_descriptions_stay_escaped() -> None:
    app, _ = await _poll_raw(_list_jobs_body(ODD))
    tracked = app.store[(OK, R)].jobs or {}
    assert set(tracked) == {j["id"] for j in ODD}
    assert tracked['quote"back\\slash'].job.description.startswith("new\nline\ttab")
    text = generate_latest(app.registry).decode()
    parsed = {
        s.labels["job_id"]
        for f in text_string_to_metric_families(text)
        if f.name == "s3batch_job_status"
        for s in f.samples
    }
    assert parsed == {j["id"] for j in ODD}
    proc = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out


async def test_the_clock_jumping_back_and_forward() -> None:
    scenario = {
        "accounts": [
            {
                "id": OK,
                "jobs": [
                    {"id": "running-job", "tasks": 10**7, "rate": 1},
                    {"id": "quick-job1", "tasks": 10, "rate": 10},
                ],
            }
        ]
    }
    async with running(scenario, {"terminal_retention": "1h"}) as w:
        await w.step(30)
        assert w.tracked(OK, R) == {"running-job": "Active", "quick-job1": "Complete"}
        jobwatch_clock = ManualClock(w.clock.time())
        app = App(w.app.config, clock=jobwatch_clock, sinks=[sink := MemorySink()])
        async with app:
            await app.poll_all_once()
            jobwatch_clock.advance(-86400)  # back a day: nothing breaks, nothing is said
            w.sim.advance(10)
            with capture_logs() as logs:
                await app.poll_all_once()
            assert app.store[(OK, R)].up
            assert [e.kind for e in sink.events] == []
            jobwatch_clock.advance(86400 + 7200)  # forward past retention
            w.sim.advance(10)
            await app.poll_all_once()
            assert app.store[(OK, R)].up
            assert set(app.store[(OK, R)].jobs or {}) == {"running-job"}
            assert [e.kind for e in sink.events] == ["job_aged_out"]
        assert not [e for e in logs if e["event"] == "poll_crashed"]


async def test_a_next_token_loop_fails_the_poll_instead_of_paging_forever() -> None:
    body = _list_jobs_body(ODD[:1]).replace(b"</Jobs>", b"</Jobs><NextToken>same</NextToken>")
    app, _ = await _poll_raw(body)
    assert app.store[(OK, R)].last_error == "NextTokenLoop"
    assert not app.store[(OK, R)].up


async def test_a_broken_sink_does_not_cost_the_other_sinks_their_events() -> None:
    class Broken:
        def emit(self, event: object) -> None:
            raise RuntimeError("sink down")

    scenario = {
        "accounts": [
            {
                "id": OK,
                "jobs": [
                    {
                        "id": "will-fail-job",
                        "tasks": 10**7,
                        "rate": 1,
                        "timeline": [{"at": "15s", "action": "fail"}],
                    }
                ],
            }
        ]
    }
    async with running(scenario) as w:
        good = MemorySink()
        app = App(w.app.config, clock=w.clock, sinks=[Broken(), good])
        async with app:
            await app.poll_all_once()
            with capture_logs() as logs:
                w.sim.advance(30)
                await app.poll_all_once()
        assert [e.kind for e in good.events] == ["job_status_changed", "job_failed"]
        assert sum(e["event"] == "event_sink_failed" for e in logs) == 2

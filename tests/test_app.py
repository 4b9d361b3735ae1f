"""The running daemon: poll loops on real time, overruns, backoff, drain, the demo."""

from __future__ import annotations

import asyncio
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from jobwatch.app import App
from jobwatch.demo import run_demo
from jobwatch.log import configure_logging
from jobwatch.testing import FakeClock, MemorySink
from tests.helpers import running

A, B, C = "111111111111", "222222222222", "333333333333"
SCENARIO = {
    "accounts": [
        {"id": A, "jobs": [{"id": "loop-job-a", "tasks": 100_000, "rate": 1}]},
        {"id": C, "access_denied": True},
    ],
}


async def test_loops_poll_on_their_interval_a_failing_one_backs_off_and_stop_drains() -> None:
    """The daemon's loops on a clock the test moves: no sleeping, no counting ranges."""
    clock = FakeClock()
    async with running(SCENARIO, {"interval": "10s", "jitter": 0}, clock=clock) as w:
        store = w.app.store
        a, c = store[(A, "us-east-1")], store[(C, "us-east-1")]
        task = asyncio.create_task(w.app.run_pollers())
        await clock.settle(2)  # both polled at once (no jitter) and sleep again
        history = [(a.polls["success"], c.polls["failure"])]
        for _ in range(7):
            clock.advance(10)
            await clock.settle(2)
            history.append((a.polls["success"], c.polls["failure"]))
        # A polls every 10 s; C fails every time and waits 10, 20, 40 s.
        assert history == [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 3), (7, 3), (8, 4)]
        assert c.consecutive_failures == 4
        assert c.last_error == "AccessDenied"
        w.app.request_stop()
        await asyncio.wait_for(task, 10)
        assert clock.sleepers == 0  # every loop has ended
        assert (a.polls["success"], c.polls["failure"]) == (8, 4)  # a stop is not a poll


async def test_stop_cancels_polls_that_outlive_the_grace_period() -> None:
    hung = {
        "accounts": [{"id": A}],
        "faults": [{"kind": "hang", "operations": ["ListJobs"], "seconds": 30}],
    }
    async with running(hung, {"timeout": "30s"}) as w:
        w.app.grace = 0.3
        task = asyncio.create_task(w.app.run_pollers())
        await asyncio.sleep(0.3)
        with capture_logs() as logs:
            w.app.request_stop()
            await asyncio.wait_for(task, 5)
        assert any(e["event"] == "shutdown_cancelled_polls" for e in logs)


async def test_state_file_carries_changes_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    scenario = {
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {
                        "id": "restart-job",
                        "tasks": 100_000,
                        "rate": 1,
                        "timeline": [{"at": "60s", "action": "fail", "reason": "while down"}],
                    }
                ],
            }
        ]
    }
    async with running(scenario, {"state_file": str(state)}) as w:
        await w.step(10)
        assert w.tracked(A, "us-east-1") == {"restart-job": "Active"}
        w.app.request_stop()
        await w.app.run_pollers()  # drains at once, then saves the state
        assert state.exists()
        # A new jobwatch over the same simulator state, after the job failed.
        w.sim.advance(120)
        sink = MemorySink()
        async with App(w.app.config, clock=w.clock, sinks=[sink]) as again:
            await again.poll_all_once()
        kinds = [e.kind for e in sink.events]
        assert kinds == ["job_status_changed", "job_failed"]
        assert sink.events[1].detail is not None


async def test_demo_runs_the_simulator_and_the_daemon_in_one_process() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        with redirect_stdout(out):
            await run_demo("127.0.0.1:0", duration=3.0)
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert re.match(
        r"jobwatch demo: status page http://127\.0\.0\.1:(\d+)/ and metrics "
        r"http://127\.0\.0\.1:\1/metrics ",
        lines[0],
    ), lines[0]
    logged = [json.loads(line) for line in lines[1:]]
    events = {e["event"] for e in logged}
    assert {"demo_started", "started"} <= events
    # The demo's access-denied account shows within the first poll.
    assert any(e["event"] == "poll_failed" and e["error_code"] == "AccessDenied" for e in logged)

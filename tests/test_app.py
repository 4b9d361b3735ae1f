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
from jobwatch.testing import MemorySink
from tests.helpers import running

A, B, C = "111111111111", "222222222222", "333333333333"
SCENARIO = {
    "accounts": [
        {"id": A, "jobs": [{"id": "loop-job-a", "tasks": 100_000, "rate": 1}]},
        {"id": B, "jobs": [{"id": "slow-job-b", "tasks": 100_000, "rate": 1}]},
        {"id": C, "access_denied": True},
    ],
    # B answers slower than the interval: its polls overrun instead of stacking.
    "faults": [{"kind": "latency", "accounts": [B], "seconds": 0.5}],
}


async def test_loops_poll_on_interval_overrun_back_off_and_drain(tmp_path: Path) -> None:
    config = {"interval": "200ms", "jitter": "10ms", "resync_interval": "1s"}
    async with running(SCENARIO, config) as w:
        w.app.grace = 5.0
        task = asyncio.create_task(w.app.run_pollers())
        await asyncio.sleep(2.0)
        w.app.request_stop()
        await asyncio.wait_for(task, 10)
        store = w.app.store
        a, b, c = store[(A, "us-east-1")], store[(B, "us-east-1")], store[(C, "us-east-1")]
        assert a.polls["success"] >= 6  # about every 200 ms for 2 s
        assert a.overruns == 0
        assert b.polls["success"] >= 2
        assert b.overruns >= 2  # 500 ms polls against a 200 ms interval
        assert b.polls["success"] + b.overruns <= 2 * (2.0 / 0.5) + 2  # never stacked
        # C fails every time and backs off: 200, 400, 800 ms...
        assert 2 <= c.polls["failure"] <= 5
        assert c.consecutive_failures == c.polls["failure"]


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

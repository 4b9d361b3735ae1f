"""Overload: 2,000 targets with 10% throttled all the time.

No retry storm: a throttled target costs at most ``retry.max_attempts`` requests
per interval, the cycle still completes, and the healthy targets all succeed.
With ``adaptive``, only the throttled accounts are slowed down (botocore's own
adaptive mode, per client, slowed every account: one cycle took 575 s).
"""

from __future__ import annotations

import time

import pytest

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.simulator import FaultSpec, Simulator, SimulatorServer, generate_fleet
from jobwatch.testing import MemorySink

TARGETS = 2000
THROTTLED = TARGETS // 10


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
async def test_two_thousand_targets_ten_percent_throttled(mode: str) -> None:
    clock = ManualClock()
    scenario = generate_fleet(TARGETS, ["us-east-1"], 2, seed=7)
    sim = Simulator(scenario, clock)
    accounts = [a.id for a in scenario.accounts]
    throttled = accounts[:THROTTLED]
    sim.add_fault(
        FaultSpec.model_validate({"kind": "throttle", "accounts": throttled, "status": 503})
    )
    async with SimulatorServer(sim) as server:
        cfg = Config.model_validate(
            {
                "endpoint_url": server.url,
                "concurrency": 32,
                "timeout": "10s",
                "retry": {"mode": mode, "max_attempts": 3},
                "targets": [{"account_id": a} for a in accounts],
            }
        )
        async with App(cfg, clock=clock, sinks=[MemorySink()]) as app:
            for cycle in range(2):
                sim.reset_stats()
                started = time.monotonic()
                await app.poll_all_once()
                took = time.monotonic() - started
                per_target = [sim.request_count("ListJobs", account=a) for a in throttled]
                assert max(per_target) <= 3  # never more than max_attempts per interval
                assert min(per_target) >= 1
                healthy = [app.store[(a, "us-east-1")] for a in accounts[THROTTLED:]]
                assert all(ts.up for ts in healthy)
                assert not any(app.store[(a, "us-east-1")].up for a in throttled)
                # A healthy target's first poll is one full listing; later ones list
                # the running jobs and those that ended since: two calls.
                per_healthy = 1 if cycle == 0 else 2
                assert sim.request_count("ListJobs") == sum(per_target) + per_healthy * len(healthy)
                if mode == "adaptive":
                    # Only the throttled accounts are slowed down.
                    assert app.rate_limiter is not None
                    assert app.rate_limiter.limited == THROTTLED
                    assert all(app.rate_limiter.rate(a) is None for a in accounts[THROTTLED:])
                print(
                    f"mode={mode} cycle={cycle} wall={took:.1f}s "
                    f"requests_per_throttled_target={sum(per_target) / len(per_target):.2f} "
                    f"(max {max(per_target)})"
                )
                clock.advance(60)

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


async def _cycles(mode: str) -> list[float]:
    """Two cycles in ``mode``; checks the retry bounds and returns each cycle's wall time."""
    clock = ManualClock()
    scenario = generate_fleet(TARGETS, ["us-east-1"], 2, seed=7)
    sim = Simulator(scenario, clock)
    accounts = [a.id for a in scenario.accounts]
    throttled = accounts[:THROTTLED]
    sim.add_fault(
        FaultSpec.model_validate({"kind": "throttle", "accounts": throttled, "status": 503})
    )
    walls = []
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
                walls.append(time.monotonic() - started)
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
                    # Only the throttled accounts are rate-limited.
                    assert app.rate_limiter is not None
                    assert app.rate_limiter.limited == THROTTLED
                    assert all(app.rate_limiter.rate(a) is None for a in accounts[THROTTLED:])
                clock.advance(60)
    return walls


@pytest.mark.slow
async def test_two_thousand_targets_ten_percent_throttled() -> None:
    standard = await _cycles("standard")
    adaptive = await _cycles("adaptive")
    # Adaptive slows the throttled accounts only, so the healthy 90% finish as
    # fast as in standard mode and the cycle takes about as long (measured
    # within 10%; a limiter per client made it 100 times longer). Twice, plus a
    # second, leaves room for a busy machine.
    for cycle, (s, a) in enumerate(zip(standard, adaptive, strict=True)):
        assert a <= 2 * s + 1.0, (cycle, standard, adaptive)

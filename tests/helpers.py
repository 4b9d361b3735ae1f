"""Test helpers: a simulator on loopback and a jobwatch App wired to it."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from moto.server import ThreadedMotoServer

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.simulator import Scenario, Simulator, SimulatorServer
from jobwatch.testing import MemorySink


@dataclass
class World:
    sim: Simulator
    app: App
    sink: MemorySink
    clock: ManualClock
    url: str

    async def step(self, seconds: float) -> None:
        """Advance simulated time, then poll every target once."""
        self.sim.advance(seconds)
        await self.app.poll_all_once()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.app.registry.get_sample_value(name, labels)

    def tracked(self, account: str, region: str) -> dict[str, str]:
        jobs = self.app.store[(account, region)].jobs or {}
        return {jid: t.job.status for jid, t in jobs.items()}

    def truth(self, account: str, region: str) -> dict[str, str]:
        return {j.job_id: j.status for j in self.sim.jobs(account, region) if j.listed}


def targets_of(scenario: Mapping[str, Any]) -> list[dict[str, Any]]:
    default_regions = scenario.get("regions", ["us-east-1"])
    return [
        {"account_id": a["id"], "regions": list(a.get("regions") or default_regions)}
        for a in scenario["accounts"]
    ]


@asynccontextmanager
async def running(
    scenario: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    clock: ManualClock | None = None,
) -> AsyncIterator[World]:
    """A simulator for ``scenario`` and a started (not yet polling) App against it.

    Both share ``clock``: a ``ManualClock`` by default (loops would run on real
    time), or a ``jobwatch.testing.FakeClock`` to drive the loops' timers too.
    """
    clock = clock if clock is not None else ManualClock()
    sim = Simulator(Scenario.model_validate(scenario), clock)
    async with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        cfg = Config.model_validate(
            {
                "interval": "10s",
                "jitter": 0,
                "timeout": "5s",
                "retry": {"mode": "standard", "max_attempts": 3},
                "endpoint_url": server.url,
                "targets": targets_of(scenario),
                **(config or {}),
            }
        )
        sink = MemorySink()
        app = App(cfg, clock=clock, sinks=[sink])
        async with app:
            yield World(sim, app, sink, clock, server.url)


class Writes(Protocol):
    """A collector that writes its own text (jobwatch.metrics' collectors)."""

    async def exposition_chunks(self, slice_seconds: float = ...) -> list[bytes]: ...


def written(collector: Writes) -> bytes:
    """What the ``/metrics`` writer writes for ``collector``, out of an event loop.

    Slices of 0 s: the writer gives the loop a turn at every chance it has.
    """
    return b"".join(asyncio.run(collector.exposition_chunks(slice_seconds=0)))


def free_port() -> int:
    """A loopback port nothing listens on (now): for servers, or a refused endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server (STS, Organizations, SQS...) on loopback, for as long as the block runs."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset_moto(url: str) -> None:
    """Empty moto's server at ``url`` (it keeps its state across a module's tests)."""
    assert url.startswith("http://127.0.0.1:")  # never anything but loopback
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (loopback)
        assert resp.status == 200

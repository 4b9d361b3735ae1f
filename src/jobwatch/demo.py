"""``jobwatch demo``: the simulator and the daemon in one process, no AWS needed."""

from __future__ import annotations

import sys

from aiobotocore.session import AioSession

from jobwatch.app import App
from jobwatch.clock import SystemClock
from jobwatch.config import Config
from jobwatch.log import get_logger
from jobwatch.serve import serve
from jobwatch.simulator import (
    Scenario,
    Simulator,
    SimulatorServer,
    builtin_scenario,
    load_scenario,
)

__all__ = ["demo_config", "run_demo"]


def demo_config(scenario: Scenario, endpoint_url: str, listen: str) -> Config:
    """A configuration that watches every account and region of ``scenario`` briskly.

    Thresholds are short so that every case of the demo shows within two minutes.
    """
    targets = [
        {"account_id": a.id, "regions": list(a.regions or scenario.regions)}
        for a in scenario.accounts
    ]
    return Config.model_validate(
        {
            "interval": "5s",
            "jitter": "1s",
            "resync_interval": "60s",
            "timeout": "3s",
            "retry": {"mode": "standard", "max_attempts": 3},
            "listen": listen,
            "endpoint_url": endpoint_url,
            "terminal_retention": "1h",
            "stall": {
                "no_progress": "20s",
                "status_limits": {"Suspended": "30s", "Preparing": "60s", "Ready": "60s"},
            },
            "targets": targets,
        }
    )


async def run_demo(
    listen: str = "127.0.0.1:9877",
    *,
    duration: float | None = None,
    scenario_path: str | None = None,
) -> None:
    """Run until interrupted (or for ``duration`` seconds)."""
    scenario = load_scenario(scenario_path) if scenario_path else builtin_scenario("demo")
    sim = Simulator(scenario, SystemClock())
    async with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        config = demo_config(scenario, server.url, listen)
        session = AioSession()
        # The simulator accepts any key; never send a real one to it.
        session.set_credentials("demo-access-key", "demo-secret-key")
        app = App(config, session=session)
        host = listen.rpartition(":")[0]

        def ready(port: int) -> None:
            sys.stdout.write(
                f"jobwatch demo: status page http://{host}:{port}/ and metrics "
                f"http://{host}:{port}/metrics (simulator at {server.url}, "
                f"{len(app.targets)} targets); events follow as JSON lines; Ctrl-C stops\n"
            )
            sys.stdout.flush()
            get_logger("jobwatch").info(
                "demo_started",
                simulator=server.url,
                metrics_port=port,
                status_page=f"http://{host}:{port}/",
            )

        await serve(app, ready=ready, stop_after=duration)

"""``jobwatch demo``: the simulator and the daemon in one process, no AWS needed."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from aiobotocore.session import AioSession

from jobwatch.app import App
from jobwatch.clock import SystemClock
from jobwatch.config import Config
from jobwatch.log import get_logger
from jobwatch.serve import serve
from jobwatch.simulator import (
    EventPublisher,
    PushFaults,
    Scenario,
    Simulator,
    SimulatorServer,
    builtin_scenario,
    load_scenario,
)

__all__ = ["demo_config", "run_demo"]


#: What goes wrong between the simulator and the demo's queue: polling reconciles it.
DEMO_PUSH_FAULTS = PushFaults(loss=0.2, duplicate=0.1, delay=2.0, reorder=True)


def demo_config(
    scenario: Scenario, endpoint_url: str, listen: str, push: dict[str, Any] | None = None
) -> Config:
    """A configuration that watches every account and region of ``scenario`` briskly.

    Thresholds are short so that every case of the demo shows within two minutes.
    ``push``: the ``push`` section, for ``jobwatch demo --push``.
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
            **({"push": push} if push is not None else {}),
        }
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def local_sqs(session: AioSession) -> AsyncIterator[tuple[str, str, str]]:
    """moto's SQS on loopback with a queue and its dead-letter queue:
    (endpoint, queue URL, dead-letter queue URL). Needs ``moto[server]`` (the dev extras).

    moto keeps its state per process, shared by every server in it: the names are
    the demo's own, so a test's queues of the same process do not clash with them.
    """
    try:
        server_class: Any = importlib.import_module("moto.server").ThreadedMotoServer
    except ImportError:
        raise SystemExit(
            "jobwatch demo --push needs moto's server: pip install 'moto[server]' "
            "(it is in jobwatch's dev extras)"
        ) from None
    # moto's HTTP server logs every request through werkzeug: not the demo's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = server_class(ip_address="127.0.0.1", port=port, verbose=False)
    await asyncio.to_thread(server.start)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        create: Any = session.create_client
        async with create("sqs", region_name="us-east-1", endpoint_url=endpoint) as sqs:
            dead = (await sqs.create_queue(QueueName="jobwatch-demo-events-dlq"))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
            redrive = {"deadLetterTargetArn": attrs["Attributes"]["QueueArn"], "maxReceiveCount": 5}
            url = (
                await sqs.create_queue(
                    QueueName="jobwatch-demo-events",
                    Attributes={"RedrivePolicy": json.dumps(redrive)},
                )
            )["QueueUrl"]
        yield endpoint, url, dead
    finally:
        await asyncio.to_thread(server.stop)


async def run_demo(
    listen: str = "127.0.0.1:9877",
    *,
    duration: float | None = None,
    scenario_path: str | None = None,
    push: bool = False,
) -> None:
    """Run until interrupted (or for ``duration`` seconds).

    ``push``: also run moto's SQS on loopback; the simulator publishes every job
    event there (with loss, duplicates, delay and reordering) and jobwatch
    consumes them, with polling reconciling (docs/push.md).
    """
    scenario = load_scenario(scenario_path) if scenario_path else builtin_scenario("demo")
    sim = Simulator(scenario, SystemClock())
    session = AioSession()
    # The simulator and moto accept any key; never send a real one to them.
    session.set_credentials("demo-access-key", "demo-secret-key")
    async with (
        SimulatorServer(sim, host="127.0.0.1", port=0) as server,
        AsyncExitStack() as stack,
    ):
        push_section = None
        if push:
            endpoint, url, dead = await stack.enter_async_context(local_sqs(session))
            publisher = await stack.enter_async_context(
                EventPublisher(
                    sim,
                    endpoint_url=endpoint,
                    queue_url=url,
                    faults=DEMO_PUSH_FAULTS,
                    session=session,
                )
            )
            pump = asyncio.create_task(publisher.run(0.5), name="demo publisher")
            stack.push_async_callback(_cancelled, pump)
            push_section = {
                "queues": [{"url": url, "region": "us-east-1", "dead_letter_url": dead}],
                "endpoint_url": endpoint,
                "wait": "5s",
                "dead_letter_interval": "10s",
            }
        config = demo_config(scenario, server.url, listen, push_section)
        app = App(config, session=session)
        host = listen.rpartition(":")[0]

        def ready(port: int) -> None:
            via = (
                ", job events through moto's SQS (20% lost, polling reconciles: "
                "see jobwatch_push_*)"
                if push
                else ""
            )
            sys.stdout.write(
                f"jobwatch demo: status page http://{host}:{port}/ and metrics "
                f"http://{host}:{port}/metrics (simulator at {server.url}, "
                f"{len(app.targets)} targets{via}); events follow as JSON lines; Ctrl-C stops\n"
            )
            sys.stdout.flush()
            get_logger("jobwatch").info(
                "demo_started",
                simulator=server.url,
                metrics_port=port,
                status_page=f"http://{host}:{port}/",
            )

        await serve(app, ready=ready, stop_after=duration)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])

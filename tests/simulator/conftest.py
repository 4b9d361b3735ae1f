"""Fixtures for the simulator tests: a server on loopback and real aiobotocore clients.

Every client, session and server is closed by the test's exit stack, so the
``filterwarnings = error`` setting catches any leak.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from jobwatch.aws import use_custom_endpoint
from jobwatch.clock import ManualClock
from jobwatch.simulator import Scenario, Simulator, SimulatorServer, scenario_from_dict

#: SigV4-shaped header for raw aiohttp requests (the simulator never checks the signature).
FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)


@pytest.fixture(autouse=True)
def _strip_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may find real AWS settings or credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero botocore's retry sleeps; which errors are retried stays botocore's decision."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


Serve = Callable[[Scenario | dict[str, Any]], Awaitable[tuple[Simulator, SimulatorServer]]]
Connect = Callable[..., Awaitable[Any]]


@pytest.fixture
def serve(stack: AsyncExitStack, clock: ManualClock) -> Serve:
    """``await serve(scenario)`` -> (simulator, running server) on 127.0.0.1, port 0."""

    async def _serve(scenario: Scenario | dict[str, Any]) -> tuple[Simulator, SimulatorServer]:
        if not isinstance(scenario, Scenario):
            scenario = scenario_from_dict(scenario)
        sim = Simulator(scenario, clock)
        server = await stack.enter_async_context(SimulatorServer(sim))
        return sim, server

    return _serve


@pytest.fixture
def connect(stack: AsyncExitStack) -> Connect:
    """``await connect(url, region, max_attempts=0, read_timeout=10)`` -> s3control client."""
    session = get_session()

    async def _connect(
        url: str,
        region: str = "us-east-1",
        *,
        max_attempts: int = 0,
        mode: str = "standard",
        read_timeout: float = 10.0,
    ) -> Any:
        config = AioConfig(
            retries={"mode": mode, "max_attempts": max_attempts},
            read_timeout=read_timeout,
            connect_timeout=5,
        )
        client = await stack.enter_async_context(
            session.create_client(
                "s3control",
                region_name=region,
                endpoint_url=url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=config,
            )
        )
        use_custom_endpoint(client)
        return client

    return _connect

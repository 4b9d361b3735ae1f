"""The process lifecycle: signals, collector tuning, and serve() around an App."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable

import pytest
from aiohttp import ClientSession

from jobwatch.app import App
from jobwatch.config import Config
from jobwatch.model import Account
from jobwatch.serve import SignalHandler, capture_signals, gc_tuned, serve
from tests.helpers import running

SCENARIO = {
    "accounts": [{"id": "111111111111", "jobs": [{"id": "serve-job", "tasks": 10, "rate": 1}]}]
}


async def test_first_signal_stops_on_the_loop_second_forces_and_handlers_come_back() -> None:
    stops: list[str] = []
    codes: list[int] = []
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGTERM)
    handler = SignalHandler(lambda: stops.append("stop"), codes.append)
    with capture_signals(handler, loop):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)  # the handler hands the first signal to the loop
        assert stops == ["stop"]
        assert codes == []
        os.kill(os.getpid(), signal.SIGINT)
        assert codes == [128 + signal.SIGINT]  # on the spot, loop or no loop
    assert signal.getsignal(signal.SIGTERM) is before
    assert stops == ["stop"]


def test_gc_tuning_is_undone_on_exit() -> None:
    thresholds = gc.get_threshold()
    with gc_tuned():
        assert gc.get_threshold()[2] >= 100
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("stop", ["signal", "timer"])
async def test_serve_runs_the_app_until_asked_to_stop(stop: str) -> None:
    async with running(SCENARIO, {"interval": "1s", "jitter": "0s"}) as w:
        ports: list[int] = []
        listening = asyncio.Event()

        def ready(port: int) -> None:
            ports.append(port)
            listening.set()

        before = signal.getsignal(signal.SIGINT)
        task = asyncio.create_task(
            serve(
                w.app,
                "127.0.0.1:0",
                ready=ready,
                stop_after=0.5 if stop == "timer" else None,
                force_exit=lambda code: pytest.fail(f"forced exit {code}"),
            )
        )
        await asyncio.wait_for(listening.wait(), 10)
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{ports[0]}/healthz") as r:
            assert r.status == 200
        if stop == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(task, 10)
        assert w.app.stop_event.is_set()
        assert signal.getsignal(signal.SIGINT) is before


class _Interrupted(BaseException):
    """Not an Exception: nothing in start() may swallow it."""


class _InterruptingAccounts:
    """An AccountSource whose listing is interrupted, as a KeyboardInterrupt would be."""

    async def fetch(self, want_tags: Callable[[Account], bool]) -> list[Account]:
        raise _Interrupted


async def test_a_failed_start_closes_what_it_opened() -> None:
    config = Config.model_validate({"discovery": {}, "endpoint_url": "http://127.0.0.1:9"})
    app = App(config, account_source=_InterruptingAccounts())
    with pytest.raises(_Interrupted):
        await app.start()  # the client pool was opened before discovery ran
    assert app.source is not None
    assert not app._stack._exit_callbacks  # everything opened was closed again
    assert app.targets == []

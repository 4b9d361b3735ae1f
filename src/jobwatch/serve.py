"""The process around an :class:`~jobwatch.app.App`: signals, garbage collector, HTTP.

Everything here changes process-wide state, so it lives apart from ``App``,
which can be embedded (tests, benchmarks, ``jobwatch once``) without touching
signal handlers or the collector. ``jobwatch run`` and ``jobwatch demo`` both
go through :func:`serve`.

Signals work as in uvicorn: the first SIGINT or SIGTERM asks the app to stop
(polls in progress drain within the app's grace period); a second one exits at
once. Handlers are installed for the duration of :func:`serve` only and the
previous ones are restored afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from jobwatch.app import App
from jobwatch.log import get_logger

__all__ = ["HANDLED_SIGNALS", "SignalHandler", "capture_signals", "gc_tuned", "serve"]

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_log = get_logger("jobwatch")


class SignalHandler:
    """Counts exit signals: the first asks for a stop, the second forces an exit."""

    def __init__(
        self, request_stop: Callable[[], None], force_exit: Callable[[int], Any] = os._exit
    ) -> None:
        self._request_stop = request_stop
        self._force_exit = force_exit
        self.signals = 0

    def handle_exit(self, sig: int) -> None:
        """One more exit signal: stop on the first, force an exit on any later one."""
        self.signals += 1
        if self.signals == 1:
            _log.info("stopping", signal=signal.Signals(sig).name)
            self._request_stop()
        else:
            self.force(sig)

    def force(self, sig: int) -> None:
        _log.warning("forced_exit", signal=signal.Signals(sig).name)
        self._force_exit(128 + sig)


@contextmanager
def capture_signals(
    handler: SignalHandler, loop: asyncio.AbstractEventLoop
) -> Iterator[SignalHandler]:
    """Route SIGINT and SIGTERM to ``handler``; restore the previous handlers after.

    The first signal is handed to ``loop`` (``call_soon_threadsafe`` wakes it
    safely); a later one forces the exit on the spot, so a stuck loop still
    exits. Outside the main thread, where Python cannot install handlers, this
    installs nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    received = 0

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received == 1:
            loop.call_soon_threadsafe(handler.handle_exit, sig)
        else:
            handler.force(sig)

    original = {sig: signal.signal(sig, on_signal) for sig in HANDLED_SIGNALS}
    try:
        yield handler
    finally:
        for sig, previous in original.items():
            signal.signal(sig, previous)


@contextmanager
def gc_tuned() -> Iterator[None]:
    """Garbage collection for a long-running daemon, undone on exit.

    Everything allocated at start-up (modules, config, clients, the store) lives
    for the whole run: :func:`gc.freeze` keeps full collections from walking it.
    A big account's listing keeps thousands of jobs alive while it runs; with the
    default thresholds that sets off a full collection every second or so under
    load, each holding the loop 30-70 ms, so full collections are made rarer
    (young ones are unchanged). docs/performance.md has the measurements.
    """
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], 100))
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def serve(
    app: App,
    listen: str | None = None,
    *,
    ready: Callable[[int], None] | None = None,
    stop_after: float | None = None,
    force_exit: Callable[[int], Any] = os._exit,
) -> None:
    """Run ``app`` as a process does: HTTP server, poll loops, signals, until stopped.

    ``ready`` is called with the bound HTTP port once the server listens;
    ``stop_after`` stops the app after that many seconds (the demo's ``--duration``).
    """
    loop = asyncio.get_running_loop()
    handler = SignalHandler(app.request_stop, force_exit)
    with capture_signals(handler, loop):
        async with app:
            port = await app.serve_http(listen)
            if ready is not None:
                ready(port)
            timer = None if stop_after is None else loop.call_later(stop_after, app.request_stop)
            try:
                with gc_tuned():
                    await app.run_pollers()
            finally:
                if timer is not None:
                    timer.cancel()
    _log.info("stopped")

"""Wires jobwatch together and owns its lifecycle.

Every resource lives in one :class:`contextlib.AsyncExitStack`; the pollers run
in one :class:`asyncio.TaskGroup`. A stop request lets in-flight polls finish
within ``grace`` seconds, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import gc
import random
import ssl
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from aiobotocore.session import AioSession
from aiohttp import web
from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from jobwatch import __version__
from jobwatch.aws import ClientPool
from jobwatch.clock import Clock, SystemClock
from jobwatch.config import Config, TLSConfig
from jobwatch.diff import DiffPolicy
from jobwatch.discovery import (
    AccountSource,
    Discovery,
    OrganizationsSource,
    cache_path_for,
)
from jobwatch.events import EventRecord, EventSink, LogSink, emit_all
from jobwatch.http import KEEPALIVE_TIMEOUT, create_http_app
from jobwatch.log import get_logger
from jobwatch.metrics import (
    DiscoveryCollector,
    JobwatchCollector,
    ShardCollector,
    make_registry,
    share_cpu_turns,
)
from jobwatch.model import Target
from jobwatch.persist import Committer
from jobwatch.poller import PollSettings, TargetPoller
from jobwatch.ratelimit import AccountRateLimiter
from jobwatch.shard import resolve_shard
from jobwatch.source import JobSource, S3ControlJobSource
from jobwatch.state import Store

__all__ = ["App", "policy_from_config", "settings_from_config"]

_log = get_logger("jobwatch")
#: The first discovery refresh holds start-up (and /healthz) for at most this long;
#: the liveness probe must not kill a pod whose Organizations call is slow.
STARTUP_DISCOVERY_TIMEOUT = 20.0
#: After a failed discovery refresh, the next one comes this soon (or at the interval).
DISCOVERY_RETRY = 60.0


def tls_context(tls: TLSConfig | None) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or newer), or None for plain HTTP."""
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def policy_from_config(config: Config) -> DiffPolicy:
    return DiffPolicy(
        no_progress=config.stall.no_progress,
        status_limits=dict(config.stall.status_limits),
        task_failure_ratio=config.stall.task_failure_ratio,
        task_failure_min_tasks=config.stall.task_failure_min_tasks,
        terminal_retention=config.terminal_retention,
    )


def settings_from_config(config: Config) -> PollSettings:
    return PollSettings(
        interval=config.interval, jitter=config.jitter, resync_interval=config.resync_interval
    )


@dataclass
class App:
    """jobwatch for one configuration. ``source`` and ``sinks`` may be injected."""

    config: Config
    clock: Clock = field(default_factory=SystemClock)
    sinks: Sequence[EventSink] | None = None
    source: JobSource | None = None
    rng: random.Random = field(default_factory=random.Random)
    grace: float = 10.0
    #: The aiobotocore session to build clients from (default: a new one, default chain).
    session: AioSession | None = None
    #: Where discovered accounts come from (default: AWS Organizations).
    account_source: AccountSource | None = None

    def __post_init__(self) -> None:
        shard = self.config.shard
        self.shard = resolve_shard(config_ordinal=shard.ordinal, config_total=shard.total)
        self.discovery: Discovery | None = None
        if self.config.discovery is not None:
            source = self.account_source or OrganizationsSource(
                self.config.discovery,
                session=self.session,
                timeout=self.config.timeout,
                max_attempts=self.config.retry.max_attempts,
            )
            state_file = self.config.state_file
            cache = cache_path_for(state_file) if state_file is not None else None
            self.discovery = Discovery(self.config, source, self.clock, cache)
            self.discovery.load_cache()
        self.candidates = 0
        self.targets = self._wanted_targets()
        self.store = Store(self.targets)
        self.collector = JobwatchCollector(self.store, self.config.label_names, __version__)
        self.registry: CollectorRegistry = make_registry(self.collector)
        self.registry.register(ShardCollector(self.shard, lambda: self.candidates))
        if self.discovery is not None:
            self.registry.register(DiscoveryCollector(self.discovery))
        ProcessCollector(registry=self.registry)
        self.stop_event = asyncio.Event()
        self.http_port: int | None = None
        self.pollers: dict[tuple[str, str], TargetPoller] = {}
        self.committer: Committer | None = None
        self.rate_limiter: AccountRateLimiter | None = None
        self._stack = AsyncExitStack()
        self._pool: ClientPool | None = None
        self._make_poller: Callable[[Target], TargetPoller] | None = None
        self._tasks: dict[tuple[str, str], tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._running = False

    def _wanted_targets(self) -> list[Target]:
        """Static and discovered targets merged, then this shard's share of them."""
        if self.discovery is not None:
            candidates = self.discovery.targets()
        else:
            candidates = self.config.resolved_targets()
        self.candidates = len(candidates)
        return self.shard.select(candidates)

    async def start(self) -> None:
        """Create clients and the HTTP server (not the poll loops): see :meth:`run`."""
        if self.sinks is None:
            self.sinks = [LogSink()]
        sinks = list(self.sinks)
        if self.discovery is not None:
            # Before the state file is read, so discovered targets get their snapshots.
            timeout = min(self.discovery.timeout, STARTUP_DISCOVERY_TIMEOUT)
            if await self.discovery.refresh(timeout):
                await self.update_targets()
        publish: Callable[[list[EventRecord]], None]
        if self.config.state_file is not None:
            committer = Committer(self.store, self.config.state_file, sinks, self.clock.time)
            self._stack.callback(committer.close)
            committer.recover()
            self.store.on_change = committer.mark_dirty
            self.committer = committer
            publish = committer.publish
        else:

            def publish(events: list[EventRecord]) -> None:
                for event in events:
                    emit_all(sinks, event)

        source = self.source
        if source is None:
            rate = AccountRateLimiter() if self.config.retry.mode == "adaptive" else None
            self.rate_limiter = rate

            def on_attempt(account: str, region: str, operation: str, outcome: str) -> None:
                self.store.record_api_request((account, region), operation, outcome)
                if rate is not None:
                    rate.record(account, throttled=outcome == "throttled")

            pool = ClientPool(
                endpoint_url=self.config.endpoint_url,
                # "adaptive" is per account in jobwatch (ratelimit.py): botocore's own
                # adaptive mode would slow every account sharing the region's client.
                retry_mode="standard",
                max_attempts=self.config.retry.max_attempts,
                timeout=self.config.timeout,
                max_pool_connections=self.config.concurrency,
                on_attempt=on_attempt,
                session=self.session,
            )
            await self._stack.enter_async_context(pool)
            for target in self.targets:
                pool.register(target)
            self._pool = pool
            # A scrape's rendering goes before the polls' page parsing.
            share_cpu_turns(self.registry, pool.turns)
            source = S3ControlJobSource(pool, asyncio.Semaphore(self.config.concurrency), rate)
            self.source = source
        policy = policy_from_config(self.config)
        settings = settings_from_config(self.config)
        job_source = source

        def make_poller(t: Target) -> TargetPoller:
            return TargetPoller(
                t, job_source, self.store, publish, self.clock, policy, settings, self.rng
            )

        self._make_poller = make_poller
        self.pollers = {t.key: make_poller(t) for t in self.targets}

    async def serve_http(self, listen: str | None = None) -> int:
        """Start the HTTP server; returns the bound port (``listen`` may use port 0)."""
        host, _, port = (listen or self.config.listen).rpartition(":")
        web_config = self.config.web
        runner = web.AppRunner(
            create_http_app(self.store, self.registry, web_config.basic_auth),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, host.strip("[]"), int(port), ssl_context=tls_context(web_config.tls)
        )
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.http_port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        return self.http_port

    async def poll_all_once(self) -> None:
        """Poll every target once, concurrently (``jobwatch once`` and tests)."""
        async with asyncio.TaskGroup() as tg:
            for p in list(self.pollers.values()):
                tg.create_task(p.poll_once())
        if self.committer is not None:
            await self.committer.commit()

    async def run_pollers(self) -> None:
        """Run every poll loop until :meth:`request_stop`; then drain within ``grace``.

        With discovery, the account list is refreshed every ``discovery.interval``
        and loops start and stop as targets join and leave.
        """
        self._running = True
        for p in self.pollers.values():
            self._spawn(p)
        discover = None
        if self.discovery is not None:
            discover = asyncio.create_task(self._discover(), name="discovery")
        saver_stop = asyncio.Event()
        saver = None
        if self.committer is not None:
            saver = asyncio.create_task(self.committer.run(saver_stop), name="state committer")
        _log.info("started", targets=len(self.pollers), shard=str(self.shard), version=__version__)
        # Everything allocated so far lives for the whole run: keep the
        # collector from walking it on every full collection.
        gc.freeze()
        # A big account's listing keeps thousands of jobs alive while it runs;
        # with the default thresholds that sets off a full collection every
        # second or so under load, each holding the loop 30-70 ms. Rarer full
        # collections; young ones as before (docs/performance.md).
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], 100))
        try:
            await self.stop_event.wait()
        finally:
            gc.set_threshold(*thresholds)
            self._running = False
            if discover is not None:
                discover.cancel()
                await asyncio.wait([discover])
                if not discover.cancelled() and discover.exception() is not None:
                    _log.error("discovery_loop_died", error=repr(discover.exception()))
            running, self._tasks = self._tasks, {}
            for _, stop in running.values():
                stop.set()
            tasks = [task for task, _ in running.values()]
            done: set[asyncio.Task[None]] = set()
            pending: set[asyncio.Task[None]] = set()
            if tasks:
                done, pending = await asyncio.wait(tasks, timeout=self.grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
                _log.warning("shutdown_cancelled_polls", count=len(pending))
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    _log.error("poll_loop_died", error=repr(t.exception()))
            if saver is not None:
                # After the polls drained, so the last save has their results.
                saver_stop.set()
                await saver

    def _spawn(self, poller: TargetPoller) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop), name=f"poll {poller.target}")
        self._tasks[poller.target.key] = (task, stop)

    async def _stop_poller(self, key: tuple[str, str]) -> None:
        """End a target's loop now: a poll in progress is cancelled, its result unwanted."""
        self.pollers.pop(key, None)
        entry = self._tasks.pop(key, None)
        if entry is None:
            return
        task, stop = entry
        stop.set()
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            _log.error("poll_loop_died", error=repr(task.exception()))

    async def update_targets(self) -> None:
        """Make targets, store and poll loops match what is wanted now.

        A target that left loses its loop, its series and its part of the state
        file; one that joined gets a loop (and a snapshot from the state file if
        it had one); one whose settings changed (role, labels) gets a new loop
        and keeps its snapshot.
        """
        wanted = {t.key: t for t in self._wanted_targets()}
        current = {key: ts.target for key, ts in self.store.targets.items()}
        removed = [key for key in current if key not in wanted]
        changed = [t for key, t in wanted.items() if key in current and current[key] != t]
        added = [t for key, t in wanted.items() if key not in current]
        for key in [*removed, *(t.key for t in changed)]:
            await self._stop_poller(key)
        for key in removed:
            self.store.remove(key)
            _log.info("target_removed", aws_account_id=key[0], aws_region=key[1])
        for kind, targets in (("target_updated", changed), ("target_added", added)):
            for t in targets:
                self.store.add(t)
                if self._pool is not None:
                    self._pool.register(t)
                if self._make_poller is not None:
                    poller = self._make_poller(t)
                    self.pollers[t.key] = poller
                    if self._running:
                        self._spawn(poller)
                _log.info(kind, aws_account_id=t.account_id, aws_region=t.region)
        self.targets = list(wanted.values())
        if self.discovery is not None and self._make_poller is not None:
            changes = self.discovery.target_changes
            changes.update(added=len(added), removed=len(removed), updated=len(changed))

    async def _discover(self) -> None:
        """Refresh the discovered accounts on their interval, until cancelled."""
        discovery = self.discovery
        assert discovery is not None
        while True:
            delay = discovery.interval
            if not discovery.up:
                delay = min(delay, DISCOVERY_RETRY)
            await asyncio.sleep(delay)
            if not await discovery.refresh():
                continue
            try:
                await self.update_targets()
            except Exception as e:  # a bug here must not end discovery for good
                _log.exception("targets_update_crashed", error=repr(e)[:500])

    def request_stop(self) -> None:
        self.stop_event.set()

    async def close(self) -> None:
        """Close the HTTP server and every client. Idempotent."""
        await self._stack.aclose()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""Wires jobwatch together: config -> targets -> clients -> poll loops -> metrics.

Every resource lives in one :class:`contextlib.AsyncExitStack`, closed by
:meth:`App.close`. The poll loops belong to a :class:`~jobwatch.supervisor.Supervisor`;
a stop request lets polls in progress finish within ``grace`` seconds, then
cancels what is left. Process-wide concerns (signals, the garbage collector) are
``serve.py``'s.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import AioSession
from aiohttp import web
from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from jobwatch import __version__
from jobwatch.aws import ClientPool, open_queue, prepare_session
from jobwatch.clock import Clock, SystemClock
from jobwatch.config import Config, PushConfig, TLSConfig
from jobwatch.diff import DiffPolicy
from jobwatch.discovery import (
    AccountSource,
    Discovery,
    OrganizationsSource,
    cache_path_for,
)
from jobwatch.events import EventRecord, EventSink, LogSink, emit_all, linked_to_status_page
from jobwatch.http import KEEPALIVE_TIMEOUT, create_http_app
from jobwatch.log import get_logger
from jobwatch.metrics import (
    DiscoveryCollector,
    JobwatchCollector,
    PushCollector,
    Selection,
    ShardCollector,
    filtered,
    make_registry,
    share_cpu_turns,
)
from jobwatch.model import Target
from jobwatch.persist import Committer
from jobwatch.poller import PollSettings, TargetPoller
from jobwatch.push import PushConsumer
from jobwatch.ratelimit import AccountRateLimiter
from jobwatch.shard import Shard, resolve_shard
from jobwatch.source import JobSource, S3ControlJobSource
from jobwatch.state import Store
from jobwatch.supervisor import Supervisor
from jobwatch.targets import resolve_targets

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


def selection_from_config(config: Config) -> Selection:
    """What ``/metrics`` shows (``metrics:``); a pattern matching no family is a ConfigError."""
    shown = config.metrics
    selection = Selection(tuple(shown.allow), tuple(shown.deny), shown.ended_jobs)
    selection.check()
    return selection


def settings_from_config(config: Config) -> PollSettings:
    return PollSettings(
        interval=config.interval, jitter=config.jitter, resync_interval=config.resync_interval
    )


class App:
    """jobwatch for one configuration, embeddable: it changes no process-wide state.

    ``source`` (default: S3 Control through aiobotocore), ``sinks`` (default: the
    JSON log), ``session``, ``account_source`` (default: AWS Organizations) and
    ``shard`` (default: the one the config names) may be injected. Nothing is
    opened before :meth:`start`; :func:`jobwatch.serve.serve` adds signals, the
    collector tuning and the HTTP server for a daemon.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        sinks: Sequence[EventSink] | None = None,
        source: JobSource | None = None,
        rng: random.Random | None = None,
        grace: float = 10.0,
        session: AioSession | None = None,
        account_source: AccountSource | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.sinks = list(sinks) if sinks is not None else [LogSink()]
        self.source = source
        self.rng = rng or random.Random()
        self.grace = grace
        #: One session for every AWS client (s3control, Organizations, SQS): one
        #: credential chain, one copy of each service model.
        self.session = prepare_session(session)
        self.shard = shard or resolve_shard(
            config_ordinal=config.shard.ordinal, config_total=config.shard.total
        )
        self.discovery: Discovery | None = None
        if config.discovery is not None:
            self.discovery = Discovery(
                config,
                account_source
                or OrganizationsSource(
                    config.discovery,
                    session=self.session,
                    timeout=config.timeout,
                    max_attempts=config.retry.max_attempts,
                ),
                self.clock,
                cache_path_for(config.state_file) if config.state_file is not None else None,
            )
        self.store = Store(())
        selection = selection_from_config(config)
        self.collector = JobwatchCollector(self.store, config.label_names, __version__, selection)
        self.registry: CollectorRegistry = make_registry(self.collector)
        self._candidates = 0
        self.registry.register(ShardCollector(self.shard, lambda: self._candidates, selection))
        #: The poll loops, one per target.
        self.supervisor = Supervisor(self.store, self._make_poller, self._register)
        if self.discovery is not None:
            self.registry.register(
                DiscoveryCollector(self.discovery, self.supervisor.changes, selection)
            )
        #: The push fast path (docs/push.md), with a ``push:`` section.
        self.push: PushConsumer | None = None
        if config.push is not None:
            self.push = PushConsumer(
                self.supervisor.poller,
                self.clock,
                wait=config.push.wait,
                batch_size=config.push.batch_size,
                visibility_timeout=config.push.visibility_timeout,
                dead_letter_interval=config.push.dead_letter_interval,
                rng=self.rng,
            )
            self.registry.register(PushCollector(self.push.stats, selection))
        self.registry.register(filtered(ProcessCollector(registry=None), selection))
        self.stop_event = asyncio.Event()
        self.http_port: int | None = None
        self.committer: Committer | None = None
        self.rate_limiter: AccountRateLimiter | None = None
        self._publish: Callable[[list[EventRecord]], None] = self._emit
        self._pool: ClientPool | None = None
        self._stack = AsyncExitStack()
        self._policy = policy_from_config(config)
        self._settings = settings_from_config(config)

    @property
    def targets(self) -> list[Target]:
        """The targets this process watches now."""
        return self.supervisor.targets

    @property
    def pollers(self) -> Mapping[tuple[str, str], TargetPoller]:
        return self.supervisor.pollers

    def _wanted(self) -> list[Target]:
        accounts = (self.discovery.accounts or []) if self.discovery is not None else []
        resolved = resolve_targets(self.config, accounts, self.shard)
        self._candidates = len(resolved.candidates)
        return list(resolved.targets)

    async def start(self) -> None:
        """Open clients and load state (not the poll loops: see :meth:`run_pollers`).

        If anything fails, what was opened is closed again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        if self.source is None:
            self.source = await self._open_s3control()
        if self.discovery is not None:
            self.discovery.load_cache()
            # Before the state file is read, so discovered targets get their snapshots.
            timeout = min(self.discovery.timeout, STARTUP_DISCOVERY_TIMEOUT)
            await self.discovery.refresh(timeout)
        await self.supervisor.reconcile(self._wanted(), count=False)
        if self.config.push is not None:
            await self._open_queues(self.config.push)
        if self.config.state_file is not None:
            committer = Committer(self.store, self.config.state_file, self.sinks, self.clock.time)
            self._stack.callback(committer.close)
            committer.recover()
            self.store.on_change = committer.mark_dirty
            self.committer = committer
            self._publish = committer.publish

    async def _open_s3control(self) -> JobSource:
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
        self._pool = pool
        # A scrape's rendering goes before the polls' page parsing.
        share_cpu_turns(self.registry, pool.turns)
        return S3ControlJobSource(pool, asyncio.Semaphore(self.config.concurrency), rate)

    async def _open_queues(self, push: PushConfig) -> None:
        assert self.push is not None
        for q in push.queues:
            settings: dict[str, Any] = {
                "region": q.queue_region,
                "endpoint_url": push.endpoint_url,
                "wait": push.wait,
                "call_timeout": self.config.timeout,
                "max_attempts": self.config.retry.max_attempts,
                "role_arn": q.role_arn,
                "external_id": q.external_id,
                "session_name": q.session_name,
                "duration_seconds": int(q.duration),
            }
            queue = await self._stack.enter_async_context(
                open_queue(self.session, url=q.url, **settings)
            )
            dead = None
            if q.dead_letter_url is not None:
                dead = await self._stack.enter_async_context(
                    open_queue(self.session, url=q.dead_letter_url, **settings)
                )
            self.push.add_queue(queue, dead)

    def _register(self, target: Target) -> None:
        if self._pool is not None:
            self._pool.register(target)

    def _make_poller(self, target: Target) -> TargetPoller:
        assert self.source is not None, "App.start() builds the source first"
        poller = TargetPoller(
            target,
            self.source,
            self.store,
            lambda events: self._published(poller, events),
            self.clock,
            self._policy,
            self._settings,
            self.rng,
        )
        return poller

    def _published(self, poller: TargetPoller, events: list[EventRecord]) -> None:
        events = linked_to_status_page(events, self.config.web.external_url)
        if self.push is not None:
            self.push.note_reported(events, by_push=poller.looking)
        self._publish(events)

    def _emit(self, events: list[EventRecord]) -> None:
        for event in events:
            emit_all(self.sinks, event)

    async def serve_http(self, listen: str | None = None) -> int:
        """Start the HTTP server; returns the bound port (``listen`` may use port 0).

        The server closes with the app.
        """
        host, _, port = (listen or self.config.listen).rpartition(":")
        web_config = self.config.web
        runner = web.AppRunner(
            create_http_app(
                self.store,
                self.registry,
                web_config.basic_auth,
                status_page=web_config.status_page,
                external_url=web_config.external_url,
                clock=self.clock.time,
            ),
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
        addresses = runner.addresses
        self.http_port = int(addresses[0][1]) if addresses else int(port)
        return self.http_port

    async def poll_all_once(self) -> None:
        """Poll every target once, concurrently, and save the state (``jobwatch once``, tests)."""
        await self.supervisor.poll_once()
        if self.committer is not None:
            await self.committer.commit()

    async def run_pollers(self) -> None:
        """Run every poll loop until :meth:`request_stop`; then drain within ``grace``.

        With discovery, the account list is refreshed every ``discovery.interval``
        and loops start and stop as targets join and leave.
        """
        self.supervisor.start()
        discover = None
        if self.discovery is not None:
            discover = asyncio.create_task(self._discover(self.discovery), name="discovery")
        saver_stop = asyncio.Event()
        saver = None
        if self.committer is not None:
            saver = asyncio.create_task(self.committer.run(saver_stop), name="state committer")
        push = None
        if self.push is not None:
            push = asyncio.create_task(self.push.run(), name="push consumer")
        _log.info("started", targets=len(self.targets), shard=str(self.shard), version=__version__)
        try:
            await self.stop_event.wait()
        finally:
            if push is not None:
                # First: a message received now would wait for polls that are stopping.
                await _cancel(push, "push_consumer_died")
            if discover is not None:
                await _cancel(discover, "discovery_loop_died")
            await self.supervisor.stop(self.grace)
            if saver is not None:
                # After the polls drained, so the last save has their results.
                saver_stop.set()
                await saver

    async def update_targets(self) -> None:
        """Make the poll loops match the targets wanted now (after a discovery refresh)."""
        await self.supervisor.reconcile(self._wanted())

    async def _discover(self, discovery: Discovery) -> None:
        """Refresh the discovered accounts on their interval, until cancelled."""
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


async def _cancel(task: asyncio.Task[None], died: str) -> None:
    """Cancel ``task`` and wait for it; log ``died`` if it had ended with an error."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        _log.error(died, error=repr(task.exception()))

"""What runs inside one worker process: one measurement, one JSON result.

Kinds (``spec["kind"]``):

- ``floor``: fetch every page of the targets raw (aiohttp), then time
  ``xml.etree.ElementTree.fromstring`` over the same bodies (the floor), and,
  for the record, botocore's parser (default and with a fast timestamp parser)
  and jobwatch's ListJobs parser on them (parse only, no HTTP).
- ``aiobotocore``: a plain NextToken loop with default client settings.
- ``boto3``: the sequential loop a team writes without jobwatch.
- ``jobwatch``: jobwatch's real path (App -> TargetPoller -> S3ControlJobSource
  -> ClientPool) for a plan of poll cycles; optionally with the HTTP server, a
  scraper process and an event-loop lag probe (S4).
- ``startup``: the real daemon lifecycle (``App.run_pollers`` as ``serve`` runs it) until every
  target has been polled once; wall time and resident memory (S6).
- ``memory``: bytes retained per tracked job after a poll (S6).
- ``render``: ``/metrics`` for a state of synthetic jobs (S5).
- ``daemon``: the real daemon lifecycle for ``seconds`` (optionally with ``state_file``),
  ``/healthz`` probed from another process, loop lag, callbacks, state writes, memory (S7).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
import types
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import _harness as h

#: Collector settings entered once per worker process and never left (it exits after).
_GC_SETTINGS = contextlib.ExitStack()


class CountSink:
    """An event sink that only counts (jobwatch's LogSink would write JSON lines)."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, event: Any) -> None:
        self.count += 1


def _targets(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(a, r) for a, r in spec["targets"]]


def _regions(targets: Iterable[tuple[str, str]]) -> list[str]:
    return sorted({r for _, r in targets})


# --------------------------------------------------------------------------- (a) floor


async def _fetch_bodies(url: str, targets: Sequence[tuple[str, str]]) -> list[bytes]:
    import re

    import aiohttp

    token_re = re.compile(rb"<NextToken>([^<]+)</NextToken>")
    bodies: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        for account, region in targets:
            headers = {"Authorization": h.AUTH.format(region=region), "x-amz-account-id": account}
            token: str | None = None
            while True:
                params = {"maxResults": "1000"}
                if token:
                    params["nextToken"] = token
                async with session.get(
                    f"{url}/v20180820/jobs", params=params, headers=headers
                ) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
                bodies.append(body)
                found = token_re.search(body)
                token = found.group(1).decode() if found else None
                if not token:
                    break
    return bodies


def _time_parse(fn: Callable[[bytes], object], bodies: Sequence[bytes], repeats: int) -> float:
    """Least CPU seconds of ``fn`` over every body, of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        gc.collect()
        with h.measure() as span:
            for body in bodies:
                fn(body)
        runs.append(span.cpu)
    return min(runs)


def floor(spec: Mapping[str, Any]) -> dict[str, Any]:
    from botocore.parsers import RestXMLParser
    from botocore.session import get_session

    bodies = asyncio.run(_fetch_bodies(spec["url"], _targets(spec)))
    shape = get_session().get_service_model("s3control").operation_model("ListJobs").output_shape

    def botocore_parse(parser: Any) -> Callable[[bytes], object]:
        def parse(body: bytes) -> object:
            return parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)

        return parse

    jobs = sum(len(botocore_parse(RestXMLParser())(b)["Jobs"]) for b in bodies)  # type: ignore[index]
    repeats = spec.get("repeats", 3)
    out: dict[str, Any] = {
        "pages": len(bodies),
        "jobs": jobs,
        "bytes": sum(len(b) for b in bodies),
        "cpu": {"elementtree": _time_parse(ET.fromstring, bodies, repeats)},
    }
    # botocore's parsers are slow and only shown for the record: one run each.
    out["cpu"]["botocore_default_parse"] = _time_parse(botocore_parse(RestXMLParser()), bodies, 1)
    from jobwatch.listjobs import fast_timestamp, parse_list_jobs

    out["cpu"]["botocore_fast_timestamps_parse"] = _time_parse(
        botocore_parse(RestXMLParser(timestamp_parser=fast_timestamp)), bodies, 1
    )
    out["cpu"]["jobwatch_parse"] = _time_parse(
        lambda b: parse_list_jobs(b, fast_timestamp), bodies, repeats
    )
    return out


# --------------------------------------------------------------------------- (b) aiobotocore


async def _aiobotocore(spec: Mapping[str, Any]) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    from aiobotocore.session import get_session

    from jobwatch.aws import strip_account_host_prefix

    targets = _targets(spec)
    session = get_session()
    passes: list[dict[str, float]] = []
    async with AsyncExitStack() as stack:
        clients: dict[str, Any] = {}
        for region in _regions(targets):
            client = await stack.enter_async_context(
                session.create_client("s3control", region_name=region, endpoint_url=spec["url"])
            )
            # The one change a custom endpoint needs (see jobwatch.aws): drop the
            # {AccountId}. host prefix botocore adds.
            client.meta.events.register_first("before-sign.s3-control", strip_account_host_prefix)
            clients[region] = client
        # Warm-up: each client makes its first request outside the measurement.
        for account, region in targets[: len(clients) * 2]:
            await clients[region].list_jobs(AccountId=account, MaxResults=1)

        async def list_all(account: str, region: str) -> int:
            n = 0
            token = None
            while True:
                kwargs: dict[str, Any] = {"AccountId": account, "MaxResults": 1000}
                if token:
                    kwargs["NextToken"] = token
                page = await clients[region].list_jobs(**kwargs)
                n += len(page.get("Jobs", []))
                token = page.get("NextToken")
                if not token:
                    return n

        for _ in range(spec.get("passes", 2)):
            gc.collect()
            with h.measure() as span:
                counts = await asyncio.gather(*(list_all(a, r) for a, r in targets))
            passes.append({"cpu": span.cpu, "wall": span.wall, "jobs": sum(counts)})
    return {"passes": passes}


def aiobotocore_loop(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_aiobotocore(spec))


# --------------------------------------------------------------------------- (c) boto3


def boto3_loop(spec: Mapping[str, Any]) -> dict[str, Any]:
    import boto3

    from jobwatch.aws import strip_account_host_prefix
    from jobwatch.poller import TERMINAL_LIST

    targets = _targets(spec)
    clients: dict[str, Any] = {}
    for region in _regions(targets):
        client = boto3.client("s3control", region_name=region, endpoint_url=spec["url"])
        # boto3's s3control client adds the {AccountId}. host prefix too.
        client.meta.events.register_first("before-sign.s3-control", strip_account_host_prefix)
        clients[region] = client
    for region, client in clients.items():
        account = next(a for a, r in targets if r == region)
        client.list_jobs(AccountId=account, MaxResults=1)
    passes = []
    for _ in range(spec.get("passes", 1)):
        gc.collect()
        jobs = 0
        with h.measure() as span:
            for account, region in targets:
                token = None
                while True:
                    kwargs: dict[str, Any] = {"AccountId": account, "MaxResults": 1000}
                    if token:
                        kwargs["NextToken"] = token
                    page = clients[region].list_jobs(**kwargs)
                    jobs += len(page.get("Jobs", []))
                    token = page.get("NextToken")
                    if not token:
                        break
                if spec.get("recent"):
                    clients[region].list_jobs(
                        AccountId=account,
                        MaxResults=25,
                        JobStatuses=list(TERMINAL_LIST),
                    )
        passes.append({"cpu": span.cpu, "wall": span.wall, "jobs": jobs})
    return {"passes": passes, "targets": len(targets)}


# --------------------------------------------------------------------------- (d) jobwatch


def _config(spec: Mapping[str, Any], **overrides: Any) -> Any:
    from jobwatch.config import Config

    by_account: dict[str, list[str]] = {}
    for account, region in _targets(spec):
        by_account.setdefault(account, []).append(region)
    data: dict[str, Any] = {
        "endpoint_url": spec["url"],
        "targets": [{"account_id": a, "regions": rs} for a, rs in by_account.items()],
        "retry": {"mode": "standard", "max_attempts": 3},
        # The simulator's clock stands still: no job would ever progress, and
        # every Active job would be reported stalled. Not what is measured here.
        "stall": {"no_progress": "365d", "status_limits": {}},
        **spec.get("config", {}),
        **overrides,
    }
    return Config.model_validate(data)


class CallbackTimer:
    """The longest single callbacks the event loop ran (asyncio's Handle._run, timed).

    The lag probe sees how late the loop comes back to it, which includes every
    other callback of that turn; this sees each callback alone. Benchmark only:
    it wraps a private asyncio method while it runs.
    """

    def __init__(self) -> None:
        self.longest: list[tuple[float, str, float]] = []
        self.max = 0.0
        #: The most CPU one callback took: on a shared machine a callback's wall
        #: time also counts the time the OS gave the core to another process.
        self.max_cpu = 0.0
        self._original: Any = None

    def start(self) -> None:
        import asyncio.events as events

        original = events.Handle._run
        longest = self.longest

        def timed(handle: Any) -> None:
            started = time.perf_counter()
            cpu_started = time.thread_time()
            original(handle)
            took = time.perf_counter() - started
            cpu = time.thread_time() - cpu_started
            if took > self.max:
                self.max = took
            if cpu > self.max_cpu:
                self.max_cpu = cpu
            if took > 0.02:
                task = getattr(handle._callback, "__self__", None)
                coro = task.get_coro() if hasattr(task, "get_coro") else None
                name = getattr(coro, "__qualname__", None) or repr(handle._callback)[:80]
                longest.append((took, name, cpu))

        self._original = original
        events.Handle._run = timed  # type: ignore[method-assign]

    def stop(self) -> dict[str, Any]:
        import asyncio.events as events

        if self._original is not None:
            events.Handle._run = self._original  # type: ignore[method-assign]
        top = sorted(self.longest, reverse=True)[:5]
        by_name: dict[str, float] = {}
        for took, name, _ in self.longest:
            by_name[name] = max(took, by_name.get(name, 0.0))
        return {
            "max": self.max,
            "max_cpu": self.max_cpu,
            "over_50ms": sum(1 for t, _, _ in self.longest if t > 0.05),
            "over_50ms_cpu": sum(1 for _, _, c in self.longest if c > 0.05),
            "top": [{"seconds": t, "callback": n, "cpu": c} for t, n, c in top],
            # The longest of each callback over 20 ms: which code held the loop.
            "by_name": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:10]),
        }


class GcTimer:
    """Every garbage collection while it runs: generation and pause."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, float]] = []
        self._started = 0.0
        self._cpu_started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._cpu_started = time.thread_time()
        else:
            wall = time.perf_counter() - self._started
            self.pauses.append((info["generation"], wall, time.thread_time() - self._cpu_started))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> dict[str, Any]:
        gc.callbacks.remove(self._callback)
        full = [p for g, p, _ in self.pauses if g == 2]
        return {
            "collections": len(self.pauses),
            "full_collections": len(full),
            "longest_full": max(full, default=0.0),
            "longest_full_cpu": max((c for g, _, c in self.pauses if g == 2), default=0.0),
            "longest": max((p for _, p, _ in self.pauses), default=0.0),
        }


class LagProbe:
    """Event-loop lag: how late a 5 ms sleep wakes up, sampled continuously.

    A wake-up ``lag`` seconds late means the loop was busy that long without
    yielding (an upper bound for the longest single block around it).
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - started - self.interval))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return {
            "samples": len(self.lags),
            "max": max(self.lags, default=0.0),
            "p99": h.percentile(self.lags, 0.99),
            "over_50ms": sum(1 for x in self.lags if x > 0.05),
        }


async def _post_json(url: str, body: Mapping[str, Any]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"{url}: HTTP {resp.status} {await resp.text()}")


async def _jobwatch(spec: Mapping[str, Any]) -> dict[str, Any]:
    from jobwatch.app import App
    from jobwatch.clock import ManualClock
    from jobwatch.log import configure_logging

    configure_logging("info", "json", stream=sys.stdout)
    clock = ManualClock(h.EPOCH)
    cfg = _config(spec)
    sink = CountSink()
    app = App(cfg, clock=clock, sinks=[sink])
    cycles: list[dict[str, Any]] = []
    probe: LagProbe | None = None
    timer: CallbackTimer | None = None
    gc_timer = GcTimer()
    scraper = None
    floor_bodies: list[bytes] = []
    if spec.get("floor"):
        # The floor, timed in this process next to each cycle: machines are
        # noisy, and the ratio is what the goal is about.
        floor_bodies = await _fetch_bodies(spec["url"], _targets(spec))
    async with app:
        _settle_gc()
        if spec.get("http"):
            port = await app.serve_http("127.0.0.1:0")
            scraper = await _start_scraper(port, spec["http"])
            probe = LagProbe()
            timer = CallbackTimer()
        for i, step in enumerate(spec["plan"]):
            if probe is not None and timer is not None and i == 1:
                # Steady state: the first poll also builds the clients (an SSL
                # context each, loading the CA bundle), which happens once.
                probe.start()
                timer.start()
                gc_timer.start()
            if step.get("latency"):
                await _post_json(
                    f"{spec['url']}/_sim/faults", {"kind": "latency", "seconds": step["latency"]}
                )
            # Full or incremental is jobwatch's own decision, from its clock.
            clock.advance(cfg.resync_interval if step["kind"] == "full" else cfg.interval)
            events_before = sink.count
            floor_cpu = None
            if floor_bodies:
                floor_cpu = _time_parse(ET.fromstring, floor_bodies, 1)
            if probe is None:
                gc.collect()  # not while the loop is being watched: it would block it
            with h.measure() as span:
                await app.poll_all_once()
            states = app.store.targets.values()
            cycles.append(
                {
                    "name": step.get("name", step["kind"]),
                    "kind": step["kind"],
                    "cpu": span.cpu,
                    "wall": span.wall,
                    "targets_up": sum(1 for ts in states if ts.up),
                    "tracked": sum(len(ts.jobs or ()) for ts in states),
                    "requests": sum(sum(ts.api_requests.values()) for ts in states),
                    "events": sink.count - events_before,
                    "floor_cpu": floor_cpu,
                }
            )
        result: dict[str, Any] = {"cycles": cycles, "targets": len(app.targets)}
        if probe is not None and timer is not None and scraper is not None:
            result["loop_lag"] = await probe.stop()
            result["callbacks"] = timer.stop()
            result["gc"] = gc_timer.stop()
            assert scraper.stdin is not None
            scraper.stdin.close()
            out, _ = await scraper.communicate()
            result["scrapes"] = json.loads(out)
            result["idle_metrics_seconds"] = await _idle_scrapes(app)
        if spec.get("scrape_cpu"):
            result["scrape_cpu"] = await _scrape_cpu(app)
    return result


async def _scrape_cpu(app: Any, repeats: int = 5) -> dict[str, Any]:
    """CPU of one /metrics rendering (gzip), nothing else running, same state.

    ``cold``: every job's lines written (the first scrape, or every job changed);
    ``warm``: the lines kept from the scrape before (no job changed).
    """
    from jobwatch.metrics import exposition_async

    text = await exposition_async(app.registry)
    series = sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))
    out: dict[str, Any] = {"series": series, "bytes": len(text)}
    for kind in ("cold", "warm"):
        runs = []
        for _ in range(repeats):
            if kind == "cold":
                app.collector._rendered = {}  # benchmark only: forget the kept lines
            gc.collect()
            with h.measure() as span:
                body = await exposition_async(app.registry, gzip=True)
            runs.append(span.cpu)
        out[kind] = {
            "cpu": min(runs),
            "cpu_per_series": min(runs) / series,
            "gzip_bytes": len(body),
        }
    return out


async def _idle_scrapes(app: Any, count: int = 5) -> float:
    """Median /metrics latency (gzip) with nothing else running, same state."""
    import aiohttp

    walls = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.get(
                f"http://127.0.0.1:{app.http_port}/metrics", headers={"Accept-Encoding": "gzip"}
            ) as resp:
                await resp.read()
            walls.append(time.perf_counter() - started)
    return h.median(walls)


async def _start_scraper(port: int, http: Mapping[str, Any]) -> asyncio.subprocess.Process:
    """The probe process that scrapes the daemon on ``port`` from outside (``role_probe``)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(h.RUN_PY),
        "--role",
        "probe",
        "--spec",
        json.dumps({"url": f"http://127.0.0.1:{port}", **http}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=h.child_env(),
    )


def _settle_gc() -> None:
    """The daemon's collector settings (``serve.gc_tuned``) for the rest of this worker."""
    from jobwatch.serve import gc_tuned

    _GC_SETTINGS.enter_context(gc_tuned())


def jobwatch_cycles(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_jobwatch(spec))


# --------------------------------------------------------------------------- S6


async def _startup(spec: Mapping[str, Any]) -> dict[str, Any]:
    import aiohttp

    from jobwatch.app import App
    from jobwatch.clock import ManualClock
    from jobwatch.log import configure_logging

    configure_logging("info", "json", stream=sys.stdout)
    rss_before = h.rss_bytes()
    started = time.perf_counter()
    cpu0 = time.process_time()
    marks: list[tuple[str, float, float]] = []

    def mark(phase: str) -> None:
        marks.append((phase, time.perf_counter(), time.process_time()))

    cfg = _config(spec, **spec.get("overrides", {}))
    app = App(cfg, clock=ManualClock(h.EPOCH), sinks=[CountSink()])
    mark("config and App()")
    await app.start()
    mark("App.start(): clients, targets")
    port = await app.serve_http("127.0.0.1:0")
    _settle_gc()  # as serve() does around the poll loops
    mark("HTTP server, gc.freeze")
    loops = asyncio.create_task(app.run_pollers())
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                await resp.read()
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
    mark("first polls until /readyz")
    ready = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    phases = []
    wall_before, cpu_before = started, cpu0
    for phase, wall_at, cpu_at in marks:
        phases.append({"phase": phase, "wall": wall_at - wall_before, "cpu": cpu_at - cpu_before})
        wall_before, cpu_before = wall_at, cpu_at
    gc.collect()
    rss = h.rss_bytes()
    states = app.store.targets.values()
    result = {
        "targets": len(app.targets),
        "ready_seconds": ready,
        "cpu_seconds": cpu,
        "rss_bytes": rss,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": h.peak_rss_bytes(),
        "targets_up": sum(1 for ts in states if ts.up),
        "polled": sum(1 for ts in states if ts.attempted),
        "jitter": cfg.jitter,
        "phases": phases,
    }
    app.request_stop()
    await loops
    await app.close()
    return result


def startup(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_startup(spec))


def deep_size(roots: Iterable[object]) -> int:
    """Bytes of every object reachable from ``roots``, each counted once."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        # Instances of Python classes refer to their class; classes, modules and
        # functions are shared code, not data of the jobs.
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


async def _memory(spec: Mapping[str, Any]) -> dict[str, Any]:
    from jobwatch.app import App
    from jobwatch.clock import ManualClock
    from jobwatch.diff import Differ, DiffPolicy
    from jobwatch.log import configure_logging

    configure_logging("info", "json", stream=sys.stdout)
    app = App(_config(spec), clock=ManualClock(h.EPOCH), sinks=[CountSink()])
    async with app:
        _settle_gc()
        # Each region's client makes its first request (connection, SSL context)
        # outside the measurement: a one-time cost, not the jobs'.
        assert app.source is not None
        for region in _regions(_targets(spec)):
            target = next(t for t in app.targets if t.region == region)
            await app.source.list_jobs(target, ["Failed"], Differ(None, 0.0, DiffPolicy()))
        gc.collect()
        rss0 = h.rss_bytes()
        await app.poll_all_once()
        gc.collect()
        rss1 = h.rss_bytes()
        snapshots = [ts.jobs for ts in app.store.targets.values() if ts.jobs is not None]
        tracked = sum(len(s) for s in snapshots)
        size = deep_size(snapshots)
    return {
        "tracked": tracked,
        "retained_bytes": size,
        "retained_per_job": size / max(tracked, 1),
        "rss_delta_bytes": rss1 - rss0,
        "rss_delta_per_job": (rss1 - rss0) / max(tracked, 1),
    }


def memory(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_memory(spec))


# --------------------------------------------------------------------------- S7


async def _daemon(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The daemon as ``serve`` runs it, watched from inside and probed from outside."""
    import shutil
    import tempfile
    from pathlib import Path

    from jobwatch.app import App
    from jobwatch.clock import ManualClock
    from jobwatch.log import configure_logging
    from jobwatch.persist import encode

    configure_logging("warning", "json", stream=sys.stdout)
    workdir = Path(tempfile.mkdtemp(prefix="jobwatch-s7-"))
    state_file = workdir / "state.json" if spec.get("state_file") else None
    cfg = _config(spec, state_file=state_file)
    app = App(cfg, clock=ManualClock(h.EPOCH), sinks=[CountSink()])
    await app.start()
    port = await app.serve_http("127.0.0.1:0")
    _settle_gc()
    scraper = await _start_scraper(port, spec["http"])
    probe, timer, gc_timer = LagProbe(), CallbackTimer(), GcTimer()
    probe.start()
    timer.start()
    gc_timer.start()
    cpu0 = time.process_time()
    loops = asyncio.create_task(app.run_pollers())
    samples = []
    started = time.perf_counter()
    while time.perf_counter() - started < spec["seconds"]:
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - started
        states = app.store.targets.values()
        samples.append(
            {
                "t": round(elapsed, 1),
                "tracked": sum(len(ts.jobs or ()) for ts in states),
                "polls": sum(ts.polls["success"] for ts in states),
                "writes": app.store.state_writes["success"],
                "file_bytes": state_file.stat().st_size
                if state_file is not None and state_file.exists()
                else 0,
            }
        )
    cpu = time.process_time() - cpu0
    lag = await probe.stop()
    callbacks = timer.stop()
    gcs = gc_timer.stop()
    assert scraper.stdin is not None
    scraper.stdin.close()
    out, _ = await scraper.communicate()
    gc.collect()
    rss = h.rss_bytes()
    states = app.store.targets.values()
    result: dict[str, Any] = {
        "targets": len(app.targets),
        "seconds": spec["seconds"],
        "cpu_seconds": cpu,
        "tracked": sum(len(ts.jobs or ()) for ts in states),
        "polls": sum(ts.polls["success"] for ts in states),
        "rss_bytes": rss,
        "peak_rss_bytes": h.peak_rss_bytes(),
        "loop_lag": lag,
        "callbacks": callbacks,
        "gc": gcs,
        "scrapes": json.loads(out),
        "samples": samples,
        "state_file": state_file is not None,
    }
    if app.committer is not None and state_file is not None:
        writes = app.committer.write_sizes
        # From 2 s after every target's first poll (its baseline committed): the steady state.
        first_round = next(
            (s["t"] for s in samples if s["polls"] >= len(app.targets)), spec["seconds"]
        )
        steady = [s for s in samples if s["t"] >= first_round + 2]
        result["writes"] = {
            "count": len(writes),
            "rewrites": sum(1 for k, _ in writes if k == "rewrite"),
            "appends": sum(1 for k, _ in writes if k == "append"),
            "bytes": sum(n for _, n in writes),
            "largest_append": max((n for k, n in writes if k == "append"), default=0),
            "largest_rewrite": max((n for k, n in writes if k == "rewrite"), default=0),
            "file_bytes": state_file.stat().st_size,
            "steady_polls": steady[-1]["polls"] - steady[0]["polls"] if steady else 0,
            "steady_writes": steady[-1]["writes"] - steady[0]["writes"] if steady else 0,
            "failures": app.store.state_writes["failure"],
        }
        # What every write cost before (the whole file encoded after each poll), same state.
        with h.measure() as span:
            data = encode(app.store, h.EPOCH)
        result["whole_file_encode"] = {"cpu": span.cpu, "bytes": len(data)}
    app.request_stop()
    await loops
    await app.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def daemon(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_daemon(spec))


# --------------------------------------------------------------------------- S5


async def _render(spec: Mapping[str, Any]) -> dict[str, Any]:
    import aiohttp
    from prometheus_client import generate_latest

    import _direct
    from jobwatch.app import App
    from jobwatch.clock import ManualClock
    from jobwatch.diff import TrackedJob
    from jobwatch.model import Job
    from jobwatch.targets import resolve_targets

    cfg = _config(spec)
    app = App(cfg, clock=ManualClock(h.EPOCH), sinks=[CountSink()])
    # The store learns its targets when the app starts; this one is filled by hand.
    for target in resolve_targets(cfg).targets:
        app.store.add(target)
    rng_statuses = ["Active"] * 8 + ["Suspended", "Paused", "Complete", "Failed"]
    per_target = spec["jobs_per_target"]
    now = h.EPOCH
    for i, ts in enumerate(app.store.targets.values()):
        jobs: dict[str, TrackedJob] = {}
        for n in range(per_target):
            status = rng_statuses[(i + n) % len(rng_statuses)]
            ended = status in ("Complete", "Failed")
            jid = str(uuid.UUID(int=(i << 64) | n))
            job = Job.make(
                job_id=jid,
                status=status,
                operation="S3PutObjectCopy" if n % 3 else "LambdaInvoke",
                priority=n % 100,
                description=f"job {n}",
                creation_time=now - 3600.0 - n,
                termination_time=now - 600.0 if ended else None,
                tasks_total=10_000 + n,
                tasks_succeeded=5_000 + n,
                tasks_failed=n % 50,
                active_seconds=float(n % 3000),
            )
            jobs[jid] = TrackedJob(
                job=job,
                first_seen=now - 3000.0,
                status_since=now - 600.0 - (n % 7),
                last_progress_at=now - 60.0,
                stalled=n % 97 == 0,
                overdue=n % 89 == 0,
            )
        app.store.record_success(ts.target.key, jobs, now, full=True)

    collector = app.collector
    reference = generate_latest(collector)
    series = sum(1 for line in reference.split(b"\n") if line.startswith(b"s3batch_job_"))
    repeats = spec.get("repeats", 3)

    def timed(fn: Callable[[], bytes]) -> tuple[float, bytes]:
        runs = []
        out = b""
        for _ in range(repeats):
            gc.collect()
            with h.measure() as span:
                out = fn()
            runs.append(span.cpu)
        return min(runs), out

    client_cpu, _ = timed(lambda: generate_latest(collector))
    direct_cpu, direct = timed(lambda: _direct.write(app.store, cfg.label_names, collector))
    # jobwatch's writer as /metrics runs it (nothing else on the loop meanwhile).
    fast_runs = []
    fast_out = b""
    for _ in range(repeats):
        gc.collect()
        with h.measure() as span:
            fast_out = b"".join(await collector.exposition_chunks())
        fast_runs.append(span.cpu)
    result: dict[str, Any] = {
        "series_per_job": series,
        "bytes": len(reference),
        "prometheus_client_cpu": client_cpu,
        "direct_cpu": direct_cpu,
        "direct_identical": direct == reference,
        "jobwatch_cpu": min(fast_runs),
        "jobwatch_identical": fast_out == reference,
    }
    # The whole /metrics request as a scraper sees it (gzip, as Prometheus asks).
    await app.start()
    try:
        port = await app.serve_http("127.0.0.1:0")
        walls = []
        async with aiohttp.ClientSession(auto_decompress=True) as session:
            for _ in range(repeats):
                gc.collect()
                t0 = time.perf_counter()
                async with session.get(
                    f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}
                ) as resp:
                    body = await resp.read()
                walls.append(time.perf_counter() - t0)
        result["http_wall"] = h.median(walls)
        result["http_bytes"] = len(body)
    finally:
        await app.close()
    return result


def render(spec: Mapping[str, Any]) -> dict[str, Any]:
    return asyncio.run(_render(spec))


KINDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "floor": floor,
    "aiobotocore": aiobotocore_loop,
    "boto3": boto3_loop,
    "jobwatch": jobwatch_cycles,
    "startup": startup,
    "memory": memory,
    "render": render,
    "daemon": daemon,
}

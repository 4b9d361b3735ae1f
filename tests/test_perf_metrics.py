"""The fast ``/metrics`` writer against prometheus_client, byte for byte.

The collectors' ``collect()`` stays the reference (tests read samples through
``registry.get_sample_value``); their ``exposition_chunks()`` and the registry's
``exposition_async()`` must produce exactly ``generate_latest``'s bytes for
any state: label names sorting anywhere among jobwatch's own, label values
that need escaping, unknown statuses, huge, negative and non-finite numbers.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.diff import EVENT_KINDS, TrackedJob
from jobwatch.discovery import Account, Discovery, OrganizationsSource
from jobwatch.errors import ConfigError
from jobwatch.metrics import (
    DiscoveryCollector,
    EndedJobs,
    ExpositionRegistry,
    Family,
    JobwatchCollector,
    Selection,
    ShardCollector,
    _number,
    _TableCollector,
    exposition_async,
    make_registry,
)
from jobwatch.model import KNOWN_STATUSES, Job, Target
from jobwatch.shard import Shard
from jobwatch.state import POLL_DURATION_BUCKETS, Store
from tests.helpers import running, written

# Names that sort before, between and after jobwatch's own labels.
LABEL_NAMES = ("a_first", "env", "job_type", "owner", "priority_class", "status_page", "zz")
ODD_TEXT = st.sampled_from(['quo"te', "back\\slash", "new\nline", "", "{x}", "%s", "\u00e9\u2603"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10) | ODD_TEXT
FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.floats(1e9, 2e9) | st.just(-0.0)
COUNT = st.integers(0, 999_999) | st.integers(-(2**40), 2**80)


@st.composite
def tracked(draw: st.DrawFn) -> TrackedJob:
    job = Job.make(
        job_id=draw(TEXT.filter(bool)),
        status=draw(st.sampled_from(KNOWN_STATUSES) | TEXT),
        operation=draw(st.sampled_from(["S3PutObjectCopy", "LambdaInvoke"]) | TEXT),
        priority=draw(st.integers(-(2**40), 2**40)),
        description=draw(TEXT),
        creation_time=draw(st.none() | FLOAT),
        termination_time=draw(st.none() | FLOAT),
        tasks_total=draw(COUNT),
        tasks_succeeded=draw(COUNT),
        tasks_failed=draw(COUNT),
        active_seconds=draw(FLOAT),
    )
    return TrackedJob(
        job=job,
        first_seen=draw(FLOAT),
        status_since=draw(FLOAT),
        last_progress_at=draw(FLOAT),
        stalled=draw(st.booleans()),
        overdue=draw(st.booleans()),
        ratio_exceeded=draw(st.booleans()),
    )


@st.composite
def states(draw: st.DrawFn) -> tuple[Store, tuple[str, ...], str]:
    names = tuple(sorted(draw(st.sets(st.sampled_from(LABEL_NAMES), max_size=3))))
    regions = draw(st.lists(st.sampled_from(["us-east-1", "eu-west-1", 'we"ird']), min_size=1))
    targets = []
    for i, region in enumerate(regions):
        labels = {n: draw(TEXT) for n in names if draw(st.booleans())}
        targets.append(Target(f"{i:012d}", region, labels=tuple(sorted(labels.items()))))
    store = Store(targets)
    for ts in store.targets.values():
        if draw(st.booleans()):
            jobs = draw(st.lists(tracked(), max_size=6))
            ts.jobs = {t.job.job_id: t for t in jobs}
        ts.up = draw(st.booleans())
        ts.last_success = draw(st.none() | FLOAT)
        ts.last_duration = draw(st.none() | FLOAT)
        ts.consecutive_failures = draw(st.integers(0, 10**7))
        ts.polls = Counter({"success": draw(COUNT), "failure": draw(COUNT)})
        ts.overruns = draw(st.integers(0, 5))
        ts.api_requests = Counter({("ListJobs", "success"): draw(COUNT)})
    store.events.update({k: draw(st.integers(0, 10**9)) for k in EVENT_KINDS})
    if draw(st.booleans()):
        store.events["some_future_kind"] = 1
    store.unknown_values["status"] = draw(st.integers(0, 100))
    if draw(st.booleans()):  # with a state file
        store.state_writes.update({"success": draw(COUNT), "failure": draw(COUNT)})
        store.state_write_consecutive_failures = draw(st.integers(0, 10**6))
    store.poll_buckets = [draw(st.integers(0, 10**6)) for _ in store.poll_buckets]
    store.poll_sum = draw(FLOAT)
    return store, names, draw(TEXT)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_exposition_is_generate_latest_byte_for_byte(
    state: tuple[Store, tuple[str, ...], str],
) -> None:
    store, names, version = state
    collector = JobwatchCollector(store, names, version)
    expected = generate_latest(collector)
    assert written(collector) == expected
    registry = make_registry(collector)
    assert asyncio.run(exposition_async(registry)) == generate_latest(registry) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**40),
    st.integers(1, 1000),
    st.integers(0, 10**7),
    st.booleans(),
    st.none() | FLOAT,
    st.none() | FLOAT,
    st.none() | st.integers(0, 50),
    st.lists(st.integers(0, 10**12), min_size=5, max_size=5),
)
def test_shard_and_discovery_families_are_generate_latest_byte_for_byte(
    ordinal: int,
    total: int,
    candidates: int,
    up: bool,
    last_success: float | None,
    last_duration: float | None,
    accounts: int | None,
    counts: list[int],
) -> None:
    shard = ShardCollector(Shard(ordinal % total, total), lambda: candidates)
    assert written(shard) == generate_latest(shard)
    config = Config.model_validate({"discovery": {"regions": ["us-east-1"]}})
    assert config.discovery is not None
    d = Discovery(config, OrganizationsSource(config.discovery), ManualClock())
    d.up, d.last_success, d.last_duration = up, last_success, last_duration
    if accounts is not None:
        d.accounts = [Account(f"{n:012d}") for n in range(accounts)]
    d.refreshes.update(success=counts[0], failure=counts[1])
    changes = {"added": counts[2], "removed": counts[3], "updated": counts[4]}
    discovery = DiscoveryCollector(d, changes)
    assert written(discovery) == generate_latest(discovery)
    registry = make_registry(JobwatchCollector(Store([])))
    registry.register(shard)
    registry.register(discovery)
    text = asyncio.run(exposition_async(registry))
    assert text == generate_latest(registry)
    assert b"\njobwatch_discovery_refreshes_total{" in text


Rows = list[tuple[str, str, str, float]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT, TEXT, FLOAT | COUNT), max_size=5), st.none() | FLOAT)
def test_families_of_every_shape_are_generate_latest_byte_for_byte(
    rows: Rows, single: float | None
) -> None:
    """The writer has a way for families of no, one, two and more labels (named
    out of order here); the tables use only some of them so far."""

    def read(state: tuple[Rows, float | None]) -> Rows:
        return state[0]

    families: tuple[Family[tuple[Rows, float | None]], ...] = (
        Family("t_single", "No labels.", lambda s: s[1]),
        Family(
            "t_one", "One.", labels=("k",), samples=lambda s: [((a,), v) for a, _, _, v in read(s)]
        ),
        Family(
            "t_two",
            'Two, "quoted" \\ help.',
            kind="counter",
            labels=("z", "a"),
            samples=lambda s: [((a, b), v) for a, b, _, v in read(s)],
        ),
        Family(
            "t_three",
            "Three.",
            labels=("b", "c", "a"),
            samples=lambda s: [((a, b, c), v) for a, b, c, v in read(s)],
        ),
    )
    collector = _TableCollector(families, lambda: (rows, single))
    assert written(collector) == generate_latest(collector)


def _state(jobs_per_target: int = 300) -> Store:
    store = Store(
        [
            Target("111111111111", r, labels=(("team", "storage"),))
            for r in ("us-east-1", "eu-west-1")
        ]
    )
    for ts in store.targets.values():
        jobs = {}
        for n in range(jobs_per_target):
            status = KNOWN_STATUSES[n % len(KNOWN_STATUSES)]
            job = Job.make(
                f"{ts.target.region}-{n}",
                status,
                "S3PutObjectCopy",
                n,
                "",
                1.7e9 + n,
                1.7e9 + 2 * n if status in ("Complete", "Failed") else None,
                10_000 * n,
                5_000 * n,
                n,
                float(n),
            )
            jobs[job.job_id] = TrackedJob(job, 1.7e9, 1.7e9 + n, 1.7e9 + 0.5, stalled=n % 7 == 0)
        ts.jobs = jobs
    return store


class Static(Collector):
    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("other_thing", "Not jobwatch's.", labels=["k"])
        g.add_metric(['v"1'], 3.0)
        yield g


def test_registry_keeps_registration_order_and_other_collectors() -> None:
    collector = JobwatchCollector(_state(20), ("team",), "1.0")
    registry = make_registry(collector)
    assert isinstance(registry, ExpositionRegistry)
    other = Static()
    registry.register(other)
    text = asyncio.run(exposition_async(registry))
    assert text == generate_latest(registry)
    assert text.index(b"s3batch_job_status") < text.index(b"other_thing")
    registry.unregister(other)
    assert b"other_thing" not in asyncio.run(exposition_async(registry))
    assert (
        registry.get_sample_value(
            "s3batch_jobs",
            {
                "aws_account_id": "111111111111",
                "aws_region": "us-east-1",
                "team": "storage",
                "status": "Active",
            },
        )
        == 2.0
    )


def test_gzip_exposition_decompresses_to_the_text() -> None:
    collector = JobwatchCollector(_state(50), ("team",), "1.0")
    registry = make_registry(collector)
    registry.register(Static())
    packed = asyncio.run(exposition_async(registry, gzip=True))
    assert gzip.decompress(packed) == generate_latest(registry)
    plain = CollectorRegistry()
    plain.register(Static())
    assert gzip.decompress(asyncio.run(exposition_async(plain, gzip=True))) == (
        generate_latest(plain)
    )


def test_other_registries_go_through_generate_latest() -> None:
    plain = CollectorRegistry()
    plain.register(Static())
    assert asyncio.run(exposition_async(plain)) == generate_latest(plain)
    with_info = ExpositionRegistry(target_info={"a": "b"})
    with_info.register(Static())
    text = asyncio.run(exposition_async(with_info))
    assert text == generate_latest(with_info)
    assert b"target_info" in text


async def test_async_writer_lets_the_loop_run_and_keeps_the_state_it_started_with() -> None:
    store = _state(2000)
    collector = JobwatchCollector(store, ("team",), "1.0")
    before = generate_latest(collector)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            # A poll finishing meanwhile replaces a snapshot (whole, as the store does).
            store[("111111111111", "us-east-1")].jobs = {}
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    try:
        text = b"".join(await collector.exposition_chunks(slice_seconds=0))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert turns > 10
    assert text == before
    after = b"".join(await collector.exposition_chunks(slice_seconds=0))
    assert after != before  # the next scrape sees the new state


async def test_metrics_endpoint_serves_the_fast_text() -> None:
    scenario: dict[str, Any] = {
        "accounts": [
            {
                "id": "111111111111",
                "regions": ["us-east-1", "eu-west-1"],
                "jobs": [
                    {"id": "copy-1", "tasks": 100_000, "rate": 10, "region": "us-east-1"},
                    {
                        "id": "odd-job",
                        "tasks": 10,
                        "rate": 10,
                        "region": "eu-west-1",
                        "description": 'quote " backslash \\ newline \n',
                    },
                ],
            }
        ]
    }
    async with running(scenario, {"defaults": {"labels": {"team": "storage"}}}) as w:
        port = await w.app.serve_http("127.0.0.1:0")
        await w.app.poll_all_once()
        await w.step(30)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            served = await r.read()
        expected = generate_latest(w.app.registry)

    def steady(text: bytes) -> list[bytes]:
        # process_* samples (CPU seconds, memory) move between two renderings.
        return [line for line in text.split(b"\n") if not line.startswith(b"process_")]

    assert steady(served) == steady(expected)
    assert b's3batch_job_status{aws_account_id="111111111111"' in served
    # The histogram: a bucket per bound and +Inf, every poll in the last one.
    buckets = [line for line in served.split(b"\n") if b"_seconds_bucket{" in line]
    assert len(buckets) == len(POLL_DURATION_BUCKETS) + 1
    assert buckets[-1].startswith(b'jobwatch_poll_duration_seconds_bucket{le="+Inf"} ')
    assert float(buckets[-1].split()[1]) == sum(w.app.store.poll_buckets) > 0


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(1e9, 1e10)
    | st.floats(-1e7, 1e7)
    | st.integers(-(2**70), 2**70)
    | st.integers(-10, 2_000_000)
    | st.sampled_from([1e9, 1e10, 1e6, 999_999.9999999, 1e16, -1e16, 10**16, -(10**16), 0.0, -0.0])
    | st.sampled_from([-(2**53), -(2**53) - 1, -(2**53) + 1, 2**53 + 1, 999_999, 1_000_000])
)
def test_number_text_is_prometheus_clients(value: float) -> None:
    assert _number(value) == floatToGoString(value)


SELECTIONS = st.builds(
    Selection,
    allow=st.lists(st.sampled_from(["s3batch_*", "*_total", "jobwatch_target_*", "*info"]))
    .map(tuple)
    .filter(lambda a: len(a) < 3),
    deny=st.lists(st.sampled_from(["s3batch_job_t*", "jobwatch_events", "*_seconds", "zz*"])).map(
        tuple
    ),
    ended_jobs=st.sampled_from(["all", "failed", "none"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states(), SELECTIONS, st.data())
def test_writer_keeps_lines_across_scrapes_and_stays_generate_latest(
    state: tuple[Store, tuple[str, ...], str], selection: Selection, data: st.DataObject
) -> None:
    """Scrape, change the store as polls do (jobs kept as the same object, replaced,
    dropped, added; targets relabelled, added and removed), scrape again."""
    store, names, version = state
    collector = JobwatchCollector(store, names, version, selection)
    assert written(collector) == generate_latest(collector)
    for ts in list(store.targets.values()):
        if ts.jobs is not None:
            kept = {}
            for jid, t in ts.jobs.items():
                how = data.draw(st.sampled_from(["same", "copy", "flag", "new", "drop"]))
                if how == "same":
                    kept[jid] = t
                elif how == "copy":  # equal, but another object
                    kept[jid] = TrackedJob(**_fields(t))
                elif how == "flag":
                    kept[jid] = TrackedJob(**{**_fields(t), "stalled": not t.stalled})
                elif how == "new":
                    kept[jid] = data.draw(tracked())
            for t in data.draw(st.lists(tracked(), max_size=3)):
                kept.setdefault(t.job.job_id, t)
            ts.jobs = kept  # a new snapshot, as record_success sets it
        if data.draw(st.booleans()):
            ts.target = Target(ts.target.account_id, ts.target.region, (("env", "other"),))
    if data.draw(st.booleans()):
        store.remove(next(iter(store.targets)))
    store.add(Target("999999999999", "us-east-1"))
    assert written(collector) == generate_latest(collector)
    assert written(collector) == generate_latest(collector)  # all from the kept lines


def _fields(t: TrackedJob) -> dict[str, Any]:
    return {f: getattr(t, f) for f in t.__dataclass_fields__}


def _selected_state() -> Store:
    store = Store([Target("111111111111", "us-east-1")])
    jobs = {}
    for status in ("Active", "Complete", "Failed", "Cancelled", "Suspended", "SomeNewStatus"):
        job = Job.make(job_id=f"job-{status}", status=status, creation_time=1.7e9)
        jobs[job.job_id] = TrackedJob(job, 1.7e9, 1.7e9, 1.7e9)
    store.targets[("111111111111", "us-east-1")].jobs = jobs
    return store


@pytest.mark.parametrize(
    ("ended_jobs", "shown"),
    [
        ("all", {"Active", "Complete", "Failed", "Cancelled", "Suspended", "SomeNewStatus"}),
        ("failed", {"Active", "Failed", "Suspended", "SomeNewStatus"}),
        ("none", {"Active", "Suspended", "SomeNewStatus"}),
    ],
)
def test_ended_jobs_setting_hides_per_job_series_but_not_the_counts(
    ended_jobs: EndedJobs, shown: set[str]
) -> None:
    store = _selected_state()
    collector = JobwatchCollector(store, (), "", Selection(ended_jobs=ended_jobs))
    registry = make_registry(collector)
    for status in ("Active", "Complete", "Failed", "Cancelled", "Suspended", "SomeNewStatus"):
        labels = {"aws_account_id": "111111111111", "aws_region": "us-east-1"}
        per_job = registry.get_sample_value(
            "s3batch_job_status", {**labels, "job_id": f"job-{status}", "status": status}
        )
        assert per_job == (1.0 if status in shown else None), status
        assert registry.get_sample_value("s3batch_jobs", {**labels, "status": status}) == 1.0
    assert written(collector) == generate_latest(collector)


def test_allow_and_deny_pick_families_by_glob() -> None:
    store = _selected_state()
    selection = Selection(allow=("s3batch_*", "jobwatch_events_total"), deny=("*_timestamp_*",))
    collector = JobwatchCollector(store, (), "", selection)
    text = written(collector).decode()
    assert text == generate_latest(collector).decode()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert families == {
        "s3batch_job_status",
        "s3batch_job_info",
        "s3batch_job_tasks",
        "s3batch_job_tasks_succeeded",
        "s3batch_job_tasks_failed",
        "s3batch_job_task_failure_ratio",
        "s3batch_job_active_seconds",
        "s3batch_job_stalled",
        "s3batch_job_status_overdue",
        "s3batch_jobs",
        "jobwatch_events_total",  # a counter matches with its _total
    }
    nothing = JobwatchCollector(store, (), "", Selection(deny=("*",)))
    assert written(nothing) == generate_latest(nothing) == b""


def test_selection_rejects_a_pattern_that_matches_no_family() -> None:
    Selection(allow=("s3batch_*", "process_*"), deny=("jobwatch_shard_*",)).check()
    with pytest.raises(ConfigError) as caught:
        Selection(allow=("s3batch_*",), deny=("s3batch_job_staled", "nope*")).check()
    problems = caught.value.problems
    assert problems[0].startswith("metrics.deny[0]: 's3batch_job_staled' matches no metric family")
    assert "s3batch_job_stalled" in problems[0]  # the valid names are listed
    assert problems[1].startswith("metrics.deny[1]: 'nope*'")
    assert len(problems) == 2


async def test_metrics_config_reaches_the_endpoint() -> None:
    scenario: dict[str, Any] = {
        "accounts": [
            {
                "id": "111111111111",
                "regions": ["us-east-1"],
                "jobs": [
                    {"id": "long-1", "tasks": 100_000, "rate": 10},
                    {"id": "short-1", "tasks": 10, "rate": 10},
                ],
            }
        ]
    }
    config = {"metrics": {"deny": ["process_*", "s3batch_job_info"], "ended_jobs": "none"}}
    async with running(scenario, config) as w:
        await w.app.poll_all_once()
        await w.step(30)
        await w.app.poll_all_once()
        port = await w.app.serve_http("127.0.0.1:0")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            text = await r.text()
    where = 'aws_account_id="111111111111",aws_region="us-east-1"'
    assert f's3batch_job_status{{{where},job_id="long-1",status="Active"}} 1.0' in text
    assert 'job_id="short-1"' not in text  # ended: no per-job series with ended_jobs: none
    assert f's3batch_jobs{{{where},status="Complete"}} 1.0' in text
    assert "s3batch_job_info" not in text
    assert "process_" not in text
    assert f"jobwatch_target_up{{{where}}} 1.0" in text


def test_app_refuses_a_family_pattern_that_matches_nothing() -> None:
    config = Config.model_validate(
        {"targets": [{"account_id": "111111111111"}], "metrics": {"allow": ["s3batch_job_sttus"]}}
    )
    with pytest.raises(ConfigError, match=r"metrics\.allow\[0\]: 's3batch_job_sttus'"):
        App(config)

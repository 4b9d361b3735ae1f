"""The poll loop on a driven clock: jitter, interval, overruns, backoff, stop, resync.

Every wait of the loop is a sleep on ``FakeClock``: the tests move time by hand
and count polls, so each rule is pinned to the second without sleeping. The
polls themselves go over real HTTP to the simulator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.diff import DiffPolicy
from jobwatch.events import EventRecord
from jobwatch.model import Job, JobDetail, Target
from jobwatch.poller import PollSettings, TargetPoller
from jobwatch.simulator import FaultSpec
from jobwatch.source import JobSource, PageSink
from jobwatch.state import TargetState
from jobwatch.testing import FakeClock, MemorySink
from tests.helpers import World, running

A = "111111111111"
R = "us-east-1"
STEADY = {"accounts": [{"id": A, "jobs": [{"id": "steady-job", "tasks": 10**7, "rate": 1}]}]}
# Just short of a timer: the loop must still be asleep.
EPSILON = 0.001


@dataclass
class SlowSource:
    """The simulator over HTTP, but listings take time on the fake clock.

    The simulator's latency faults sleep in real time, which the loop does not
    measure; this moves the loop's clock while a listing is under way.
    """

    inner: JobSource
    clock: FakeClock
    #: How long each next listing takes; empty: no time at all.
    takes: list[float] = field(default_factory=list)
    #: Called while a listing is under way.
    during: Callable[[], None] | None = None
    #: Raised by the next listing instead of answering (a bug in one poll).
    crash: BaseException | None = None

    async def list_jobs(
        self, target: Target, statuses: Sequence[str] | None, into: PageSink
    ) -> None:
        if self.crash is not None:
            crash, self.crash = self.crash, None
            raise crash
        await self.inner.list_jobs(target, statuses, into)
        if self.takes:
            self.clock.advance(self.takes.pop(0))
        if self.during is not None:
            self.during()

    async def describe_job(self, target: Target, job_id: str) -> JobDetail:
        return await self.inner.describe_job(target, job_id)

    async def list_recent(
        self, target: Target, statuses: Sequence[str], since: float
    ) -> list[Job] | None:
        return await self.inner.list_recent(target, statuses, since)


@dataclass
class Loop:
    world: World
    clock: FakeClock
    source: SlowSource
    stop: asyncio.Event
    task: asyncio.Task[None]
    events: list[EventRecord]

    @property
    def state(self) -> TargetState:
        return self.world.app.store[(A, R)]

    @property
    def polls(self) -> int:
        return sum(self.state.polls.values())

    async def advance(self, seconds: float) -> None:
        """Move the clock, then let the loop do what is due until it sleeps again."""
        self.clock.advance(seconds)
        await self.clock.settle(1)


@asynccontextmanager
async def loop(
    settings: PollSettings,
    scenario: dict[str, object] = STEADY,
    rng: random.Random | None = None,
) -> AsyncIterator[Loop]:
    clock = FakeClock()
    async with running(scenario, clock=clock) as w:
        assert w.app.source is not None
        source = SlowSource(w.app.source, clock)
        events: list[EventRecord] = []
        poller = TargetPoller(
            Target(A, R),
            source,
            w.app.store,
            events.extend,
            clock,
            DiffPolicy(),
            settings,
            rng or random.Random(1),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            yield Loop(w, clock, source, stop, task, events)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


async def test_the_first_poll_waits_its_jitter_then_one_every_interval_plus_jitter() -> None:
    draws = random.Random(11)
    first, second = draws.uniform(0, 5), draws.uniform(0, 5)
    async with loop(PollSettings(interval=10, jitter=5), rng=random.Random(11)) as lp:
        await lp.clock.settle(1)
        assert lp.clock.next_wake() == pytest.approx(first)
        await lp.advance(first - EPSILON)
        assert lp.polls == 0
        await lp.advance(2 * EPSILON)
        assert lp.state.polls["success"] == 1
        # The next poll is an interval after the start of this one (which took no time).
        assert lp.clock.next_wake() == pytest.approx(10 + second)
        await lp.advance(10 + second - EPSILON)
        assert lp.polls == 1
        await lp.advance(2 * EPSILON)
        assert lp.state.polls["success"] == 2


async def test_overruns_are_counted_past_the_interval_and_the_next_poll_starts_at_once() -> None:
    async with loop(PollSettings(interval=10, jitter=0)) as lp:
        # The first poll takes exactly the interval (no overrun), the next two
        # longer (overruns): each next one starts at once. The fourth takes 4 s,
        # so the fifth starts 6 s after it ended, on the 10 s beat.
        lp.source.takes = [10.0, 10.5, 12.0, 4.0]
        with capture_logs() as logs:
            await lp.clock.settle(1)
        assert lp.state.polls["success"] == 4
        assert lp.state.overruns == 2
        overran = [e for e in logs if e["event"] == "poll_overran"]
        assert [(e["seconds"], e["interval"]) for e in overran] == [(10.5, 10), (12.0, 10)]
        assert lp.state.last_duration == 4.0  # measured on the loop's clock
        assert lp.clock.next_wake() == pytest.approx(6.0)
        await lp.advance(6.0 - EPSILON)
        assert lp.polls == 4
        await lp.advance(2 * EPSILON)
        assert lp.polls == 5


async def test_a_failing_target_backs_off_doubling_up_to_the_cap_then_recovers() -> None:
    denied = {"accounts": [{"id": A, "access_denied": True}]}
    async with loop(PollSettings(interval=10, jitter=0, max_backoff_intervals=8), denied) as lp:
        with capture_logs() as logs:
            await lp.clock.settle(1)
        assert lp.state.polls["failure"] == 1
        (failed,) = [e for e in logs if e["event"] == "poll_failed"]
        assert {k: failed[k] for k in failed if k not in ("event", "log_level")} == {
            "aws_account_id": A,
            "aws_region": R,
            "operation": "ListJobs",
            "error_code": "AccessDenied",
            "error": "Access Denied",
            "throttled": False,
            "consecutive_failures": 1,
        }
        assert lp.state.up is False
        assert lp.world.app.store.ready  # a failed first poll counts for /readyz
        # One failure waits one interval; then 2, 4, 8 intervals, and no more than 8.
        for polls, wait in enumerate([10, 20, 40, 80, 80], start=1):
            assert lp.clock.next_wake() == pytest.approx(wait)
            await lp.advance(wait - EPSILON)
            assert lp.state.polls["failure"] == polls
            await lp.advance(EPSILON)
            assert lp.state.polls["failure"] == polls + 1
            assert lp.state.consecutive_failures == polls + 1
        lp.world.sim.allow_access(A)
        await lp.advance(80)
        assert lp.state.up
        assert lp.state.consecutive_failures == 0
        assert lp.clock.next_wake() == pytest.approx(10)  # back on the interval


async def test_stop_while_waiting_ends_the_loop_at_once_without_another_poll() -> None:
    async with loop(PollSettings(interval=10, jitter=0)) as lp:
        await lp.clock.settle(1)
        assert lp.polls == 1
        lp.stop.set()
        # Prompt in event-loop turns, with the clock standing still.
        for _ in range(10):
            if lp.task.done():
                break
            await asyncio.sleep(0)
        assert lp.task.done()
        assert lp.task.exception() is None
        assert lp.polls == 1
        assert lp.clock.sleepers == 0  # its timer is gone too


async def test_stop_during_a_poll_lets_the_poll_finish_and_then_ends_the_loop() -> None:
    async with loop(PollSettings(interval=10, jitter=5)) as lp:
        lp.source.during = lp.stop.set
        await lp.clock.settle(1)
        lp.clock.advance(5)  # past any first jitter: the poll starts
        await asyncio.wait_for(lp.task, 5)
        assert lp.state.polls["success"] == 1
        assert set(lp.world.tracked(A, R)) == {"steady-job"}
        assert lp.clock.sleepers == 0


async def test_a_poll_that_crashes_is_recorded_and_the_loop_goes_on() -> None:
    async with loop(PollSettings(interval=10, jitter=0)) as lp:
        lp.source.crash = RuntimeError("a bug")
        with capture_logs() as logs:
            await lp.clock.settle(1)
        assert lp.state.polls["failure"] == 1
        assert lp.state.last_error == "RuntimeError"
        crashed = [e for e in logs if e["log_level"] == "error"]
        assert [(e["event"], e["error"]) for e in crashed] == [
            ("poll_crashed", "RuntimeError('a bug')")
        ]
        # A crash is a failure like any other: a second one in a row backs off.
        lp.source.crash = RuntimeError("a bug")
        await lp.advance(10)
        assert lp.state.consecutive_failures == 2
        assert lp.clock.next_wake() == pytest.approx(20)
        await lp.advance(20)
        assert lp.state.up
        assert not lp.task.done()


async def test_a_clock_that_fails_ends_the_loop_instead_of_spinning() -> None:
    class BrokenClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            raise RuntimeError("no timers")

    async with running(STEADY, clock=BrokenClock()) as w:
        poller = w.app.pollers[(A, R)]
        with pytest.raises(RuntimeError, match="no timers"):
            await asyncio.wait_for(poller.run(asyncio.Event()), 5)
        assert sum(w.app.store[(A, R)].polls.values()) <= 1


async def test_a_failed_describe_keeps_the_job_until_it_answers() -> None:
    ending = [{"at": "15s", "action": "fail", "reason": "boom"}]
    scenario = {
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {
                        "id": f"ending-job-{i}",
                        "tasks": 10**7,
                        "rate": 1,
                        # Older than the recently-ended listing looks back: only
                        # DescribeJob can tell that they ended.
                        "created_at": "-1h",
                        "timeline": ending,
                    }
                    for i in range(2)
                ],
            }
        ],
    }
    async with running(scenario) as w:
        await w.step(10)
        # Every attempt of both DescribeJob calls (3 each with standard retries,
        # made concurrently) is throttled.
        fault = {"kind": "throttle", "accounts": [A], "operations": ["DescribeJob"], "count": 6}
        w.sim.add_fault(FaultSpec.model_validate(fault))
        with capture_logs() as logs:
            await w.step(10)  # both left the incremental listing
        failed = [e for e in logs if e["event"] == "describe_failed"]
        assert sorted(e["job_id"] for e in failed) == ["ending-job-0", "ending-job-1"]
        assert {(e["error_code"], e["throttled"]) for e in failed} == {("SlowDown", True)}
        assert w.app.store[(A, R)].up  # the listing itself succeeded
        # Both are kept as they were, not aged out, and nothing is reported yet.
        assert w.tracked(A, R) == {"ending-job-0": "Active", "ending-job-1": "Active"}
        assert w.sink.events == []
        await w.step(10)
        assert sorted((e.change.job.job_id, e.kind) for e in w.sink.events) == [
            ("ending-job-0", "job_failed"),
            ("ending-job-0", "job_status_changed"),
            ("ending-job-1", "job_failed"),
            ("ending-job-1", "job_status_changed"),
        ]


async def test_a_full_resync_comes_every_resync_interval_and_not_before() -> None:
    async with running(STEADY, {"resync_interval": "900s"}) as w:
        full = w.app.store.full_listings
        await w.app.poll_all_once()  # the baseline is a full listing
        assert full["baseline"] == 1
        # Jobs created and ended between two polls are reported by the next
        # poll all the same: it also lists the jobs that ended since the last.
        w.sim.create_job(A, R, id="quick-1", tasks=10, rate=100)
        failing = [{"at": "1s", "action": "fail", "reason": "boom"}]
        w.sim.create_job(A, R, id="failed-1", tasks=10**6, rate=1, timeline=failing)
        await w.step(900 - 0.5)
        assert full["resync"] == 0
        assert w.tracked(A, R) == {
            "steady-job": "Active",
            "quick-1": "Complete",
            "failed-1": "Failed",
        }
        assert sorted(e.change.job.job_id for e in w.sink.of("job_discovered")) == [
            "failed-1",
            "quick-1",
        ]
        # A failure first seen in a listing is described too.
        (failed,) = w.sink.of("job_failed")
        assert failed.detail is not None
        assert [r.reason for r in failed.detail.failure_reasons] == ["boom"]
        assert {e.observed_at for e in w.sink.of("job_discovered")} == {w.clock.time()}
        await w.step(0.5)
        assert full["resync"] == 1
        assert w.app.store[(A, R)].last_full_listing == w.clock.time()
        await w.step(10)
        assert full["resync"] == 1  # incremental again
        reported = [(e.kind, e.change.job.job_id) for e in w.sink.events]
        assert len(reported) == len(set(reported))  # nothing reported twice


async def test_a_wall_clock_jump_back_forces_a_full_resync() -> None:
    async with running(STEADY, {"resync_interval": "900s"}) as w:
        jobwatch_clock = ManualClock(w.clock.time())
        sink = MemorySink()
        async with App(w.app.config, clock=jobwatch_clock, sinks=[sink]) as app:
            full = app.store.full_listings
            await app.poll_all_once()
            w.sim.advance(10)
            jobwatch_clock.advance(-3600)
            # Else the next resync would wait for the clock to catch up: an hour and 15 min.
            await app.poll_all_once()
            assert (full["baseline"], full["clock_jump"]) == (1, 1)
            assert app.store[(A, R)].last_full_listing == jobwatch_clock.time()
            w.sim.advance(10)
            jobwatch_clock.advance(10)
            await app.poll_all_once()
            # Resyncs are counted from the new time.
            assert (full["clock_jump"], full["resync"]) == (1, 0)


async def test_a_snapshot_without_a_full_listing_time_is_resynced_first() -> None:
    # As restored from a state file saved before its target's first full listing.
    async with running(STEADY) as w:
        await w.app.poll_all_once()
        w.app.store[(A, R)].last_full_listing = None
        w.sim.create_job(A, R, id="quick-1", tasks=10, rate=100)
        await w.step(10)
        assert "quick-1" in w.tracked(A, R)
        assert w.app.store[(A, R)].last_full_listing == w.clock.time()


async def test_each_unknown_value_is_counted_and_logged_once() -> None:
    unknown = [("Archiving", "S3FutureA"), ("Thawing", "S3FutureB"), ("Archiving", "S3FutureA")]
    scenario = {
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {
                        "id": f"future-job-{i}",
                        "operation": operation,
                        "tasks": 10**7,
                        "rate": 1,
                        "timeline": [{"at": "5s", "action": "set_status", "status": status}],
                    }
                    for i, (status, operation) in enumerate(unknown)
                ],
            }
        ]
    }
    async with running(scenario) as w:
        with capture_logs() as logs:
            await w.step(10)
            await w.step(10)
        seen = [(e["field"], e["value"]) for e in logs if e["event"] == "unknown_value_seen"]
        assert sorted(seen) == [
            ("operation", "S3FutureA"),
            ("operation", "S3FutureB"),
            ("status", "Archiving"),
            ("status", "Thawing"),
        ]
        assert dict(w.app.store.unknown_values) == {"status": 2, "operation": 2}


LEAVING = {
    "retention_days": 1,
    "accounts": [
        {
            "id": A,
            "jobs": [
                {"id": f"leaving-job-{i}", "tasks": 10**7, "rate": 1, "timeline": [end]}
                for i in range(2)
                for end in [{"at": "15s", "action": "fail", "reason": "boom"}]
            ],
        }
    ],
}


async def test_jobs_aws_no_longer_has_age_out_on_an_incremental_poll() -> None:
    async with running(LEAVING, {"resync_interval": "2d"}) as w:
        await w.step(10)
        assert set(w.tracked(A, R)) == {"leaving-job-0", "leaving-job-1"}
        await w.step(86400 + 60)  # both ended, and AWS forgot them (its retention: a day)
        aged = w.sink.of("job_aged_out")
        assert sorted((e.change.job.job_id, e.change.aged_out_reason) for e in aged) == [
            ("leaving-job-0", "unlisted"),
            ("leaving-job-1", "unlisted"),
        ]
        assert w.tracked(A, R) == {}
        assert w.sim.request_count("DescribeJob") == 2  # DescribeJob said NotFound


async def test_jobs_missing_from_a_full_listing_age_out_without_describe_calls() -> None:
    async with running(LEAVING, {"resync_interval": "1h"}) as w:
        await w.step(10)
        await w.step(86400 + 60)  # past resync_interval: a full listing
        aged = w.sink.of("job_aged_out")
        assert sorted(e.change.job.job_id for e in aged) == ["leaving-job-0", "leaving-job-1"]
        assert w.tracked(A, R) == {}
        assert w.sim.request_count("DescribeJob") == 0


async def test_a_failed_poll_keeps_the_snapshot_and_the_recovery_says_nothing_new() -> None:
    async with running(STEADY) as w:
        await w.step(10)  # the baseline, with the job running
        labels = {"aws_account_id": A, "aws_region": R}
        w.sim.deny_access(A)
        await w.step(10)
        assert not w.app.store[(A, R)].up
        assert w.tracked(A, R) == {"steady-job": "Active"}
        assert w.sample("s3batch_jobs", **labels, status="Active") == 1
        w.sim.allow_access(A)
        await w.step(10)
        assert w.app.store[(A, R)].up
        assert w.sink.events == []  # no rediscovery, nothing aged out

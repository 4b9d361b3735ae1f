"""The pure diff: every rule, no I/O."""

from __future__ import annotations

import itertools

import pytest

from jobwatch.diff import Differ, DiffPolicy, TrackedJob, diff
from jobwatch.model import KNOWN_STATUSES, Job

T0 = 1_800_000_000.0
POLICY = DiffPolicy(
    no_progress=600.0,
    status_limits={"Suspended": 3600.0, "Preparing": 1800.0},
    task_failure_ratio=0.1,
    task_failure_min_tasks=100,
    terminal_retention=86400.0,
)


def job(jid: str = "j1", status: str = "Active", **kw: object) -> Job:
    kw.setdefault("creation_time", T0 - 100)
    kw.setdefault("operation", "S3PutObjectCopy")
    if status in ("Complete", "Failed", "Cancelled"):
        kw.setdefault("termination_time", T0 - 10)
    return Job.make(jid, status, **kw)  # type: ignore[arg-type]


def kinds(result: object) -> list[str]:
    return [c.kind for c in result.changes]  # type: ignore[attr-defined]


def test_baseline_records_without_events() -> None:
    r = diff(None, [job("a"), job("b", "Ready"), job("c", "Complete")], T0, POLICY, complete=True)
    assert kinds(r) == []
    assert set(r.jobs) == {"a", "b", "c"}


def test_baseline_reports_recent_failure_once_and_skips_old_history() -> None:
    recent = job("f1", "Failed", termination_time=T0 - 3600)
    old = job("f2", "Failed", termination_time=T0 - 3 * 86400)
    r = diff(None, [recent, old], T0, POLICY, complete=True)
    assert kinds(r) == ["job_failed"]
    assert r.changes[0].job.job_id == "f1"
    assert set(r.jobs) == {"f1"}
    # The next full listing still has both: nothing new is said.
    r2 = diff(r.jobs, [recent, old], T0 + 60, POLICY, complete=True)
    assert kinds(r2) == []


def test_new_job_after_baseline_is_discovered() -> None:
    r = diff({}, [job("n", "New")], T0, POLICY, complete=False)
    assert kinds(r) == ["job_discovered"]


def test_job_created_and_failed_between_polls() -> None:
    r = diff({}, [job("x", "Failed")], T0, POLICY, complete=True)
    assert kinds(r) == ["job_discovered", "job_failed"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (a, b)
        for a, b in itertools.permutations(KNOWN_STATUSES, 2)
        if a not in ("Complete", "Failed", "Cancelled")
    ],
)
def test_each_transition_gives_exactly_one_status_change(before: str, after: str) -> None:
    prev = diff(None, [job("j", before)], T0, POLICY, complete=True).jobs
    r = diff(prev, [job("j", after)], T0 + 30, POLICY, complete=True)
    changed = [c for c in r.changes if c.kind == "job_status_changed"]
    assert len(changed) == 1
    assert changed[0].previous_status == before
    assert changed[0].job.status == after
    failed = [c for c in r.changes if c.kind == "job_failed"]
    assert [c.previous_status for c in failed] == ([before] if after == "Failed" else [])
    # Repeating the same listing adds nothing.
    r2 = diff(r.jobs, [job("j", after)], T0 + 60, POLICY, complete=True)
    assert [c for c in r2.changes if c.kind in ("job_status_changed", "job_failed")] == []


def test_seconds_in_previous_status() -> None:
    prev = diff({}, [job("j", "Ready")], T0, POLICY, complete=True).jobs
    r = diff(prev, [job("j", "Active")], T0 + 90, POLICY, complete=True)
    (c,) = [c for c in r.changes if c.kind == "job_status_changed"]
    assert c.seconds_in_previous_status == 90


def test_stall_and_recovery_are_edge_triggered() -> None:
    running = job("s", "Active", tasks_total=1000, tasks_succeeded=10)
    snap = diff({}, [running], T0, POLICY, complete=True).jobs
    for t in (300, 599):
        snap = diff(snap, [running], T0 + t, POLICY, complete=True).jobs
        assert not snap["s"].stalled
    r = diff(snap, [running], T0 + 600, POLICY, complete=True)
    assert kinds(r) == ["job_stalled"]
    assert r.changes[0].stall_reason == "no_progress"
    assert r.changes[0].stalled_seconds == 600
    snap = r.jobs
    for t in range(1, 11):  # ten more polls: no duplicate
        r = diff(snap, [running], T0 + 600 + t * 60, POLICY, complete=True)
        assert kinds(r) == []
        snap = r.jobs
    moved = job("s", "Active", tasks_total=1000, tasks_succeeded=11)
    r = diff(snap, [moved], T0 + 2000, POLICY, complete=True)
    assert kinds(r) == ["job_stall_recovered"]
    assert r.changes[0].stall_reason == "no_progress"
    assert not r.jobs["s"].stalled
    assert r.jobs["s"].last_progress_at == T0 + 2000


def test_entering_active_restarts_the_progress_clock() -> None:
    snap = diff({}, [job("s", "Ready")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("s", "Active")], T0 + 5000, POLICY, complete=True)
    assert "job_stalled" not in kinds(r)
    assert r.jobs["s"].last_progress_at == T0 + 5000


def test_paused_job_is_not_stalled() -> None:
    snap = diff({}, [job("p", "Paused")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("p", "Paused")], T0 + 10 * 86400, POLICY, complete=True)
    assert kinds(r) == []


def test_status_held_too_long_is_overdue_until_it_moves() -> None:
    snap = diff({}, [job("w", "Suspended")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("w", "Suspended")], T0 + 3599, POLICY, complete=True)
    assert kinds(r) == []
    r = diff(r.jobs, [job("w", "Suspended")], T0 + 3600, POLICY, complete=True)
    assert kinds(r) == ["job_stalled"]
    (c,) = r.changes
    assert (c.job.job_id, c.stall_reason, c.stalled_seconds) == ("w", "status_overdue", 3600)
    assert r.jobs["w"].overdue
    r = diff(r.jobs, [job("w", "Ready")], T0 + 4000, POLICY, complete=True)
    assert kinds(r) == ["job_status_changed", "job_stall_recovered"]
    assert r.changes[1].stall_reason == "status_overdue"
    assert not r.jobs["w"].overdue


def test_status_since_follows_each_transition() -> None:
    snap = diff({}, [job("j", "Ready")], T0, POLICY, complete=True).jobs
    snap = diff(snap, [job("j", "Active")], T0 + 30, POLICY, complete=True).jobs
    r = diff(snap, [job("j", "Paused")], T0 + 100, POLICY, complete=True)
    (c,) = r.changes
    assert c.seconds_in_previous_status == 70
    assert r.jobs["j"].status_since == T0 + 100


@pytest.mark.parametrize(
    ("termination_time", "since"),
    [
        (T0 + 20, T0 + 20),  # ended between the polls: when it ended
        (T0 + 90, T0 + 30),  # AWS's clock ahead of ours: no end in the future
        (None, T0 + 30),  # no time given: when it was seen
    ],
)
def test_a_job_that_ends_counts_its_end_from_its_termination_time(
    termination_time: float | None, since: float
) -> None:
    snap = diff({}, [job("j", "Active")], T0, POLICY, complete=True).jobs
    r = diff(
        snap,
        [job("j", "Complete", termination_time=termination_time)],
        T0 + 30,
        POLICY,
        complete=True,
    )
    assert r.jobs["j"].status_since == since


def test_a_job_first_seen_ended_dates_from_its_termination() -> None:
    r = diff({}, [job("f", "Failed", termination_time=T0 - 3600)], T0, POLICY, complete=True)
    assert r.jobs["f"].status_since == T0 - 3600
    assert r.jobs["f"].first_seen == T0


def test_preparing_since_creation_counts_from_creation_time() -> None:
    # First seen in Preparing, created 2h ago: the 30 min limit is already passed.
    r = diff({}, [job("p", "Preparing", creation_time=T0 - 7200)], T0, POLICY, complete=True)
    assert kinds(r) == ["job_discovered", "job_stalled"]


def test_stalled_job_that_fails_reports_failure_and_recovery() -> None:
    running = job("s", "Active", tasks_succeeded=1)
    snap = diff({}, [running], T0, POLICY, complete=True).jobs
    snap = diff(snap, [running], T0 + 700, POLICY, complete=True).jobs
    r = diff(snap, [job("s", "Failed", tasks_succeeded=1)], T0 + 800, POLICY, complete=True)
    assert kinds(r) == ["job_status_changed", "job_failed", "job_stall_recovered"]


def test_task_failure_ratio_fires_once_after_min_tasks() -> None:
    few = job("r", "Active", tasks_total=1000, tasks_succeeded=50, tasks_failed=49)
    r = diff({}, [few], T0, POLICY, complete=True)
    assert "job_task_failure_ratio_exceeded" not in kinds(r)  # 99 < 100 tasks run
    many = job("r", "Active", tasks_total=1000, tasks_succeeded=80, tasks_failed=20)
    r = diff(r.jobs, [many], T0 + 60, POLICY, complete=True)
    assert kinds(r) == ["job_task_failure_ratio_exceeded"]
    assert r.changes[0].job.job_id == "r"
    more = job("r", "Active", tasks_total=1000, tasks_succeeded=90, tasks_failed=40)
    r = diff(r.jobs, [more], T0 + 120, POLICY, complete=True)
    assert kinds(r) == []


@pytest.mark.parametrize(
    ("succeeded", "failed", "fires"),
    [
        (91, 9, False),  # 9% of 100
        (90, 10, False),  # exactly 10%: the ratio must be exceeded
        (900, 101, True),  # 10.09%: just above
        (89, 11, True),
        (50, 49, False),  # half failed, but 99 tasks are too few to judge
        (50, 50, True),  # 100 tasks: enough
    ],
)
def test_task_failure_ratio_and_min_tasks_thresholds(
    succeeded: int, failed: int, fires: bool
) -> None:
    j = job("r", "Active", tasks_total=10_000, tasks_succeeded=succeeded, tasks_failed=failed)
    r = diff({}, [j], T0, POLICY, complete=True)
    assert ("job_task_failure_ratio_exceeded" in kinds(r)) is fires
    assert r.jobs["r"].ratio_exceeded is fires


def test_complete_listing_ages_out_missing_jobs() -> None:
    snap = diff({}, [job("a"), job("b")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("a")], T0 + 60, POLICY, complete=True)
    assert kinds(r) == ["job_aged_out"]
    assert (r.changes[0].job.job_id, r.changes[0].aged_out_reason) == ("b", "unlisted")
    assert set(r.jobs) == {"a"}


def test_incremental_listing_keeps_missing_jobs_unless_gone() -> None:
    snap = diff({}, [job("a"), job("b", "Complete")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("a")], T0 + 60, POLICY, complete=False)
    assert kinds(r) == []
    assert set(r.jobs) == {"a", "b"}
    # A job kept that way is still judged: it stalls like a listed one.
    running = diff({}, [job("s", tasks_succeeded=1)], T0, POLICY, complete=True).jobs
    r = diff(running, [], T0 + 600, POLICY, complete=False)
    assert kinds(r) == ["job_stalled"]
    assert r.jobs["s"].stalled
    r = diff(snap, [], T0 + 60, POLICY, complete=False, gone={"a"})
    assert kinds(r) == ["job_aged_out"]
    assert set(r.jobs) == {"b"}


def test_departed_lists_only_non_terminal_jobs_missing_from_listing() -> None:
    snap = diff({}, [job("a"), job("b"), job("c", "Complete")], T0, POLICY, complete=True).jobs
    differ = Differ(snap, T0 + 60, POLICY)
    assert differ.departed() == ["a", "b"]
    differ.add([job("a")])
    assert differ.departed() == ["b"]
    differ.add([job("b", "Complete")])
    assert differ.departed() == []


def _paging_case() -> tuple[dict[str, TrackedJob], list[Job]]:
    """A snapshot and a listing with one of everything the diff tells apart."""
    snap = diff(
        {},
        [
            job("same", tasks_total=10),
            job("moves", tasks_total=10),
            job("fails"),
            job("unlisted"),
            job("old-done", "Complete", termination_time=T0 - 86000),
            job("stalls", tasks_succeeded=1),
        ],
        T0 - 700,
        POLICY,
        complete=True,
    ).jobs
    listing = [
        job("same", tasks_total=10),
        job("moves", tasks_total=10, tasks_succeeded=4),
        job("fails", "Failed"),
        job("new"),
        job("new-failed", "Failed"),
        job("history", "Complete", termination_time=T0 - 90000),
        job("stalls", tasks_succeeded=1),
        job("same", "Paused"),  # listed twice: the first copy wins
        job("old-done", "Complete", termination_time=T0 - 86000),
    ]
    return snap, listing


@pytest.mark.parametrize("complete", [True, False])
def test_a_listing_fed_page_by_page_diffs_as_a_whole(complete: bool) -> None:
    snap, listing = _paging_case()
    whole = diff(snap, listing, T0 + 200, POLICY, complete=complete, gone={"unlisted"})
    assert len(whole.changes) >= 6  # the case has something in each rule
    # Every way to cut the listing in three pages, empty pages included.
    for i, j in itertools.combinations_with_replacement(range(len(listing) + 1), 2):
        differ = Differ(snap, T0 + 200, POLICY)
        for page in (listing[:i], listing[i:j], listing[j:]):
            differ.add(page)
        assert differ.listed == len(listing)
        paged = differ.finish(complete=complete, gone={"unlisted"})
        assert paged.changes == whole.changes, (i, j)
        assert paged.jobs == whole.jobs, (i, j)


def test_a_restarted_listing_forgets_its_earlier_pages() -> None:
    snap, listing = _paging_case()
    differ = Differ(snap, T0 + 200, POLICY)
    # A first attempt saw other versions of the jobs, then its token expired.
    differ.add([job("same", "Cancelled"), job("new", "Failed")])
    differ.restart()
    assert differ.listed == 0
    for page in (listing[:4], listing[4:]):
        differ.add(page)
    assert differ.finish(complete=True) == diff(snap, listing, T0 + 200, POLICY, complete=True)


def test_terminal_jobs_leave_after_retention() -> None:
    done = job("d", "Complete", termination_time=T0)
    snap = diff({}, [done], T0, POLICY, complete=True).jobs
    r = diff(snap, [done], T0 + 86400, POLICY, complete=True)
    assert kinds(r) == []
    r = diff(r.jobs, [done], T0 + 86401, POLICY, complete=True)
    assert kinds(r) == ["job_aged_out"]
    assert r.changes[0].aged_out_reason == "retention"
    # Listed again by a later full resync: history, not news.
    r = diff(r.jobs, [done], T0 + 90000, POLICY, complete=True)
    assert kinds(r) == []
    assert r.jobs == {}


@pytest.mark.parametrize(
    ("ended", "tracked"),
    [
        ({"termination_time": T0 - 86400}, True),  # ended exactly terminal_retention ago
        ({"termination_time": T0 - 86401}, False),
        # No termination time: the creation time stands in for it.
        ({"termination_time": None, "creation_time": T0 - 86400}, True),
        ({"termination_time": None, "creation_time": T0 - 86401}, False),
    ],
)
def test_a_job_first_seen_ended_is_news_within_terminal_retention_only(
    ended: dict[str, float | None], tracked: bool
) -> None:
    r = diff({}, [job("d", "Failed", **ended)], T0, POLICY, complete=True)
    assert ("d" in r.jobs) is tracked
    assert kinds(r) == (["job_discovered", "job_failed"] if tracked else [])


def test_terminal_job_without_any_time_is_history() -> None:
    odd = Job.make("o", "Failed")
    assert kinds(diff({}, [odd], T0, POLICY, complete=True)) == []


def test_unknown_status_is_data() -> None:
    snap = diff({}, [job("u", "Active")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("u", "Archiving")], T0 + 60, POLICY, complete=True)
    assert kinds(r) == ["job_status_changed"]
    assert r.jobs["u"].job.status == "Archiving"
    assert not r.jobs["u"].job.terminal


def test_duplicate_entries_in_listing_count_once() -> None:
    r = diff({}, [job("a"), job("a", "Failed"), job("b")], T0, POLICY, complete=True)
    assert kinds(r) == ["job_discovered", "job_discovered"]
    assert r.jobs["a"].job.status == "Active"  # the first copy wins
    assert set(r.jobs) == {"a", "b"}  # and the listing goes on after it


def test_history_in_a_listing_is_skipped_and_the_listing_goes_on() -> None:
    old = job("h", "Complete", termination_time=T0 - 3 * 86400)
    r = diff({}, [old, job("n", "New")], T0, POLICY, complete=True)
    assert set(r.jobs) == {"n"}


def test_describe_without_operation_keeps_the_listed_one() -> None:
    snap = diff({}, [job("a", operation="S3NewThing")], T0, POLICY, complete=True).jobs
    described = job("a", "Failed", operation="")
    r = diff(snap, [described], T0 + 60, POLICY, complete=False)
    assert r.jobs["a"].job.operation == "S3NewThing"


def test_clock_going_back_does_not_stall_or_crash() -> None:
    snap = diff({}, [job("a")], T0, POLICY, complete=True).jobs
    r = diff(snap, [job("a")], T0 - 3600, POLICY, complete=True)
    assert kinds(r) == []
    # A status left "before" it began was held for no time, not a negative one.
    r = diff(snap, [job("a", "Paused")], T0 - 3600, POLICY, complete=True)
    (c,) = [c for c in r.changes if c.kind == "job_status_changed"]
    assert c.seconds_in_previous_status == 0


def test_tracked_job_ended_at() -> None:
    t = TrackedJob(job("a", "Complete", termination_time=None), T0, T0 + 5, T0)
    assert t.ended_at == T0 + 5
    assert TrackedJob(job("a"), T0, T0, T0).ended_at is None


def test_an_unchanged_job_keeps_its_tracked_object() -> None:
    # /metrics keeps each job's rendered lines under its TrackedJob object.
    first = diff(
        None, [job("a", tasks_total=10), job("b", tasks_total=10)], T0, POLICY, complete=True
    )
    second = diff(
        first.jobs,
        [job("a", tasks_total=10), job("b", tasks_total=10, tasks_succeeded=5)],
        T0 + 60,
        POLICY,
        complete=True,
    )
    assert second.jobs["a"] is first.jobs["a"]
    assert second.jobs["b"] is not first.jobs["b"]
    assert second.jobs["b"].last_progress_at == T0 + 60
    # An ended job listed again unchanged keeps its object too (no flag to work out).
    done = job("d", "Complete", termination_time=T0 - 10)
    before = diff(None, [done], T0, POLICY, complete=True).jobs["d"]
    assert diff({"d": before}, [done], T0 + 60, POLICY, complete=True).jobs["d"] is before
    # Unchanged in AWS but newly stalled: a new object with the flag.
    later = diff(second.jobs, [job("a", tasks_total=10)], T0 + 600, POLICY, complete=False)
    assert later.jobs["a"] is not first.jobs["a"]
    assert later.jobs["a"].stalled

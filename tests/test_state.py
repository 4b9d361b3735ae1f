"""The store's bookkeeping: failures, readiness, and the bound on unknown values."""

from __future__ import annotations

from jobwatch.diff import EVENT_KINDS
from jobwatch.model import Target
from jobwatch.state import POLL_DURATION_BUCKETS, Store

T = Target("111111111111", "us-east-1")
U = Target("222222222222", "us-east-1")


def test_a_failure_marks_the_target_down_and_attempted() -> None:
    store = Store([T, U])
    assert not store.ready
    store.record_failure(T.key, "AccessDenied")
    store.record_failure(T.key, "AccessDenied")
    ts = store[T.key]
    assert ts.up is False
    assert ts.attempted is True
    assert (ts.consecutive_failures, ts.polls["failure"], ts.last_error) == (2, 2, "AccessDenied")
    assert not store.ready  # U has not been polled yet
    store.record_success(U.key, {}, 1.0, full=False)
    assert store.ready
    assert store[U.key].last_full_listing is None  # an incremental poll is no resync
    store.record_success(T.key, {}, 2.0, full=True)
    assert (store[T.key].up, store[T.key].consecutive_failures, store[T.key].last_error) == (
        True,
        0,
        None,
    )
    assert store[T.key].last_full_listing == 2.0


def test_unknown_values_are_counted_each_once_and_remembered_up_to_a_bound() -> None:
    store = Store([T])
    values = [f"Status{i}" for i in range(101)]
    assert [store.note_unknown("status", v) for v in values] == [True] * 101
    assert store.unknown_values["status"] == 101
    assert store.note_unknown("status", values[0]) is False  # remembered: not again
    # Past 100 remembered values a new one is counted again each time it comes
    # (memory stays bounded whatever AWS sends).
    assert store.note_unknown("status", values[100]) is True
    # Both fields are there from the start, so their series are exported at 0.
    assert dict(store.unknown_values) == {"status": 102, "operation": 0}


def test_every_event_kind_is_counted_from_zero() -> None:
    store = Store([T])
    assert dict(store.events) == dict.fromkeys(EVENT_KINDS, 0)
    store.count_events({"job_failed": 2})
    store.count_events({"job_failed": 1})
    assert store.events["job_failed"] == 3


def test_poll_durations_fill_the_histogram() -> None:
    store = Store([T])
    assert (store.poll_buckets, store.poll_sum) == ([0] * (len(POLL_DURATION_BUCKETS) + 1), 0.0)
    for seconds in (0.05, 0.07, 0.07, 1000.0):
        store.record_duration(T.key, seconds)
    # A bucket counts durations up to and including its bound; the last is +Inf.
    assert store.poll_buckets[:2] == [1, 2]
    assert store.poll_buckets[-1] == 1
    assert sum(store.poll_buckets) == 4
    assert store.poll_sum == 0.05 + 0.07 + 0.07 + 1000.0
    assert store[T.key].last_duration == 1000.0


def test_targets_join_keep_their_snapshot_when_updated_and_leave() -> None:
    store = Store([T])
    changes: list[tuple[str, str]] = []
    store.on_change = changes.append
    store.record_success(T.key, {}, 1.0, full=True)
    assert len(changes) == 1
    labelled = Target(T.account_id, T.region, labels=(("team", "storage"),))
    assert store.add(labelled) is store[T.key]
    assert store[T.key].target == labelled
    assert store[T.key].jobs == {}  # the snapshot stays
    joined = store.add(U)
    assert joined.target == U
    assert joined.jobs is None
    assert set(store.targets) == {T.key, U.key}
    store.remove(U.key)
    assert set(store.targets) == {T.key}
    assert changes == [T.key, U.key]  # a target that left changes the state file
    store.remove(U.key)  # gone already: nothing changes
    assert changes == [T.key, U.key]

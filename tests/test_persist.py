"""The state file: round trip, atomic replacement, and bad files never fatal."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobwatch.diff import Change, DiffPolicy, diff
from jobwatch.events import Event, EventRecord
from jobwatch.model import Job, Target
from jobwatch.persist import (
    SCHEMA_VERSION,
    AckLog,
    Committer,
    decode,
    encode,
    load_into,
    write_atomic,
)
from jobwatch.state import Store
from jobwatch.testing import MemorySink

T0 = 1_800_000_000.0
TARGETS = [Target("111111111111", "us-east-1"), Target("111111111111", "eu-west-1")]


def _store_with_jobs() -> Store:
    store = Store(TARGETS)
    jobs = [
        Job.make("a", "Active", "S3PutObjectCopy", 5, "d\u00e9sc \n", T0 - 50, None, 10, 3, 1, 4.5),
        Job.make("b", "Failed", "S3NewOp", 1, "", T0 - 90, T0 - 5, 2, 0, 2, 1.0),
    ]
    snap = diff({}, jobs, T0, DiffPolicy(no_progress=1), complete=True).jobs
    snap = diff(snap, jobs, T0 + 5, DiffPolicy(no_progress=1), complete=True).jobs
    store.record_success(TARGETS[0].key, snap, T0 + 5, full=True)
    return store


def test_round_trip_keeps_every_field() -> None:
    store = _store_with_jobs()
    restored = decode(encode(store, T0))
    assert set(restored) == {TARGETS[0].key}  # the never-polled target is not saved
    jobs, last_full = restored[TARGETS[0].key]
    assert jobs == store[TARGETS[0].key].jobs
    assert jobs["a"].stalled  # flags survive
    assert last_full == T0 + 5


def test_every_combination_of_flags_survives_a_round_trip() -> None:
    # A lost flag would repeat its event (job_stalled, ratio exceeded) after a restart.
    store = _store_with_jobs()
    template = (store[TARGETS[0].key].jobs or {})["a"]
    jobs = {}
    for i, (stalled, overdue, ratio) in enumerate(itertools.product([False, True], repeat=3)):
        job = replace(template.job, job_id=f"j{i}")
        jobs[job.job_id] = replace(
            template, job=job, stalled=stalled, overdue=overdue, ratio_exceeded=ratio
        )
    # A target polled only incrementally so far has no full listing time.
    restored = decode(encode([(TARGETS[1].key, jobs, None)], T0))
    assert restored == {TARGETS[1].key: (jobs, None)}


def test_load_into_restores_known_targets_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    saved = _store_with_jobs()
    saved.record_success(TARGETS[1].key, {}, T0 + 7, full=True)
    write_atomic(path, encode(saved, T0))
    # The first target in the file is no longer configured: the next one still loads.
    fresh = Store([TARGETS[1], Target("222222222222", "us-east-1")])
    with capture_logs() as logs:
        assert load_into(fresh, path) == 1
    assert fresh[TARGETS[1].key].jobs == {}
    assert fresh[TARGETS[1].key].last_full_listing == T0 + 7  # the resync schedule goes on
    assert fresh[("222222222222", "us-east-1")].jobs is None
    assert [(e["event"], e["path"], e["targets"], e["outbox"]) for e in logs] == [
        ("state_restored", str(path), 1, 0)
    ]
    both = Store(TARGETS)
    assert load_into(both, path) == 2


def test_a_state_file_without_an_outbox_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    doc = json.loads(encode(_store_with_jobs(), T0))
    del doc["outbox"]
    path.write_text(json.dumps(doc))
    assert load_into(Store(TARGETS), path) == 1


def _doc(**kw: object) -> bytes:
    return json.dumps({"version": SCHEMA_VERSION, "targets": {}, **kw}).encode()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "Expecting property name"),
        (b"", "Expecting value"),
        (_doc(version=SCHEMA_VERSION + 1), f"unknown state file version {SCHEMA_VERSION + 1}"),
        (json.dumps([1, 2, 3]).encode(), "unknown state file version None"),
        (_doc(targets={"x/y": {"jobs": [[1, 2]]}}), "job row of the wrong length"),
        (_doc(outbox=[["1", {}]]), "malformed outbox entry"),
        (_doc(outbox=[[1, "event"]]), "malformed outbox entry"),
    ],
)
def test_bad_state_file_means_fresh_baseline_with_warning(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = Store(TARGETS)
    with capture_logs() as logs:
        assert load_into(store, path) == 0
    assert [(e["event"], e["path"], e["action"]) for e in logs] == [
        ("state_discarded", str(path), "fresh baseline")
    ]
    assert why in logs[0]["error"]
    assert all(ts.jobs is None for ts in store.targets.values())


def test_unreadable_state_file_means_fresh_baseline_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # reading it fails with an OSError, as a file without permission would
    store = Store(TARGETS)
    with capture_logs() as logs:
        assert load_into(store, path) == 0
    assert [(e["event"], e["path"]) for e in logs] == [("state_unreadable", str(path))]
    assert "Is a directory" in logs[0]["error"]
    assert all(ts.jobs is None for ts in store.targets.values())


def test_missing_state_file_is_silent(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_into(Store(TARGETS), tmp_path / "absent.json") == 0
    assert logs == []


def test_write_atomic_replaces_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new" / "dirs" / "state.json"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace_(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_)
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    assert path.stat().st_mode & 0o777 == 0o600  # job descriptions are nobody else's business
    # The temporary is a hidden sibling: a rename within one directory is atomic.
    for src, dst in renames:
        assert Path(src).parent == path.parent
        assert Path(src).name.startswith(".state.json.")
        assert dst == str(path)


def test_a_failed_write_leaves_no_temporary_and_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    (path / "keep").write_text("x")  # a non-empty directory cannot be replaced
    with pytest.raises(IsADirectoryError):
        write_atomic(path, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_ack_log_reads_zero_when_empty_or_garbled_and_closes_once(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dirs" / "state.json.ack"
    ack = AckLog(path)
    assert ack.read() == 0
    assert path.stat().st_mode & 0o777 == 0o600
    ack.write(12)
    assert ack.read() == 12
    ack.close()
    ack.close()  # idempotent
    path.write_bytes(b"garbage")
    again = AckLog(path)
    assert again.read() == 0
    again.close()


def _event(jid: str, status: str, observed: float) -> Event:
    job = Job.make(jid, status, "S3PutObjectCopy", creation_time=T0)
    return Event(Change("job_status_changed", job, previous_status="Active"), TARGETS[0], observed)


async def test_committer_saves_before_it_emits_and_acknowledges_after(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    seen_on_disk: list[int] = []

    class Probe:
        def emit(self, event: EventRecord) -> None:
            # At emission time the event is already in the saved outbox.
            doc = json.loads(path.read_bytes())
            seen_on_disk.append(len(doc["outbox"]))

    sink = MemorySink()
    committer = Committer(store, path, [Probe(), sink], lambda: T0, min_gap=0.01)
    committer.publish([_event("a", "Paused", T0), _event("b", "Failed", T0)])
    assert sink.events == []  # nothing before the state is written
    await committer.commit()
    assert [e.kind for e in sink.events] == ["job_status_changed"] * 2
    assert seen_on_disk == [2, 2]
    assert committer._ack.read() == 2
    committer.close()
    # A restart replays nothing: both were acknowledged.
    again = MemorySink()
    c2 = Committer(Store(TARGETS), path, [again], lambda: T0)
    assert c2.recover() == 0
    assert again.events == []
    c2.close()


async def test_unacknowledged_outbox_is_replayed_once_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    events = [_event("a", "Paused", T0), _event("b", "Failed", T0), _event("c", "Ready", T0)]
    outbox = [(i + 1, e.to_dict()) for i, e in enumerate(events)]
    write_atomic(path, encode(_store_with_jobs(), T0, outbox))
    # The process died after emitting and acknowledging the first event only.
    AckLog(path.with_name("state.json.ack")).write(1)
    sink = MemorySink()
    store = Store(TARGETS)
    committer = Committer(store, path, [sink], lambda: T0)
    with capture_logs() as logs:
        assert committer.recover() == 2
    assert ("events_replayed", 2) in [(e["event"], e.get("count")) for e in logs]
    assert [e.to_dict()["job_id"] for e in sink.events] == ["b", "c"]
    assert sink.events[0].to_dict() == events[1].to_dict()  # same fields, same event_id
    assert store[TARGETS[0].key].jobs is not None
    # New events are numbered after the replayed ones.
    committer.publish([_event("d", "Paused", T0)])
    await committer.commit()
    assert committer._ack.read() == 4
    committer.close()
    c2 = Committer(Store(TARGETS), path, [sink], lambda: T0)
    assert c2.recover() == 0  # replayed events were acknowledged
    c2.close()


async def test_committer_runs_until_stopped_and_commits_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    sink = MemorySink()
    committer = Committer(store, path, [sink], lambda: T0, min_gap=0.01)
    store.on_change = committer.mark_dirty
    stop = asyncio.Event()
    task = asyncio.create_task(committer.run(stop))
    committer.publish([_event("a", "Paused", T0)])
    for _ in range(100):
        if committer.writes:
            break
        await asyncio.sleep(0.01)
    assert committer.writes == 1
    assert len(sink.events) == 1
    store.record_success(TARGETS[1].key, {}, T0 + 10, full=True)  # marks dirty
    committer.publish([_event("b", "Paused", T0 + 10)])
    stop.set()
    await task
    assert len(sink.events) == 2
    assert committer.writes == 2
    assert set(decode(path.read_bytes())) == {TARGETS[0].key, TARGETS[1].key}
    committer.close()


async def test_nothing_acknowledged_means_the_whole_outbox_is_replayed(tmp_path: Path) -> None:
    # Died after the state write, before the first acknowledgement.
    path = tmp_path / "state.json"
    events = [_event("a", "Paused", T0), _event("b", "Failed", T0)]
    write_atomic(path, encode(_store_with_jobs(), T0, [(1, events[0].to_dict())]))
    sink = MemorySink()
    committer = Committer(Store(TARGETS), path, [sink], lambda: T0)
    assert committer.recover() == 1
    assert [e.to_dict()["job_id"] for e in sink.events] == ["a"]
    committer.close()


async def test_a_failed_state_write_still_emits_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    sink = MemorySink()
    committer = Committer(store, path, [sink], lambda: T0)
    await committer.commit()
    assert committer.writes == 1
    path.unlink()
    path.mkdir()
    (path / "keep").write_text("x")  # the next writes fail, as on a full disk
    for n in (1, 2):
        committer.publish([_event("a", f"Paused{n}", T0)])
        with capture_logs() as logs:
            await committer.commit()
        assert [(e["event"], e["path"]) for e in logs] == [("state_write_failed", str(path))]
        assert "Is a directory" in logs[0]["error"]
        assert committer.write_failures == n
        assert len(sink.events) == n  # availability first: emitted anyway
    assert committer.writes == 1
    committer.close()


async def test_a_stop_with_only_new_snapshots_still_saves_them(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    committer = Committer(store, path, [], lambda: T0, min_gap=0.01)
    store.on_change = committer.mark_dirty
    stop = asyncio.Event()
    stop.set()
    store.record_success(TARGETS[1].key, {}, T0 + 10, full=True)  # no events, a new snapshot
    await committer.run(stop)
    assert set(decode(path.read_bytes())) == {TARGETS[0].key, TARGETS[1].key}
    committer.close()


def test_event_ids_are_stable_and_distinct() -> None:
    a = _event("a", "Paused", T0)
    assert a.event_id == _event("a", "Paused", T0).event_id
    assert a.event_id != _event("a", "Paused", T0 + 1).event_id
    assert a.event_id != _event("b", "Paused", T0).event_id
    assert a.to_dict()["event_id"] == a.event_id

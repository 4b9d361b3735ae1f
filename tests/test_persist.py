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
from jobwatch.metrics import JobwatchCollector, make_registry
from jobwatch.model import Job, Target
from jobwatch.persist import (
    SCHEMA_VERSION,
    AckLog,
    Committer,
    decode,
    encode,
    load_state,
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


def test_load_state_restores_known_targets_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    saved = _store_with_jobs()
    saved.record_success(TARGETS[1].key, {}, T0 + 7, full=True)
    write_atomic(path, encode(saved, T0))
    # The first target in the file is no longer configured: the next one still loads.
    fresh = Store([TARGETS[1], Target("222222222222", "us-east-1")])
    with capture_logs() as logs:
        assert load_state(fresh, path)[0] == 1
    assert fresh[TARGETS[1].key].jobs == {}
    assert fresh[TARGETS[1].key].last_full_listing == T0 + 7  # the resync schedule goes on
    assert fresh[("222222222222", "us-east-1")].jobs is None
    assert [(e["event"], e["path"], e["targets"], e["outbox"]) for e in logs] == [
        ("state_restored", str(path), 1, 0)
    ]
    both = Store(TARGETS)
    assert load_state(both, path)[0] == 2


def test_a_version_1_state_file_without_an_outbox_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _, record = encode(_store_with_jobs(), T0).decode().splitlines()
    path.write_text(json.dumps({"version": 1, "targets": json.loads(record)["targets"]}))
    assert load_state(Store(TARGETS), path)[0] == 1


def _doc(**kw: object) -> bytes:
    """A version 1 file: one document (a bad record in a version 2 file is a torn tail)."""
    return json.dumps({"version": 1, "targets": {}, **kw}).encode()


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
        assert load_state(store, path) == (0, [])
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
        assert load_state(store, path)[0] == 0
    assert [(e["event"], e["path"]) for e in logs] == [("state_unreadable", str(path))]
    assert "Is a directory" in logs[0]["error"]
    assert all(ts.jobs is None for ts in store.targets.values())


def test_missing_state_file_is_silent(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_state(Store(TARGETS), tmp_path / "absent.json") == (0, [])
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
            seen_on_disk.append(len(load_state(Store(TARGETS), path)[1]))

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
        if store.state_writes["success"]:
            break
        await asyncio.sleep(0.01)
    assert store.state_writes["success"] == 1
    assert len(sink.events) == 1
    store.record_success(TARGETS[1].key, {}, T0 + 10, full=True)  # marks dirty
    committer.publish([_event("b", "Paused", T0 + 10)])
    stop.set()
    await task
    assert len(sink.events) == 2
    assert store.state_writes["success"] == 2
    assert set(decode(path.read_bytes())) == {TARGETS[0].key, TARGETS[1].key}
    committer.close()


async def test_a_failed_state_write_is_counted_and_exported_and_events_still_go_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # the rename onto it fails: a full or read-only disk looks the same
    store = _store_with_jobs()
    collector = JobwatchCollector(store)
    registry = make_registry(collector)
    sink = MemorySink()
    committer = Committer(store, path, [sink], lambda: T0)
    assert registry.get_sample_value("jobwatch_state_writes_total", {"outcome": "failure"}) == 0
    committer.publish([_event("a", "Paused", T0)])
    with capture_logs() as logs:
        await committer.commit()
    committer.close()
    assert [e["event"] for e in logs] == ["state_write_failed"]
    assert len(sink.events) == 1  # availability first
    assert store.state_writes == {"success": 0, "failure": 1}
    assert registry.get_sample_value("jobwatch_state_writes_total", {"outcome": "failure"}) == 1
    assert registry.get_sample_value("jobwatch_state_writes_total", {"outcome": "success"}) == 0
    written = b"".join(await collector.exposition_chunks(slice_seconds=0))
    assert b'jobwatch_state_writes_total{outcome="failure"} 1.0\n' in written


def test_without_a_state_file_the_write_counter_has_no_samples() -> None:
    registry = make_registry(JobwatchCollector(Store(TARGETS)))
    assert registry.get_sample_value("jobwatch_state_writes_total", {"outcome": "success"}) is None


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
    assert store.state_writes["success"] == 1
    path.unlink()
    path.mkdir()
    (path / "keep").write_text("x")  # the next writes fail, as on a full disk
    for n in (1, 2):
        committer.publish([_event("a", f"Paused{n}", T0)])
        with capture_logs() as logs:
            await committer.commit()
        if n == 1:
            assert [(e["event"], e["path"]) for e in logs] == [("state_write_failed", str(path))]
        # (the second commit falls in the writer's backoff: no new attempt)
        assert store.state_writes["failure"] == 1
        assert len(sink.events) == n  # availability first: emitted anyway
    assert store.state_writes["success"] == 1
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


# --------------------------------------------------------------------------- what a write costs


def _jobs(n: int, *, changed: int = 0, prefix: str = "j", by: int = 1) -> list[Job]:
    """``n`` Active jobs; the first ``changed`` of them ``by`` tasks further along."""
    return [
        Job.make(
            f"{prefix}{i:04d}",
            "Active",
            "S3PutObjectCopy",
            1,
            "a description of some length",
            T0 - 100,
            None,
            1000,
            10 + (by if i < changed else 0),
            0,
            5.0,
        )
        for i in range(n)
    ]


POLICY = DiffPolicy(no_progress=10**6)


def _poll(store: Store, key: tuple[str, str], listing: list[Job], now: float) -> None:
    """What a poller does with a listing: diff against the snapshot, record it."""
    snap = diff(store[key].jobs, listing, now, POLICY, complete=False).jobs
    store.record_success(key, snap, now, full=False)


async def _committer_with_jobs(
    path: Path, per_target: int, **kwargs: float
) -> tuple[Store, Committer, MemorySink]:
    store = Store(TARGETS)
    sink = MemorySink()
    committer = Committer(store, path, [sink], lambda: T0, 0.01, **kwargs)  # type: ignore[arg-type]
    committer.recover()
    store.on_change = committer.mark_dirty
    for t in TARGETS:
        _poll(store, t.key, _jobs(per_target, prefix=t.region), T0)
    await committer.commit()
    return store, committer, sink


async def test_a_poll_that_changed_nothing_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store, committer, _ = await _committer_with_jobs(path, 200)
    before = path.stat()
    writes = store.state_writes["success"]
    assert writes >= 1
    for n in range(3):
        # New TrackedJob objects every poll, equal to the saved ones.
        for t in TARGETS:
            _poll(store, t.key, _jobs(200, prefix=t.region), T0 + 10 * (n + 1))
        await committer.commit()
    after = path.stat()
    assert store.state_writes["success"] == writes
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    committer.close()


async def test_a_write_costs_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store, committer, _ = await _committer_with_jobs(path, 500)
    whole = path.stat().st_size
    key = TARGETS[0].key
    appended = []
    for changed in (1, 10, 100):
        size = path.stat().st_size
        _poll(store, key, _jobs(500, changed=changed, prefix=TARGETS[0].region), T0 + changed)
        await committer.commit()
        appended.append(path.stat().st_size - size)
        # Undo, so the next step changes exactly ``changed`` jobs again.
        _poll(store, key, _jobs(500, prefix=TARGETS[0].region), T0 + changed + 1)
        await committer.commit()
    one, ten, hundred = appended
    assert 0 < one < 400  # one job's row and the record around it, not 1,000 jobs
    assert whole > 500 * one
    # Each further changed job adds the same bytes (one row), whatever the size of the state.
    per_job = (hundred - ten) / 90
    assert 0.8 * per_job < (ten - one) / 9 < 1.2 * per_job
    assert per_job < one
    assert [k for k, _ in committer.write_sizes] == ["rewrite"] + ["append"] * 6
    committer.close()
    # What was appended is what a restart reads.
    fresh = Store(TARGETS)
    load_state(fresh, path)
    assert fresh[key].jobs == store[key].jobs
    assert fresh[TARGETS[1].key].jobs == store[TARGETS[1].key].jobs


async def test_appended_changes_are_compacted_and_every_change_survives(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store, committer, _ = await _committer_with_jobs(path, 100, compact_bytes=0)
    key = TARGETS[0].key
    sizes = []
    for step in range(1, 40):
        listing = _jobs(100 - step % 7, changed=30, by=step, prefix=TARGETS[0].region)
        _poll(store, key, listing, T0 + step)
        await committer.commit()
        sizes.append(path.stat().st_size)
    store.remove(TARGETS[1].key)
    await committer.commit()
    kinds = [k for k, _ in committer.write_sizes]
    # Once the appended records outgrow the file, it is written whole again.
    assert kinds.count("rewrite") >= 3
    assert max(sizes) < 3 * min(s for s in sizes if s)
    committer.close()
    assert decode(path.read_bytes()) == {key: (store[key].jobs, store[key].last_full_listing)}


async def test_a_record_cut_short_by_a_crash_is_ignored_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store, committer, _ = await _committer_with_jobs(path, 20)
    key = TARGETS[0].key
    _poll(store, key, _jobs(20, changed=3, prefix=TARGETS[0].region), T0 + 5)
    committer.publish([_event("a", "Paused", T0 + 5)])
    await committer.commit()
    committer.close()
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"targets":{"111111111111/us-east-1":{"put":[[')  # the process died here
    again = Store(TARGETS)
    sink = MemorySink()
    c2 = Committer(again, path, [sink], lambda: T0)
    with capture_logs() as logs:
        assert c2.recover() == 0
    assert "state_tail_discarded" in [e["event"] for e in logs]
    assert again[key].jobs == store[key].jobs
    assert path.read_bytes() == good  # cut back to its last whole record
    again.on_change = c2.mark_dirty
    _poll(again, key, _jobs(20, changed=9, prefix=TARGETS[0].region), T0 + 6)
    await c2.commit()
    c2.close()
    assert decode(path.read_bytes())[key][0] == again[key].jobs


def test_a_version_1_file_from_the_previous_release_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    key = TARGETS[0].key
    jobs = store[key].jobs
    assert jobs is not None
    from jobwatch.persist import _encode_job

    v1 = {
        "version": 1,
        "saved_at": T0,
        "targets": {
            "111111111111/us-east-1": {
                "last_full_listing": T0 + 5,
                "jobs": [_encode_job(t) for t in jobs.values()],
            }
        },
        "outbox": [[1, _event("a", "Paused", T0).to_dict()]],
    }
    path.write_bytes(json.dumps(v1, separators=(",", ":")).encode())
    fresh = Store(TARGETS)
    with capture_logs() as logs:
        restored, outbox = load_state(fresh, path)
    assert (restored, len(outbox)) == (1, 1)
    assert fresh[key].jobs == jobs
    assert [e["event"] for e in logs] == ["state_migrated", "state_restored"]


async def test_a_version_1_file_is_rewritten_as_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    jobs = store[TARGETS[0].key].jobs
    assert jobs is not None
    from jobwatch.persist import _encode_job

    rows = [_encode_job(t) for t in jobs.values()]
    v1 = {"version": 1, "saved_at": T0, "targets": {"111111111111/us-east-1": {"jobs": rows}}}
    path.write_bytes(json.dumps(v1).encode())
    fresh = Store(TARGETS)
    committer = Committer(fresh, path, [MemorySink()], lambda: T0)
    committer.recover()
    committer.publish([_event("a", "Paused", T0)])
    await committer.commit()
    committer.close()
    assert json.loads(path.read_bytes().split(b"\n")[0])["version"] == SCHEMA_VERSION
    assert decode(path.read_bytes())[TARGETS[0].key][0] == jobs


async def test_a_failing_writer_is_logged_counted_shown_retried_and_events_go_out(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    path = blocker / "state.json"
    store = _store_with_jobs()
    registry = make_registry(JobwatchCollector(store))
    sink = MemorySink()
    committer = Committer(store, path, [sink], lambda: T0, min_gap=0.01, max_backoff=0.05)
    assert committer.recover() == 0  # an unusable directory does not stop the start
    store.on_change = committer.mark_dirty
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(committer.run(stop))
        committer.publish([_event("a", "Paused", T0)])
        for _ in range(200):
            if store.state_writes["failure"] >= 2:
                break
            await asyncio.sleep(0.01)
        # Retried, failing each time; the event went out all the same.
        assert store.state_writes["failure"] >= 2
        assert [e.to_dict()["job_id"] for e in sink.events] == ["a"]
        gauge = registry.get_sample_value("jobwatch_state_write_consecutive_failures")
        assert gauge is not None
        assert gauge >= 2
        committer.publish([_event("b", "Paused", T0)])
        for _ in range(200):
            if len(sink.events) == 2:
                break
            await asyncio.sleep(0.01)
        assert [e.to_dict()["job_id"] for e in sink.events] == ["a", "b"]
        # The disk comes back: the next retry writes the whole state.
        blocker.unlink()
        blocker.mkdir()
        for _ in range(200):
            if store.state_writes["success"]:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
    committer.close()
    failed = [e for e in logs if e["event"] == "state_write_failed"]
    assert len(failed) == store.state_writes["failure"]
    assert "NotADirectoryError" in failed[0]["error"] or "FileExistsError" in failed[0]["error"]
    assert "state_write_recovered" in [e["event"] for e in logs]
    assert store.state_writes["success"] >= 1
    assert registry.get_sample_value("jobwatch_state_write_consecutive_failures") == 0
    assert decode(path.read_bytes())[TARGETS[0].key][0] == store[TARGETS[0].key].jobs


def test_without_a_state_file_the_failure_gauge_has_no_sample() -> None:
    registry = make_registry(JobwatchCollector(Store(TARGETS)))
    assert registry.get_sample_value("jobwatch_state_write_consecutive_failures") is None


async def test_after_a_restart_appending_goes_on_and_the_file_stays_bounded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    key = TARGETS[0].key
    store, committer, _ = await _committer_with_jobs(path, 100)
    whole = path.stat().st_size
    committer.close()
    for restart in range(1, 30):
        store = Store(TARGETS)
        committer = Committer(store, path, [MemorySink()], lambda: T0, compact_bytes=0)
        committer.recover()
        store.on_change = committer.mark_dirty
        listing = _jobs(100, changed=60, by=restart, prefix=TARGETS[0].region)
        _poll(store, key, listing, T0 + restart)
        await committer.commit()
        committer.close()
        # Appended records written before a restart count towards the next rewrite.
        assert path.stat().st_size < 3 * whole
    assert decode(path.read_bytes())[key][0] == store[key].jobs


async def test_polls_over_http_that_change_nothing_write_nothing(tmp_path: Path) -> None:
    from tests.helpers import running

    state = tmp_path / "state.json"
    jobs = [{"id": f"steady-{i}", "tasks": 1000, "rate": 1} for i in range(5)]
    scenario = {"accounts": [{"id": "111111111111", "jobs": jobs}]}
    async with running(scenario, {"state_file": str(state)}) as w:
        await w.step(10)
        assert w.app.committer is not None
        written = w.app.store.state_writes["success"]
        before = state.stat()
        for _ in range(3):
            await w.app.poll_all_once()  # the simulator's clock stands still: no change
        after = state.stat()
        assert w.app.store.state_writes["success"] == written
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        await w.step(10)  # tasks progress: each job's row is appended, nothing more
        assert w.app.store.state_writes["success"] == written + 1
        grown = state.stat().st_size - after.st_size
        assert 0 < grown < 5 * 400
    fresh = Store([Target("111111111111", "us-east-1")])
    load_state(fresh, state)
    assert (
        fresh[("111111111111", "us-east-1")].jobs == w.app.store[("111111111111", "us-east-1")].jobs
    )

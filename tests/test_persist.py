"""The state file: round trip, atomic replacement, and bad files never fatal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobwatch.diff import DiffPolicy, diff
from jobwatch.model import Job, Target
from jobwatch.persist import SCHEMA_VERSION, StateSaver, decode, encode, load_into, write_atomic
from jobwatch.state import Store

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


def test_load_into_restores_known_targets_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, encode(_store_with_jobs(), T0))
    fresh = Store([TARGETS[0], Target("222222222222", "us-east-1")])
    assert load_into(fresh, path) == 1
    assert fresh[TARGETS[0].key].jobs is not None
    assert fresh[("222222222222", "us-east-1")].jobs is None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        json.dumps({"version": SCHEMA_VERSION + 1, "targets": {}}).encode(),
        json.dumps({"version": SCHEMA_VERSION, "targets": {"x/y": {"jobs": [[1, 2]]}}}).encode(),
        json.dumps([1, 2, 3]).encode(),
    ],
)
def test_bad_state_file_means_fresh_baseline_with_warning(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = Store(TARGETS)
    with capture_logs() as logs:
        assert load_into(store, path) == 0
    assert [e["event"] for e in logs] == ["state_discarded"]
    assert all(ts.jobs is None for ts in store.targets.values())


def test_missing_state_file_is_silent(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_into(Store(TARGETS), tmp_path / "absent.json") == 0
    assert logs == []


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


async def test_saver_writes_on_change_and_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = _store_with_jobs()
    saver = StateSaver(store, path, lambda: T0, min_gap=0.01)
    store.on_change = saver.mark_dirty
    stop = asyncio.Event()
    task = asyncio.create_task(saver.run(stop))
    saver.mark_dirty()
    for _ in range(100):
        if saver.writes:
            break
        await asyncio.sleep(0.01)
    assert saver.writes == 1
    store.record_success(TARGETS[1].key, {}, T0 + 10, full=True)  # marks dirty
    stop.set()
    await task
    assert saver.writes == 2
    assert set(decode(path.read_bytes())) == {TARGETS[0].key, TARGETS[1].key}

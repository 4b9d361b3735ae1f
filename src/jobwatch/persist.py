"""The state file: what the diff needs to carry on across a restart.

Written atomically (temporary file, fsync, rename, fsync of the directory) in
a versioned JSON schema. A file that is missing, corrupt or of an unknown
version is never fatal: jobwatch logs a warning and starts from a fresh
baseline, exactly as without a state file.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jobwatch.diff import TrackedJob
from jobwatch.log import get_logger
from jobwatch.model import Job
from jobwatch.state import Store

__all__ = ["SCHEMA_VERSION", "StateSaver", "decode", "encode", "load_into", "write_atomic"]

SCHEMA_VERSION = 1
_log = get_logger("jobwatch.persist")
_JOB_FIELDS = (
    "job_id",
    "status",
    "operation",
    "priority",
    "description",
    "creation_time",
    "termination_time",
    "tasks_total",
    "tasks_succeeded",
    "tasks_failed",
    "active_seconds",
)


def _encode_job(t: TrackedJob) -> list[Any]:
    j = t.job
    return [
        *(getattr(j, f) for f in _JOB_FIELDS),
        t.first_seen,
        t.status_since,
        t.last_progress_at,
        int(t.stalled) | int(t.overdue) << 1 | int(t.ratio_exceeded) << 2,
    ]


def _decode_job(row: list[Any]) -> TrackedJob:
    n = len(_JOB_FIELDS)
    if len(row) != n + 4:
        raise ValueError("job row of the wrong length")
    fields = dict(zip(_JOB_FIELDS, row[:n], strict=True))
    job = Job.make(**fields)
    first_seen, since, progress, flags = row[n:]
    return TrackedJob(
        job=job,
        first_seen=float(first_seen),
        status_since=float(since),
        last_progress_at=float(progress),
        stalled=bool(flags & 1),
        overdue=bool(flags & 2),
        ratio_exceeded=bool(flags & 4),
    )


def encode(store: Store, now: float) -> bytes:
    targets: dict[str, Any] = {}
    for ts in store.targets.values():
        if ts.jobs is None:
            continue
        targets[f"{ts.target.account_id}/{ts.target.region}"] = {
            "last_full_listing": ts.last_full_listing,
            "jobs": [_encode_job(t) for t in ts.jobs.values()],
        }
    doc = {"version": SCHEMA_VERSION, "saved_at": now, "targets": targets}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[tuple[str, str], tuple[dict[str, TrackedJob], float | None]]:
    """Parse a state file. Raises ``ValueError`` on anything unexpected."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != SCHEMA_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ValueError(f"unknown state file version {version!r} (expected {SCHEMA_VERSION})")
    out: dict[tuple[str, str], tuple[dict[str, TrackedJob], float | None]] = {}
    for name, entry in doc["targets"].items():
        account, _, region = name.partition("/")
        jobs = {t.job.job_id: t for t in (_decode_job(r) for r in entry["jobs"])}
        last_full = entry.get("last_full_listing")
        out[(account, region)] = (jobs, float(last_full) if last_full is not None else None)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_into(store: Store, path: Path) -> int:
    """Restore targets' snapshots from ``path``; returns how many were restored.

    Targets no longer configured are ignored; new ones start with a baseline.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as e:
        _log.warning("state_unreadable", path=str(path), error=str(e))
        return 0
    try:
        snapshots = decode(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        _log.warning("state_discarded", path=str(path), error=str(e)[:300], action="fresh baseline")
        return 0
    restored = 0
    for key, (jobs, last_full) in snapshots.items():
        ts = store.targets.get(key)
        if ts is None:
            continue
        ts.jobs = jobs
        ts.last_full_listing = last_full
        restored += 1
    _log.info("state_restored", path=str(path), targets=restored)
    return restored


class StateSaver:
    """Writes the store to the state file after changes, at most every ``min_gap`` s."""

    def __init__(self, store: Store, path: Path, clock_time: Any, min_gap: float = 1.0) -> None:
        self._store = store
        self._path = path
        self._time = clock_time
        self._min_gap = min_gap
        self._dirty = asyncio.Event()
        self.writes = 0

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def save(self) -> None:
        self._dirty.clear()
        data = encode(self._store, self._time())
        try:
            await asyncio.to_thread(write_atomic, self._path, data)
            self.writes += 1
        except OSError as e:
            _log.warning("state_write_failed", path=str(self._path), error=str(e))

    async def run(self, stop: asyncio.Event) -> None:
        """Save whenever marked dirty, until ``stop``; a last save on the way out."""
        try:
            while not stop.is_set():
                waiter = asyncio.ensure_future(self._dirty.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                if self._dirty.is_set():
                    await self.save()
                    await asyncio.sleep(self._min_gap)
        finally:
            if self._dirty.is_set():
                await self.save()

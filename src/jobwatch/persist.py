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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobwatch.diff import TrackedJob
from jobwatch.events import EventRecord, EventSink, RecordedEvent, emit_all
from jobwatch.log import get_logger
from jobwatch.model import Job
from jobwatch.state import Store

__all__ = [
    "SCHEMA_VERSION",
    "AckLog",
    "Committer",
    "capture",
    "decode",
    "encode",
    "load_state",
    "write_atomic",
]

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


Snapshot = list[tuple[tuple[str, str], dict[str, TrackedJob], float | None]]
Decoded = dict[tuple[str, str], tuple[dict[str, TrackedJob], float | None]]


def capture(store: Store) -> Snapshot:
    """References to every target's current snapshot (cheap; safe to encode elsewhere).

    A target's ``jobs`` dict is replaced whole after each poll and never edited,
    so another thread may read what this returns while polls go on.
    """
    return [
        (key, ts.jobs, ts.last_full_listing)
        for key, ts in list(store.targets.items())
        if ts.jobs is not None
    ]


def encode(
    snapshot: Snapshot | Store,
    now: float,
    outbox: list[tuple[int, dict[str, Any]]] | None = None,
) -> bytes:
    """The state file's bytes: snapshots plus the outbox (events not yet acknowledged)."""
    if isinstance(snapshot, Store):
        snapshot = capture(snapshot)
    targets: dict[str, Any] = {}
    for (account, region), jobs, last_full in snapshot:
        targets[f"{account}/{region}"] = {
            "last_full_listing": last_full,
            "jobs": [_encode_job(t) for t in jobs.values()],
        }
    doc = {
        "version": SCHEMA_VERSION,
        "saved_at": now,
        "targets": targets,
        "outbox": [[seq, record] for seq, record in (outbox or [])],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _load_doc(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != SCHEMA_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ValueError(f"unknown state file version {version!r} (expected {SCHEMA_VERSION})")
    return doc


def decode(data: bytes) -> Decoded:
    """Parse a state file's snapshots. Raises ``ValueError`` on anything unexpected."""
    return _decode_targets(_load_doc(data))


def _decode_targets(doc: dict[str, Any]) -> Decoded:
    out: Decoded = {}
    for name, entry in doc["targets"].items():
        account, _, region = name.partition("/")
        jobs = {t.job.job_id: t for t in (_decode_job(r) for r in entry["jobs"])}
        last_full = entry.get("last_full_listing")
        out[(account, region)] = (jobs, float(last_full) if last_full is not None else None)
    return out


def _decode_outbox(doc: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for seq, record in doc.get("outbox", []):
        if not isinstance(seq, int) or not isinstance(record, dict):
            raise ValueError("malformed outbox entry")
        out.append((seq, record))
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


def load_state(store: Store, path: Path) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
    """Restore snapshots from ``path`` into ``store``: (targets restored, saved outbox).

    Targets no longer configured are ignored; new ones start with a baseline.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, []
    except OSError as e:
        _log.warning("state_unreadable", path=str(path), error=str(e))
        return 0, []
    try:
        doc = _load_doc(data)
        snapshots = _decode_targets(doc)
        outbox = _decode_outbox(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        _log.warning("state_discarded", path=str(path), error=str(e)[:300], action="fresh baseline")
        return 0, []
    restored = 0
    for key, (jobs, last_full) in snapshots.items():
        ts = store.targets.get(key)
        if ts is None:
            continue
        ts.jobs = jobs
        ts.last_full_listing = last_full
        restored += 1
    _log.info("state_restored", path=str(path), targets=restored, outbox=len(outbox))
    return restored, outbox


class AckLog:
    """The sequence number of the last event handed to the sinks, in a tiny side file.

    Written with one ``pwrite`` per event: a process killed at any instant
    leaves either the old or the new number (the kernel keeps what was
    written even if the process dies before it is flushed to disk).
    """

    _WIDTH = 20

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def read(self) -> int:
        raw = os.pread(self._fd, self._WIDTH, 0)
        try:
            return int(raw.decode("ascii").strip() or 0)
        except ValueError:
            return 0

    def write(self, seq: int) -> None:
        os.pwrite(self._fd, str(seq).rjust(self._WIDTH).encode("ascii"), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Committer:
    """Makes event emission survive restarts: save first, then emit, then acknowledge.

    Pollers hand their events to :meth:`publish`; nothing reaches a sink until
    the state file holding the snapshot that produced them, and the events
    themselves (the *outbox*), has been written. Then each event goes to the
    sinks and its sequence number to the :class:`AckLog`. After a crash,
    :meth:`recover` re-emits the outbox entries past the acknowledged number.

    So an event is never lost, and is repeated only if the process dies between
    writing it and acknowledging it (two consecutive system calls).
    """

    def __init__(
        self,
        store: Store,
        path: Path,
        sinks: Sequence[EventSink],
        clock_time: Callable[[], float],
        min_gap: float = 0.2,
    ) -> None:
        self._store = store
        self._path = path
        self._sinks = sinks
        self._time = clock_time
        self._min_gap = min_gap
        self._dirty = asyncio.Event()
        self._pending: list[EventRecord] = []
        self._ack = AckLog(path.with_name(path.name + ".ack"))
        self._seq = 0
        # With a state file both outcomes are exported, from 0.
        store.state_writes.update({"success": 0, "failure": 0})

    def recover(self) -> int:
        """Load the state file into the store and re-emit unacknowledged events.

        Returns how many events were replayed.
        """
        _, outbox = load_state(self._store, self._path)
        acked = self._ack.read()
        replayed = 0
        for seq, record in outbox:
            if seq > acked:
                emit_all(self._sinks, RecordedEvent(record))
                self._ack.write(seq)
                replayed += 1
            self._seq = max(self._seq, seq)
        self._seq = max(self._seq, acked)
        if replayed:
            _log.info("events_replayed", count=replayed)
        return replayed

    def publish(self, events: list[EventRecord]) -> None:
        """Queue a poll's events; they are emitted after the next state write."""
        self._pending.extend(events)
        self._dirty.set()

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def commit(self) -> None:
        """Write the state (with the queued events), then emit and acknowledge them."""
        self._dirty.clear()
        events, self._pending = self._pending, []
        outbox: list[tuple[int, dict[str, Any]]] = []
        for event in events:
            self._seq += 1
            outbox.append((self._seq, event.to_dict()))
        snapshot = capture(self._store)
        now = self._time()
        try:
            await asyncio.to_thread(self._write, snapshot, now, outbox)
            self._store.state_writes["success"] += 1
        except OSError as e:
            # Availability first: emit anyway; a restart may then repeat them.
            self._store.state_writes["failure"] += 1
            _log.warning("state_write_failed", path=str(self._path), error=str(e))
        for (seq, _), event in zip(outbox, events, strict=True):
            emit_all(self._sinks, event)
            self._ack.write(seq)

    def _write(
        self, snapshot: Snapshot, now: float, outbox: list[tuple[int, dict[str, Any]]]
    ) -> None:
        write_atomic(self._path, encode(snapshot, now, outbox))

    async def run(self, stop: asyncio.Event) -> None:
        """Commit whenever there is something new, until ``stop``; a last commit on the way out."""
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
                    await self.commit()
                    await asyncio.sleep(self._min_gap)
        finally:
            if self._dirty.is_set() or self._pending:
                await self.commit()

    def close(self) -> None:
        self._ack.close()

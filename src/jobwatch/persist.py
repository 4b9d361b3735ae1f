"""The state file: what the diff needs to carry on across a restart.

Format (version 2): JSON lines. The first line is a header (``version``,
``saved_at``); every other line is one *record*: ``{"targets": {...},
"outbox": [...]}``, both keys optional. A target's entry is either its whole
snapshot (``jobs``), a change to the snapshot before it (``put``: jobs new or
changed, ``del``: job ids gone) or ``null`` (the target left). ``outbox`` holds
events written before they are emitted (see :class:`Committer`).

A commit *appends* one record with what changed since the last one (a poll
that changed nothing writes nothing), then ``fdatasync``. Once the appended
records outgrow the last full file, the next commit *rewrites* the file whole
(temporary file, fsync, rename, fsync of the directory), encoding it in slices
on the event loop. A record cut short by a crash is the last line and is
ignored on load; nothing of it was emitted.

A version 1 file (one JSON document, the previous release) is still read and
rewritten as version 2 at the first commit. A file that is missing, corrupt or
of an unknown version is never fatal: jobwatch logs a warning and starts from
a fresh baseline, exactly as without a state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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

SCHEMA_VERSION = 2
#: Versions that are read (and rewritten in the current one at the first commit).
_LEGACY_VERSIONS = (1,)
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
_MiB = 2**20

Key = tuple[str, str]
Outbox = list[tuple[int, dict[str, Any]]]


def _encode_job(t: TrackedJob) -> list[Any]:
    j = t.job
    return [
        *(getattr(j, f) for f in _JOB_FIELDS),
        t.first_seen,
        t.status_since,
        t.last_progress_at,
        int(t.stalled) | int(t.overdue) << 1 | int(t.ratio_exceeded) << 2,
        t.failure_code,
    ]


def _decode_job(row: list[Any]) -> TrackedJob:
    n = len(_JOB_FIELDS)
    # Rows written before failure codes were kept have no code.
    if len(row) == n + 4:
        row = [*row, ""]
    if len(row) != n + 5:
        raise ValueError("job row of the wrong length")
    fields = dict(zip(_JOB_FIELDS, row[:n], strict=True))
    job = Job.make(**fields)
    first_seen, since, progress, flags, code = row[n:]
    return TrackedJob(
        job=job,
        first_seen=float(first_seen),
        status_since=float(since),
        last_progress_at=float(progress),
        stalled=bool(flags & 1),
        overdue=bool(flags & 2),
        ratio_exceeded=bool(flags & 4),
        failure_code=str(code),
    )


Snapshot = list[tuple[Key, dict[str, TrackedJob], float | None]]
Decoded = dict[Key, tuple[dict[str, TrackedJob], float | None]]


def capture(store: Store) -> Snapshot:
    """References to every target's current snapshot (cheap; safe to encode elsewhere).

    A target's ``jobs`` dict is replaced whole after each poll and never edited,
    so these stay what they were while polls go on.
    """
    return [
        (key, ts.jobs, ts.last_full_listing)
        for key, ts in list(store.targets.items())
        if ts.jobs is not None
    ]


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _header(now: float) -> bytes:
    return (_dumps({"version": SCHEMA_VERSION, "saved_at": now}) + "\n").encode()


def _full_entry(jobs: dict[str, TrackedJob], last_full: float | None) -> str:
    return _dumps({"last_full_listing": last_full, "jobs": [_encode_job(t) for t in jobs.values()]})


def _record(entries: Sequence[tuple[Key, str]], outbox: Outbox | None = None) -> bytes:
    """One line: pre-encoded target entries plus an outbox."""
    parts = []
    if entries:
        parts.append('"targets":{' + ",".join(f"{_dumps(_name(k))}:{e}" for k, e in entries) + "}")
    if outbox:
        parts.append('"outbox":' + _dumps([[seq, rec] for seq, rec in outbox]))
    return ("{" + ",".join(parts) + "}\n").encode()


def encode(
    snapshot: Snapshot | Store,
    now: float,
    outbox: Outbox | None = None,
) -> bytes:
    """A whole state file's bytes: every snapshot plus the outbox (not yet acknowledged)."""
    if isinstance(snapshot, Store):
        snapshot = capture(snapshot)
    entries = [(key, _full_entry(jobs, last_full)) for key, jobs, last_full in snapshot]
    return _header(now) + _record(entries, outbox)


@dataclass
class _Loaded:
    targets: Decoded = field(default_factory=dict)
    outbox: Outbox = field(default_factory=list)
    version: int = SCHEMA_VERSION
    #: Bytes of whole, valid records from the start (a torn tail lies past them).
    good_bytes: int = 0
    torn_bytes: int = 0
    #: Bytes of appended records that change what was written before them (what a
    #: rewrite would drop; a target's first snapshot is not counted).
    appended_bytes: int = 0


def _split_key(name: str) -> Key:
    account, sep, region = name.partition("/")
    if not sep:
        raise ValueError(f"bad target name {name[:100]!r}")
    return account, region


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def _apply(loaded: _Loaded, rec: Any) -> bool:
    """Apply one record; whether it changed snapshots written before it (not only added)."""
    if not isinstance(rec, dict):
        raise ValueError("a record is not an object")
    targets = rec.get("targets", {})
    if not isinstance(targets, dict):
        raise ValueError("malformed targets")
    superseding = False
    for name, entry in targets.items():
        key = _split_key(name)
        superseding = superseding or key in loaded.targets
        if entry is None:
            loaded.targets.pop(key, None)
            continue
        last_full = _float_or_none(entry.get("last_full_listing"))
        if "jobs" in entry:
            jobs = {t.job.job_id: t for t in (_decode_job(r) for r in entry["jobs"])}
        else:
            jobs = dict(loaded.targets.get(key, ({}, None))[0])
            for row in entry.get("put", []):
                t = _decode_job(row)
                jobs[t.job.job_id] = t
            for jid in entry.get("del", []):
                jobs.pop(jid, None)
        loaded.targets[key] = (jobs, last_full)
    for item in rec.get("outbox", []):
        seq, record = item
        if not isinstance(seq, int) or not isinstance(record, dict):
            raise ValueError("malformed outbox entry")
        loaded.outbox.append((seq, record))
    return superseding


def _parse(data: bytes) -> _Loaded:
    """Parse a state file (this version or a legacy one). Raises ``ValueError`` and kin."""
    first, newline, _ = data.partition(b"\n")
    head = json.loads(first)
    version = head.get("version") if isinstance(head, dict) else None
    if version in _LEGACY_VERSIONS and not newline:
        # Version 1: one document, the snapshots and the outbox in it.
        loaded = _Loaded(version=version, good_bytes=len(data))
        _apply(loaded, {"targets": head["targets"], "outbox": head.get("outbox", [])})
        return loaded
    if version != SCHEMA_VERSION or not newline:
        raise ValueError(f"unknown state file version {version!r} (expected {SCHEMA_VERSION})")
    loaded = _Loaded(good_bytes=len(first) + 1)
    offset = loaded.good_bytes
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            break  # the last record was cut short: it was never committed
        try:
            rec = json.loads(data[offset:end])
        except ValueError:
            break
        # A record applies whole or not at all: decode it on a copy of what it changes.
        trial = _Loaded(targets=dict(loaded.targets), outbox=list(loaded.outbox))
        try:
            superseding = _apply(trial, rec)
        except (ValueError, KeyError, TypeError, AttributeError):
            break
        loaded.targets, loaded.outbox = trial.targets, trial.outbox
        if superseding and "at" in rec:
            loaded.appended_bytes += end + 1 - offset
        offset = end + 1
        loaded.good_bytes = offset
    loaded.torn_bytes = len(data) - loaded.good_bytes
    return loaded


def decode(data: bytes) -> Decoded:
    """Parse a state file's snapshots. Raises ``ValueError`` (and kin) on a bad file."""
    return _parse(data).targets


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    f, tmp = _open_temporary(path)
    try:
        _finish_temporary(f, [data], tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> _Loaded | None:
    """The file's content, or None (missing, unreadable or discarded: logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        _log.warning("state_unreadable", path=str(path), error=str(e))
        return None
    try:
        loaded = _parse(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        _log.warning("state_discarded", path=str(path), error=str(e)[:300], action="fresh baseline")
        return None
    if loaded.torn_bytes:
        _log.warning(
            "state_tail_discarded",
            path=str(path),
            bytes=loaded.torn_bytes,
            reason="a record cut short or unreadable; its events were never emitted",
        )
    if loaded.version != SCHEMA_VERSION:
        _log.info("state_migrated", path=str(path), version=loaded.version, to=SCHEMA_VERSION)
    return loaded


def _restore(store: Store, loaded: _Loaded) -> int:
    restored = 0
    for key, (jobs, last_full) in loaded.targets.items():
        ts = store.targets.get(key)
        if ts is None:
            continue
        ts.jobs = jobs
        ts.last_full_listing = last_full
        restored += 1
    return restored


def load_state(store: Store, path: Path) -> tuple[int, Outbox]:
    """Restore snapshots from ``path`` into ``store``: (targets restored, saved outbox).

    Targets no longer configured are ignored; new ones start with a baseline.
    """
    found = _load(store, path)
    if found is None:
        return 0, []
    restored, loaded = found
    return restored, loaded.outbox


def _load(store: Store, path: Path) -> tuple[int, _Loaded] | None:
    """Read ``path`` and restore its snapshots into ``store``: (targets restored, what was read)."""
    loaded = _read(path)
    if loaded is None:
        return None
    restored = _restore(store, loaded)
    _log.info("state_restored", path=str(path), targets=restored, outbox=len(loaded.outbox))
    return restored, loaded


class AckLog:
    """The sequence number of the last event handed to the sinks, in a tiny side file.

    Written with one ``pwrite`` per event: a process killed at any instant
    leaves either the old or the new number (the kernel keeps what was
    written even if the process dies before it is flushed to disk). A file
    that cannot be opened or written raises ``OSError`` on use, and the next
    use tries again.
    """

    _WIDTH = 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def _open(self) -> int:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def read(self) -> int:
        try:
            raw = os.pread(self._open(), self._WIDTH, 0)
        except OSError:
            return 0
        try:
            return int(raw.decode("ascii").strip() or 0)
        except ValueError:
            return 0

    def write(self, seq: int) -> None:
        os.pwrite(self._open(), str(seq).rjust(self._WIDTH).encode("ascii"), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_UNCHANGED = object()


class Committer:
    """Makes event emission survive restarts: save first, then emit, then acknowledge.

    Pollers hand their events to :meth:`publish` and the store says which
    targets' snapshots changed (:meth:`mark_dirty`); nothing reaches a sink
    until the state file holds those changes and the events themselves (the
    *outbox*). Then each event goes to the sinks and its sequence number to the
    :class:`AckLog`. After a crash, :meth:`recover` re-emits the outbox entries
    past the acknowledged number.

    So an event is never lost, and is repeated only if the process dies between
    writing it and acknowledging it (two consecutive system calls).

    A commit appends what changed (jobs whose fields differ from what was last
    written, jobs gone, targets gone) as one record; the file is rewritten whole
    when the appended records outgrow it (at least ``compact_bytes``). The CPU
    work (comparing, encoding) runs on the event loop in slices of about
    ``slice_seconds``; the system calls in a thread. A failed write is logged,
    counted, shown as ``store.state_write_consecutive_failures``, and retried
    (as a whole-file rewrite) after a backoff of up to ``max_backoff``; events
    are emitted meanwhile, unsaved: availability first.
    """

    def __init__(
        self,
        store: Store,
        path: Path,
        sinks: Sequence[EventSink],
        clock_time: Callable[[], float],
        min_gap: float = 0.2,
        *,
        slice_seconds: float = 0.005,
        compact_bytes: int = 4 * _MiB,
        max_backoff: float = 30.0,
    ) -> None:
        self._store = store
        self._path = path
        self._sinks = sinks
        self._time = clock_time
        self._min_gap = min_gap
        self._slice = slice_seconds
        self._compact_bytes = compact_bytes
        self._max_backoff = max_backoff
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._dirty_keys: set[Key] = set()
        self._pending: list[EventRecord] = []
        self._ack = AckLog(path.with_name(path.name + ".ack"))
        self._seq = 0
        #: What the file holds, per target: references to the snapshots written.
        self._written: dict[Key, tuple[dict[str, TrackedJob], float | None]] = {}
        #: Open for appending while the file is known good; None: rewrite it next.
        self._fd: int | None = None
        #: Bytes a rewrite would keep, and bytes appended that it would drop (changes
        #: to snapshots already written): the file is rewritten when the second outgrows
        #: the first, so it stays under twice the state and rewrites cost what changed.
        self._base_bytes = 0
        self._appended_bytes = 0
        self._compact_due = False
        self._retry_at = 0.0
        #: Bytes written by each successful commit (appended or rewritten), for tests and bench.
        self.write_sizes: list[tuple[str, int]] = []
        # With a state file both outcomes are exported, from 0.
        store.state_writes.update({"success": 0, "failure": 0})
        store.state_write_consecutive_failures = 0

    def recover(self) -> int:
        """Load the state file into the store and re-emit unacknowledged events.

        Returns how many events were replayed.
        """
        found = _load(self._store, self._path)
        outbox: Outbox = []
        if found is not None:
            _, loaded = found
            outbox = loaded.outbox
            if loaded.version == SCHEMA_VERSION:
                self._reopen(loaded)
        acked = self._ack.read()
        replayed = 0
        for seq, record in outbox:
            if seq > acked:
                emit_all(self._sinks, RecordedEvent(record))
                self._acknowledge(seq)
                replayed += 1
            self._seq = max(self._seq, seq)
        self._seq = max(self._seq, acked)
        if replayed:
            _log.info("events_replayed", count=replayed)
        return replayed

    def _reopen(self, loaded: _Loaded) -> None:
        """Carry on appending to a good file (cut to its last whole record)."""
        try:
            fd = os.open(self._path, os.O_WRONLY)
            try:
                os.ftruncate(fd, loaded.good_bytes)
                os.lseek(fd, 0, os.SEEK_END)
            except OSError:
                os.close(fd)
                raise
        except OSError as e:
            _log.warning("state_reopen_failed", path=str(self._path), error=str(e)[:300])
            return
        self._fd = fd
        self._appended_bytes = loaded.appended_bytes
        self._base_bytes = loaded.good_bytes - loaded.appended_bytes
        # The snapshots restored into the store are these very objects.
        self._written = dict(loaded.targets)
        # Targets in the file but no longer watched: the next record drops them.
        self._dirty_keys.update(k for k in loaded.targets if k not in self._store.targets)

    def publish(self, events: list[EventRecord]) -> None:
        """Queue a poll's events; they are emitted after the next state write."""
        self._pending.extend(events)
        self._dirty.set()

    def mark_dirty(self, key: Key) -> None:
        """A target's snapshot changed (or left)."""
        self._dirty_keys.add(key)
        self._dirty.set()

    async def commit(self) -> None:
        """Write what changed (with the queued events), then emit and acknowledge them."""
        # One at a time: a commit appends to the file across awaits.
        async with self._lock:
            await self._commit()

    async def _commit(self) -> None:
        self._dirty.clear()
        events, self._pending = self._pending, []
        keys, self._dirty_keys = self._dirty_keys, set()
        outbox: Outbox = []
        for event in events:
            self._seq += 1
            outbox.append((self._seq, event.to_dict()))
        try:
            if time.monotonic() >= self._retry_at:
                await self._save(keys, outbox)
            else:
                # Backing off after a failure: this one goes out unsaved, as failed ones do.
                self._dirty_keys |= keys
                self._dirty.set()
        finally:
            for (seq, _), event in zip(outbox, events, strict=True):
                emit_all(self._sinks, event)
                self._acknowledge(seq)
        if self._compact_due and self._fd is not None:
            # Right after the append that made it due, never on a commit with nothing
            # to save; with the snapshots, the events polls published meanwhile.
            await self._commit()

    def _acknowledge(self, seq: int) -> None:
        try:
            self._ack.write(seq)
        except OSError as e:
            self._ack.close()
            _log.warning("state_ack_failed", path=str(self._ack.path), error=str(e)[:300])

    async def _save(self, keys: set[Key], outbox: Outbox) -> None:
        store = self._store
        rewrite = self._fd is None or self._compact_due
        now = self._time()
        try:
            # Taken at once, before any await: what the outbox's events were diffed against.
            if rewrite:
                whole = {key: (jobs, lf) for key, jobs, lf in capture(store)}
                size = await self._rewrite(whole, outbox, now)
                self._written = whole
                self._base_bytes, self._appended_bytes = size, 0
                self._compact_due = False
                self.write_sizes.append(("rewrite", size))
            else:
                changed: dict[Key, tuple[dict[str, TrackedJob] | None, float | None]] = {}
                for key in keys:
                    ts = store.targets.get(key)
                    changed[key] = (ts.jobs, ts.last_full_listing) if ts else (None, None)
                size = await self._append(changed, outbox)
                if size == 0:
                    return  # nothing changed: nothing written
                self.write_sizes.append(("append", size))
                self._compact_due = self._appended_bytes > max(
                    self._base_bytes, self._compact_bytes
                )
        except Exception as e:  # any failure: the writer must never stop the events
            self._failed(e, keys)
            return
        store.state_writes["success"] += 1
        if store.state_write_consecutive_failures:
            _log.info("state_write_recovered", path=str(self._path))
        store.state_write_consecutive_failures = 0

    def _failed(self, error: Exception, keys: set[Key]) -> None:
        store = self._store
        store.state_writes["failure"] += 1
        failures = store.state_write_consecutive_failures = (
            store.state_write_consecutive_failures or 0
        ) + 1
        backoff = min(self._max_backoff, self._min_gap * 2**failures)
        self._retry_at = time.monotonic() + backoff
        # What reached the file is unknown now: the next write replaces it whole.
        self._close_fd()
        self._dirty_keys |= keys
        self._dirty.set()
        _log.warning(
            "state_write_failed",
            path=str(self._path),
            error=f"{type(error).__name__}: {error}"[:500],
            consecutive_failures=failures,
            retry_in=round(backoff, 3),
        )

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _delta(self, item: tuple[Key, tuple[dict[str, TrackedJob] | None, float | None]]) -> Any:
        key, (jobs, last_full) = item
        old = self._written.get(key)
        if jobs is None:
            return _UNCHANGED if old is None else None
        if old is None:
            return _full_entry(jobs, last_full)
        old_jobs, old_full = old
        if old_jobs is jobs and old_full == last_full:
            return _UNCHANGED
        get = old_jobs.get
        # The diff keeps the object of a job that did not change: most are skipped
        # by identity, without comparing their fields.
        put = [_encode_job(t) for jid, t in jobs.items() if (o := get(jid)) is not t and o != t]
        gone = [jid for jid in old_jobs if jid not in jobs]
        if not put and not gone and old_full == last_full:
            # Equal: the new objects take the old ones' place (nothing is held twice).
            self._written[key] = (jobs, last_full)
            return _UNCHANGED
        entry: dict[str, Any] = {"last_full_listing": last_full}
        if put:
            entry["put"] = put
        if gone:
            entry["del"] = gone
        return _dumps(entry)

    async def _append(
        self,
        captured: dict[Key, tuple[dict[str, TrackedJob] | None, float | None]],
        outbox: Outbox,
    ) -> int:
        """Append one record of what changed; its bytes (0: nothing changed, nothing written).

        The record is one line, streamed out in pieces of about 1 MiB (a big
        first round of baselines is never held whole in memory) and synced once
        at the end: a crash in between leaves a line cut short, which a load ignores.
        """
        fd = self._fd
        assert fd is not None
        head = '{"at":' + _dumps(self._time())
        batch: list[str] = []
        pending = 0
        size = 0
        saved: list[Key] = []
        deadline = time.perf_counter() + self._slice
        for item in captured.items():
            key = item[0]
            superseding = key in self._written
            delta = self._delta(item)
            if delta is not _UNCHANGED:
                entry = "null" if delta is None else delta
                piece = f'{head},"targets":{{' if not saved else ","
                piece += f"{_dumps(_name(key))}:{entry}"
                saved.append(key)
                batch.append(piece)
                pending += len(piece)
                if superseding:
                    self._appended_bytes += len(piece)
                else:
                    self._base_bytes += len(piece)
                if pending >= _MiB:
                    data = "".join(batch).encode()
                    batch, pending = [], 0
                    await asyncio.to_thread(_write_all, fd, data)
                    size += len(data)
            if time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + self._slice
        if not saved and not outbox:
            return 0
        tail = "}" if saved else head
        if outbox:
            tail += ',"outbox":' + _dumps([[seq, rec] for seq, rec in outbox])
        batch.append(tail + "}\n")
        data = "".join(batch).encode()
        await asyncio.to_thread(_append_sync, fd, data)
        size += len(data)
        for key in saved:
            jobs, last_full = captured[key]
            if jobs is None:
                self._written.pop(key, None)
            else:
                self._written[key] = (jobs, last_full)
        return size

    async def _rewrite(
        self,
        captured: dict[Key, tuple[dict[str, TrackedJob], float | None]],
        outbox: Outbox,
        now: float,
    ) -> int:
        self._close_fd()
        f, tmp = await asyncio.to_thread(_open_temporary, self._path)
        try:
            size = 0
            batch: list[bytes] = [_header(now)]
            pending = len(batch[0])
            items = list(captured.items())
            # One record per slice of targets: the file is renamed into place only
            # when complete, so its records need not be one commit each.
            start = 0
            while start < len(items):
                lines = []
                deadline = time.perf_counter() + self._slice
                i = start
                while i < len(items) and (i == start or time.perf_counter() < deadline):
                    key, (jobs, last_full) = items[i]
                    lines.append((key, _full_entry(jobs, last_full)))
                    i += 1
                start = i
                record = _record(lines)
                batch.append(record)
                pending += len(record)
                if pending >= _MiB:
                    await asyncio.to_thread(f.writelines, batch)
                    size += pending
                    batch, pending = [], 0
                await asyncio.sleep(0)
            if outbox:
                record = _record([], outbox)
                batch.append(record)
                pending += len(record)
            size += pending
            await asyncio.to_thread(_finish_temporary, f, batch, tmp, self._path)
        except BaseException:
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._fd = await asyncio.to_thread(os.open, self._path, os.O_WRONLY | os.O_APPEND)
        return size

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
                    await self._commit_guarded()
                    await asyncio.sleep(self._min_gap)
        finally:
            if self._dirty.is_set() or self._pending:
                self._retry_at = 0.0  # the last chance: try even while backing off
                await self._commit_guarded()

    async def _commit_guarded(self) -> None:
        try:
            await self.commit()
        except Exception as e:  # a bug here must not end the committer (and the events)
            _log.exception("state_committer_crashed", error=repr(e)[:500])

    def close(self) -> None:
        self._close_fd()
        self._ack.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _append_sync(fd: int, data: bytes) -> None:
    if os.fstat(fd).st_nlink == 0:
        # Deleted or replaced under us: appending would write into nothing.
        raise FileNotFoundError("the state file was removed")
    _write_all(fd, data)
    os.fdatasync(fd)


def _open_temporary(path: Path) -> tuple[BinaryIO, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    return os.fdopen(fd, "wb"), tmp


def _finish_temporary(f: BinaryIO, batch: list[bytes], tmp: str, path: Path) -> None:
    with f:
        f.writelines(batch)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)

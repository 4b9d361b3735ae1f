"""Prometheus exposition: every family jobwatch exports, defined once, rendered at scrape time.

Each family is one row of a table below: its name, help text, type, labels and
how its samples are read from jobwatch's state. The tables drive both
renderings: ``collect()`` (prometheus_client's metric objects: the reference,
what ``registry.get_sample_value`` and ``generate_latest`` read) and the writer
behind ``/metrics`` (the same text byte for byte, written straight from the
state in slices that leave the event loop to the polls). Nothing is kept in
metric objects between scrapes: a job that leaves the store leaves ``/metrics``
on the next scrape.

To add a per-job metric, add a row to :data:`JOB_FAMILIES`; docs/metrics.md
lists every family.
"""

from __future__ import annotations

import contextlib
import platform
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import accumulate, chain, compress, repeat
from threading import Lock
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Protocol, TypeVar, cast

from isal import isal_zlib
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from jobwatch.diff import TrackedJob
from jobwatch.errors import ConfigError
from jobwatch.model import KNOWN_STATUSES, TERMINAL_STATUSES
from jobwatch.push import LAG_BUCKETS, MESSAGE_RESULTS, TRANSITION_PATHS, PushStats
from jobwatch.shard import Shard
from jobwatch.state import FULL_LISTING_REASONS, POLL_DURATION_BUCKETS, Store
from jobwatch.turns import Pauser

__all__ = [
    "DISCOVERY_FAMILIES",
    "FAMILY_TABLES",
    "JOB_FAMILIES",
    "PROCESS_COLLECTOR_FAMILIES",
    "PROCESS_FAMILIES",
    "PUSH_FAMILIES",
    "SHARD_FAMILIES",
    "TARGET_FAMILIES",
    "DiscoveryCollector",
    "DiscoveryState",
    "EndedJobs",
    "ExpositionRegistry",
    "Family",
    "Histogram",
    "JobFamily",
    "JobwatchCollector",
    "PushCollector",
    "Selection",
    "ShardCollector",
    "exposition_async",
    "filtered",
    "make_registry",
    "share_cpu_turns",
]

S = TypeVar("S")
T = TypeVar("T")
F = TypeVar("F", bound="JobFamily | Family[Any] | Histogram[Any]")
#: A sample: its label values (in the family's ``labels`` order) and its value.
Sample = tuple[tuple[str, ...], float]


#: How a per-job family reads its values or label values: from a list of tracked
#: jobs, one per job (a whole list at once, as a comprehension: a call per job
#: would add a tenth to the cost of a scrape).
JobColumn = Callable[[Sequence[TrackedJob]], Sequence[T]]


@dataclass(frozen=True, slots=True)
class JobFamily:
    """A gauge with one series per tracked job.

    Its labels are the target's (``aws_account_id``, ``aws_region``, the
    configured static labels), ``job_id``, then ``labels``: each a name and its
    values. ``values`` gives each job's value, None where the job has no series;
    without ``values`` the family is 1 for every job and its labels say the rest.
    """

    name: str
    doc: str
    values: JobColumn[float | bool | None] | None = None
    labels: tuple[tuple[str, JobColumn[str]], ...] = ()
    kind: ClassVar[str] = "gauge"

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.labels)


@dataclass(frozen=True, slots=True)
class Family(Generic[S]):
    """A gauge or counter read from one state object ``S``.

    Without labels it has one sample, ``value`` (none while that is None);
    with ``labels``, ``samples`` gives (label values, value) pairs. Per-target
    families read a target's view, and their series also carry the target's
    labels; the others read process-wide state.
    """

    name: str
    doc: str
    value: Callable[[S], float | None] | None = None
    kind: str = "gauge"
    labels: tuple[str, ...] = ()
    samples: Callable[[S], Iterable[Sample]] | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.samples is None) or bool(self.labels) != (
            self.samples is not None
        ):
            raise ValueError(f"{self.name}: either a value, or labels and samples")

    def read(self, state: S) -> Iterable[Sample]:
        """The family's samples in ``state``."""
        if self.samples is not None:
            return self.samples(state)
        assert self.value is not None
        value = self.value(state)
        return () if value is None else (((), value),)


@dataclass(frozen=True, slots=True)
class Histogram(Generic[S]):
    """A histogram without labels: ``read`` gives the cumulative buckets and the sum."""

    name: str
    doc: str
    read: Callable[[S], tuple[Sequence[tuple[str, float]], float]]
    kind: ClassVar[str] = "histogram"


def _each(values: Iterable[tuple[str, float]]) -> list[Sample]:
    """Samples of a family with one label, from (label value, value) pairs."""
    return [((label,), value) for label, value in values]


@dataclass(frozen=True, slots=True)
class _TargetView:
    """What the families read of one target, taken at once at the start of a rendering.

    A target's snapshot (``jobs``) is replaced whole by a poll, never edited, so
    holding it here keeps the rendering on the state it started with.
    """

    #: The target's labels, in order: account, region, then the configured ones.
    fixed: tuple[tuple[str, str], ...]
    jobs: Mapping[str, TrackedJob] | None
    up: bool
    last_success: float | None
    last_duration: float | None
    consecutive_failures: int
    polls: Mapping[str, int]
    overruns: int
    requests: Mapping[tuple[str, str], int]

    def status_counts(self) -> dict[str, int]:
        """Tracked jobs by status: every known status, then unknown ones as first seen."""
        counts = dict.fromkeys(KNOWN_STATUSES, 0)
        if self.jobs:
            for status, n in Counter(t.job.status for t in self.jobs.values()).items():
                counts[status] = counts.get(status, 0) + n
        return counts


@dataclass(frozen=True, slots=True)
class _StoreView:
    """What the process-wide families read of the store, taken at once."""

    targets: list[_TargetView]
    #: The names of the labels every target has, in the order of their ``fixed``.
    target_labels: tuple[str, ...]
    events: list[tuple[str, int]]
    unknown: list[tuple[str, int]]
    state_writes: list[tuple[str, int]]
    state_write_failures: int | None
    full_listings: list[tuple[str, int]]
    target_count: int
    poll_buckets: tuple[tuple[str, float], ...]
    poll_sum: float
    version: str


@dataclass(frozen=True, slots=True)
class _ShardView:
    ordinal: int
    total: int
    candidates: int


class DiscoveryState(Protocol):
    """What the discovery families read of ``jobwatch.discovery.Discovery``."""

    @property
    def up(self) -> bool: ...
    @property
    def last_success(self) -> float | None: ...
    @property
    def last_duration(self) -> float | None: ...
    @property
    def accounts(self) -> Sequence[object] | None: ...
    @property
    def refreshes(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class _DiscoveryView:
    """Discovery's health, and the target changes the poller supervisor counted."""

    state: DiscoveryState
    target_changes: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class _PushView:
    """The push consumer's counters and each queue's health, taken at once."""

    messages: list[tuple[str, int]]
    transitions: list[tuple[str, int]]
    lag_buckets: tuple[tuple[str, float], ...]
    lag_sum: float
    #: (queue URL, up, last receive, receive errors, dead letters)
    queues: list[tuple[str, bool, float | None, int, int | None]]


_POLL_OUTCOMES = ("success", "failure")
_API_OPERATIONS = ("ListJobs", "DescribeJob")
_API_OUTCOMES = ("success", "throttled", "error")
_API_REQUESTS = tuple((op, o) for op in _API_OPERATIONS for o in _API_OUTCOMES)
_REFRESH_OUTCOMES = ("success", "failure")
_TARGET_CHANGES = ("added", "removed", "updated")
_BUCKET_BOUNDS = (*(str(float(b)) for b in POLL_DURATION_BUCKETS), "+Inf")


# In exposition order; each family's series are listed target by target, job by job.
JOB_FAMILIES: tuple[JobFamily, ...] = (
    JobFamily(
        "s3batch_job_status",
        "Current status of the job (1).",
        labels=(("status", lambda jobs: [t.job.status for t in jobs]),),
    ),
    JobFamily(
        "s3batch_job_info",
        "Static properties of the job.",
        labels=(
            ("operation", lambda jobs: [t.job.operation for t in jobs]),
            ("priority", lambda jobs: [str(t.job.priority) for t in jobs]),
            ("failure_code", lambda jobs: [t.failure_code for t in jobs]),
        ),
    ),
    JobFamily(
        "s3batch_job_tasks",
        "Total number of tasks in the job.",
        lambda jobs: [t.job.tasks_total for t in jobs],
    ),
    JobFamily(
        "s3batch_job_tasks_succeeded",
        "Tasks that succeeded so far.",
        lambda jobs: [t.job.tasks_succeeded for t in jobs],
    ),
    JobFamily(
        "s3batch_job_tasks_failed",
        "Tasks that failed so far.",
        lambda jobs: [t.job.tasks_failed for t in jobs],
    ),
    JobFamily(
        "s3batch_job_task_failure_ratio",
        "Failed tasks over tasks run (0 when none ran).",
        lambda jobs: [t.job.task_failure_ratio for t in jobs],
    ),
    JobFamily(
        "s3batch_job_active_seconds",
        "Time the job has spent in the Active status.",
        lambda jobs: [t.job.active_seconds for t in jobs],
    ),
    JobFamily(
        "s3batch_job_created_timestamp_seconds",
        "When the job was created.",
        lambda jobs: [t.job.creation_time for t in jobs],
    ),
    JobFamily(
        "s3batch_job_terminated_timestamp_seconds",
        "When the job ended (ended jobs only).",
        lambda jobs: [t.ended_at for t in jobs],
    ),
    JobFamily(
        "s3batch_job_status_since_timestamp_seconds",
        "When jobwatch saw the job enter its current status.",
        lambda jobs: [t.status_since for t in jobs],
    ),
    JobFamily(
        "s3batch_job_last_progress_timestamp_seconds",
        "When jobwatch last saw the job's task counts move.",
        lambda jobs: [t.last_progress_at for t in jobs],
    ),
    JobFamily(
        "s3batch_job_stalled",
        "1 if the job is Active and made no task progress for stall.no_progress.",
        lambda jobs: [t.stalled for t in jobs],
    ),
    JobFamily(
        "s3batch_job_status_overdue",
        "1 if the job is held in its status longer than stall.status_limits allows.",
        lambda jobs: [t.overdue for t in jobs],
    ),
)

# In exposition order, after the per-job families; the target's labels come first.
TARGET_FAMILIES: tuple[Family[_TargetView], ...] = (
    Family(
        "s3batch_jobs",
        "Tracked jobs of the target by status.",
        labels=("status",),
        samples=lambda v: _each(v.status_counts().items()),
    ),
    Family("jobwatch_target_up", "1 if the target's last poll succeeded.", lambda v: v.up),
    Family(
        "jobwatch_target_last_success_timestamp_seconds",
        "When the target was last polled successfully.",
        lambda v: v.last_success,
    ),
    Family(
        "jobwatch_target_poll_duration_seconds",
        "Duration of the target's last poll.",
        lambda v: v.last_duration,
    ),
    Family(
        "jobwatch_target_consecutive_failures",
        "Polls failed in a row for the target.",
        lambda v: v.consecutive_failures,
    ),
    Family(
        "jobwatch_target_polls",
        "Polls of the target by outcome.",
        kind="counter",
        labels=("outcome",),
        samples=lambda v: _each(v.polls.items()),
    ),
    Family(
        "jobwatch_target_poll_overruns",
        "Polls of the target that took longer than the interval.",
        lambda v: v.overruns,
        kind="counter",
    ),
    Family(
        "jobwatch_api_requests",
        "S3 Control HTTP requests (retries included) by operation and outcome.",
        kind="counter",
        labels=("operation", "outcome"),
        samples=lambda v: v.requests.items(),
    ),
)

# In exposition order, after the per-target families.
PROCESS_FAMILIES: tuple[Family[_StoreView] | Histogram[_StoreView], ...] = (
    Family(
        "jobwatch_events",
        "Events emitted by kind.",
        kind="counter",
        labels=("event",),
        samples=lambda s: _each(s.events),
    ),
    Family(
        "jobwatch_unknown_values",
        "Distinct enum values from AWS that jobwatch does not know, by field.",
        kind="counter",
        labels=("field",),
        samples=lambda s: _each(s.unknown),
    ),
    Family(
        "jobwatch_state_writes",
        "State file writes by outcome.",
        kind="counter",
        labels=("outcome",),
        samples=lambda s: _each(s.state_writes),
    ),
    Family(
        "jobwatch_state_write_consecutive_failures",
        "State file writes that failed since the last successful one (0 when healthy).",
        lambda s: s.state_write_failures,
    ),
    Family(
        "jobwatch_full_listings",
        "Polls that listed jobs of every status, by reason.",
        kind="counter",
        labels=("reason",),
        samples=lambda s: _each(s.full_listings),
    ),
    Family("jobwatch_targets", "Configured targets.", lambda s: s.target_count),
    Histogram(
        "jobwatch_poll_duration_seconds",
        "Duration of polls, all targets.",
        lambda s: (s.poll_buckets, s.poll_sum),
    ),
    Family(
        "jobwatch_build_info",
        "jobwatch build information.",
        labels=("version", "python_version"),
        samples=lambda s: [((s.version, platform.python_version()), 1.0)],
    ),
)

SHARD_FAMILIES: tuple[Family[_ShardView], ...] = (
    Family(
        "jobwatch_shard_ordinal",
        "The shard this process watches (0 when unsharded).",
        lambda s: s.ordinal,
    ),
    Family(
        "jobwatch_total_shards",
        "How many shards the fleet is split into (1 when unsharded).",
        lambda s: s.total,
    ),
    Family(
        "jobwatch_shard_candidate_targets",
        "Targets known before sharding (static and discovered); jobwatch_targets of them "
        "hash to this shard.",
        lambda s: s.candidates,
    ),
)

DISCOVERY_FAMILIES: tuple[Family[_DiscoveryView], ...] = (
    Family(
        "jobwatch_discovery_up",
        "1 if the last account discovery refresh succeeded.",
        lambda d: d.state.up,
    ),
    Family(
        "jobwatch_discovery_last_success_timestamp_seconds",
        "When the account list in use was last fetched successfully.",
        lambda d: d.state.last_success,
    ),
    Family(
        "jobwatch_discovered_accounts",
        "Accounts in the discovered list in use (after filters, before sharding).",
        lambda d: len(d.state.accounts or ()),
    ),
    Family(
        "jobwatch_discovery_duration_seconds",
        "Duration of the last discovery refresh.",
        lambda d: d.state.last_duration,
    ),
    Family(
        "jobwatch_discovery_refreshes",
        "Discovery refreshes by outcome.",
        kind="counter",
        labels=("outcome",),
        samples=lambda d: _each((o, d.state.refreshes[o]) for o in _REFRESH_OUTCOMES),
    ),
    Family(
        "jobwatch_target_changes",
        "Targets added, removed or updated while running (discovery or config).",
        kind="counter",
        labels=("change",),
        samples=lambda d: _each((c, d.target_changes[c]) for c in _TARGET_CHANGES),
    ),
)

PUSH_FAMILIES: tuple[Family[_PushView] | Histogram[_PushView], ...] = (
    Family(
        "jobwatch_push_messages",
        "Push queue messages by what became of them.",
        kind="counter",
        labels=("result",),
        samples=lambda p: _each(p.messages),
    ),
    Family(
        "jobwatch_push_transitions",
        "Status transitions reported, by who found them first: push (an event's look), "
        "poll (a poll, the event announced it) or poll_unannounced (no event seen).",
        kind="counter",
        labels=("found_by",),
        samples=lambda p: _each(p.transitions),
    ),
    Histogram(
        "jobwatch_push_lag_seconds",
        "From a job event's time to jobwatch reporting the change it announced.",
        lambda p: (p.lag_buckets, p.lag_sum),
    ),
    Family(
        "jobwatch_push_consumer_up",
        "1 if the queue's last ReceiveMessage succeeded.",
        labels=("queue",),
        samples=lambda p: [((q[0],), float(q[1])) for q in p.queues],
    ),
    Family(
        "jobwatch_push_last_receive_timestamp_seconds",
        "When the queue last answered a ReceiveMessage.",
        labels=("queue",),
        samples=lambda p: [((q[0],), q[2]) for q in p.queues if q[2] is not None],
    ),
    Family(
        "jobwatch_push_receive_errors",
        "Failed ReceiveMessage calls by queue.",
        kind="counter",
        labels=("queue",),
        samples=lambda p: [((q[0],), float(q[3])) for q in p.queues],
    ),
    Family(
        "jobwatch_push_dead_letter_messages",
        "Messages in the queue's dead-letter queue (with dead_letter_url).",
        labels=("queue",),
        samples=lambda p: [((q[0],), float(q[4])) for q in p.queues if q[4] is not None],
    ),
)
_LAG_BOUNDS = (*(str(float(b)) for b in LAG_BUCKETS), "+Inf")
#: Every table of families, for the names ``metrics.allow`` and ``metrics.deny`` may use.
#: A new table goes here (and its collector takes a :class:`Selection`).
FAMILY_TABLES: tuple[Sequence[JobFamily | Family[Any] | Histogram[Any]], ...] = (
    JOB_FAMILIES,
    TARGET_FAMILIES,
    PROCESS_FAMILIES,
    SHARD_FAMILIES,
    DISCOVERY_FAMILIES,
    PUSH_FAMILIES,
)
#: prometheus_client's ProcessCollector, which ``App`` registers too: (name, type).
PROCESS_COLLECTOR_FAMILIES = (
    ("process_virtual_memory_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
)
#: Which ended jobs keep their per-job series (``metrics.ended_jobs``).
EndedJobs = Literal["all", "failed", "none"]


def _ended_shown(ended_jobs: EndedJobs) -> Callable[[TrackedJob], bool] | None:
    if ended_jobs == "failed":
        return lambda t: t.job.status not in TERMINAL_STATUSES or t.job.status == "Failed"
    if ended_jobs == "none":
        return lambda t: t.job.status not in TERMINAL_STATUSES
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """What ``/metrics`` shows: the families (``metrics.allow``, ``metrics.deny``) and
    which ended jobs keep per-job series (``metrics.ended_jobs``).

    ``allow`` and ``deny`` are shell-style globs over family names (a counter's
    also match with ``_total``); an empty ``allow`` allows every family, and
    ``deny`` wins. ``s3batch_jobs`` counts every tracked job whatever ``ended_jobs`` says.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    ended_jobs: EndedJobs = "all"

    def allows(self, name: str, kind: str = "gauge") -> bool:
        def matches(pattern: str) -> bool:
            return fnmatchcase(name, pattern) or (
                kind == "counter" and fnmatchcase(f"{name}_total", pattern)
            )

        if self.allow and not any(map(matches, self.allow)):
            return False
        return not any(map(matches, self.deny))

    def pick(self, families: Sequence[F]) -> tuple[F, ...]:
        """The families of a table this selection shows, in the table's order."""
        return tuple(f for f in families if self.allows(f.name, f.kind))

    @property
    def shows_job(self) -> Callable[[TrackedJob], bool] | None:
        """Whether a tracked job has per-job series (None: every one has)."""
        return _ended_shown(self.ended_jobs)

    def check(self) -> None:
        """Raise :class:`ConfigError` for a pattern that matches no family (a typo, surely)."""
        known = [(f.name, f.kind) for table in FAMILY_TABLES for f in table]
        known += PROCESS_COLLECTOR_FAMILIES
        problems = []
        for key, patterns in (("allow", self.allow), ("deny", self.deny)):
            for i, pattern in enumerate(patterns):
                if not any(Selection(allow=(pattern,)).allows(n, k) for n, k in known):
                    problems.append(
                        f"metrics.{key}[{i}]: {pattern!r} matches no metric family; "
                        f"the families are: {', '.join(n for n, _ in known)}"
                    )
        if problems:
            raise ConfigError(problems)


class _Filtered(Collector):
    """Another collector's families, those a :class:`Selection` allows."""

    def __init__(self, collector: Collector, selection: Selection) -> None:
        self._collector = collector
        self._selection = selection

    def collect(self) -> Iterator[Metric]:
        for metric in self._collector.collect():
            if self._selection.allows(metric.name, metric.type):
                yield metric


def filtered(collector: Collector, selection: Selection) -> Collector:
    """``collector`` showing only the families ``selection`` allows (for prometheus_client's)."""
    if not selection.allow and not selection.deny:
        return collector
    return _Filtered(collector, selection)


#: The labels every per-target and per-job series starts with (then the configured ones).
_TARGET_LABELS = ("aws_account_id", "aws_region")
#: The label per-job series add; the first of their label slots.
_JOB_ID = "job_id"
#: How long the asynchronous writer holds the event loop at a time.
SLICE_SECONDS = 0.01
#: Jobs written between two chances to pause.
_JOB_STEP = 256
#: Lines joined and encoded at a time by the asynchronous writer.
_JOIN_STEP = 4096
_INF = float("inf")
#: prometheus_client's value formatting (untyped there).
_go_float = cast(Callable[[float], str], floatToGoString)


# --------------------------------------------------------------------------- collect()


def _metric(family: JobFamily | Family[Any] | Histogram[Any], labels: Sequence[str]) -> Any:
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.doc, labels=labels)
    if family.kind == "histogram":
        return HistogramMetricFamily(family.name, family.doc, labels=labels)
    return GaugeMetricFamily(family.name, family.doc, labels=labels)


def _collected(families: Iterable[Family[S] | Histogram[S]], state: S) -> Iterator[Metric]:
    """Families without the target's labels, as prometheus_client's metric objects."""
    for family in families:
        if isinstance(family, Histogram):
            metric = _metric(family, [])
            buckets, total = family.read(state)
            metric.add_metric([], [(b, float(n)) for b, n in buckets], float(total))
        else:
            metric = _metric(family, family.labels)
            for labels, value in family.read(state):
                metric.add_metric(labels, float(value))
        yield metric


def _label_rows(family: JobFamily, tracked: Sequence[TrackedJob]) -> Iterable[tuple[str, ...]]:
    """Each job's values of the family's labels."""
    if not family.labels:
        return repeat((), len(tracked))
    return zip(*(read(tracked) for _, read in family.labels), strict=True)


# --------------------------------------------------------------------------- the writer


def _number(value: float) -> str:
    """``floatToGoString(value)``, the same text, with fast paths for the usual values."""
    if type(value) is float:
        if 1e9 <= value < 1e10:
            # Epoch seconds (2001-2286): ten digits before the dot, which Go
            # writes with an exponent.
            text = repr(value)
            return f"{text[0]}.{text[1:10]}{text[11:]}".rstrip("0.") + "e+09"
        if -_INF < value < 1e6:
            return repr(value)  # no exponent for these in Go's format either
        return _go_float(value)
    if type(value) is int and -(2**53) <= value < 1_000_000:
        return f"{value}.0"  # what repr(float(value)) gives for these (exact as floats)
    return _go_float(value)


class _Numbers:
    """The texts of the values of one rendering, remembered (timestamps repeat across jobs)."""

    def __init__(self) -> None:
        self.known: dict[float, str] = {}

    def text(self, value: float) -> str:
        text = self.known.get(value)
        if text is None:
            text = _number(value)
            if value:  # 0.0 and -0.0 are equal keys but print differently
                self.known[value] = text
        return text


def _escape(value: str) -> str:
    """A label value as prometheus_client escapes it (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _shown(family: JobFamily | Family[Any] | Histogram[Any]) -> str:
    """The family's name as the text format shows it (counters get ``_total``)."""
    return family.name + "_total" if family.kind == "counter" else family.name


def _header(family: JobFamily | Family[Any] | Histogram[Any]) -> str:
    name = _shown(family)
    doc = family.doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {family.kind}\n"


class _Shape(NamedTuple):
    """A sample line's labels, cut around the values of its slots.

    A line is the family's name, ``pieces[0]``, the value of slot
    ``order[0]``, ``pieces[1]``, ... and the sample's value: the last piece
    ends with the space before it.
    """

    pieces: list[str]
    order: list[int]


class _Layout:
    """Where the label slots of lines go among the fixed labels of a group of lines.

    Labels are sorted by name, as prometheus_client writes them; a line without
    labels has no braces. Every target has the same label names, so the layout
    for a set of slots is worked out once per rendering, with a ``%s`` for each
    fixed value: :meth:`labels` fills in one target's values.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        #: The positions of the fixed values, in the order their labels are written.
        self._written = sorted(range(len(names)), key=names.__getitem__)
        #: By slots: each piece's template and the fixed values it takes, and the gaps' slots.
        self._plans: dict[tuple[str, ...], tuple[list[tuple[str, int, int]], list[int]]] = {}

    def labels(self, values: Sequence[str]) -> _LabelSet:
        """A group's labels: ``values`` are those of the names, in their order."""
        return _LabelSet(self, tuple([_escape(values[i]) for i in self._written]))

    def plan(self, slots: tuple[str, ...]) -> tuple[list[tuple[str, int, int]], list[int]]:
        plan = self._plans.get(slots)
        if plan is None:
            plan = self._plans[slots] = self._cut(slots)
        return plan

    def _cut(self, slots: tuple[str, ...]) -> tuple[list[tuple[str, int, int]], list[int]]:
        items = sorted([*((n, -1) for n in self._names), *((n, i) for i, n in enumerate(slots))])
        if not items:
            return [(" ", 0, 0)], []
        templates: list[tuple[str, int, int]] = []
        order: list[int] = []
        current, start, used = "{", 0, 0
        for i, (label, slot) in enumerate(items):
            sep = "," if i else ""
            if slot < 0:
                current += f'{sep}{label}="%s"'
                used += 1
            else:
                templates.append((f'{current}{sep}{label}="', start, used))
                order.append(slot)
                current, start = '"', used
        templates.append((current + "} ", start, used))
        return templates, order


class _LabelSet:
    """The fixed labels of one group of lines (a target's, or none) and its lines' shapes."""

    def __init__(self, layout: _Layout, written: tuple[str, ...]) -> None:
        self._layout = layout
        self._written = written
        self._shapes: dict[tuple[str, ...], _Shape] = {}

    def shape(self, slots: tuple[str, ...]) -> _Shape:
        """The shape of lines with a gap for each of ``slots``."""
        shape = self._shapes.get(slots)
        if shape is None:
            templates, order = self._layout.plan(slots)
            values = self._written
            pieces = [template % values[a:b] for template, a, b in templates]
            shape = self._shapes[slots] = _Shape(pieces, order)
        return shape


class _Escaped(dict[str, str]):
    """Label values as the text format writes them, remembered (statuses repeat across jobs)."""

    def __missing__(self, value: str) -> str:
        text = self[value] = _escape(value)
        return text


def _joined(
    name: str,
    pieces: Sequence[Iterable[str]],
    order: Sequence[int],
    slots: Sequence[Iterable[str]],
    texts: Sequence[str],
) -> Iterator[str]:
    """Lines, column by column: the name, the pieces of text between the label
    slots (``order`` says which slot comes after each piece), the slots' escaped
    values and the value texts. Every column has a line's worth per line."""
    n = len(texts)
    parts = [repeat(name, n), pieces[0]]
    for slot, piece in zip(order, pieces[1:], strict=True):
        parts += (slots[slot], piece)
    parts += (texts, repeat("\n", n))
    return map("".join, zip(*parts, strict=True))


def _histogram_lines(family: Histogram[S], state: S, numbers: _Numbers) -> list[str]:
    num = numbers.text
    buckets, total = family.read(state)
    name = family.name
    lines = [f'{name}_bucket{{le="{bound}"}} {num(n)}\n' for bound, n in buckets]
    count = buckets[-1][1] if buckets else 0.0
    return [*lines, f"{name}_count {num(count)}\n", f"{name}_sum {num(total)}\n"]


def _sample_lines(
    family: Family[S],
    name: str,
    labels: _LabelSet,
    state: S,
    numbers: _Numbers,
    escaped: _Escaped,
) -> Iterable[str]:
    """Lines of ``family`` (shown as ``name``) with the group's ``labels``."""
    got = numbers.known.get
    num = numbers.text
    shape = labels.shape(family.labels)
    if family.value is not None:
        v = family.value(state)
        return () if v is None else (f"{name}{shape.pieces[0]}{got(v) or num(v)}\n",)
    samples = family.read(state)
    # Fast paths for one and two label slots, the usual shapes (a line in one step).
    if len(shape.order) == 1:
        head, tail = shape.pieces
        return [f"{name}{head}{escaped[k]}{tail}{got(v) or num(v)}\n" for (k,), v in samples]
    if len(shape.order) == 2:
        head, mid, tail = shape.pieces
        a, b = shape.order
        return [
            f"{name}{head}{escaped[k[a]]}{mid}{escaped[k[b]]}{tail}{got(v) or num(v)}\n"
            for k, v in samples
        ]
    rows = list(samples)
    if not rows:
        return []
    slots = [map(escaped.__getitem__, c) for c in zip(*(r for r, _ in rows), strict=True)]
    pieces = [repeat(piece, len(rows)) for piece in shape.pieces]
    return _joined(name, pieces, shape.order, slots, [got(v) or num(v) for _, v in rows])


class _JobLines:
    """The per-job families' lines of jobs not rendered before, a batch of a few hundred at a time.

    A batch takes the jobs of consecutive targets until it is full (a big
    target's in several batches), so a family costs one pass per batch however
    few jobs each target has. Per family and batch: the family's values, then
    a column per piece of text (the line's labels, cut around the slots: job_id,
    then the family's labels) joined line by line. Each job's lines (one per
    family, ``""`` where it has no series) go into the ``into`` mapping given
    with it, under its id.
    """

    def __init__(self, families: Sequence[JobFamily], numbers: _Numbers, escaped: _Escaped) -> None:
        self.size = 0
        self._families = families
        self._names = [f.name for f in families]
        self._slots = [(_JOB_ID, *f.label_names) for f in families]
        self._numbers = numbers
        self._escaped = escaped
        self._batch: list[tuple[_LabelSet, Sequence[str], Sequence[TrackedJob], _JobRows]] = []

    def add(
        self,
        labels: _LabelSet,
        ids: Sequence[str],
        tracked: Sequence[TrackedJob],
        into: _JobRows,
    ) -> None:
        self._batch.append((labels, ids, tracked, into))
        self.size += len(ids)

    def write(self) -> None:
        batch, self._batch, self.size = self._batch, [], 0
        if not batch:
            return
        got = self._numbers.known.get
        num = self._numbers.text
        escaped = self._escaped
        # Job ids hardly ever need escaping: check before calling.
        ids = [
            _escape(j) if "\\" in j or "\n" in j or '"' in j else j
            for _, some, _, _ in batch
            for j in some
        ]
        tracked = [t for _, _, some, _ in batch for t in some] if len(batch) > 1 else batch[0][2]
        total = len(ids)
        # Per slots: each piece of text, one for the batch or one per job.
        pieces: dict[tuple[str, ...], list[str | list[str]]] = {}
        orders: dict[tuple[str, ...], list[int]] = {}
        for slots in self._slots:
            if slots in pieces:
                continue
            shapes = [labels.shape(slots) for labels, _, _, _ in batch]
            orders[slots] = shapes[0].order
            if len(batch) == 1:
                pieces[slots] = list(shapes[0].pieces)
                continue
            counts = [len(some) for _, some, _, _ in batch]
            pieces[slots] = [
                list(
                    chain.from_iterable(
                        repeat(s.pieces[k], c) for s, c in zip(shapes, counts, strict=True)
                    )
                )
                for k in range(len(shapes[0].pieces))
            ]
        columns: list[list[str]] = []
        for family, name, slots in zip(self._families, self._names, self._slots, strict=True):
            keep = None
            if family.values is None:
                texts = ["1.0"] * total
            else:
                values = family.values(tracked)
                # Falsy values are never remembered (0.0 and -0.0 print differently);
                # False, a flag's usual value, is common enough for its own shortcut.
                texts = [
                    got(v) or ("0.0" if v is False else num(v)) for v in values if v is not None
                ]
                if len(texts) < total:  # the jobs without a value have no series
                    keep = [v is not None for v in values]
            slot_columns: list[Iterable[str]] = [ids]
            slot_columns += (map(escaped.__getitem__, read(tracked)) for _, read in family.labels)
            piece_columns: list[Iterable[str]] = [
                repeat(p, total) if isinstance(p, str) else p for p in pieces[slots]
            ]
            if keep is not None:
                slot_columns = [compress(c, keep) for c in slot_columns]
                piece_columns = [compress(c, keep) for c in piece_columns]
            lines = list(_joined(name, piece_columns, orders[slots], slot_columns, texts))
            if keep is not None:
                some_lines = iter(lines)
                lines = [next(some_lines) if k else "" for k in keep]
            columns.append(lines)
        rows = iter(zip(*columns, strict=True)) if columns else repeat(())
        for _, some, jobs, into in batch:
            for job_id, t, row in zip(some, jobs, rows, strict=False):
                into[job_id] = (t, row)


#: A target's rendered jobs: by job id, the tracked job the lines were written
#: from and its lines, one per per-job family ("" where it has no series).
_JobRows = dict[str, tuple[TrackedJob, tuple[str, ...]]]


# --------------------------------------------------------------------------- collectors


async def _written(lines: Generator[None, None, list[str]], slice_seconds: float) -> list[bytes]:
    """Run a lines generator, pausing every ``slice_seconds``; the text in pieces of a few MB."""
    pause = Pauser(slice_seconds)
    while True:
        try:
            next(lines)
        except StopIteration as done:
            parts: list[str] = done.value
            break
        await pause()
    # Joining and encoding 20 MB at once would hold the loop too: in steps.
    chunks = []
    for start in range(0, len(parts), _JOIN_STEP):
        chunks.append("".join(parts[start : start + _JOIN_STEP]).encode("utf-8"))
        await pause()
    return chunks


class JobwatchCollector(Collector):
    """The per-job, per-target and process-wide families, rendered from the store.

    :meth:`collect` is the reference rendering; :meth:`exposition_chunks`
    writes the same text straight from the store, many times faster, for
    ``/metrics`` (tests/test_perf_metrics.py holds the two to the same bytes).
    ``selection`` says which families, and which ended jobs' series, are shown.

    The writer keeps each job's lines between scrapes, under the ``TrackedJob``
    they were written from, and writes again only the jobs whose ``TrackedJob``
    is another object: snapshots are replaced whole, never edited, and the diff
    keeps the object of a job that did not change. So a per-job family's
    values and labels must depend on its ``TrackedJob`` alone.
    """

    def __init__(
        self,
        store: Store,
        label_names: Sequence[str] = (),
        version: str = "",
        selection: Selection | None = None,
    ) -> None:
        self._store = store
        self._extra = tuple(label_names)
        self._target_labels = (*_TARGET_LABELS, *self._extra)
        self._version = version
        self._selection = selection = selection or Selection()
        self._job_families = selection.pick(JOB_FAMILIES)
        self._target_families = selection.pick(TARGET_FAMILIES)
        self._process_families = selection.pick(PROCESS_FAMILIES)
        self._shows_job = selection.shows_job
        #: By target (its labels): the lines of its jobs at the last scrape.
        self._rendered: dict[tuple[tuple[str, str], ...], _JobRows] = {}

    def _snapshot(self) -> _StoreView:
        store = self._store
        targets = []
        for ts in store.targets.values():
            labels = dict(ts.target.labels)
            values = (
                ts.target.account_id,
                ts.target.region,
                *(labels.get(n, "") for n in self._extra),
            )
            targets.append(
                _TargetView(
                    fixed=tuple(zip(self._target_labels, values, strict=True)),
                    jobs=ts.jobs,
                    up=ts.up,
                    last_success=ts.last_success,
                    last_duration=ts.last_duration,
                    consecutive_failures=ts.consecutive_failures,
                    polls={o: ts.polls[o] for o in _POLL_OUTCOMES},
                    overruns=ts.overruns,
                    requests={k: ts.api_requests[k] for k in _API_REQUESTS},
                )
            )
        return _StoreView(
            targets=targets,
            target_labels=self._target_labels,
            events=sorted(store.events.items()),
            unknown=sorted(store.unknown_values.items()),
            state_writes=sorted(store.state_writes.items()),
            state_write_failures=store.state_write_consecutive_failures,
            full_listings=[(r, store.full_listings[r]) for r in FULL_LISTING_REASONS],
            target_count=len(store.targets),
            poll_buckets=_cumulative(_BUCKET_BOUNDS, store.poll_buckets),
            poll_sum=store.poll_sum,
            version=self._version,
        )

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        names = self._target_labels
        shown = self._shows_job
        per_job = [_metric(f, [*names, _JOB_ID, *f.label_names]) for f in self._job_families]
        per_target = [_metric(f, [*names, *f.labels]) for f in self._target_families]
        for view in snap.targets:
            fixed = [value for _, value in view.fixed]
            jobs = {jid: t for jid, t in (view.jobs or {}).items() if shown is None or shown(t)}
            tracked = list(jobs.values())
            for job_family, metric in zip(self._job_families, per_job, strict=True):
                read = job_family.values
                values = [1.0] * len(tracked) if read is None else read(tracked)
                extra = _label_rows(job_family, tracked)
                for job_id, value, labels in zip(jobs, values, extra, strict=True):
                    if value is not None:
                        metric.add_metric([*fixed, job_id, *labels], float(value))
            for family, metric in zip(self._target_families, per_target, strict=True):
                for labels, n in family.read(view):
                    metric.add_metric([*fixed, *labels], float(n))
        yield from per_job
        yield from per_target
        yield from _collected(self._process_families, snap)

    async def exposition_chunks(self, slice_seconds: float = SLICE_SECONDS) -> list[bytes]:
        """``generate_latest(self)``, byte for byte, giving the loop a turn every ``slice_seconds``.

        The text is that of the store at the moment of the call: everything the
        rendering reads is taken first (snapshots are replaced whole, never
        edited), so polls that finish meanwhile do not show up half-way. It
        comes in pieces of a few MB that join to the whole.
        """
        return await _written(self._lines(self._snapshot()), slice_seconds)

    def _lines(self, snap: _StoreView) -> Generator[None, None, list[str]]:
        numbers = _Numbers()
        escaped = _Escaped()
        job_families = self._job_families
        shown = self._shows_job
        per_job = _JobLines(job_families, numbers, escaped)
        target_families = self._target_families
        per_target: list[list[str]] = [[] for _ in target_families]
        names = [_shown(f) for f in target_families]
        layout = _Layout(snap.target_labels)
        before = self._rendered
        rendered: dict[tuple[tuple[str, str], ...], _JobRows] = {}
        for view in snap.targets:
            yield
            labels = layout.labels([value for _, value in view.fixed])
            if view.jobs and job_families:
                old = before.get(view.fixed, {})
                rows: _JobRows = {}
                rendered[view.fixed] = rows
                items = list(view.jobs.items())
                for start in range(0, len(items), _JOB_STEP):
                    ids: list[str] = []
                    tracked: list[TrackedJob] = []
                    for jid, t in items[start : start + _JOB_STEP]:
                        if shown is not None and not shown(t):
                            continue
                        row = old.get(jid)
                        if row is not None and row[0] is t:
                            rows[jid] = row
                        else:
                            rows[jid] = (t, ())  # its place in the order; lines below
                            ids.append(jid)
                            tracked.append(t)
                    if ids:
                        per_job.add(labels, ids, tracked, rows)
                    if per_job.size >= _JOB_STEP:
                        per_job.write()
                    yield
            for family, name, lines in zip(target_families, names, per_target, strict=True):
                lines += _sample_lines(family, name, labels, view, numbers, escaped)
        per_job.write()
        # Kept only once complete: a scrape cancelled half-way leaves the last one's.
        self._rendered = rendered
        out: list[str] = []
        for k, job_family in enumerate(job_families):
            out.append(_header(job_family))
            taken = 0
            for rows in rendered.values():
                out += [row[k] for _, row in rows.values()]
                taken += len(rows)
                if taken >= _JOIN_STEP:
                    taken = 0
                    yield
        for family, lines in zip(target_families, per_target, strict=True):
            out.append(_header(family))
            out += lines
        unlabelled = _Layout(()).labels(())
        for process_family in self._process_families:
            out.append(_header(process_family))
            if isinstance(process_family, Histogram):
                out += _histogram_lines(process_family, snap, numbers)
            else:
                name = _shown(process_family)
                out += _sample_lines(process_family, name, unlabelled, snap, numbers, escaped)
        return out


class _TableCollector(Collector, Generic[S]):
    """Families read from one small state object, taken at each rendering."""

    def __init__(
        self,
        families: Sequence[Family[S] | Histogram[S]],
        read: Callable[[], S],
        selection: Selection | None = None,
    ) -> None:
        self._families = (selection or Selection()).pick(families)
        self._read = read

    def collect(self) -> Iterator[Metric]:
        return _collected(self._families, self._read())

    async def exposition_chunks(self, slice_seconds: float = SLICE_SECONDS) -> list[bytes]:
        """``generate_latest(self)``, byte for byte (a few lines: no pause needed)."""
        state = self._read()
        numbers = _Numbers()
        unlabelled = _Layout(()).labels(())
        escaped = _Escaped()
        out: list[str] = []
        for family in self._families:
            out.append(_header(family))
            if isinstance(family, Histogram):
                out += _histogram_lines(family, state, numbers)
            else:
                out += _sample_lines(family, _shown(family), unlabelled, state, numbers, escaped)
        return ["".join(out).encode("utf-8")]


class ShardCollector(_TableCollector[_ShardView]):
    """:data:`SHARD_FAMILIES` of this process's ``shard``.

    ``candidates`` returns how many targets are known before sharding (static and
    discovered), so ``sum(jobwatch_targets)`` across shards can be checked against it.
    """

    def __init__(
        self, shard: Shard, candidates: Callable[[], int], selection: Selection | None = None
    ) -> None:
        super().__init__(
            SHARD_FAMILIES,
            lambda: _ShardView(shard.ordinal, shard.total, candidates()),
            selection,
        )


class DiscoveryCollector(_TableCollector[_DiscoveryView]):
    """:data:`DISCOVERY_FAMILIES`: account discovery's health, read from ``discovery``,
    and ``target_changes`` (kept by :class:`jobwatch.supervisor.Supervisor`)."""

    def __init__(
        self,
        discovery: DiscoveryState,
        target_changes: Mapping[str, int],
        selection: Selection | None = None,
    ) -> None:
        view = _DiscoveryView(discovery, target_changes)
        super().__init__(DISCOVERY_FAMILIES, lambda: view, selection)


class PushCollector(_TableCollector[_PushView]):
    """:data:`PUSH_FAMILIES`: the push consumer's messages, lag and queues (``push.PushStats``)."""

    def __init__(self, stats: PushStats, selection: Selection | None = None) -> None:
        def read() -> _PushView:
            return _PushView(
                messages=[(r, stats.messages[r]) for r in MESSAGE_RESULTS],
                transitions=[(p, stats.transitions[p]) for p in TRANSITION_PATHS],
                lag_buckets=_cumulative(_LAG_BOUNDS, stats.lag_buckets),
                lag_sum=stats.lag_sum,
                queues=[
                    (q.url, q.up, q.last_receive, q.receive_errors, q.dead_letters)
                    for q in stats.queues.values()
                ],
            )

        super().__init__(PUSH_FAMILIES, read, selection)


def _cumulative(bounds: Sequence[str], counts: Iterable[int]) -> tuple[tuple[str, float], ...]:
    """Per-bucket counts as a histogram's cumulative ``(le, count)`` pairs."""
    return tuple(zip(bounds, map(float, accumulate(counts)), strict=True))


# --------------------------------------------------------------------------- the registry


class ExpositionRegistry(CollectorRegistry):
    """A registry whose :meth:`exposition_async` is ``generate_latest(self)``, faster.

    Collectors with an ``exposition_chunks()`` method (jobwatch's own) write
    their own text; the others go through ``generate_latest`` one by one, in
    registration order, which is the order ``collect()`` uses.
    """

    def __init__(
        self, auto_describe: bool = False, target_info: dict[str, str] | None = None
    ) -> None:
        super().__init__(auto_describe=auto_describe, target_info=target_info)
        self._in_order: list[Collector] = []
        self._order_lock = Lock()
        #: The event loop's CPU turns (``jobwatch.aws.CpuTurns``), when polls take them:
        #: :meth:`exposition_async` holds them, so a scrape goes before pages.
        self.turns: _Turns | None = None

    def register(self, collector: Collector) -> None:
        super().register(collector)
        with self._order_lock:
            self._in_order.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        with self._order_lock:
            self._in_order.remove(collector)

    async def exposition_async(self, *, gzip: bool = False) -> bytes:
        """``generate_latest(self)`` (gzip-compressed if asked), letting the loop run meanwhile.

        Compression is ISA-L's level 1 (:func:`_gzip_compressor`). It runs
        here, in slices, rather than in a thread: on one core a thread only
        competes with the loop.
        """
        async with self.turns.hold() if self.turns is not None else contextlib.nullcontext():
            if self.get_target_info() is not None:
                chunks = [generate_latest(self)]  # target_info comes first; rare, keep it simple
            else:
                with self._order_lock:
                    collectors = list(self._in_order)
                chunks = []
                for collector in collectors:
                    write = getattr(collector, "exposition_chunks", None)
                    if callable(write):
                        chunks.extend(await write())
                    else:
                        chunks.append(generate_latest(collector))
            if not gzip:
                return b"".join(chunks)
            compressor = _gzip_compressor()
            pause = Pauser(SLICE_SECONDS)
            out = []
            for chunk in chunks:
                out.append(compressor.compress(chunk))
                await pause()
            out.append(compressor.flush())
            return b"".join(out)


class _Turns(Protocol):
    def hold(self) -> AbstractAsyncContextManager[None]: ...


def share_cpu_turns(registry: CollectorRegistry, turns: _Turns) -> None:
    """Let ``/metrics`` rendering go before the polls' CPU-heavy steps (``turns``)."""
    if isinstance(registry, ExpositionRegistry):
        registry.turns = turns


async def exposition_async(registry: CollectorRegistry, *, gzip: bool = False) -> bytes:
    """What ``/metrics`` serves: ``generate_latest(registry)`` (or its gzip), without
    holding the loop.

    A state of 100,000 series takes about 0.1 s to write; the loop gets a turn
    every 10 ms of it (polls keep running, probes keep answering).
    """
    if isinstance(registry, ExpositionRegistry):
        return await registry.exposition_async(gzip=gzip)
    body = generate_latest(registry)
    return _gzip(body) if gzip else body


def _gzip_compressor() -> isal_zlib.Compress:
    """A gzip stream compressor for ``/metrics``: ISA-L (igzip) at level 1.

    Same format as the standard library's ``zlib`` (any gzip reader takes it),
    about 5x less CPU than zlib's fastest level on an exposition, and smaller
    output: on 7.5 MB of per-job series, 11 ms and 1.6 MB against zlib level 1's
    55 ms and 1.9 MB (docs/performance.md). Compression was most of a scrape's CPU.
    """
    return isal_zlib.compressobj(1, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)


def _gzip(body: bytes) -> bytes:
    compressor = _gzip_compressor()
    return compressor.compress(body) + compressor.flush()


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry holding only jobwatch's collector (no process/platform defaults)."""
    registry = ExpositionRegistry(auto_describe=False)
    registry.register(collector)
    return registry

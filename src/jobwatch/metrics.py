"""Prometheus exposition, rendered from :class:`jobwatch.state.Store` at scrape time.

Nothing is kept in prometheus_client metric objects: a job that leaves the store
leaves ``/metrics`` on the next scrape. docs/metrics.md lists every family.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from jobwatch.model import KNOWN_STATUSES
from jobwatch.state import POLL_DURATION_BUCKETS, Store, TargetState

__all__ = ["JobwatchCollector", "make_registry"]

_TARGET = ("aws_account_id", "aws_region")


class JobwatchCollector(Collector):
    """Renders every jobwatch family from the store on each ``collect()``."""

    def __init__(self, store: Store, label_names: Sequence[str] = (), version: str = "") -> None:
        self._store = store
        self._extra = tuple(label_names)
        self._version = version

    def _target_values(self, ts: TargetState) -> list[str]:
        labels = dict(ts.target.labels)
        return [ts.target.account_id, ts.target.region, *(labels.get(n, "") for n in self._extra)]

    def collect(self) -> Iterator[Metric]:
        store = self._store
        tl = [*_TARGET, *self._extra]
        jl = [*tl, "job_id"]

        def gauge(name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=list(labels))

        def counter(name: str, doc: str, labels: Iterable[str]) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=list(labels))

        status = gauge("s3batch_job_status", "Current status of the job (1).", [*jl, "status"])
        info = gauge(
            "s3batch_job_info", "Static properties of the job.", [*jl, "operation", "priority"]
        )
        tasks = gauge("s3batch_job_tasks", "Total number of tasks in the job.", jl)
        succeeded = gauge("s3batch_job_tasks_succeeded", "Tasks that succeeded so far.", jl)
        failed = gauge("s3batch_job_tasks_failed", "Tasks that failed so far.", jl)
        ratio = gauge(
            "s3batch_job_task_failure_ratio",
            "Failed tasks over tasks run (0 when none ran).",
            jl,
        )
        active = gauge(
            "s3batch_job_active_seconds", "Time the job has spent in the Active status.", jl
        )
        created = gauge("s3batch_job_created_timestamp_seconds", "When the job was created.", jl)
        terminated = gauge(
            "s3batch_job_terminated_timestamp_seconds", "When the job ended (ended jobs only).", jl
        )
        since = gauge(
            "s3batch_job_status_since_timestamp_seconds",
            "When jobwatch saw the job enter its current status.",
            jl,
        )
        progress = gauge(
            "s3batch_job_last_progress_timestamp_seconds",
            "When jobwatch last saw the job's task counts move.",
            jl,
        )
        stalled = gauge(
            "s3batch_job_stalled",
            "1 if the job is Active and made no task progress for stall.no_progress.",
            jl,
        )
        overdue = gauge(
            "s3batch_job_status_overdue",
            "1 if the job is held in its status longer than stall.status_limits allows.",
            jl,
        )
        by_status = gauge("s3batch_jobs", "Tracked jobs of the target by status.", [*tl, "status"])
        up = gauge("jobwatch_target_up", "1 if the target's last poll succeeded.", tl)
        last_ok = gauge(
            "jobwatch_target_last_success_timestamp_seconds",
            "When the target was last polled successfully.",
            tl,
        )
        duration = gauge(
            "jobwatch_target_poll_duration_seconds", "Duration of the target's last poll.", tl
        )
        consecutive = gauge(
            "jobwatch_target_consecutive_failures", "Polls failed in a row for the target.", tl
        )
        polls = counter(
            "jobwatch_target_polls", "Polls of the target by outcome.", [*tl, "outcome"]
        )
        overruns = counter(
            "jobwatch_target_poll_overruns",
            "Polls of the target that took longer than the interval.",
            tl,
        )
        requests = counter(
            "jobwatch_api_requests",
            "S3 Control HTTP requests (retries included) by operation and outcome.",
            [*tl, "operation", "outcome"],
        )

        for ts in store.targets.values():
            tv = self._target_values(ts)
            up.add_metric(tv, 1.0 if ts.up else 0.0)
            if ts.last_success is not None:
                last_ok.add_metric(tv, ts.last_success)
            if ts.last_duration is not None:
                duration.add_metric(tv, ts.last_duration)
            consecutive.add_metric(tv, float(ts.consecutive_failures))
            for outcome in ("success", "failure"):
                polls.add_metric([*tv, outcome], float(ts.polls[outcome]))
            overruns.add_metric(tv, float(ts.overruns))
            for operation in ("ListJobs", "DescribeJob"):
                for outcome in ("success", "throttled", "error"):
                    requests.add_metric(
                        [*tv, operation, outcome], float(ts.api_requests[(operation, outcome)])
                    )
            counts = dict.fromkeys(KNOWN_STATUSES, 0)
            for jid, t in (ts.jobs or {}).items():
                job = t.job
                jv = [*tv, jid]
                counts[job.status] = counts.get(job.status, 0) + 1
                status.add_metric([*jv, job.status], 1.0)
                info.add_metric([*jv, job.operation, str(job.priority)], 1.0)
                tasks.add_metric(jv, float(job.tasks_total))
                succeeded.add_metric(jv, float(job.tasks_succeeded))
                failed.add_metric(jv, float(job.tasks_failed))
                ratio.add_metric(jv, job.task_failure_ratio)
                active.add_metric(jv, job.active_seconds)
                if job.creation_time is not None:
                    created.add_metric(jv, job.creation_time)
                ended = t.ended_at
                if ended is not None:
                    terminated.add_metric(jv, ended)
                since.add_metric(jv, t.status_since)
                progress.add_metric(jv, t.last_progress_at)
                stalled.add_metric(jv, 1.0 if t.stalled else 0.0)
                overdue.add_metric(jv, 1.0 if t.overdue else 0.0)
            for st, n in counts.items():
                by_status.add_metric([*tv, st], float(n))

        yield from (status, info, tasks, succeeded, failed, ratio, active, created, terminated)
        yield from (since, progress, stalled, overdue, by_status)
        yield from (up, last_ok, duration, consecutive, polls, overruns, requests)

        events = counter("jobwatch_events", "Events emitted by kind.", ["event"])
        for kind, n in sorted(store.events.items()):
            events.add_metric([kind], float(n))
        yield events
        unknown = counter(
            "jobwatch_unknown_values",
            "Distinct enum values from AWS that jobwatch does not know, by field.",
            ["field"],
        )
        for field_name, n in sorted(store.unknown_values.items()):
            unknown.add_metric([field_name], float(n))
        yield unknown
        targets = GaugeMetricFamily("jobwatch_targets", "Configured targets.")
        targets.add_metric([], float(len(store.targets)))
        yield targets
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(
            [*(str(float(b)) for b in POLL_DURATION_BUCKETS), "+Inf"],
            store.poll_buckets,
            strict=True,
        ):
            running += n
            cumulative.append((bound, float(running)))
        hist = HistogramMetricFamily(
            "jobwatch_poll_duration_seconds", "Duration of polls, all targets.", labels=[]
        )
        hist.add_metric([], cumulative, store.poll_sum)
        yield hist
        build = GaugeMetricFamily(
            "jobwatch_build_info",
            "jobwatch build information.",
            labels=["version", "python_version"],
        )
        build.add_metric([self._version, platform.python_version()], 1.0)
        yield build


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry holding only jobwatch's collector (no process/platform defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry

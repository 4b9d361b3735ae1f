"""The S5 reference: jobwatch's exposition written directly from state, plainly.

This is "writing the text directly from state" as measured in
docs/aws-notes.md#writing-metrics: no metric objects, one pass over the store
per family, ``floatToGoString`` for every value. It is deliberately independent
of jobwatch's own writer (``jobwatch.metrics``) and is checked byte-for-byte
against prometheus_client's rendering of the reference collector in every
benchmark run. Family names, help
texts and types are read from the reference collector over an empty store, so a
renamed family cannot silently make the comparison unfair.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.utils import floatToGoString as fmt

from jobwatch.metrics import JobwatchCollector
from jobwatch.model import KNOWN_STATUSES
from jobwatch.state import POLL_DURATION_BUCKETS, Store


def _esc(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(pairs))


def write(store: Store, label_names: Sequence[str], collector: Any) -> bytes:
    version = getattr(collector, "_version", "")
    meta = {m.name: m for m in JobwatchCollector(Store([]), label_names, version).collect()}
    extra = tuple(label_names)
    out: list[str] = []

    def header(name: str) -> str:
        m = meta[name]
        shown = name + "_total" if m.type == "counter" else name
        doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {shown} {doc}\n# TYPE {shown} {m.type}\n")
        return shown

    targets = []
    for ts in store.targets.values():
        labels = dict(ts.target.labels)
        base = [
            ("aws_account_id", ts.target.account_id),
            ("aws_region", ts.target.region),
            *((n, labels.get(n, "")) for n in extra),
        ]
        targets.append((ts, base))

    def per_job(name: str, sample: Any) -> None:
        shown = header(name)
        for ts, base in targets:
            for jid, t in (ts.jobs or {}).items():
                got = sample(t)
                if got is None:
                    continue
                more, value = got
                pairs = [*base, ("job_id", jid), *more]
                out.append(f"{shown}{{{_labels(pairs)}}} {fmt(value)}\n")

    per_job("s3batch_job_status", lambda t: ([("status", t.job.status)], 1.0))
    per_job(
        "s3batch_job_info",
        lambda t: (
            [
                ("operation", t.job.operation),
                ("priority", str(t.job.priority)),
                ("failure_code", t.failure_code),
            ],
            1.0,
        ),
    )
    per_job("s3batch_job_tasks", lambda t: ([], t.job.tasks_total))
    per_job("s3batch_job_tasks_succeeded", lambda t: ([], t.job.tasks_succeeded))
    per_job("s3batch_job_tasks_failed", lambda t: ([], t.job.tasks_failed))
    per_job("s3batch_job_task_failure_ratio", lambda t: ([], t.job.task_failure_ratio))
    per_job("s3batch_job_active_seconds", lambda t: ([], t.job.active_seconds))
    per_job(
        "s3batch_job_created_timestamp_seconds",
        lambda t: None if t.job.creation_time is None else ([], t.job.creation_time),
    )
    per_job(
        "s3batch_job_terminated_timestamp_seconds",
        lambda t: None if t.ended_at is None else ([], t.ended_at),
    )
    per_job("s3batch_job_status_since_timestamp_seconds", lambda t: ([], t.status_since))
    per_job("s3batch_job_last_progress_timestamp_seconds", lambda t: ([], t.last_progress_at))
    per_job("s3batch_job_stalled", lambda t: ([], 1.0 if t.stalled else 0.0))
    per_job("s3batch_job_status_overdue", lambda t: ([], 1.0 if t.overdue else 0.0))

    def per_target(name: str, sample: Any) -> None:
        shown = header(name)
        for ts, base in targets:
            for more, value in sample(ts):
                out.append(f"{shown}{{{_labels([*base, *more])}}} {fmt(value)}\n")

    def by_status(ts: Any) -> list[tuple[list[tuple[str, str]], float]]:
        counts = dict.fromkeys(KNOWN_STATUSES, 0)
        for t in (ts.jobs or {}).values():
            counts[t.job.status] = counts.get(t.job.status, 0) + 1
        return [([("status", s)], n) for s, n in counts.items()]

    per_target("s3batch_jobs", by_status)
    per_target("jobwatch_target_up", lambda ts: [([], 1.0 if ts.up else 0.0)])
    per_target(
        "jobwatch_target_last_success_timestamp_seconds",
        lambda ts: [] if ts.last_success is None else [([], ts.last_success)],
    )
    per_target(
        "jobwatch_target_poll_duration_seconds",
        lambda ts: [] if ts.last_duration is None else [([], ts.last_duration)],
    )
    per_target("jobwatch_target_consecutive_failures", lambda ts: [([], ts.consecutive_failures)])
    per_target(
        "jobwatch_target_polls",
        lambda ts: [([("outcome", o)], ts.polls[o]) for o in ("success", "failure")],
    )
    per_target("jobwatch_target_poll_overruns", lambda ts: [([], ts.overruns)])
    per_target(
        "jobwatch_api_requests",
        lambda ts: [
            ([("operation", op), ("outcome", o)], ts.api_requests[(op, o)])
            for op in ("ListJobs", "DescribeJob")
            for o in ("success", "throttled", "error")
        ],
    )
    shown = header("jobwatch_events")
    for kind, n in sorted(store.events.items()):
        out.append(f'{shown}{{event="{_esc(kind)}"}} {fmt(n)}\n')
    shown = header("jobwatch_unknown_values")
    for field, n in sorted(store.unknown_values.items()):
        out.append(f'{shown}{{field="{_esc(field)}"}} {fmt(n)}\n')
    shown = header("jobwatch_state_writes")
    for outcome, n in sorted(store.state_writes.items()):
        out.append(f'{shown}{{outcome="{_esc(outcome)}"}} {fmt(n)}\n')
    shown = header("jobwatch_state_write_consecutive_failures")
    if store.state_write_consecutive_failures is not None:
        out.append(f"{shown} {fmt(store.state_write_consecutive_failures)}\n")
    shown = header("jobwatch_full_listings")
    for reason, n in store.full_listings.items():
        out.append(f'{shown}{{reason="{_esc(reason)}"}} {fmt(n)}\n')
    shown = header("jobwatch_targets")
    out.append(f"{shown} {fmt(len(store.targets))}\n")
    shown = header("jobwatch_poll_duration_seconds")
    running = 0
    for bound, n in zip(
        [*(str(float(b)) for b in POLL_DURATION_BUCKETS), "+Inf"], store.poll_buckets, strict=True
    ):
        running += n
        out.append(f'{shown}_bucket{{le="{bound}"}} {fmt(running)}\n')
    out.append(f"{shown}_count {fmt(running)}\n{shown}_sum {fmt(store.poll_sum)}\n")
    shown = header("jobwatch_build_info")
    out.append(
        f'{shown}{{python_version="{platform.python_version()}",version="{_esc(version)}"}} 1.0\n'
    )
    return "".join(out).encode()

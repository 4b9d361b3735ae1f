"""The push fast path: S3 Batch Operations job events from EventBridge, through SQS.

AWS publishes every job's creation and status change as a CloudTrail service
event on EventBridge; an organisation routes them to one queue (deploy/aws/).
:class:`PushConsumer` long-polls each configured queue and, for every event of
a watched target, asks that target's poller to describe the job now
(:meth:`jobwatch.poller.TargetPoller.look`): the answer goes through the same
diff as a poll, so an event only makes jobwatch look sooner. It never reports
what jobwatch did not see through the API; polling stays the reconciler for
lost events (docs/push.md).

A message is deleted once it was handled. One that cannot be parsed, or whose
DescribeJob failed, is left on the queue: it comes back after the visibility
timeout and, after the queue's ``maxReceiveCount``, goes to its dead-letter queue.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from jobwatch.clock import Clock
from jobwatch.errors import SourceError
from jobwatch.events import EventRecord
from jobwatch.log import get_logger
from jobwatch.poller import TargetPoller

__all__ = [
    "LAG_BUCKETS",
    "MESSAGE_RESULTS",
    "TRANSITION_PATHS",
    "JobEvent",
    "PushConsumer",
    "QueueStats",
    "parse_event",
]

_log = get_logger("jobwatch.push")

#: What became of a message (``jobwatch_push_messages_total{result}``).
MESSAGE_RESULTS = (
    "reported",  # the look reported a change
    "confirmed",  # the look found nothing new (a poll was first, or the event was old)
    "known",  # the snapshot already had that status, or the job had ended: no call
    "duplicate",  # a jobEventId seen before
    "not_ready",  # the target has no baseline yet: its first poll will see the job
    "unwatched",  # not a target of this process (another shard's, or not configured)
    "ignored",  # valid, but not an S3 Batch Operations job event
    "unparseable",  # left on the queue for its dead-letter queue
    "failed",  # DescribeJob failed: left on the queue, delivered again later
)
#: Results whose message stays on the queue.
_KEPT = frozenset({"unparseable", "failed"})
#: Who reported a status transition first (``jobwatch_push_transitions_total{found_by}``).
TRANSITION_PATHS = ("push", "poll", "poll_unannounced")
#: Event-to-report lag buckets (CloudTrail delivers within seconds to minutes).
LAG_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900)
#: Events remembered by (job, jobEventId), to drop duplicates.
DEDUPE_SIZE = 50_000
#: (target, job, status) announced by events, for the transitions polls found.
ANNOUNCED_SIZE = 100_000
#: Back-off after a failed ReceiveMessage: doubling from this, up to MAX_BACKOFF.
BASE_BACKOFF = 1.0
MAX_BACKOFF = 120.0
#: How often a dead-letter queue's depth is read.
DEAD_LETTER_INTERVAL = 60.0
_JOB_EVENTS = frozenset({"JobCreated", "JobStatusChanged"})


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What jobwatch takes from one EventBridge event about a job."""

    account_id: str
    region: str
    job_id: str
    #: The status the event announces (None: JobCreated without one).
    status: str | None
    event_name: str
    #: jobEventId, else the envelope's id: duplicates share it.
    event_id: str
    #: When AWS says the change happened (``detail.eventTime``, else ``time``).
    event_time: float | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.account_id, self.region)


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    return value if isinstance(value, str) else ""


def parse_event(body: str) -> JobEvent | None:
    """The job event in an SQS message body (EventBridge's envelope, as the rule delivers it).

    Returns None for a well-formed event that is not an S3 Batch Operations job
    event; raises ``ValueError`` for a body that is not an event at all.
    """
    try:
        envelope = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"not JSON: {str(e)[:100]}") from None
    if not isinstance(envelope, dict):
        raise ValueError("not an EventBridge event (a JSON object)")
    detail = envelope.get("detail")
    if not isinstance(detail, dict) or "detail-type" not in envelope:
        raise ValueError("not an EventBridge event (no detail or detail-type)")
    if (
        envelope.get("source") != "aws.s3"
        or _str(detail, "eventSource") != "s3.amazonaws.com"
        or _str(detail, "eventName") not in _JOB_EVENTS
    ):
        return None
    service = detail.get("serviceEventDetails")
    if not isinstance(service, dict):
        raise ValueError(f"{detail['eventName']} without serviceEventDetails")
    job_id = _str(service, "jobId")
    arn = _str(service, "jobArn")
    account, region = "", ""
    # arn:aws:s3:<region>:<account>:job/<id>: the job's own target, however it was routed.
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "s3" and parts[5].startswith("job/"):
        region, account = parts[3], parts[4]
        job_id = job_id or parts[5][len("job/") :]
    account = account or _str(envelope, "account") or _str(detail, "recipientAccountId")
    region = region or _str(envelope, "region") or _str(detail, "awsRegion")
    if not job_id or not account or not region:
        raise ValueError("job event without a job id, account or region")
    status = _str(service, "status") or None
    event_id = _str(service, "jobEventId") or _str(envelope, "id") or _str(detail, "eventID")
    return JobEvent(
        account_id=account,
        region=region,
        job_id=job_id,
        status=status,
        event_name=_str(detail, "eventName"),
        event_id=event_id,
        event_time=_time(detail.get("eventTime")) or _time(envelope.get("time")),
    )


class _Bounded:
    """A set of the last ``size`` keys added (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)


class Queue(Protocol):
    """One SQS queue (``jobwatch.aws.SqsQueue``)."""

    url: str

    async def receive(
        self, max_messages: int, wait: float, visibility_timeout: float | None
    ) -> Sequence[Message]: ...

    async def delete(self, messages: Sequence[Any]) -> list[str]: ...


class Message(Protocol):
    @property
    def message_id(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def receive_count(self) -> int: ...


class DeadLetters(Protocol):
    """Reads a dead-letter queue's depth (``jobwatch.aws.SqsQueue.depth``)."""

    async def depth(self) -> int: ...


@dataclass
class QueueStats:
    """One queue's consumer health."""

    url: str
    up: bool = False
    last_receive: float | None = None
    receive_errors: int = 0
    consecutive_failures: int = 0
    #: Messages in the dead-letter queue at the last look (None: none configured, or unread).
    dead_letters: int | None = None


@dataclass
class PushStats:
    """What the push families read (docs/metrics.md#push)."""

    messages: Counter[str] = field(
        default_factory=lambda: Counter(dict.fromkeys(MESSAGE_RESULTS, 0))
    )
    transitions: Counter[str] = field(
        default_factory=lambda: Counter(dict.fromkeys(TRANSITION_PATHS, 0))
    )
    lag_buckets: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0
    queues: dict[str, QueueStats] = field(default_factory=dict)

    def observe_lag(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.lag_buckets[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1
        self.lag_sum += seconds


class PushConsumer:
    """Long-polls the queues; each job event makes the job's poller look now.

    ``poller`` finds the poller of a target key (None: not watched here). The
    consumer runs beside the poll loops, never in their way: a failing queue
    backs off on its own, and a look waits for (never interrupts) a poll.
    """

    def __init__(
        self,
        poller: Callable[[tuple[str, str]], TargetPoller | None],
        clock: Clock,
        *,
        wait: float = 20.0,
        batch_size: int = 10,
        visibility_timeout: float | None = None,
        dead_letter_interval: float = DEAD_LETTER_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        self._poller = poller
        self._clock = clock
        self._wait = wait
        self._batch = batch_size
        self._visibility = visibility_timeout
        self._dead_interval = dead_letter_interval
        self._rng = rng or random.Random()
        self._seen = _Bounded(DEDUPE_SIZE)
        self._announced = _Bounded(ANNOUNCED_SIZE)
        self.stats = PushStats()
        self._queues: list[tuple[Queue, DeadLetters | None]] = []

    def add_queue(self, queue: Queue, dead_letters: DeadLetters | None = None) -> None:
        self._queues.append((queue, dead_letters))
        self.stats.queues[queue.url] = QueueStats(queue.url)

    # -- what polls report ----------------------------------------------------

    def note_reported(self, events: Sequence[EventRecord], *, by_push: bool) -> None:
        """Count the status transitions a poll or a look reported (the poller's publish)."""
        for event in events:
            if event.kind != "job_status_changed":
                continue
            change = getattr(event, "change", None)
            target = getattr(event, "target", None)
            if change is None or target is None:
                continue  # replayed from the state file: counted when first reported
            if by_push:
                path = "push"
            elif (target.key, change.job.job_id, change.job.status) in self._announced:
                path = "poll"
            else:
                path = "poll_unannounced"
            self.stats.transitions[path] += 1

    # -- the loops --------------------------------------------------------------

    async def run(self) -> None:
        """Consume every queue until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for queue, dead in self._queues:
                tg.create_task(self._consume(queue), name=f"push {queue.url}")
                if dead is not None:
                    tg.create_task(self._watch_dead_letters(queue.url, dead))

    async def _consume(self, queue: Queue) -> None:
        stats = self.stats.queues[queue.url]
        log = _log.bind(queue=queue.url)
        while True:
            try:
                messages = await queue.receive(self._batch, self._wait, self._visibility)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # SourceError, or a bug: either way back off, never die
                error = e if isinstance(e, SourceError) else None
                stats.up = False
                stats.receive_errors += 1
                stats.consecutive_failures += 1
                delay = min(BASE_BACKOFF * 2 ** (stats.consecutive_failures - 1), MAX_BACKOFF)
                delay *= self._rng.uniform(0.5, 1.0)
                log.warning(
                    "push_receive_failed",
                    error_code=error.code if error else type(e).__name__,
                    error=(error.message if error else repr(e))[:300],
                    throttled=error.throttled if error else False,
                    consecutive_failures=stats.consecutive_failures,
                    retry_in=round(delay, 1),
                )
                await asyncio.sleep(delay)
                continue
            stats.up = True
            stats.consecutive_failures = 0
            stats.last_receive = self._clock.time()
            if not messages:
                continue
            try:
                await self._handle_batch(queue, messages, log)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not end the consumer
                log.exception("push_batch_crashed", error=repr(e)[:500])
                await asyncio.sleep(BASE_BACKOFF)

    async def _handle_batch(self, queue: Queue, messages: Sequence[Message], log: Any) -> None:
        results = await asyncio.gather(*(self._handle(m, log) for m in messages))
        done = [m for m, r in zip(messages, results, strict=True) if r not in _KEPT]
        try:
            failed = await queue.delete(done)
        except SourceError as e:
            # Delivered again after the visibility timeout; the dedupe drops them.
            log.warning("push_delete_failed", error_code=e.code, messages=len(done))
            return
        if failed:
            log.warning("push_delete_failed", message_ids=failed[:10], messages=len(failed))
        if "failed" in results:
            await asyncio.sleep(BASE_BACKOFF)  # DescribeJob failed: likely throttled

    async def _handle(self, message: Message, log: Any) -> str:
        result = await self._result(message, log)
        self.stats.messages[result] += 1
        return result

    async def _result(self, message: Message, log: Any) -> str:
        try:
            event = parse_event(message.body)
        except ValueError as e:
            # The id, never the body: it is the queue's to keep (and its dead-letter queue's).
            log.warning(
                "push_message_unparseable",
                message_id=message.message_id,
                receive_count=message.receive_count,
                error=str(e)[:200],
            )
            return "unparseable"
        if event is None:
            return "ignored"
        poller = self._poller(event.key)
        if poller is None:
            return "unwatched"
        dedupe = (event.key, event.job_id, event.event_id)
        if event.event_id and dedupe in self._seen:
            return "duplicate"
        if event.status is not None:
            self._announced.add((event.key, event.job_id, event.status))
        try:
            result = await poller.look(event.job_id, event.status)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one bad look must not stop the batch
            log.exception("push_look_crashed", job_id=event.job_id, error=repr(e)[:300])
            result = "failed"
        if result != "failed":
            self._seen.add(dedupe)
        if result == "reported" and event.event_time is not None:
            self.stats.observe_lag(self._clock.time() - event.event_time)
        return result

    async def _watch_dead_letters(self, url: str, dead: DeadLetters) -> None:
        stats = self.stats.queues[url]
        while True:
            try:
                stats.dead_letters = await dead.depth()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the consumer must outlive this gauge
                code = e.code if isinstance(e, SourceError) else type(e).__name__
                _log.warning("push_dead_letters_unread", queue=url, error_code=code)
            await asyncio.sleep(self._dead_interval)

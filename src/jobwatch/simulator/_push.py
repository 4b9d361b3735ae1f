"""The simulator's push side: the EventBridge events AWS publishes for each job, into SQS.

For every job created and every status change, :class:`EventPublisher` sends
the event AWS puts on the default bus (``source: aws.s3``, ``detail-type: AWS
Service Event via CloudTrail``, ``JobCreated`` / ``JobStatusChanged``), as an
EventBridge rule delivers it to an SQS queue. Loss, duplication, delay and
reordering are optional and seeded, so tests and the demo show push working
with polling reconciling.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiobotocore.session import AioSession

from ._lifecycle import SimJob
from ._world import Simulator

__all__ = ["EventPublisher", "PushFaults", "job_event"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_event(
    job: SimJob, event_name: str, status: str, t: float, job_event_id: str
) -> dict[str, Any]:
    """The EventBridge event of one job change, as CloudTrail publishes it."""
    account, region = job.account_id, job.region
    return {
        "version": "0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, job_event_id)),
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.s3",
        "account": account,
        "time": _iso(t),
        "region": region,
        "resources": [],
        "detail": {
            "eventVersion": "1.05",
            "userIdentity": {"accountId": account, "invokedBy": "s3.amazonaws.com"},
            "eventTime": _iso(t),
            "eventSource": "s3.amazonaws.com",
            "eventName": event_name,
            "awsRegion": region,
            "sourceIPAddress": "s3.amazonaws.com",
            "userAgent": "s3.amazonaws.com",
            "requestParameters": None,
            "responseElements": None,
            "eventID": str(uuid.uuid5(uuid.NAMESPACE_OID, job_event_id)),
            "readOnly": False,
            "eventType": "AwsServiceEvent",
            "recipientAccountId": account,
            "serviceEventDetails": {
                "jobId": job.job_id,
                "jobArn": f"arn:aws:s3:{region}:{account}:job/{job.job_id}",
                "status": status,
                "jobEventId": job_event_id,
                "failureCodes": [code for code, _ in job.failure_reasons],
                "statusChangeReason": (
                    [job.status_update_reason] if job.status_update_reason else []
                ),
            },
        },
    }


@dataclass(frozen=True, slots=True)
class PushFaults:
    """What goes wrong between AWS and the queue (each a probability, or seconds)."""

    #: Probability that an event never reaches the queue.
    loss: float = 0.0
    #: Probability that an event is delivered twice (same jobEventId).
    duplicate: float = 0.0
    #: Each event is held back up to this many seconds of simulated time.
    delay: float = 0.0
    #: Shuffle each batch sent (events are delivered unordered).
    reorder: bool = False


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    body: str = field(compare=False)


class EventPublisher:
    """Sends the simulator's job events to an SQS queue (``endpoint_url``, ``queue_url``).

    Call :meth:`pump` after moving simulated time (it evaluates every job, so
    changes are published as they fall due), or :meth:`run` to pump on a timer.
    Jobs that exist when the publisher is built are not announced as created.
    An async context manager: the SQS client closes with it.
    """

    def __init__(
        self,
        sim: Simulator,
        *,
        endpoint_url: str,
        queue_url: str,
        region: str = "us-east-1",
        faults: PushFaults | None = None,
        seed: int | str | None = None,
        session: AioSession | None = None,
    ) -> None:
        self._sim = sim
        self._endpoint = endpoint_url
        self._queue = queue_url
        self._region = region
        self.faults = faults or PushFaults()
        self._rng = random.Random(seed)
        self._session = session
        self._stack = AsyncExitStack()
        self._sqs: Any = None
        self._pending: list[_Pending] = []
        self._seq = 0
        self._announced = {id(j) for j in sim.all_jobs()}
        #: Events made, lost, and messages sent (duplicates included).
        self.made = 0
        self.lost = 0
        self.sent = 0
        sim.subscribe(self._changed)

    def _add(self, job: SimJob, name: str, status: str, t: float) -> None:
        self._seq += 1
        self.made += 1
        f = self.faults
        if f.loss and self._rng.random() < f.loss:
            self.lost += 1
            return
        body = json.dumps(job_event(job, name, status, t, f"{job.job_id}-{self._seq}"))
        copies = 2 if f.duplicate and self._rng.random() < f.duplicate else 1
        for _ in range(copies):
            due = self._sim.now() + (self._rng.uniform(0, f.delay) if f.delay else 0.0)
            self._pending.append(_Pending(due, self._seq, body))

    def _created(self, job: SimJob) -> None:
        if id(job) not in self._announced:
            self._announced.add(id(job))
            self._add(job, "JobCreated", "New", job.creation)

    def _changed(self, job: SimJob, old: str, new: str, t: float) -> None:
        self._created(job)
        self._add(job, "JobStatusChanged", new, t)

    async def pump(self) -> int:
        """Publish every event due now; returns how many messages were sent."""
        for job in self._sim.all_jobs():
            self._created(job)
        now = self._sim.now()
        due = sorted(p for p in self._pending if p.due <= now)
        if not due:
            return 0
        self._pending = [p for p in self._pending if p.due > now]
        if self.faults.reorder:
            self._rng.shuffle(due)
        client = await self._client()
        for i in range(0, len(due), 10):
            entries = [{"Id": str(n), "MessageBody": p.body} for n, p in enumerate(due[i : i + 10])]
            await client.send_message_batch(QueueUrl=self._queue, Entries=entries)
        self.sent += len(due)
        return len(due)

    async def _client(self) -> Any:
        if self._sqs is None:
            session = self._session or AioSession()
            create: Any = session.create_client
            self._sqs = await self._stack.enter_async_context(
                create(
                    "sqs",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    aws_access_key_id="simulator",
                    aws_secret_access_key="simulator",  # noqa: S106 (never a real key)
                )
            )
        return self._sqs

    async def close(self) -> None:
        """Close the SQS client. Idempotent."""
        self._sqs = None
        await self._stack.aclose()

    async def __aenter__(self) -> EventPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, interval: float = 0.5) -> None:
        """Pump every ``interval`` seconds of real time until cancelled."""
        while True:
            await self.pump()
            await asyncio.sleep(interval)

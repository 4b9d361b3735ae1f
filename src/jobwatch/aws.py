"""The AWS edge: sessions, client settings, credentials, the s3control client pool.

Every aiobotocore session, client configuration and assumed-role credential
jobwatch uses is made here: :class:`ClientPool` for s3control,
:func:`service_client` for the Organizations client of :mod:`jobwatch.discovery`,
and :func:`open_queue` for the SQS queues of the push path (:mod:`jobwatch.push`).
How ListJobs pages are parsed is :mod:`jobwatch.listjobs`; the CPU turns the
parsing takes are :mod:`jobwatch.turns`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aiobotocore.config import AioConfig
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from aiohttp import ClientError as HTTPClientError
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from jobwatch.errors import SourceError
from jobwatch.listjobs import fast_timestamp, list_jobs_hook
from jobwatch.model import Target
from jobwatch.turns import CpuTurns

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        ReceiveMessageRequestTypeDef,
    )

__all__ = [
    "AttemptCallback",
    "ClientPool",
    "QueueMessage",
    "SqsQueue",
    "assume_role_credentials",
    "client_config",
    "is_throttle",
    "open_queue",
    "prepare_session",
    "service_client",
    "sign_with",
    "strip_account_host_prefix",
    "use_custom_endpoint",
]


def strip_account_host_prefix(request: Any, **_: Any) -> None:
    """``before-sign.s3-control`` handler: undo botocore's ``{AccountId}.`` host prefix.

    The s3control endpoint ruleset puts ``{AccountId}.`` in front of the host of
    *any* endpoint, custom ones included, and ``inject_host_prefix=False`` does
    not stop it (docs/aws-notes.md#the-accountid-host-prefix). Against a custom
    ``endpoint_url`` (the simulator, a proxy) that host does not exist, so this
    handler removes the prefix before the request is signed: the signature then
    covers the host actually contacted. This is the one place jobwatch corrects
    it; every client built with ``endpoint_url`` goes through
    :func:`use_custom_endpoint`.
    """
    account = request.headers.get("x-amz-account-id")
    if not account:
        return
    if isinstance(account, bytes):
        account = account.decode("ascii", "replace")
    parts = urlsplit(request.url)
    prefix = f"{account}."
    if parts.netloc.startswith(prefix):
        request.url = urlunsplit(parts._replace(netloc=parts.netloc[len(prefix) :]))


def use_custom_endpoint(client: Any) -> None:
    """Make an s3control client built with ``endpoint_url`` talk to that exact host."""
    client.meta.events.register_first("before-sign.s3-control", strip_account_host_prefix)


_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ThrottledException",
    }
)


def is_throttle(status: int | None, code: str | None) -> bool:
    """Did AWS ask us to slow down? (429, or a throttling error code.)"""
    return status == 429 or (code is not None and code in _THROTTLE_CODES)


# --------------------------------------------------------------------------- sessions, credentials


def prepare_session(session: AioSession | None = None) -> AioSession:
    """``session`` (or a new one on the default credential chain), parsing times fast.

    Sets :func:`jobwatch.listjobs.fast_timestamp` as the timestamp parser of
    every response parsed through the session (docs/aws-notes.md#parsing-cost).
    """
    session = session or AioSession()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    return session


def client_config(
    *,
    max_attempts: int,
    timeout: float,
    retry_mode: str = "standard",
    max_pool_connections: int | None = None,
) -> AioConfig:
    """The settings of a jobwatch client (``max_pool_connections``: botocore's default if None).

    The retry mode is always explicit: aiobotocore's default, ``legacy``, does
    not retry a throttle answered with 400 (docs/aws-notes.md#retries).
    """
    pool: dict[str, Any] = {}
    if max_pool_connections is not None:
        pool["max_pool_connections"] = max_pool_connections
    return AioConfig(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent_extra="jobwatch",
        **pool,
    )


def assume_role_credentials(
    session: AioSession,
    *,
    role_arn: str,
    region: str,
    session_name: str,
    duration_seconds: int,
    external_id: str | None = None,
    sts_config: AioConfig | None = None,
) -> Any:
    """Credentials of ``role_arn``, assumed from ``session``'s own credentials.

    Nothing is fetched until the first request is signed with them; they are
    assumed again ahead of expiry (botocore refreshes within 15 minutes of it,
    so ``duration_seconds`` below that means a new AssumeRole on every request:
    docs/aws-notes.md#credentials). ``sts_config``: the STS client's settings
    (default: standard retries, 3 attempts).
    """
    config = sts_config or AioConfig(retries={"mode": "standard", "total_max_attempts": 3})

    def sts_client(service: str, **kwargs: Any) -> Any:
        create: Any = session.create_client  # the stubs' overloads want a literal name
        return create(service, region_name=region, config=config, **kwargs)

    extra: dict[str, Any] = {
        "RoleSessionName": session_name,
        "DurationSeconds": duration_seconds,
    }
    if external_id:
        extra["ExternalId"] = external_id

    async def refresh() -> dict[str, Any]:
        source = await session.get_credentials()
        if source is None:
            raise NoCredentialsError()
        fetcher = AioAssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=role_arn,
            extra_args=extra,
        )
        result: dict[str, Any] = await fetcher.fetch_credentials()
        return result

    return AioDeferredRefreshableCredentials(refresh_using=refresh, method="assume-role")


def sign_with(request: Any, credentials: Any) -> None:
    """Have botocore sign ``request`` (in a ``before-sign`` handler) with ``credentials``.

    A retry is signed again through the same handler, so it carries the same
    credentials (docs/aws-notes.md#one-client-many-accounts).
    """
    request.context.setdefault("signing", {})["request_credentials"] = credentials


@asynccontextmanager
async def service_client(
    session: AioSession,
    service: str,
    *,
    region: str,
    config: AioConfig,
    credentials: Any = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[Any]:
    """A client of ``service``; with ``credentials`` (say, :func:`assume_role_credentials`)
    every request is signed with those instead of the session's own."""
    create: Any = session.create_client  # the stubs' overloads want a literal name
    async with create(
        service, region_name=region, config=config, endpoint_url=endpoint_url
    ) as client:
        if credentials is not None:
            event = f"before-sign.{client.meta.service_model.service_id.hyphenize()}"

            def handler(request: Any, **_: Any) -> None:
                sign_with(request, credentials)

            client.meta.events.register(event, handler)
        yield client


# --------------------------------------------------------------------------- the s3control pool

AttemptCallback = Callable[[str, str, str, str], None]
"""``(account_id, region, operation, outcome)`` for every HTTP attempt."""


class ClientPool:
    """s3control clients, one per region, signing each request as its account.

    A client costs about 1.2 MB and 70 ms of CPU once used
    (docs/aws-notes.md#cost-of-a-session-and-of-a-client), so
    jobwatch does not build one per target: the pool keeps one client per
    region and a ``before-sign`` handler hands botocore the calling account's
    credentials through ``request.context["signing"]["request_credentials"]``.
    Retries are re-signed through the same handler, so they stay correct.

    Accounts without a ``role_arn`` use the base credentials (default chain:
    IRSA, environment, profile). Accounts with one assume it (with ExternalId
    when set) through refreshing credentials that renew well before expiry.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 5,
        timeout: float = 10.0,
        max_pool_connections: int = 32,
        on_attempt: AttemptCallback | None = None,
        session: AioSession | None = None,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._on_attempt = on_attempt
        self._session = prepare_session(session)
        self._config = client_config(
            retry_mode=retry_mode,
            max_attempts=max_attempts,
            timeout=timeout,
            max_pool_connections=max_pool_connections,
        )
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # account id -> credentials object used to sign its requests
        self._account_credentials: dict[str, Any] = {}
        self._roles: dict[str, Target] = {}
        #: Shared by every client of the pool and by the source's page handling.
        self.turns = CpuTurns()

    async def __aenter__(self) -> ClientPool:
        # Load the s3control model, its endpoint rules and the partitions now:
        # tens of thousands of objects that live for the whole run. Loaded here,
        # while the daemon starts, they are among what App.run_pollers freezes
        # out of the garbage collector's way; loaded by the first poll, every full
        # collection would walk them (30-50 ms each). Building a client makes no
        # request, so no connection or SSL context is created.
        async with self._session.create_client(
            "s3control",
            region_name="us-east-1",
            endpoint_url=self._endpoint_url,
            config=self._config,
        ):
            pass
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every client. Idempotent."""
        self._clients.clear()
        await self._stack.aclose()

    def register(self, target: Target) -> None:
        """Tell the pool how to sign for ``target``'s account (call before polling)."""
        if target.role_arn is None:
            return
        known = self._roles.get(target.account_id)
        if known is not None and known.role_arn == target.role_arn:
            return
        self._roles[target.account_id] = target
        self._account_credentials[target.account_id] = assume_role_credentials(
            self._session,
            role_arn=target.role_arn,
            region=target.region,
            session_name=target.session_name,
            duration_seconds=target.duration_seconds,
            external_id=target.external_id,
        )

    async def client(self, region: str) -> Any:
        """The region's shared s3control client, created on first use."""
        client: Any = self._clients.get(region)
        if client is not None:
            return client
        lock = self._locks.setdefault(region, asyncio.Lock())
        async with lock:
            client = self._clients.get(region)
            if client is None:
                client = await self._stack.enter_async_context(
                    self._session.create_client(
                        "s3control",
                        region_name=region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
                )
                if self._endpoint_url is not None:
                    use_custom_endpoint(client)
                client.meta.events.register("before-sign.s3-control", self._sign_as_account)
                client.meta.events.register(
                    "before-parse.s3-control.ListJobs", list_jobs_hook(self.turns)
                )
                if self._on_attempt is not None:
                    client.meta.events.register(
                        "response-received.s3-control", self._attempt_handler(region)
                    )
                self._clients[region] = client
        return client

    def _sign_as_account(self, request: Any, **_: Any) -> None:
        account = request.headers.get("x-amz-account-id")
        if isinstance(account, bytes):
            account = account.decode("ascii", "replace")
        if account:
            request.context["jobwatch_account"] = account
        creds = self._account_credentials.get(account) if account else None
        if creds is not None:
            sign_with(request, creds)

    def _attempt_handler(self, region: str) -> Callable[..., None]:
        callback = self._on_attempt
        assert callback is not None

        def handler(
            context: dict[str, Any],
            response_dict: dict[str, Any] | None = None,
            parsed_response: dict[str, Any] | None = None,
            exception: BaseException | None = None,
            **kwargs: Any,
        ) -> None:
            account = context.get("jobwatch_account", "")
            operation = kwargs.get("event_name", "").rsplit(".", 1)[-1] or "unknown"
            status = response_dict.get("status_code") if response_dict else None
            code = None
            if parsed_response:
                code = parsed_response.get("Error", {}).get("Code")
            if exception is not None or status is None:
                outcome = "error"
            elif is_throttle(status, code):
                outcome = "throttled"
            elif status >= 300:
                outcome = "error"
            else:
                outcome = "success"
            callback(account, region, operation, outcome)

        return handler


# --------------------------------------------------------------------------- SQS (the push path)


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One SQS message as the push consumer sees it."""

    message_id: str
    receipt_handle: str
    body: str
    #: ApproximateReceiveCount: 1 on the first delivery.
    receive_count: int


class SqsQueue:
    """One queue, through a client of its region; every SDK failure leaves as SourceError."""

    def __init__(self, client: SQSClient, url: str, region: str) -> None:
        self._client = client
        self.url = url
        self.region = region
        #: The account that owns the queue (in its URL), for errors and logs.
        self.account_id = url.rstrip("/").rsplit("/", 2)[-2]

    def _error(self, operation: str, e: Exception) -> SourceError:
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(err.get("Code") or "Unknown")
            return SourceError(
                self.account_id,
                self.region,
                operation,
                code,
                str(err.get("Message") or ""),
                throttled=is_throttle(status, code),
            )
        return SourceError(self.account_id, self.region, operation, type(e).__name__, str(e))

    async def receive(
        self, max_messages: int, wait: float, visibility_timeout: float | None
    ) -> list[QueueMessage]:
        """Long-poll for up to ``max_messages`` messages (an empty list after ``wait``)."""
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": int(wait),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = int(visibility_timeout)
        try:
            answer = await self._client.receive_message(**request)
        except (ClientError, BotoCoreError, HTTPClientError, TimeoutError) as e:
            raise self._error("ReceiveMessage", e) from e
        out = []
        for m in answer.get("Messages") or ():
            count = (m.get("Attributes") or {}).get("ApproximateReceiveCount", "1")
            out.append(
                QueueMessage(
                    message_id=str(m.get("MessageId", "")),
                    receipt_handle=str(m.get("ReceiptHandle", "")),
                    body=str(m.get("Body", "")),
                    receive_count=int(count) if str(count).isdigit() else 1,
                )
            )
        return out

    async def depth(self) -> int:
        """Messages waiting in the queue (ApproximateNumberOfMessages)."""
        try:
            answer = await self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        except (ClientError, BotoCoreError, HTTPClientError, TimeoutError) as e:
            raise self._error("GetQueueAttributes", e) from e
        value = (answer.get("Attributes") or {}).get("ApproximateNumberOfMessages", "0")
        return int(value) if str(value).isdigit() else 0

    async def delete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Delete ``messages`` (handled ones); returns the ids SQS did not delete."""
        if not messages:
            return []
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)
        ]
        try:
            answer = await self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        except (ClientError, BotoCoreError, HTTPClientError, TimeoutError) as e:
            raise self._error("DeleteMessageBatch", e) from e
        return [messages[int(f["Id"])].message_id for f in answer.get("Failed") or ()]


@asynccontextmanager
async def open_queue(
    session: AioSession | None,
    *,
    url: str,
    region: str,
    endpoint_url: str | None,
    wait: float,
    call_timeout: float,
    max_attempts: int,
    role_arn: str | None = None,
    external_id: str | None = None,
    session_name: str = "jobwatch-push",
    duration_seconds: int = 3600,
) -> AsyncIterator[SqsQueue]:
    """An :class:`SqsQueue` for ``url``, signed with ``role_arn`` when given.

    The read timeout covers the long poll: ``wait`` plus ``call_timeout``.
    """
    session = prepare_session(session)
    config = client_config(max_attempts=max_attempts, timeout=call_timeout)
    config = config.merge(AioConfig(read_timeout=wait + call_timeout))
    credentials = None
    if role_arn is not None:
        credentials = assume_role_credentials(
            session,
            role_arn=role_arn,
            region=region,
            session_name=session_name,
            duration_seconds=duration_seconds,
            external_id=external_id,
        )
    async with service_client(
        session,
        "sqs",
        region=region,
        config=config,
        credentials=credentials,
        endpoint_url=endpoint_url,
    ) as c:
        yield SqsQueue(c, url, region)

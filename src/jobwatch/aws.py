"""The AWS edge: sessions, clients, credentials, retries.

The AWS SDK is imported here and in :mod:`jobwatch.source` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiobotocore.config import AioConfig
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.exceptions import NoCredentialsError
from botocore.utils import parse_timestamp as default_timestamp_parser

from jobwatch.model import Target

__all__ = [
    "AttemptCallback",
    "ClientPool",
    "CpuTurns",
    "fast_list_jobs_parser",
    "fast_timestamp",
    "is_throttle",
    "parse_list_jobs",
    "strip_account_host_prefix",
    "use_custom_endpoint",
]


def strip_account_host_prefix(request: Any, **_: Any) -> None:
    """``before-sign.s3-control`` handler: undo botocore's ``{AccountId}.`` host prefix.

    The s3control endpoint ruleset puts ``{AccountId}.`` in front of the host of
    *any* endpoint, custom ones included, and ``inject_host_prefix=False`` does
    not stop it (REFERENCE.md). Against a custom ``endpoint_url`` (the simulator,
    a proxy) that host does not exist, so this handler removes the prefix before
    the request is signed: the signature then covers the host actually contacted.
    This is the one place jobwatch corrects it; every client built with
    ``endpoint_url`` goes through :func:`use_custom_endpoint`.
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


# --------------------------------------------------------------------------- clients

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


def fast_timestamp(value: str) -> datetime:
    """botocore timestamp parser: ``fromisoformat`` first, botocore's own as fallback.

    botocore's default spends most of a ListJobs parse in ``dateutil``
    (REFERENCE.md); AWS sends ISO-8601, which ``fromisoformat`` reads ~10x faster.
    Always returns an aware UTC datetime.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = default_timestamp_parser(value)
    if parsed.tzinfo is UTC:  # "Z" and "+00:00": the usual case, nothing to convert
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --------------------------------------------------------------------------- ListJobs

# botocore parses a 1,000-job ListJobs page through a generic, shape-driven
# ElementTree walk: ~35 ms of CPU with the fast timestamp parser, on the event
# loop. The pattern below reads the same page ~10x faster, but only when the
# body is in the one plain form AWS (and the simulator) send: no comments,
# CDATA, processing instructions, self-closing members, attributes other than
# the root's xmlns, repeated or unknown elements, carriage returns or
# characters XML forbids. Anything else returns None and botocore parses the
# body as always, so every odd body (and every error botocore raises on one)
# behaves exactly as without this parser. tests/test_perf_parser.py checks the
# two parsers against each other on the same bodies.

_WS = "[ \t\n]*"
# Text: anything but markup, the characters XML 1.0 forbids, and CR (which XML
# rewrites as LF). "]]>", also forbidden in text, is checked on the whole body.
_TEXT = "[^<\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]*"


def _leaf(tag: str) -> str:
    return f"(?:<{tag}>({_TEXT})</{tag}>{_WS})?"


_LIST_JOBS_HEAD = re.compile(
    r'(?:<\?xml version="1\.0"(?: encoding="[Uu][Tt][Ff]-8")?\?>)?'
    + _WS
    + '<ListJobsResult(?: xmlns="[^"<&\x00-\x1f\ufffe\uffff]*")?>'
    + _WS
)
_LIST_JOBS_TOKEN = re.compile(f"(?:<NextToken>({_TEXT})</NextToken>|(<NextToken/>))" + _WS)
_LIST_JOBS_OPEN = re.compile(r"(?:<Jobs>|(<Jobs/>))" + _WS)
_LIST_JOBS_CLOSE = re.compile(r"</Jobs>" + _WS)
_LIST_JOBS_END = re.compile(r"</ListJobsResult>" + _WS + r"\Z")
#: A JobListDescriptor's leaves, in the order AWS (and the simulator) sends them.
_MEMBER_FIELDS = (
    "JobId",
    "Description",
    "Operation",
    "Priority",
    "Status",
    "CreationTime",
    "TerminationDate",
)
_PROGRESS_FIELDS = ("TotalNumberOfTasks", "NumberOfTasksSucceeded", "NumberOfTasksFailed")
_LIST_JOBS_MEMBER = re.compile(
    "<member>"
    + _WS
    + "".join(_leaf(t) for t in _MEMBER_FIELDS)
    + "(?:(<ProgressSummary>)"
    + _WS
    + "".join(_leaf(t) for t in _PROGRESS_FIELDS)
    + "(?:(<Timers>)"
    + _WS
    + _leaf("ElapsedTimeInActiveSeconds")
    + "</Timers>"
    + _WS
    + ")?</ProgressSummary>"
    + _WS
    + ")?</member>"
    + _WS
)
# The member as AWS sends it for a job that has run: every field but the
# description and the termination date present. Most members take this path:
# groups are never None but for those two, so the dict is built in one go.
_LIST_JOBS_FULL_MEMBER = re.compile(
    "<member>"
    + _WS
    + "".join(
        f"<{t}>({_TEXT})</{t}>{_WS}" if t not in ("Description", "TerminationDate") else _leaf(t)
        for t in _MEMBER_FIELDS
    )
    + "<ProgressSummary>"
    + _WS
    + "".join(f"<{t}>({_TEXT})</{t}>{_WS}" for t in _PROGRESS_FIELDS)
    + "<Timers>"
    + _WS
    + f"<ElapsedTimeInActiveSeconds>({_TEXT})</ElapsedTimeInActiveSeconds>"
    + _WS
    + "</Timers>"
    + _WS
    + "</ProgressSummary>"
    + _WS
    + "</member>"
    + _WS
)
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class _NotPlain(Exception):  # control flow: leave the body to botocore
    pass


def _xml_char(code: int) -> str:
    if (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ):
        return chr(code)
    raise _NotPlain


def _entity(m: re.Match[str]) -> str:
    named, dec, hexa = m.groups()
    if named:
        return _NAMED[named]
    return _xml_char(int(dec) if dec else int(hexa, 16))


def _text(raw: str) -> str:
    if "&" not in raw:
        return raw
    if raw.count("&") != len(_ENTITY.findall(raw)):
        raise _NotPlain  # an undefined entity or a bare "&": not well-formed
    return _ENTITY.sub(_entity, raw)


def parse_list_jobs(body: bytes, timestamp_parser: Callable[[str], Any]) -> dict[str, Any] | None:
    """A ListJobs 200 body as botocore's parser would return it (without ResponseMetadata).

    Returns ``{"NextToken": ..., "Jobs": [...]}`` (each key only when present),
    equal, key order included, to what botocore's rest-xml parser gives with
    the same ``timestamp_parser``; or ``None`` when the body is not in the plain
    form this parser reads, in which case botocore must parse it. Raises what
    ``int()`` or ``timestamp_parser`` raise on a bad value.
    """
    if b"]]>" in body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    m = _LIST_JOBS_HEAD.match(text)
    if m is None:
        return None
    pos = m.end()
    out: dict[str, Any] = {}
    token: str | None = None
    jobs: list[dict[str, Any]] | None = None
    try:
        while _LIST_JOBS_END.match(text, pos) is None:
            if (m := _LIST_JOBS_TOKEN.match(text, pos)) is not None:
                if token is not None:
                    return None  # botocore makes a list of a repeated element
                token = "" if m.group(2) else _text(m.group(1))
                pos = m.end()
                continue
            if jobs is not None or (m := _LIST_JOBS_OPEN.match(text, pos)) is None:
                return None
            pos = m.end()
            jobs = []
            if m.group(1):
                continue
            entities = "&" in text
            full = None if entities else _LIST_JOBS_FULL_MEMBER.match
            member = _LIST_JOBS_MEMBER.match
            while True:
                if full is not None and (m := full(text, pos)) is not None:
                    jobs.append(_full_job_dict(m.groups(), timestamp_parser))
                elif (m := member(text, pos)) is not None:
                    groups = m.groups()
                    if entities:
                        groups = tuple(None if g is None else _text(g) for g in groups)
                    jobs.append(_job_dict(groups, timestamp_parser))
                else:
                    break
                pos = m.end()
            if (m := _LIST_JOBS_CLOSE.match(text, pos)) is None:
                return None
            pos = m.end()
    except _NotPlain:
        return None
    # botocore's order: the shape's members in model order.
    if token is not None:
        out["NextToken"] = token
    if jobs is not None:
        out["Jobs"] = jobs
    return out


def _job_dict(g: tuple[str | None, ...], ts: Callable[[str], Any]) -> dict[str, Any]:
    """One JobListDescriptor from the member pattern's groups (text already unescaped)."""
    (job_id, desc, op, prio, status, created, ended, summary, total, ok, failed, timers, active) = g
    d: dict[str, Any] = {}
    if job_id is not None:
        d["JobId"] = job_id
    if desc is not None:
        d["Description"] = desc
    if op is not None:
        d["Operation"] = op
    if prio is not None:
        d["Priority"] = int(prio)
    if status is not None:
        d["Status"] = status
    if created is not None:
        d["CreationTime"] = ts(created)
    if ended is not None:
        d["TerminationDate"] = ts(ended)
    if summary is not None:
        p: dict[str, Any] = {}
        if total is not None:
            p["TotalNumberOfTasks"] = int(total)
        if ok is not None:
            p["NumberOfTasksSucceeded"] = int(ok)
        if failed is not None:
            p["NumberOfTasksFailed"] = int(failed)
        if timers is not None:
            p["Timers"] = {} if active is None else {"ElapsedTimeInActiveSeconds": int(active)}
        d["ProgressSummary"] = p
    return d


def _full_job_dict(g: tuple[Any, ...], ts: Callable[[str], Any]) -> dict[str, Any]:
    """:func:`_job_dict` for a member the full pattern matched (same dict, key order too)."""
    job_id, desc, op, prio, status, created, ended, total, ok, failed, active = g
    progress = {
        "TotalNumberOfTasks": int(total),
        "NumberOfTasksSucceeded": int(ok),
        "NumberOfTasksFailed": int(failed),
        "Timers": {"ElapsedTimeInActiveSeconds": int(active)},
    }
    if desc is None:
        if ended is None:
            return {
                "JobId": job_id,
                "Operation": op,
                "Priority": int(prio),
                "Status": status,
                "CreationTime": ts(created),
                "ProgressSummary": progress,
            }
        return {
            "JobId": job_id,
            "Operation": op,
            "Priority": int(prio),
            "Status": status,
            "CreationTime": ts(created),
            "TerminationDate": ts(ended),
            "ProgressSummary": progress,
        }
    if ended is None:
        return {
            "JobId": job_id,
            "Description": desc,
            "Operation": op,
            "Priority": int(prio),
            "Status": status,
            "CreationTime": ts(created),
            "ProgressSummary": progress,
        }
    return {
        "JobId": job_id,
        "Description": desc,
        "Operation": op,
        "Priority": int(prio),
        "Status": status,
        "CreationTime": ts(created),
        "TerminationDate": ts(ended),
        "ProgressSummary": progress,
    }


def fast_list_jobs_parser(
    timestamp_parser: Callable[[str], Any] = fast_timestamp,
) -> Callable[..., None]:
    """A ``before-parse.s3-control.ListJobs`` handler that parses with :func:`parse_list_jobs`.

    botocore (and aiobotocore) still send, sign, retry and build
    ``ResponseMetadata``; the handler hands botocore the parsed members through
    ``customized_response_dict`` (which botocore merges into its result) and an
    empty body to parse. A body :func:`parse_list_jobs` does not read, a bad
    value in it, or any answer other than 200 is left to botocore untouched.
    """

    def handler(
        response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
    ) -> None:
        body = response_dict.get("body")
        if response_dict.get("status_code") != 200 or not isinstance(body, bytes) or not body:
            return
        try:
            parsed = parse_list_jobs(body, timestamp_parser)
        except Exception:  # a bad number or time: botocore raises its own error on it
            return
        if parsed is None:
            return
        customized_response_dict.update(parsed)
        response_dict["body"] = b""

    return handler


class CpuTurns:
    """Lets one CPU-heavy step run per turn of the event loop, in arrival order.

    Twenty targets whose 1,000-job pages arrive together would otherwise parse
    them all in one turn of the loop (asyncio runs every ready callback before it
    looks at sockets again): 20 x 10 ms during which ``/healthz`` and
    ``/metrics`` wait. A step taken through :meth:`turn` keeps the turn until
    the loop has come round once, so the others wait for theirs and requests
    get answered in between. Throughput is the same: the work was serial anyway.

    :meth:`hold` jumps the queue and keeps every turn until its block ends (the
    block gives the loop a turn now and then itself): ``/metrics`` rendering
    goes first, the polls' pages wait the few tens of milliseconds it takes.
    """

    def __init__(self) -> None:
        self._busy = False
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        await self._acquire(self._waiting)
        try:
            yield
            await asyncio.sleep(0)
        finally:
            self._release()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        await self._acquire(self._urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, queue: deque[asyncio.Future[None]]) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed the turn while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def _release(self) -> None:
        # The turn passes straight to the next waiter (urgent ones first), so
        # nobody can slip in between; with no one waiting it is free.
        for queue in (self._urgent, self._waiting):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._busy = False


#: Bodies and pages smaller than this are cheap enough to handle without a turn.
BIG_BODY = 64 * 1024
BIG_PAGE = 100


AttemptCallback = Callable[[str, str, str, str], None]
"""``(account_id, region, operation, outcome)`` for every HTTP attempt."""


class ClientPool:
    """s3control clients, one per region, signing each request as its account.

    A client costs about 1.2 MB and 70 ms of CPU once used (REFERENCE.md), so
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
        self._session = session or AioSession()
        self._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=fast_timestamp
        )
        self._config = AioConfig(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=max_pool_connections,
            user_agent_extra="jobwatch",
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
        self._account_credentials[target.account_id] = self._assume_role_credentials(target)

    def _assume_role_credentials(self, target: Target) -> Any:
        base = self._session

        role_arn = target.role_arn
        assert role_arn is not None

        def sts_client(service: str, **kwargs: Any) -> Any:
            create: Any = base.create_client  # the stubs' overloads want a literal name
            return create(
                service,
                region_name=target.region,
                config=AioConfig(retries={"mode": "standard", "total_max_attempts": 3}),
                **kwargs,
            )

        extra: dict[str, Any] = {
            "RoleSessionName": target.session_name,
            "DurationSeconds": target.duration_seconds,
        }
        if target.external_id:
            extra["ExternalId"] = target.external_id

        async def refresh() -> dict[str, Any]:
            source = await base.get_credentials()
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
                    "before-parse.s3-control.ListJobs", self._list_jobs_parser()
                )
                if self._on_attempt is not None:
                    client.meta.events.register(
                        "response-received.s3-control", self._attempt_handler(region)
                    )
                self._clients[region] = client
        return client

    def _list_jobs_parser(self) -> Callable[..., Any]:
        parse = fast_list_jobs_parser(fast_timestamp)
        turns = self.turns

        async def handler(response_dict: dict[str, Any], **kwargs: Any) -> None:
            body = response_dict.get("body")
            if isinstance(body, bytes) and len(body) > BIG_BODY:
                async with turns.turn():
                    parse(response_dict=response_dict, **kwargs)
            else:
                parse(response_dict=response_dict, **kwargs)

        return handler

    def _sign_as_account(self, request: Any, **_: Any) -> None:
        account = request.headers.get("x-amz-account-id")
        if isinstance(account, bytes):
            account = account.decode("ascii", "replace")
        if account:
            request.context["jobwatch_account"] = account
        creds = self._account_credentials.get(account) if account else None
        if creds is not None:
            request.context.setdefault("signing", {})["request_credentials"] = creds

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

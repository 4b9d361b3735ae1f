"""The HTTP face of the simulator: S3 Control REST-XML over aiohttp.

Request handling, in order: SigV4 ``Authorization`` present (else 403) and
well-formed; region from the Host (``{account}.s3-control.{region}.amazonaws.com``)
or else the credential scope; ``x-amz-account-id`` valid and known (else 403
AccessDenied, as AWS answers for an account the caller cannot act for); faults;
parameter validation; the operation. Every request is counted in the
simulator's stats under exactly one outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jobwatch.clock import Clock
from jobwatch.log import get_logger

from ._admin import add_admin_routes
from ._faults import FaultDecision, FaultSpec
from ._model import CANCELLED, JOB_STATUSES, READY
from ._push import EventPublisher, PushFaults
from ._scenario import Scenario
from ._wire import (
    create_job_xml,
    describe_job_xml,
    error_xml,
    list_jobs_xml,
    malformed,
    parse_create_job,
    truncated,
    update_job_status_xml,
)
from ._world import DEFAULT_MAX_RESULTS, MAX_RESULTS, InvalidTokenError, Simulator

__all__ = ["SimulatorServer", "create_app", "parse_listen", "run_simulator"]

_log = get_logger("jobwatch.simulator")

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_HOST = re.compile(
    r"^(?:(?P<account>\d{12})\.)?s3-control(?:-fips)?(?:\.dualstack)?"
    r"\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?(?::\d+)?$"
)
_ACCOUNT = re.compile(r"^\d{12}$")
_JOB_ID = re.compile(r"^[a-zA-Z0-9\-_]{5,36}$")
_STATUS_SET = frozenset(JOB_STATUSES)
_VALIDATION_CODE = {
    "ListJobs": "InvalidRequestException",
    "DescribeJob": "BadRequestException",
    "UpdateJobStatus": "BadRequestException",
    "CreateJob": "BadRequestException",
}
_HANG_LIMIT = 3600.0


class _Reply(Exception):  # control flow, not an error condition
    """Raised inside a handler to answer with an S3-style error right away."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


class _Context:
    __slots__ = ("account", "decision", "host_id", "operation", "region", "request_id")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.account = ""
        self.region = ""
        raw = os.urandom(24)
        self.request_id = raw[:8].hex().upper()
        self.host_id = raw.hex()
        self.decision: FaultDecision | None = None


class _S3Api:
    """Handlers for the S3 Control operations; one instance per application."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.hangs: set[asyncio.Event] = set()

    # -- plumbing ------------------------------------------------------------

    def _headers(self, ctx: _Context) -> dict[str, str]:
        return {
            "Content-Type": "application/xml",
            "x-amz-request-id": ctx.request_id,
            "x-amz-id-2": ctx.host_id,
            "Server": "AmazonS3",
        }

    def _error(self, ctx: _Context, status: int, code: str, message: str) -> web.Response:
        self.sim.record(ctx.operation, ctx.account, ctx.region, code)
        return web.Response(
            status=status,
            body=error_xml(code, message, ctx.request_id, ctx.host_id),
            headers=self._headers(ctx),
        )

    def _ok(self, ctx: _Context, body: bytes) -> web.StreamResponse:
        decision = ctx.decision
        terminal = decision.terminal if decision is not None else None
        if terminal is not None and terminal.kind in ("truncated_xml", "malformed_xml"):
            self.sim.record(ctx.operation, ctx.account, ctx.region, terminal.kind)
            body = truncated(body) if terminal.kind == "truncated_xml" else malformed(body)
        else:
            self.sim.record(ctx.operation, ctx.account, ctx.region, "ok")
        return web.Response(status=200, body=body, headers=self._headers(ctx))

    def _authenticate(self, request: web.Request, ctx: _Context) -> None:
        """Fill ``ctx.account``/``ctx.region`` or raise :class:`_Reply`."""
        headers = request.headers
        auth = headers.get("Authorization")
        if auth is None:
            credential = request.query.get("X-Amz-Credential")
            if credential is None:
                raise _Reply(403, "AccessDenied", "Access Denied")
            auth = f"AWS4-HMAC-SHA256 Credential={credential}"
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise _Reply(
                400,
                "InvalidRequest",
                "The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256.",
            )
        m = _CREDENTIAL.search(auth)
        if m is None:
            raise _Reply(
                400,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the Credential is mal-formed; "
                'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
            )
        scope_region, service = m.group(3), m.group(4)
        if service != "s3":
            raise _Reply(
                403,
                "SignatureDoesNotMatch",
                f"Credential should be scoped to correct service: 's3' (got '{service}').",
            )
        host = headers.get("Host", "")
        region = scope_region
        host_account = None
        if "s3-control" in host:
            hm = _HOST.match(host)
            if hm is not None:
                host_account = hm.group("account")
                host_region = hm.group("region")
                if host_region != scope_region:
                    raise _Reply(
                        400,
                        "AuthorizationHeaderMalformed",
                        f"The authorization header is malformed; the region '{scope_region}' "
                        f"is wrong; expecting '{host_region}'",
                    )
        ctx.region = region
        account = headers.get("x-amz-account-id")
        validation = _VALIDATION_CODE.get(ctx.operation, "InvalidRequest")
        if not account:
            raise _Reply(
                400, validation, "Missing required header for this request: x-amz-account-id"
            )
        if not _ACCOUNT.match(account):
            raise _Reply(
                400,
                validation,
                f"Value '{account}' at 'accountId' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^\\d{12}$",
            )
        if host_account is not None and host_account != account:
            raise _Reply(
                400, validation, "The account id in the Host does not match x-amz-account-id."
            )
        ctx.account = account
        if not self.sim.knows_account(account) or self.sim.access_denied(account, region):
            raise _Reply(403, "AccessDenied", "Access Denied")

    async def _apply_faults(self, request: web.Request, ctx: _Context, has_token: bool) -> None:
        """Run latency and answer-replacing faults; leave body-mangling ones for later."""
        decision = self.sim.decide_faults(ctx.operation, ctx.account, ctx.region, has_token)
        ctx.decision = decision
        if decision.delay > 0.0:
            await asyncio.sleep(decision.delay)
        spec = decision.terminal
        if spec is None:
            return
        kind = spec.kind
        if kind == "throttle":
            status = spec.status or 503
            if status == 503:
                raise _Reply(503, "SlowDown", spec.message or "Please reduce your request rate.")
            raise _Reply(status, "TooManyRequestsException", spec.message or "Too many requests")
        if kind == "internal_error":
            raise _Reply(
                500,
                "InternalError",
                spec.message or "We encountered an internal error. Please try again.",
            )
        if kind == "error":
            assert spec.status is not None
            assert spec.code is not None
            raise _Reply(spec.status, spec.code, spec.message or spec.code)
        if kind == "access_denied":
            raise _Reply(403, "AccessDenied", spec.message or "Access Denied")
        if kind == "invalid_next_token":
            raise _Reply(
                400,
                "InvalidNextTokenException",
                spec.message or "The continuation token provided is invalid.",
            )
        if kind == "connection_reset":
            self.sim.record(ctx.operation, ctx.account, ctx.region, kind)
            _reset(request)
            raise _Dropped
        if kind == "hang":
            self.sim.record(ctx.operation, ctx.account, ctx.region, kind)
            await self._hang(spec)
            _reset(request)
            raise _Dropped

    async def _hang(self, spec: FaultSpec) -> None:
        waiter = asyncio.Event()
        self.hangs.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), spec.seconds or _HANG_LIMIT)
        finally:
            self.hangs.discard(waiter)

    def release_hangs(self) -> None:
        """End every hanging request (their connections are reset); used at shutdown."""
        for waiter in list(self.hangs):
            waiter.set()

    def _wrap(
        self,
        operation: str,
        body: Callable[[web.Request, _Context], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ctx = _Context(operation)
            try:
                return await body(request, ctx)
            except _Reply as reply:
                return self._error(ctx, reply.status, reply.code, reply.message)
            except _Dropped:
                return web.Response(status=204)  # never reaches the client: the socket is gone

        return handler

    # -- operations ----------------------------------------------------------

    async def list_jobs(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        self._authenticate(request, ctx)
        query = request.query
        token = query.get("nextToken")
        await self._apply_faults(request, ctx, token is not None)
        raw_max = query.get("maxResults")
        if raw_max is None:
            max_results = DEFAULT_MAX_RESULTS
        else:
            try:
                max_results = int(raw_max)
            except ValueError:
                raise _Reply(
                    400,
                    "InvalidRequestException",
                    f"Value '{raw_max}' at 'maxResults' failed to satisfy constraint: "
                    "Member must be an integer",
                ) from None
            if not 0 <= max_results <= MAX_RESULTS:
                raise _Reply(
                    400,
                    "InvalidRequestException",
                    f"Value '{max_results}' at 'maxResults' failed to satisfy constraint: "
                    f"Member must have value between 0 and {MAX_RESULTS}",
                )
            if max_results == 0:
                max_results = DEFAULT_MAX_RESULTS
        statuses: frozenset[str] | None = None
        if "jobStatuses" in query:
            wanted = query.getall("jobStatuses")
            bad = [s for s in wanted if s not in _STATUS_SET]
            if bad:
                raise _Reply(
                    400,
                    "InvalidRequestException",
                    f"Value '{bad[0]}' at 'jobStatuses' failed to satisfy constraint: Member "
                    f"must satisfy enum value set: [{', '.join(JOB_STATUSES)}]",
                )
            statuses = frozenset(wanted)
        if token is not None and not 1 <= len(token) <= 1024:
            raise _Reply(
                400,
                "InvalidRequestException",
                "Value at 'nextToken' failed to satisfy constraint: Member must have length "
                "between 1 and 1024",
            )
        decision = ctx.decision
        try:
            members, next_token = self.sim.list_page(
                ctx.account,
                ctx.region,
                statuses,
                max_results,
                token,
                decision.status_value if decision is not None else None,
                decision.operation_value if decision is not None else None,
            )
        except InvalidTokenError as err:
            raise _Reply(400, "InvalidNextTokenException", str(err)) from None
        return self._ok(ctx, list_jobs_xml(members, next_token))

    def _job_id(self, request: web.Request) -> str:
        job_id = request.match_info["id"]
        if not _JOB_ID.match(job_id):
            raise _Reply(
                400,
                "BadRequestException",
                f"Value '{job_id}' at 'id' failed to satisfy constraint: Member must have "
                "length between 5 and 36 and match pattern [a-zA-Z0-9\\-\\_]+",
            )
        return job_id

    async def describe_job(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        self._authenticate(request, ctx)
        await self._apply_faults(request, ctx, False)
        job_id = self._job_id(request)
        job = self.sim.describe(ctx.account, ctx.region, job_id)
        if job is None:
            raise _Reply(404, "NotFoundException", f"The job {job_id} was not found.")
        decision = ctx.decision
        body = describe_job_xml(
            job,
            self.sim.now(),
            decision.status_value if decision is not None else None,
            decision.operation_value if decision is not None else None,
        )
        return self._ok(ctx, body)

    async def update_job_status(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        self._authenticate(request, ctx)
        await self._apply_faults(request, ctx, False)
        job_id = self._job_id(request)
        requested = request.query.get("requestedJobStatus")
        if requested not in (READY, CANCELLED):
            raise _Reply(
                400,
                "BadRequestException",
                f"Value '{requested}' at 'requestedJobStatus' failed to satisfy constraint: "
                "Member must satisfy enum value set: [Cancelled, Ready]",
            )
        reason = request.query.get("statusUpdateReason")
        if reason is not None and not 1 <= len(reason) <= 256:
            raise _Reply(
                400,
                "BadRequestException",
                "Value at 'statusUpdateReason' failed to satisfy constraint: Member must "
                "have length between 1 and 256",
            )
        job, refusal = self.sim.update_status(ctx.account, ctx.region, job_id, requested, reason)
        if job is None:
            raise _Reply(404, "NotFoundException", f"The job {job_id} was not found.")
        if refusal is not None:
            raise _Reply(400, "JobStatusException", refusal)
        return self._ok(ctx, update_job_status_xml(job.job_id, job.status, reason))

    async def create_job(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        self._authenticate(request, ctx)
        await self._apply_faults(request, ctx, False)
        try:
            parsed = parse_create_job(await request.read())
            tasks = int(parsed.tags.get("sim:tasks", "1000"))
            rate = float(parsed.tags.get("sim:rate", "10"))
            ratio = float(parsed.tags.get("sim:failure_ratio", "0"))
            if tasks < 0 or rate < 0 or not 0.0 <= ratio <= 1.0:
                raise ValueError("sim:tasks and sim:rate must be >= 0, sim:failure_ratio 0..1")
        except ValueError as err:
            raise _Reply(400, "BadRequestException", str(err)) from None
        job_id = self.sim.create_from_request(
            ctx.account,
            ctx.region,
            client_token=parsed.client_request_token,
            tasks=tasks,
            rate=rate,
            failure_ratio=ratio,
            operation=parsed.operation,
            description=parsed.description,
            priority=parsed.priority,
            confirmation_required=parsed.confirmation_required,
            role_arn=parsed.role_arn,
            report_enabled=parsed.report_enabled,
        )
        return self._ok(ctx, create_job_xml(job_id))

    async def not_implemented(self, request: web.Request, ctx: _Context) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return web.json_response({"error": f"no admin endpoint {request.path}"}, status=404)
        raise _Reply(
            501,
            "NotImplemented",
            f"The simulator does not implement {request.method} {request.path}.",
        )


class _Dropped(Exception):  # control flow: the connection was dropped on purpose
    """The connection was reset; no response can be sent."""


def _reset(request: web.Request) -> None:
    """Reset the client's TCP connection (RST, not a graceful FIN)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout makes close() send RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


_API_KEY = web.AppKey("jobwatch_sim_api", _S3Api)
_SIM_KEY = web.AppKey("jobwatch_sim", Simulator)


def create_app(sim: Simulator) -> web.Application:
    """An aiohttp application serving ``sim``: S3 Control under ``/v20180820/``,
    the admin API under ``/_sim/``, S3-style 501 ``NotImplemented`` elsewhere."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    api = _S3Api(sim)
    app[_API_KEY] = api
    app[_SIM_KEY] = sim
    add_admin_routes(app, sim)
    app.router.add_get("/v20180820/jobs", api._wrap("ListJobs", api.list_jobs))
    app.router.add_post("/v20180820/jobs", api._wrap("CreateJob", api.create_job))
    app.router.add_get("/v20180820/jobs/{id}", api._wrap("DescribeJob", api.describe_job))
    app.router.add_post(
        "/v20180820/jobs/{id}/status", api._wrap("UpdateJobStatus", api.update_job_status)
    )
    app.router.add_route("*", "/{tail:.*}", api._wrap("Unknown", api.not_implemented))
    return app


class SimulatorServer:
    """Serve a :class:`Simulator` over HTTP for the duration of an ``async with``.

    ``port=0`` picks a free port; :attr:`url` and :attr:`port` tell which. On
    exit, hanging requests are released (their connections reset) and the
    server stops within ``shutdown_timeout`` seconds.
    """

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.sim = sim
        self.host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (valid inside the ``async with``)."""
        if self._runner is None:
            raise RuntimeError("SimulatorServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``: pass it as ``endpoint_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> SimulatorServer:
        app = create_app(self.sim)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            # A client that times out on a hanging request gets its handler cancelled.
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._app = app
        self._runner = runner
        addresses: list[Any] = runner.addresses
        self._port = int(addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._app is not None:
            self._app[_API_KEY].release_hangs()
        await runner.cleanup()


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"`` or ``":9000"`` -> (host, port).

    Raises ``ValueError`` with a message naming the expected form.
    """
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port_text)


async def run_simulator(
    listen: str,
    scenario: Scenario,
    clock: Clock,
    *,
    on_ready: Callable[[SimulatorServer], None] | None = None,
    push: tuple[str, str, str, PushFaults] | None = None,
) -> None:
    """Serve ``scenario`` on ``listen`` (``HOST:PORT``) until cancelled.

    ``push``: (SQS endpoint, queue URL, region, faults): publish every job event
    there as EventBridge would (:class:`EventPublisher`).

    Logs ``simulator_started`` with the URL once listening and calls
    ``on_ready`` (if given) with the running server. Raises ``ValueError`` for a
    bad ``listen`` and ``OSError`` when the address cannot be bound.
    """
    host, port = parse_listen(listen)
    sim = Simulator(scenario, clock)
    async with SimulatorServer(sim, host, port) as server:
        _log.info(
            "simulator_started",
            url=server.url,
            scenario=scenario.name,
            accounts=len(sim.accounts()),
            targets=len(sim.targets()),
        )
        if on_ready is not None:
            on_ready(server)
        try:
            if push is None:
                await asyncio.Event().wait()
            else:
                endpoint, queue, region, faults = push
                async with EventPublisher(
                    sim, endpoint_url=endpoint, queue_url=queue, region=region, faults=faults
                ) as publisher:
                    _log.info("simulator_publishing", queue=queue)
                    await publisher.run()
        finally:
            _log.info("simulator_stopped", url=server.url)

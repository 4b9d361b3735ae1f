"""jobwatch's HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, and the status page
(``/``) with its JSON API (``/api/v1/targets``, ``/api/v1/jobs``; docs/api.md).

GET and HEAD only. Request lines and headers are bounded by aiohttp (8 KiB
each), bodies are never read, idle keep-alive connections close after 15 s.
``/metrics``, the page and the API may require HTTP basic auth (bcrypt hash, as
the Prometheus exporter-toolkit does); the probes never do, the kubelet has no
credentials. ``web.status_page: false`` leaves the page and the API out (404).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable

import bcrypt
from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from jobwatch.config import BasicAuthConfig
from jobwatch.metrics import exposition_async
from jobwatch.state import Store
from jobwatch.statuspage import render_status_page
from jobwatch.views import JobQuery, QueryError, dumps, query_jobs, targets_document

__all__ = ["CONTENT_TYPE", "KEEPALIVE_TIMEOUT", "create_http_app", "wants_gzip"]

_MAX_REQUEST_BYTES = 8 * 1024
KEEPALIVE_TIMEOUT = 15.0
#: The classic text format every Prometheus 2.x and 3.x reads (names are legacy-safe).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The page runs no script and loads nothing: say so to the browser.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _qvalue(params: list[str]) -> float | None:
    """An element's weight (RFC 9110 12.4.2): 1 without ``q``, None if it is malformed."""
    q = 1.0
    for param in params:
        name, sep, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        value = value.strip()
        # qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
        if not sep or not re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", value):
            return None
        q = float(value)
    return q


def wants_gzip(accept_encoding: str | None) -> bool:
    """Whether a response may, and should, be gzipped for this ``Accept-Encoding``.

    By RFC 9110 12.5.3: a coding with ``q=0`` is refused, ``*`` stands for the
    codings not named, ``x-gzip`` is ``gzip``, names are case-insensitive. gzip
    is chosen when it is acceptable and the client does not weigh ``identity``
    (named, or through ``*``) above it. No header, or an empty one: identity.
    A malformed element is ignored, as if it were not there.
    """
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        q = _qvalue(params)
        if not coding or q is None:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        weights[coding] = max(q, weights.get(coding, 0.0))
    star = weights.get("*")
    gzip = weights.get("gzip", star if star is not None else 0.0)
    # identity is acceptable unless refused; named (or through *) it competes with gzip.
    identity = weights.get("identity", star if star is not None else 0.0)
    return gzip > 0 and gzip >= identity


class _BasicAuth:
    """Checks ``Authorization: Basic`` against a bcrypt hash.

    bcrypt is slow on purpose, so it runs in a thread, and a credential that
    passed is remembered (as a SHA-256) so that each scrape does not pay again.
    """

    def __init__(self, config: BasicAuthConfig) -> None:
        self._username = config.username.encode()
        self._hash = config.password_hash.encode()
        self._good: set[bytes] = set()

    async def allowed(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = raw.partition(b":")
        if not sep or not hmac.compare_digest(user, self._username):
            return False
        digest = hashlib.sha256(raw).digest()
        if digest in self._good:
            return True
        if await asyncio.to_thread(bcrypt.checkpw, password, self._hash):
            self._good.add(digest)
            return True
        return False


def create_http_app(
    store: Store,
    registry: CollectorRegistry,
    basic_auth: BasicAuthConfig | None = None,
    *,
    status_page: bool = True,
    external_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp application. GET and HEAD only; other paths are 404.

    ``clock`` tells the page and the API what time it is (the app's clock).
    """
    auth = _BasicAuth(basic_auth) if basic_auth is not None else None

    def guarded(handler: _Handler) -> _Handler:
        """``handler`` behind the basic auth, when there is one."""

        async def check(request: web.Request) -> web.StreamResponse:
            if auth is not None and not await auth.allowed(request.headers.get("Authorization")):
                return web.Response(
                    status=401,
                    text="unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="jobwatch"'},
                )
            return await handler(request)

        return check

    async def metrics(request: web.Request) -> web.StreamResponse:
        # generate_latest's bytes (gzipped at level 1 if asked), written from the
        # state in slices that leave the loop to the polls (docs/performance.md).
        compress = wants_gzip(request.headers.get("Accept-Encoding"))
        body = await exposition_async(registry, gzip=compress)
        headers = {"Content-Type": CONTENT_TYPE}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    became_ready = False

    async def readyz(_: web.Request) -> web.Response:
        nonlocal became_ready
        # Ready once, ready for good: a target discovered at run time must not
        # take the pod out of the Service until its first poll.
        waiting = (
            []
            if became_ready
            else [str(ts.target) for ts in store.targets.values() if not ts.attempted]
        )
        if waiting:
            shown = ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else "")
            return web.Response(status=503, text=f"waiting for first poll of: {shown}\n")
        became_ready = True
        return web.Response(text="ready\n")

    def bad_query(e: QueryError) -> web.Response:
        return web.json_response({"error": str(e)}, status=400, dumps=_dumps)

    async def api_targets(_: web.Request) -> web.StreamResponse:
        return web.json_response(await targets_document(store, clock()), dumps=_dumps)

    async def api_jobs(request: web.Request) -> web.StreamResponse:
        try:
            query = _parse(request)
        except QueryError as e:
            return bad_query(e)
        body = await query_jobs(store, query, clock(), external_url=external_url)
        return web.Response(text=await dumps(body), content_type="application/json")

    async def page(request: web.Request) -> web.StreamResponse:
        try:
            query = _parse(request)
        except QueryError as e:
            return web.Response(status=400, text=f"bad query: {e}\n", headers=_PAGE_HEADERS)
        html = await render_status_page(
            store, query, request.query, clock(), external_url=external_url
        )
        return web.Response(text=html, content_type="text/html", headers=_PAGE_HEADERS)

    app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
    routes: list[tuple[str, _Handler]] = [
        ("/metrics", guarded(metrics)),
        ("/healthz", healthz),
        ("/readyz", readyz),
    ]
    if status_page:
        routes += [
            ("/", guarded(page)),
            ("/api/v1/targets", guarded(api_targets)),
            ("/api/v1/jobs", guarded(api_jobs)),
        ]
    for path, handler in routes:
        app.router.add_get(path, handler)  # add_get also answers HEAD
    return app


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parse(request: web.Request) -> JobQuery:
    query = request.query
    return JobQuery.from_params(query, lambda name: list(query.getall(name, [])))

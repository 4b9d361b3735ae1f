"""jobwatch's HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` and nothing else."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from jobwatch.state import Store

__all__ = ["create_http_app"]

_MAX_REQUEST_BYTES = 8 * 1024
#: The classic text format every Prometheus 2.x and 3.x reads (names are legacy-safe).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_http_app(store: Store, registry: CollectorRegistry) -> web.Application:
    """The aiohttp application. GET and HEAD only; other paths are 404."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = generate_latest(registry)
        resp = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.enable_compression(web.ContentCoding.gzip)
        return resp

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = [str(ts.target) for ts in store.targets.values() if not ts.attempted]
        if waiting:
            shown = ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else "")
            return web.Response(status=503, text=f"waiting for first poll of: {shown}\n")
        return web.Response(text="ready\n")

    app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
    for path, handler in (("/metrics", metrics), ("/healthz", healthz), ("/readyz", readyz)):
        app.router.add_get(path, handler)  # add_get also answers HEAD
    return app

"""The admin API under ``/_sim/``: observe and steer a running simulator with JSON.

S3 Control paths all start with ``/v20180820/``, so ``/_sim/`` can never clash.
Admin requests need no signature and are not counted in the request stats.
Errors are ``{"error": "..."}`` with 400 (bad input) or 404 (unknown job or fault).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from ._faults import FaultSpec

if TYPE_CHECKING:
    from ._world import Simulator

__all__ = ["add_admin_routes"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(body)"
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise _BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise _BadRequest("body must be a JSON object")
    return data


class _BadRequest(Exception):  # control flow inside this module
    pass


def _guard(handler: _Handler) -> _Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        from ._world import UnknownJobError

        try:
            return await handler(request)
        except _BadRequest as err:
            return _bad(str(err))
        except ValidationError as err:
            return _bad(_validation_message(err))
        except UnknownJobError as err:
            return _bad(str(err.args[0]), 404)
        except ValueError as err:
            return _bad(str(err))

    return wrapped


def _fault_json(fault_id: str, spec: FaultSpec, fired: int) -> dict[str, Any]:
    return {
        "id": fault_id,
        "fired": fired,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def add_admin_routes(app: web.Application, sim: Simulator) -> None:
    """Register the ``/_sim/`` endpoints for ``sim`` on ``app``."""

    async def index(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "scenario": sim.scenario.name,
                "endpoints": [
                    "GET /_sim/stats",
                    "POST /_sim/stats/reset",
                    "GET /_sim/clock",
                    "POST /_sim/clock/advance",
                    "GET /_sim/faults",
                    "POST /_sim/faults",
                    "DELETE /_sim/faults",
                    "DELETE /_sim/faults/{id}",
                    "GET /_sim/targets",
                    "GET /_sim/jobs",
                    "POST /_sim/jobs",
                    "POST /_sim/jobs/{account}/{region}/{job_id}/actions",
                    "POST /_sim/accounts/{account}/access",
                ],
            }
        )

    async def stats(_: web.Request) -> web.StreamResponse:
        rows = [
            {
                "operation": k.operation,
                "account": k.account,
                "region": k.region,
                "outcome": k.outcome,
                "count": n,
            }
            for k, n in sorted(sim.stats.items())
        ]
        return web.json_response(
            {
                "total": sum(sim.stats.values()),
                "requests": rows,
                "faults": [_fault_json(*f) for f in sim.faults],
            }
        )

    async def stats_reset(_: web.Request) -> web.StreamResponse:
        sim.reset_stats()
        return web.json_response({"ok": True})

    def _clock_json() -> dict[str, float]:
        return {"now": sim.now(), "origin": sim.origin, "elapsed": sim.elapsed()}

    async def clock(_: web.Request) -> web.StreamResponse:
        return web.json_response(_clock_json())

    async def clock_advance(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise _BadRequest('expected {"seconds": N} with N >= 0')
        sim.advance(float(seconds))
        return web.json_response(_clock_json())

    async def faults_list(_: web.Request) -> web.StreamResponse:
        return web.json_response({"faults": [_fault_json(*f) for f in sim.faults]})

    async def faults_add(request: web.Request) -> web.StreamResponse:
        spec = FaultSpec.model_validate(await _json_body(request))
        fault_id = sim.add_fault(spec)
        return web.json_response(_fault_json(fault_id, spec, 0), status=201)

    async def faults_clear(_: web.Request) -> web.StreamResponse:
        sim.clear_faults()
        return web.json_response({"ok": True})

    async def faults_delete(request: web.Request) -> web.StreamResponse:
        fault_id = request.match_info["fault_id"]
        if not sim.remove_fault(fault_id):
            return _bad(f"no fault {fault_id!r}", 404)
        return web.json_response({"ok": True})

    async def targets(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "targets": [
                    {"account": a, "region": r, "access_denied": sim.access_denied(a, r)}
                    for a, r in sim.targets()
                ]
            }
        )

    async def jobs_list(request: web.Request) -> web.StreamResponse:
        account = request.query.get("account")
        region = request.query.get("region")
        out: list[dict[str, object]] = []
        for a, r in sim.targets():
            if (account is None or a == account) and (region is None or r == region):
                out.extend(v.to_json() for v in sim.jobs(a, r))
        return web.json_response({"now": sim.now(), "jobs": out})

    async def jobs_create(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        account = body.pop("account", None)
        region = body.pop("region", None)
        if not isinstance(account, str) or not isinstance(region, str):
            raise _BadRequest('expected {"account": "123456789012", "region": "us-east-1", ...}')
        job_id = sim.create_job(account, region, **body)
        return web.json_response({"job_id": job_id}, status=201)

    async def job_action(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        body = await _json_body(request)
        action = body.pop("action", None)
        if not isinstance(action, str):
            raise _BadRequest('expected {"action": "fail", "reason": "..."}')
        after = body.pop("after", None)
        if after is not None:
            sim.schedule(info["account"], info["region"], info["job_id"], after, action, **body)
            view = sim.job(info["account"], info["region"], info["job_id"])
        else:
            view = sim.act(info["account"], info["region"], info["job_id"], action, **body)
        return web.json_response(view.to_json())

    async def account_access(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        denied = body.get("denied")
        region = body.get("region")
        if not isinstance(denied, bool) or not (region is None or isinstance(region, str)):
            raise _BadRequest('expected {"denied": true|false, "region": "eu-west-1" (optional)}')
        account = request.match_info["account"]
        if denied:
            sim.deny_access(account, region)
        else:
            sim.allow_access(account, region)
        return web.json_response({"ok": True})

    r = app.router
    r.add_get("/_sim/", _guard(index))
    r.add_get("/_sim/stats", _guard(stats))
    r.add_post("/_sim/stats/reset", _guard(stats_reset))
    r.add_get("/_sim/clock", _guard(clock))
    r.add_post("/_sim/clock/advance", _guard(clock_advance))
    r.add_get("/_sim/faults", _guard(faults_list))
    r.add_post("/_sim/faults", _guard(faults_add))
    r.add_delete("/_sim/faults", _guard(faults_clear))
    r.add_delete("/_sim/faults/{fault_id}", _guard(faults_delete))
    r.add_get("/_sim/targets", _guard(targets))
    r.add_get("/_sim/jobs", _guard(jobs_list))
    r.add_post("/_sim/jobs", _guard(jobs_create))
    r.add_post("/_sim/jobs/{account}/{region}/{job_id}/actions", _guard(job_action))
    r.add_post("/_sim/accounts/{account}/access", _guard(account_access))

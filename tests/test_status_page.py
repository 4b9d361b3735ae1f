"""The status page and its JSON API, against the simulator's demo scenario, over real
HTTP, and the page as a person sees it: in a real headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from pydantic import ValidationError

from jobwatch.cli import main
from jobwatch.config import WebConfig
from jobwatch.terminal import fetch_view, render
from jobwatch.views import JobQuery, QueryError
from tests.helpers import World, running

#: The scenario `make demo` runs, as shipped.
DEMO: dict[str, Any] = yaml.safe_load(
    (resources.files("jobwatch.simulator") / "scenarios" / "demo.yaml").read_text()
)
# The demo's own thresholds (jobwatch.demo.demo_config), so its cases show as in `make demo`.
DEMO_CONFIG = {
    "terminal_retention": "1h",
    "stall": {"no_progress": "20s", "status_limits": {"Suspended": "30s"}},
}
TROUBLE, THROTTLED, DENIED = "222222222222", "333333333333", "444444444444"
MANIFEST_REASON = "Reading the manifest failed: Access Denied on s3://trouble-manifests/acl.csv"
# Where the screenshots go besides tmp_path: docs/img is refreshed with
# JOBWATCH_SCREENSHOTS=docs/img pytest tests/test_status_page.py -k chromium
SCREENSHOTS = os.environ.get("JOBWATCH_SCREENSHOTS")


@asynccontextmanager
async def demo_world(config: dict[str, Any] | None = None) -> AsyncIterator[tuple[World, str]]:
    """The demo 70 s in: one job failed, one stalled, one overdue, one account throttled."""
    async with running(DEMO, {**DEMO_CONFIG, **(config or {})}) as w:
        port = await w.app.serve_http("127.0.0.1:0")
        await w.app.poll_all_once()
        for _ in range(7):
            await w.step(10)
        yield w, f"http://127.0.0.1:{port}"


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as r:
        assert r.status == status, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        return await r.json()


async def test_api_shows_the_demo_cases_and_filters_sorts_pages() -> None:
    async with demo_world() as (_w, base), aiohttp.ClientSession() as http:
        targets = await get_json(http, f"{base}/api/v1/targets")
        by_key = {(t["aws_account_id"], t["aws_region"]): t for t in targets["targets"]}
        denied = by_key[(DENIED, "us-east-1")]
        assert (denied["up"], denied["last_error"], denied["last_success"]) == (
            False,
            "AccessDenied",
            None,
        )
        assert by_key[(THROTTLED, "us-east-1")]["api_requests_throttled"] > 0
        assert by_key[(TROUBLE, "us-east-1")]["up"] is True
        assert targets["jobs_by_status"]["Failed"] == 2
        assert targets["attention"]["stalled"] == 1

        attention = await get_json(http, f"{base}/api/v1/jobs?group=attention")
        jobs = {j["description"]: j for j in attention["jobs"]}
        acl = jobs["ACL fix-up (fails at t=30s)"]
        assert acl["status"] == "Failed"
        assert acl["attention"] == ["failed"]
        assert acl["failure_reasons"] == [{"code": "ManifestReadFailed", "reason": MANIFEST_REASON}]
        assert acl["report"]["location"] == "s3://jobwatch-sim-reports/batch-reports"
        assert acl["console_url"].startswith("https://console.aws.amazon.com/s3/jobs/")
        assert acl["status_url"] is None  # no web.external_url
        stalled = jobs["copy to the backup bucket (stalls t=20s..100s)"]
        assert stalled["attention"] == ["stalled"]
        assert "failure_reasons" not in stalled
        assert jobs["console job waiting for confirmation"]["attention"] == ["overdue"]
        assert attention["total"] == len(attention["jobs"]) == 5
        # Attention first, then running, then finished: the default order.
        everything = await get_json(http, f"{base}/api/v1/jobs?per_page=1000")
        groups = [j["group"] for j in everything["jobs"]]
        assert groups == sorted(groups, key=["attention", "running", "finished"].index)
        assert groups[0] == "attention"
        assert {"running", "finished"} <= set(groups)

        failed = await get_json(http, f"{base}/api/v1/jobs?status=Failed&account={TROUBLE}")
        assert {j["job_id"] for j in failed["jobs"]} == {
            j["job_id"] for j in attention["jobs"] if j["status"] == "Failed"
        }
        text = await get_json(http, f"{base}/api/v1/jobs?q=MANIFEST+read")  # not ACL's text
        assert text["total"] == 0
        text = await get_json(http, f"{base}/api/v1/jobs?q=acl+FIX")
        assert [j["job_id"] for j in text["jobs"]] == [acl["job_id"]]
        one = await get_json(http, f"{base}/api/v1/jobs?job={acl['job_id']}")
        assert [j["job_id"] for j in one["jobs"]] == [acl["job_id"]]
        lambdas = await get_json(http, f"{base}/api/v1/jobs?operation=LambdaInvoke")
        assert lambdas["total"] >= 2
        assert {j["operation"] for j in lambdas["jobs"]} == {"LambdaInvoke"}

        by_progress = await get_json(http, f"{base}/api/v1/jobs?sort=progress&order=desc")
        progress = [j["progress"] if j["progress"] is not None else -1 for j in by_progress["jobs"]]
        assert progress == sorted(progress, reverse=True)
        assert len(set(progress)) > 2

        total = everything["total"]
        pages = [await get_json(http, f"{base}/api/v1/jobs?per_page=3&page={p}") for p in (1, 2)]
        assert pages[0]["pages"] == -(-total // 3)
        assert [j["job_id"] for j in pages[0]["jobs"] + pages[1]["jobs"]] == [
            j["job_id"] for j in everything["jobs"][:6]
        ]
        beyond = await get_json(http, f"{base}/api/v1/jobs?per_page=3&page=999")
        assert (beyond["jobs"], beyond["total"]) == ([], total)

        for bad in ("page=0", "per_page=5000", "sort=nope", "order=up", "group=x", "page=a"):
            error = await get_json(http, f"{base}/api/v1/jobs?{bad}", status=400)
            assert bad.split("=")[0] in error["error"]
        async with http.post(f"{base}/api/v1/jobs") as r:
            assert r.status == 405


async def test_page_shows_reasons_filters_and_refreshes_without_scripts() -> None:
    async with demo_world() as (_w, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/html")
            assert "script-src" not in r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            page = await r.text()
        assert "<script" not in page
        assert '<meta http-equiv="refresh" content="30">' in page
        assert re.search(r"Targets: [1-6] up, [1-6] down", page)
        assert "DOWN" in page
        assert "AccessDenied" in page
        assert MANIFEST_REASON.replace("'", "&#39;") in page
        assert "ManifestReadFailed" in page
        assert "STALLED (no task progress)" in page
        assert "OVERDUE in its status" in page
        assert page.index("Needs attention</th>") < page.index("Running</th>")
        # Every resource is inline: nothing to fetch from a cluster with no egress.
        assert re.search(r"""<(link|img|iframe)\b|src=|@import|url\(""", page) is None
        async with http.get(f"{base}/?status=Failed&refresh=0&q=acl") as r:
            filtered = await r.text()
        assert "http-equiv" not in filtered
        assert "<option selected>Failed</option>" in filtered
        assert "1 job;" in filtered
        assert "ACL fix-up" in filtered
        assert "broken lambda" not in filtered
        async with http.get(f"{base}/?sort=bogus") as r:
            assert r.status == 400
        async with http.get(f"{base}/?per_page=2") as r:
            paged = await r.text()
        assert 'rel="next"' in paged
        assert "per_page=2" in paged.split('rel="next"')[0].rsplit("href=", 1)[1]
        # A repeated parameter (docs/api.md) survives in every link the page makes.
        async with http.get(f"{base}/?status=Failed&status=Active&per_page=1") as r:
            both = await r.text()
        next_link = both.split('rel="next"')[0].rsplit("href=", 1)[1]
        assert "status=Failed&amp;status=Active" in next_link, next_link
        sort_link = re.search(r'href="(\?[^"]*sort=progress[^"]*)"', both)
        assert sort_link is not None
        assert "status=Failed&amp;status=Active" in sort_link.group(1)


async def test_status_page_off_leaves_metrics_and_probes() -> None:
    async with (
        running(DEMO, {"web": {"status_page": False}}) as w,
        aiohttp.ClientSession() as http,
    ):
        port = await w.app.serve_http("127.0.0.1:0")
        await w.app.poll_all_once()
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/v1/jobs", "/api/v1/targets"):
            async with http.get(base + path) as r:
                assert r.status == 404, path
        for path in ("/metrics", "/healthz", "/readyz"):
            async with http.get(base + path) as r:
                assert r.status == 200, path


async def test_external_url_links_events_and_rows_to_the_page() -> None:
    external = "https://jobwatch.example.com/ops/"
    async with (
        demo_world({"web": {"external_url": external}}) as (w, base),
        aiohttp.ClientSession() as http,
    ):
        failed = [e.to_dict() for e in w.sink.events if e.kind == "job_failed"]
        assert failed
        for event in failed:
            assert event["status_url"] == (
                "https://jobwatch.example.com/ops/?account="
                f"{event['aws_account_id']}&region={event['aws_region']}&job={event['job_id']}"
            )
        rows = await get_json(http, f"{base}/api/v1/jobs?status=Failed")
        assert {r["status_url"] for r in rows["jobs"]} == {e["status_url"] for e in failed}
        # The link opens the page on that job alone.
        query = failed[0]["status_url"].split("?", 1)[1]
        async with http.get(f"{base}/?{query}") as r:
            page = await r.text()
        assert "1 job with id" in page
        assert failed[0]["job_id"] in page


async def test_a_failed_jobs_detail_leaves_with_the_job() -> None:
    async with running(DEMO, {**DEMO_CONFIG, "terminal_retention": "40s"}) as w:
        await w.app.poll_all_once()
        key = (TROUBLE, "us-east-1")
        for _ in range(4):
            await w.step(10)
        assert [d.failure_reasons[0].code for d in w.app.store[key].details.values()] == [
            "ManifestReadFailed"
        ]
        for _ in range(6):
            await w.step(10)
        assert "Failed" not in w.tracked(*key).values()
        assert w.app.store[key].details == {}


def test_query_parameters_are_checked() -> None:
    params = {"status": "Failed, Active", "attention": "true", "per_page": "10", "order": "desc"}
    q = JobQuery.from_params(params, lambda name: [params[name]] if name in params else [])
    assert (q.statuses, q.attention, q.per_page, q.descending) == (
        frozenset({"Failed", "Active"}),
        True,
        10,
        True,
    )
    with pytest.raises(QueryError, match="attention"):
        JobQuery.from_params({"attention": "maybe"}, lambda name: [])


# --- In a real browser ---------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make sysdeps` installs it (Debian package chromium)")
        pytest.skip("chromium is not installed (make sysdeps installs it); CI runs this test")
    return path


async def browse(profile: Path, *args: str, limit: float = 90.0) -> bytes:
    """Headless Chromium, awaited: the page it loads is served by this same loop.

    ``profile`` is a new, empty directory (Chromium creates it).
    """
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


async def test_chromium_renders_the_demo_page_and_its_filters(tmp_path: Path) -> None:
    chromium()
    async with demo_world() as (_w, base):
        dom = (await browse(tmp_path / "p1", "--dump-dom", f"{base}/?refresh=0")).decode()
        assert MANIFEST_REASON in dom  # the DOM holds text, not entities
        assert "STALLED (no task progress)" in dom
        assert re.search(r"<td[^>]*>DOWN</td>", dom)
        # Chromium parsed a form whose selects offer what the fleet has.
        assert f"<option>{TROUBLE}</option>" in dom
        assert "<option>LambdaInvoke</option>" in dom
        filtered = (
            await browse(tmp_path / "p2", "--dump-dom", f"{base}/?refresh=0&status=Failed")
        ).decode()
        assert '<option selected="">Failed</option>' in filtered
        assert len(re.findall(r'<td class="st st-Failed">Failed', filtered)) == 2
        assert "st-Active" not in filtered

        shots = []
        for name, size in (("status-page.png", "1280,1500"), ("status-page-phone.png", "390,844")):
            path = tmp_path / name
            await browse(
                tmp_path / f"p-{name}",
                f"--screenshot={path}",
                f"--window-size={size}",
                "--hide-scrollbars",
                f"{base}/",  # as people open it (the 30 s reload does not come in time)
            )
            data = path.read_bytes()
            assert png_size(data) == tuple(int(n) for n in size.split(","))
            shots.append(path)
        if SCREENSHOTS:
            for path in shots:
                shutil.copy(path, Path(SCREENSHOTS) / path.name)


# --- The terminal views, in process (tests/test_cli.py runs them as commands) ----------


async def test_terminal_views_read_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    async with demo_world() as (_w, base):
        # The command blocks on urllib: in a thread, while this loop serves the API.
        plain = io.StringIO()
        assert await asyncio.to_thread(main, ["status", "--url", base], plain) == 1  # 444 down
        text = plain.getvalue()
        assert "NEEDS ATTENTION (5)" in text
        assert f"    reason: ManifestReadFailed: {MANIFEST_REASON}\n" in text
        assert "    report: s3://jobwatch-sim-reports/batch-reports\n" in text
        assert re.search(rf"^{DENIED}  us-east-1       NO   -  error=AccessDenied$", text, re.M)
        raw = io.StringIO()
        assert await asyncio.to_thread(main, ["status", "--url", base, "--json"], raw) == 1
        doc = json.loads(raw.getvalue())
        assert doc["attention"]["total"] == 5
        assert all(j["group"] == "running" for j in doc["running"]["jobs"])

        view = await asyncio.to_thread(fetch_view, base + "/")
        drawn = io.StringIO()
        render(view, drawn, terminal=True, width=160)
        shown = drawn.getvalue()
        assert "\x1b[" in shown
        assert "Needs attention (5)" in shown
        assert "ManifestReadFailed" in shown
        assert "DOWN" in shown
    assert await asyncio.to_thread(main, ["status", "--url", "ftp://example"], io.StringIO()) == 1
    assert "not an http(s) URL" in capsys.readouterr().err


async def test_status_sends_the_urls_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    password_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    auth = {"web": {"basic_auth": {"username": "ops", "password_hash": password_hash}}}
    async with running({"accounts": [{"id": "111111111111"}]}, auth) as w:
        port = await w.app.serve_http("127.0.0.1:0")
        await w.app.poll_all_once()
        out = io.StringIO()
        url = f"http://ops:s3cret@127.0.0.1:{port}"
        assert await asyncio.to_thread(main, ["status", "--url", url], out) == 0
        assert "111111111111  us-east-1       yes" in out.getvalue()
        wrong = f"http://ops:nope@127.0.0.1:{port}"
        assert await asyncio.to_thread(main, ["status", "--url", wrong], io.StringIO()) == 1
    assert "401" in capsys.readouterr().err


def test_external_url_must_be_an_address() -> None:
    for bad in ("jobwatch.example.com", "ftp://x", "https://x/?a=1", "https://x/#top"):
        with pytest.raises(ValidationError, match="expected an http:// or https:// address"):
            WebConfig.model_validate({"external_url": bad})
    web = WebConfig.model_validate({"external_url": "https://x.example/ops/"})
    assert web.external_url == "https://x.example/ops"
    assert web.status_page is True

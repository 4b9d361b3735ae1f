"""The HTTP server over real HTTP, and the exposition checked by promtool."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess

import aiohttp
import pytest

from tests.helpers import running

A = "111111111111"
SCENARIO = {
    "accounts": [
        {
            "id": A,
            "regions": ["us-east-1", "eu-west-1"],
            "jobs": [
                {"id": "copy-job-1", "tasks": 100_000, "rate": 10, "region": "us-east-1"},
                {
                    "id": "tag-job-1",
                    "tasks": 10,
                    "rate": 10,
                    "region": "eu-west-1",
                    "description": 'quote " backslash \\ newline \n',
                },
            ],
        }
    ]
}
LABELS = {"defaults": {"labels": {"team": "storage"}}}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run `make sysdeps` (Debian package prometheus)")
    return path


async def test_endpoints_and_exposition() -> None:
    async with running(SCENARIO, LABELS) as w:
        port = await w.app.serve_http("127.0.0.1:0")
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503  # no poll yet
                assert A in await r.text()
            await w.app.poll_all_once()
            await w.step(30)
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.text()
            async with http.head(f"{base}/metrics") as r:
                assert r.status == 200
            async with http.post(f"{base}/metrics") as r:
                assert r.status == 405
            async with http.get(f"{base}/debug") as r:
                assert r.status == 404
            async with http.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}) as r:
                assert r.headers.get("Content-Encoding") == "gzip"
                assert "s3batch_jobs" in await r.text()  # decompressed by the client
    assert (
        's3batch_job_status{aws_account_id="111111111111",aws_region="us-east-1",'
        'job_id="copy-job-1",status="Active",team="storage"} 1.0' in text
    )
    up = 'jobwatch_target_up{aws_account_id="111111111111",aws_region="eu-west-1",team="storage"}'
    assert f"{up} 1.0" in text
    assert "jobwatch_build_info{" in text
    # Every documented family is present.
    for family in (
        "s3batch_job_info",
        "s3batch_job_tasks",
        "s3batch_job_tasks_succeeded",
        "s3batch_job_tasks_failed",
        "s3batch_job_task_failure_ratio",
        "s3batch_job_active_seconds",
        "s3batch_job_created_timestamp_seconds",
        "s3batch_job_terminated_timestamp_seconds",
        "s3batch_job_status_since_timestamp_seconds",
        "s3batch_job_last_progress_timestamp_seconds",
        "s3batch_job_stalled",
        "s3batch_job_status_overdue",
        "s3batch_jobs",
        "jobwatch_target_last_success_timestamp_seconds",
        "jobwatch_target_poll_duration_seconds",
        "jobwatch_target_consecutive_failures",
        "jobwatch_target_polls_total",
        "jobwatch_target_poll_overruns_total",
        "jobwatch_api_requests_total",
        "jobwatch_events_total",
        "jobwatch_unknown_values_total",
        "jobwatch_targets",
        "jobwatch_poll_duration_seconds_bucket",
    ):
        assert f"\n{family}{{" in text or f"\n{family} " in text, family
    check = await asyncio.to_thread(
        subprocess.run,
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "", check.stdout  # no lint findings either


async def test_jobs_leave_the_exposition_when_untracked() -> None:
    async with running(SCENARIO, {"terminal_retention": "60s"}) as w:
        await w.app.poll_all_once()
        labels = {"aws_account_id": A, "aws_region": "eu-west-1", "job_id": "tag-job-1"}
        await w.step(30)  # tag-job-1 completes quickly
        assert w.sample("s3batch_job_status", **labels, status="Complete") == 1
        assert w.sample("s3batch_job_terminated_timestamp_seconds", **labels) is not None
        await w.step(120)
        assert w.sample("s3batch_job_status", **labels, status="Complete") is None
        assert w.sample("s3batch_job_tasks", **labels) is None
        assert (
            w.sample("s3batch_jobs", aws_account_id=A, aws_region="eu-west-1", status="Complete")
            == 0
        )
        assert len(w.sink.of("job_aged_out", "tag-job-1")) == 1


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, br", False),
        ("identity", False),
        ("gzip;q=0, identity", False),  # matched as a substring, this used to be gzipped
        ("gzip; q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0.001", True),
        ("gzip;q=0.5, identity", False),  # identity weighs more
        ("gzip;q=0.5, identity;q=0.4", True),
        ("identity, gzip", True),  # equal weights: the smaller body
        ("*", True),
        ("*;q=0", False),
        ("*;q=0.5, identity", False),
        ("*, gzip;q=0", False),
        ("identity;q=0, *", True),
        ("gzip;q=2", False),  # not a qvalue: the element is ignored
        ("gzip;q=abc, identity", False),
        ("gzip;level=1", True),  # other parameters do not change the weight
        (" , gzip ,", True),
    ],
)
async def test_metrics_content_encoding_follows_the_accept_encoding_weights(
    header: str | None, gzipped: bool
) -> None:
    async with running(SCENARIO, LABELS) as w:
        await w.app.poll_all_once()
        port = await w.app.serve_http("127.0.0.1:0")
        headers = {} if header is None else {"Accept-Encoding": header}
        # skip_auto_headers: aiohttp would otherwise send its own Accept-Encoding.
        async with (
            aiohttp.ClientSession(
                skip_auto_headers=["Accept-Encoding"], auto_decompress=False
            ) as http,
            http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as r,
        ):
            assert r.status == 200
            body = await r.read()
            encoding = r.headers.get("Content-Encoding")
    if gzipped:
        assert encoding == "gzip"
        assert body[:2] == b"\x1f\x8b"
        assert b"s3batch_jobs" in gzip.decompress(body)
    else:
        assert encoding is None
        assert b"\n# TYPE s3batch_jobs gauge\n" in body

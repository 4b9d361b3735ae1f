"""The status page and its API over 10,000 jobs: render time, and the event loop's lag.

Run: ``.venv/bin/python bench/status_page.py`` (about half a minute;
``--jobs N`` for another fleet size, ``--json`` for a machine-readable line).

A store holds ``--jobs`` jobs on 20 targets (a few failed with DescribeJob's
detail, a few stalled, the rest running or complete). The real HTTP app serves it
on loopback; a probe task sleeps 1 ms at a time on the same loop and records how
late it wakes (LAG) and how much CPU the thread spent meanwhile (HELD: the
longest the loop was held, without the time the OS gave to other processes on a
shared machine). S4's bound, judged on HELD: 50 ms. Each request is made
``--repeat`` times; the table gives the median and worst wall time of a response.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import aiohttp
from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from jobwatch.diff import TrackedJob
from jobwatch.http import create_http_app
from jobwatch.model import FailureReason, Job, JobDetail, ReportLocation, Target
from jobwatch.serve import gc_tuned
from jobwatch.state import Store

NOW = 1_767_225_600.0
LAG_BOUND = 0.050
PATHS = (
    "/",
    "/?per_page=1000",
    "/?sort=progress&order=desc&q=tagging",
    "/api/v1/jobs",
    "/api/v1/jobs?per_page=1000",
    "/api/v1/jobs?sort=time_in_status&status=Active&q=copy",
    "/api/v1/targets",
)


def build_store(jobs: int, targets: int = 20, seed: int = 1) -> Store:
    rng = random.Random(seed)
    all_targets = [Target(f"{100000000000 + n:012d}", "us-east-1") for n in range(targets)]
    store = Store(all_targets)
    operations = ("S3PutObjectTagging", "S3PutObjectCopy", "LambdaInvoke")
    for i, target in enumerate(all_targets):
        snapshot: dict[str, TrackedJob] = {}
        details: list[JobDetail] = []
        for n in range(jobs // targets):
            total = rng.randrange(1_000, 1_000_000)
            done = rng.randrange(0, total)
            roll = rng.random()
            status = "Failed" if roll < 0.01 else "Complete" if roll < 0.3 else "Active"
            job = Job.make(
                f"job-{i:02d}-{n:06d}",
                status,
                operations[n % len(operations)],
                description=f"{operations[n % 3]} batch {n} of a tagging and copy campaign",
                creation_time=NOW - rng.randrange(60, 86_400),
                termination_time=NOW - 30 if status in ("Failed", "Complete") else None,
                tasks_total=total,
                tasks_succeeded=done,
                tasks_failed=done // 50,
            )
            snapshot[job.job_id] = TrackedJob(
                job,
                first_seen=NOW - 3600,
                status_since=NOW - rng.randrange(1, 3600),
                last_progress_at=NOW - 10,
                stalled=status == "Active" and roll > 0.99,
            )
            if status == "Failed":
                details.append(
                    JobDetail(
                        job,
                        (FailureReason("ManifestReadFailed", "Access Denied on the manifest"),),
                        report=ReportLocation("arn:aws:s3:::reports", "batch", True, "AllTasks"),
                    )
                )
        store.record_success(target.key, snapshot, NOW, full=True)
        store.remember_details(target.key, details)
    return store


async def probe(stop: asyncio.Event, lags: list[float], held: list[float]) -> None:
    """Wake every millisecond; record how late (wall clock) and how much CPU this thread
    spent meanwhile (what held the loop, without the time the OS ran other processes)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked, cpu = loop.time(), time.thread_time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - asked - 0.001)
        held.append(time.thread_time() - cpu)


async def run(store: Store, jobs: int, repeat: int) -> dict[str, Any]:
    app = create_http_app(store, CollectorRegistry(), clock=lambda: NOW)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    results: dict[str, Any] = {"jobs": jobs, "paths": {}}
    try:
        async with aiohttp.ClientSession() as http:
            # The probe alone first: what the machine itself adds (other processes).
            idle: list[float] = []
            stop = asyncio.Event()
            task = asyncio.create_task(probe(stop, idle, []))
            await asyncio.sleep(1.0)
            stop.set()
            await task
            results["idle_max_loop_lag_s"] = max(idle)
            for path in PATHS:
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:  # warm-up
                    await r.read()
                lags: list[float] = []
                held: list[float] = []
                stop = asyncio.Event()
                task = asyncio.create_task(probe(stop, lags, held))
                times, size = [], 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                        assert r.status == 200, await r.text()
                        size = len(await r.read())
                    times.append(time.perf_counter() - started)
                stop.set()
                await task
                results["paths"][path] = {
                    "median_s": statistics.median(times),
                    "worst_s": max(times),
                    "bytes": size,
                    "max_loop_lag_s": max(lags),
                    "p99_loop_lag_s": statistics.quantiles(lags, n=100, method="inclusive")[98],
                    "max_loop_held_cpu_s": max(held),
                }
    finally:
        await runner.cleanup()
    paths = results["paths"].values()
    results["max_loop_lag_s"] = max(p["max_loop_lag_s"] for p in paths)
    results["max_loop_held_cpu_s"] = max(p["max_loop_held_cpu_s"] for p in paths)
    results["lag_bound_s"] = LAG_BOUND
    # Judged on CPU held: on a shared machine the wall-clock lag also counts the time
    # the OS gave the CPU to other processes (the idle probe shows how much).
    results["within_bound"] = results["max_loop_held_cpu_s"] <= LAG_BOUND
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:>6.1f}ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # As the daemon runs (jobwatch.serve): start-up objects frozen, rarer full collections.
    store = build_store(args.jobs)
    with gc_tuned():
        result = asyncio.run(run(store, args.jobs, args.repeat))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['jobs']} jobs; loop lag bound {LAG_BOUND * 1000:.0f} ms; "
            f"idle loop's worst lag {result['idle_max_loop_lag_s'] * 1000:.1f} ms"
        )
        print(
            f"{'PATH':<54} {'MEDIAN':>8} {'WORST':>8} {'BYTES':>8} "
            f"{'LAG p99':>8} {'LAG MAX':>8} {'HELD':>8}"
        )
        for path, p in result["paths"].items():
            print(
                f"{path:<54} {ms(p['median_s'])} {ms(p['worst_s'])} {p['bytes']:>8} "
                f"{ms(p['p99_loop_lag_s'])} {ms(p['max_loop_lag_s'])} "
                f"{ms(p['max_loop_held_cpu_s'])}"
            )
        verdict = "within" if result["within_bound"] else "OVER"
        print(
            f"longest hold of the loop (CPU) {ms(result['max_loop_held_cpu_s'])}: {verdict} "
            f"the {LAG_BOUND * 1000:.0f} ms bound; wall-clock lag at most "
            f"{ms(result['max_loop_lag_s'])}"
        )
    return 0 if result["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak: a compressed-time run of a fleet with faults (issue 5).

The simulator runs in its own process on a driven clock; jobwatch runs here on
its own driven clock, both advanced together one interval per cycle, so 24 hours
of a 200-target fleet take minutes. New jobs start every simulated hour (some
fail, some stall and resume, some wait for confirmation); throttles and errors
are injected at random. At the end: every job's reported transitions form an
unbroken chain ending at the simulator's truth (nothing lost), no event id
appears twice (nothing repeated), and resident memory, asyncio tasks and open
file descriptors after warm-up are compared with the end.

    .venv/bin/python bench/soak.py                   # 200 targets, 24 h, 5 min interval
    .venv/bin/python bench/soak.py --targets 40 --hours 6
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import AioSession

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.events import EventRecord

REGION = "us-east-1"
_SIM = """
import asyncio, sys
from jobwatch.clock import ManualClock
from jobwatch.simulator import generate_fleet, run_simulator
scenario = generate_fleet(int(sys.argv[2]), ["us-east-1"], 3, seed=11, terminal_share=0.3)
asyncio.run(run_simulator(sys.argv[1], scenario, ManualClock()))
"""


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class ChainSink:
    """Keeps only what the lost/duplicated check needs, not whole events."""

    ids: list[str] = field(default_factory=list)
    chains: dict[tuple[str, str], list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    first: dict[tuple[str, str], str] = field(default_factory=dict)

    def emit(self, event: EventRecord) -> None:
        d = event.to_dict()
        self.ids.append(d["event_id"])
        key = (d["aws_account_id"], d["job_id"])
        if d["event"] == "job_status_changed":
            self.chains[key].append((d["previous_status"], d["status"]))
        elif d["event"] == "job_discovered":
            self.first.setdefault(key, d["status"])


@dataclass
class SoakResult:
    targets: int
    hours: float
    cycles: int
    polls: int
    failed_polls: int
    events: int
    transitions: int
    lost: int
    duplicated: int
    rss_warm_mib: float
    rss_end_mib: float
    tasks_warm: int
    tasks_end: int
    fds_warm: int
    fds_end: int
    wall_seconds: float
    rss_by_hour_mib: list[float] = field(default_factory=list)
    tracked_jobs_by_hour: list[int] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def soak(targets: int, hours: float, interval: float, seed: int = 5) -> SoakResult:
    rng = random.Random(seed)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="soak", AWS_SECRET_ACCESS_KEY="soak")
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SIM,
        f"127.0.0.1:{port}",
        str(targets),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    accounts = [f"{100000000000 + i}" for i in range(targets)]
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{url}/_sim/clock") as r:
                        origin = (await r.json())["now"]
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("simulator did not start")
            for fault in (
                {"kind": "throttle", "probability": 0.05},
                {"kind": "internal_error", "probability": 0.02},
                {"kind": "malformed_xml", "probability": 0.005},
            ):
                async with http.post(f"{url}/_sim/faults", json=fault) as r:
                    r.raise_for_status()
            clock = ManualClock(origin)
            cfg = Config.model_validate(
                {
                    "endpoint_url": url,
                    "interval": interval,
                    "jitter": 0,
                    "resync_interval": interval * 6,
                    "timeout": "10s",
                    # No retries: a failed poll is simply retried next interval,
                    # and the run never sleeps in a backoff.
                    "retry": {"mode": "standard", "max_attempts": 1},
                    "terminal_retention": "1h",
                    "stall": {"no_progress": "20m"},
                    "targets": [{"account_id": a, "regions": [REGION]} for a in accounts],
                }
            )
            sink = ChainSink()
            session = AioSession()
            session.set_credentials("soak", "soak")  # only ever sent to the simulator
            cycles = int(hours * 3600 / interval)
            warm = cycles // 6
            rss_warm = tasks_warm = fds_warm = 0.0
            rss_by_hour: list[float] = []
            tracked_by_hour: list[int] = []
            async with App(cfg, clock=clock, sinks=[sink], session=session) as app:
                await app.poll_all_once()
                for jid, t in _tracked(app).items():
                    sink.first.setdefault(jid, t)
                for cycle in range(1, cycles + 1):
                    if cycle % max(1, int(3600 / interval)) == 0:
                        await _start_jobs(http, url, accounts, rng)
                    async with http.post(
                        f"{url}/_sim/clock/advance", json={"seconds": interval}
                    ) as r:
                        r.raise_for_status()
                    clock.advance(interval)
                    await app.poll_all_once()
                    for jid, status in _tracked(app).items():
                        sink.first.setdefault(jid, status)
                    if cycle % max(1, int(3600 / interval)) == 0:
                        rss_by_hour.append(round(_rss_mib(), 1))
                        tracked_by_hour.append(
                            sum(len(ts.jobs or ()) for ts in app.store.targets.values())
                        )
                    if cycle == warm:
                        rss_warm, tasks_warm, fds_warm = (
                            _rss_mib(),
                            len(asyncio.all_tasks()),
                            _fds(),
                        )
                # A last poll with the faults lifted, so every target is current.
                async with http.delete(f"{url}/_sim/faults") as r:
                    r.raise_for_status()
                clock.advance(interval)
                async with http.post(f"{url}/_sim/clock/advance", json={"seconds": interval}) as r:
                    r.raise_for_status()
                await app.poll_all_once()
                truth = await _truth(http, url)
                polls = sum(sum(ts.polls.values()) for ts in app.store.targets.values())
                failed = sum(ts.polls["failure"] for ts in app.store.targets.values())
                rss_end, tasks_end, fds_end = _rss_mib(), len(asyncio.all_tasks()), _fds()
    finally:
        sim.terminate()
        await asyncio.wait_for(sim.wait(), 10)

    if failed >= polls:
        raise RuntimeError("every poll failed: the run measured nothing")
    lost = 0
    for key, first in sink.first.items():
        chain = sink.chains.get(key, [])
        last = chain[-1][1] if chain else first
        broken = any(a[1] != b[0] for a, b in itertools.pairwise(chain))
        if chain and chain[0][0] != first:
            broken = True
        if broken or (key in truth and truth[key] != last):
            lost += 1
    return SoakResult(
        targets=targets,
        hours=hours,
        cycles=cycles,
        polls=polls,
        failed_polls=failed,
        events=len(sink.ids),
        transitions=sum(len(c) for c in sink.chains.values()),
        lost=lost,
        duplicated=len(sink.ids) - len(set(sink.ids)),
        rss_warm_mib=round(rss_warm, 1),
        rss_end_mib=round(rss_end, 1),
        tasks_warm=int(tasks_warm),
        tasks_end=tasks_end,
        fds_warm=int(fds_warm),
        fds_end=fds_end,
        wall_seconds=round(time.monotonic() - started, 1),
        rss_by_hour_mib=rss_by_hour,
        tracked_jobs_by_hour=tracked_by_hour,
    )


def _tracked(app: App) -> dict[tuple[str, str], str]:
    out = {}
    for (account, _), ts in app.store.targets.items():
        for jid, t in (ts.jobs or {}).items():
            out[(account, jid)] = t.job.status
    return out


async def _truth(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], str]:
    async with http.get(f"{url}/_sim/jobs", params={"region": REGION}) as r:
        jobs = (await r.json())["jobs"]
    return {(j["account_id"], j["job_id"]): j["status"] for j in jobs}


async def _start_jobs(
    http: aiohttp.ClientSession, url: str, accounts: list[str], rng: random.Random
) -> None:
    for account in accounts:
        spec: dict[str, Any] = {"tasks": 3000, "rate": rng.uniform(0.5, 3.0)}
        roll = rng.random()
        if roll < 0.2:
            spec["timeline"] = [{"at": "20m", "action": "fail", "reason": "soak failure"}]
        elif roll < 0.3:
            spec["timeline"] = [
                {"at": "10m", "action": "stall"},
                {"at": "50m", "action": "resume"},
            ]
        elif roll < 0.4:
            spec["confirmation_required"] = True
            spec["timeline"] = [{"at": "2h", "action": "confirm"}]
        async with http.post(
            f"{url}/_sim/jobs", json={"account": account, "region": REGION, **spec}
        ) as r:
            r.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(soak(args.targets, args.hours, args.interval))
    doc = json.dumps(result.__dict__)
    print(doc)
    out = args.json or Path(tempfile.gettempdir()) / "jobwatch-soak.json"
    out.write_text(doc + "\n")


if __name__ == "__main__":
    from jobwatch.log import configure_logging

    configure_logging("error", "json")
    main()

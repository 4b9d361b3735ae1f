"""How many 1,000-job ListJobs pages per second the simulator serves on one core.

Run: ``.venv/bin/python bench/bench_simulator.py`` (about 15 s; options: ``--help``).

The simulator runs in a child process pinned to one CPU, under the system
clock (so Active jobs are re-evaluated and re-rendered on every request, as in
``jobwatch sim``), serving a generated fleet. The load generator runs in this
process, pinned to another CPU when there is one, and is deliberately light:
raw aiohttp with a SigV4-shaped header and no XML parsing, so it is not the
bottleneck (botocore parsing a 1,000-job page costs 60-250 ms, far more than
serving it). It walks the listing with ``nextToken`` the way a poller does and
starts over at the end. It prints pages per second (wall) and pages per
CPU-second of the server process, plus the command line, and stops by itself.

Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

AUTH = (
    "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)
_TOKEN = re.compile(rb"<NextToken>([^<]+)</NextToken>")


def _pin(cpu: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except (AttributeError, OSError):  # not Linux: run unpinned
        pass


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def _serve(jobs: int, terminal_share: float, clock_kind: str) -> None:
    from jobwatch.clock import ManualClock, SystemClock
    from jobwatch.simulator import Simulator, SimulatorServer, generate_fleet

    scenario = generate_fleet(1, ["us-east-1"], jobs, seed=1, terminal_share=terminal_share)
    clock = SystemClock() if clock_kind == "system" else ManualClock()
    sim = Simulator(scenario, clock)
    async with SimulatorServer(sim, "127.0.0.1", 0) as server:
        print(server.port, flush=True)
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _load(port: int, seconds: float, concurrency: int) -> tuple[int, int, float]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v20180820/jobs"
    headers = {"Authorization": AUTH, "x-amz-account-id": "100000000000"}
    pages = 0
    sizes = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal pages, sizes
        token: bytes | None = None
        while time.monotonic() < deadline:
            params = {"maxResults": "1000"}
            if token is not None:
                params["nextToken"] = token.decode()
            async with session.get(url, params=params, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
            found = _TOKEN.search(body, len(body) - 2000 if len(body) > 2000 else 0)
            found = found or _TOKEN.search(body)
            token = found.group(1) if found else None
            pages += 1
            sizes += len(body)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # One warm-up page per worker so the first render of each job is not timed.
        async with session.get(url, params={"maxResults": "1000"}, headers=headers) as r:
            await r.read()
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return pages, sizes, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the one target")
    parser.add_argument("--terminal-share", type=float, default=0.7)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel connections")
    parser.add_argument("--clock", choices=["system", "manual"], default="system")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        _pin(0)
        asyncio.run(_serve(args.jobs, args.terminal_share, args.clock))
        return 0

    _pin(1)
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--jobs",
            str(args.jobs),
            "--terminal-share",
            str(args.terminal_share),
            "--clock",
            args.clock,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        cpu_before = _cpu_seconds(child.pid)
        pages, size, elapsed = asyncio.run(_load(port, args.seconds, args.concurrency))
        cpu = _cpu_seconds(child.pid) - cpu_before
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    command = "python bench/bench_simulator.py " + " ".join(sys.argv[1:])
    print(f"command: {command.strip()}")
    print(
        f"fleet: 1 target, {args.jobs} jobs ({args.terminal_share:.0%} terminal), "
        f"{args.clock} clock; {args.concurrency} connections for {elapsed:.1f} s"
    )
    print(f"pages served: {pages} ({size / max(pages, 1) / 1000:.0f} kB each)")
    print(f"RESULT: {pages / elapsed:.0f} pages/s of 1,000 jobs on one server core")
    print(
        f"server CPU: {cpu:.2f} s -> {pages / cpu if cpu else 0:.0f} pages per CPU-second, "
        f"{1000 * cpu / max(pages, 1):.2f} ms CPU per page"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

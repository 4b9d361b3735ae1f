"""jobwatch's benchmark harness: jobwatch against the alternatives, scenarios S1-S8.

Run: ``make bench`` (``.venv/bin/python bench/run.py``, a few minutes) or
``.venv/bin/python bench/run.py --quick`` (a smoke run, about a minute,
no goals judged). ``--only S1,S5`` runs some scenarios; ``--help`` lists the
options.

The S3 Control simulator runs as a separate process on loopback (pinned to the
first CPU); every measurement runs in a fresh worker process (pinned to the
second) and reports CPU seconds from its own accounting. Side by side, on the
same pages:

(a) the floor: ``xml.etree.ElementTree.fromstring`` of the same bodies;
(b) plain aiobotocore: a NextToken loop with default settings;
(c) a sequential boto3 loop over every target (what a team writes without jobwatch);
(d) jobwatch through its real code path (App, TargetPoller, S3ControlJobSource).

Machines are shared and noisy, so the goals are judged on ratios measured in
the same run. Results go to ``bench/results/<timestamp>.json`` (and
``latest.json``); the table is printed. docs/performance.md explains it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

RESULTS = h.BENCH_DIR / "results"
MiB = 2**20


# --------------------------------------------------------------------------- roles


def role_sim(spec: Mapping[str, Any]) -> int:
    """Serve a generated fleet until stdin closes; print the port first."""
    import gc

    from jobwatch.clock import ManualClock
    from jobwatch.simulator import Simulator, SimulatorServer

    h.pin(h.SIM_CPU)
    scenario = h.build_fleet(spec)
    # A manual clock that never moves: every run lists the same pages, and a
    # job's status only changes when a benchmark says so.
    sim = Simulator(scenario, ManualClock(h.EPOCH))
    gc.collect()
    gc.freeze()

    async def serve() -> None:
        async with SimulatorServer(sim, "127.0.0.1", 0) as server:
            print(server.port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())
    return 0


def role_probe(spec: Mapping[str, Any]) -> int:
    """Scrape each of ``paths`` (path -> seconds between scrapes) until stdin closes."""
    import aiohttp

    h.pin(h.SIM_CPU)

    async def probe() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        eof = loop.run_in_executor(None, sys.stdin.read)
        eof.add_done_callback(lambda _: stop.set())
        paths: dict[str, float] = spec["paths"]
        out: dict[str, Any] = {
            p: {"latencies": [], "errors": 0, "bytes": 0, "wire_bytes": 0} for p in paths
        }
        # Prometheus asks for gzip; so does this scraper (unless told not to).
        headers = {"Accept-Encoding": "gzip" if spec.get("gzip", True) else "identity"}
        timeout = aiohttp.ClientTimeout(total=30)

        async def scrape(session: aiohttp.ClientSession, path: str, every: float) -> None:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    async with session.get(spec["url"] + path, headers=headers) as resp:
                        body = await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok, body = False, b""
                took = time.perf_counter() - started
                if ok:
                    out[path]["latencies"].append(took)
                    if len(body) > out[path]["wire_bytes"]:  # the largest, after the clock stopped
                        gzipped = resp.headers.get("Content-Encoding") == "gzip"
                        out[path]["wire_bytes"] = len(body)
                        out[path]["bytes"] = len(gzip.decompress(body) if gzipped else body)
                else:
                    out[path]["errors"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)

        # The body as sent: gunzipping it is the scraper's work, not jobwatch's
        # (on the simulator's busy core it added up to 15 ms to a /metrics scrape).
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            await asyncio.gather(*(scrape(session, p, every) for p, every in paths.items()))
        await eof
        return out

    result = asyncio.run(probe())
    for stats in result.values():
        lat = stats.pop("latencies")
        stats.update(
            count=len(lat),
            p50=h.percentile(lat, 0.5),
            p99=h.percentile(lat, 0.99),
            max=max(lat, default=0.0),
        )
    print(json.dumps(result), flush=True)
    return 0


def role_worker(spec_path: str) -> int:
    import _workers

    h.pin(h.WORKER_CPU)
    spec = json.loads(Path(spec_path).read_text())
    result = _workers.KINDS[spec["kind"]](spec)
    Path(spec_path.replace(".spec.json", ".out.json")).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- scenarios


class Run:
    """One benchmark run: its parameters, work directory and collected results."""

    def __init__(self, quick: bool, workdir: Path) -> None:
        self.quick = quick
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.scenarios: dict[str, dict[str, Any]] = {}

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def worker(self, kind: str, params: Mapping[str, Any], timeout: float = 600) -> Any:
        return h.run_worker(kind, params, self.workdir, timeout)

    def sim(self, fleet: Mapping[str, Any]) -> h.SimProcess:
        return h.SimProcess(fleet, self.workdir / "simulator.log")


def _goal(name: str, value: float, op: str, target: float, unit: str = "") -> dict[str, Any]:
    holds = value <= target if op == "<=" else value >= target if op == ">=" else value < target
    return {"goal": name, "value": value, "op": op, "target": target, "unit": unit, "holds": holds}


def _steady(cycles: Sequence[Mapping[str, Any]], kind: str, skip_first: bool = True) -> list[Any]:
    chosen = [c for c in cycles if c["kind"] == kind]
    return chosen[1:] if skip_first and len(chosen) > 1 else chosen


def s1_s4(run: Run) -> None:
    """S1 throughput and, on the same simulator, S4 responsiveness."""
    fleet = run.size(
        {"accounts": 10, "regions": 2, "jobs": 5000, "terminal_share": 0.98},
        {"accounts": 2, "regions": 2, "jobs": 1000, "terminal_share": 0.98},
    )
    targets = h.fleet_targets(fleet)
    with run.sim(fleet) as sim:
        base = {"url": sim.url, "targets": targets}
        floor = run.worker("floor", {**base, "repeats": run.size(5, 2)})
        plain = run.worker("aiobotocore", {**base, "passes": run.size(2, 1)})
        boto_targets = targets[: run.size(4, 1)]
        boto = run.worker("boto3", {**base, "targets": boto_targets})
        plan = [{"kind": "full", "name": "baseline"}] + [{"kind": "full"}] * run.size(6, 1)
        jw = run.worker("jobwatch", {**base, "plan": plan, "floor": True})
        s4_plan = [{"kind": "full", "name": "baseline"}] + [{"kind": "full"}] * run.size(6, 1)
        s4 = run.worker(
            "jobwatch",
            {
                **base,
                "plan": s4_plan,
                # Scraped far more often than any Prometheus would (every 15-60 s),
                # to have enough samples: /metrics every 0.3 s, /healthz every 50 ms.
                "http": {"paths": {"/metrics": 0.3, "/healthz": 0.05}},
            },
        )
    # Rates from the best (least CPU) of the repetitions: on a shared machine
    # noise only ever adds time.
    jobs = floor["jobs"]
    floor_rate = jobs / floor["cpu"]["elementtree"]
    plain_rate = max(p["jobs"] / p["cpu"] for p in plain["passes"])
    boto_rate = max(p["jobs"] / p["cpu"] for p in boto["passes"])
    steady = _steady(jw["cycles"], "full")
    jw_rate = jobs / min(c["cpu"] for c in steady)
    # The goal's ratio: the floor timed in the same process, next to each cycle.
    floor_ratio = min(c["cpu"] for c in steady) / min(c["floor_cpu"] for c in steady)
    baseline_rate = jobs / jw["cycles"][0]["cpu"]
    parse_rates = {k: jobs / v for k, v in floor["cpu"].items()}
    run.scenarios["S1"] = {
        "title": f"throughput: {len(targets)} targets x {fleet['jobs']:,} jobs",
        "fleet": fleet,
        "jobs": jobs,
        "pages": floor["pages"],
        "bytes_per_job": floor["bytes"] / jobs,
        "jobs_per_cpu_second": {
            "(a) ElementTree floor": floor_rate,
            "(b) aiobotocore, defaults": plain_rate,
            f"(c) boto3, sequential ({len(boto_targets)} targets)": boto_rate,
            "(d) jobwatch, full listing": jw_rate,
            "(d) jobwatch, first poll (baseline)": baseline_rate,
        },
        "parse_only_jobs_per_cpu_second": parse_rates,
        "floor_ratio_per_cycle": [c["cpu"] / c["floor_cpu"] for c in steady],
        "tracked_jobs": jw["cycles"][-1]["tracked"],
        "raw": {"floor": floor, "aiobotocore": plain, "boto3": boto, "jobwatch": jw},
        "goals": [
            _goal("jobwatch / aiobotocore, jobs per CPU-s", jw_rate / plain_rate, ">=", 4.0, "x"),
            _goal("ElementTree floor / jobwatch, jobs per CPU-s", floor_ratio, "<=", 2.0, "x"),
        ],
    }
    scrapes = s4["scrapes"]
    lag = s4["loop_lag"]
    cb = s4["callbacks"]
    run.scenarios["S4"] = {
        "title": "responsiveness: scrapes and loop lag while S1 runs",
        "cycles": len(s4["cycles"]),
        "tracked_jobs": s4["cycles"][-1]["tracked"],
        "metrics_bytes": scrapes["/metrics"]["bytes"],
        "idle_metrics_seconds": s4["idle_metrics_seconds"],
        "scrapes": scrapes,
        "loop_lag": lag,
        "callbacks": s4["callbacks"],
        "gc": s4["gc"],
        "raw": s4,
        "goals": [
            _goal("/metrics p99", scrapes["/metrics"]["p99"] * 1000, "<", 100, "ms"),
            _goal("/healthz p99", scrapes["/healthz"]["p99"] * 1000, "<", 100, "ms"),
            _goal("longest event-loop block (one callback)", cb["max"] * 1000, "<", 50, "ms"),
            _goal("loop lag (probe), max", lag["max"] * 1000, "<", 50, "ms"),
        ],
    }


def s2(run: Run) -> None:
    fleet = run.size(
        {"accounts": 50, "regions": 2, "jobs": 5000, "terminal_share": 1.0, "extra_active": 20},
        {"accounts": 2, "regions": 2, "jobs": 1000, "terminal_share": 1.0, "extra_active": 20},
    )
    targets = h.fleet_targets(fleet)
    plan = [
        {"kind": "full", "name": "baseline"},
        {"kind": "incremental"},
        {"kind": "incremental"},
        {"kind": "full", "name": "resync"},
        {"kind": "incremental"},
        {"kind": "incremental"},
    ]
    with run.sim(fleet) as sim:
        jw = run.worker("jobwatch", {"url": sim.url, "targets": targets, "plan": plan})
    cycles = jw["cycles"]
    full = min(c["cpu"] for c in _steady(cycles, "full"))
    inc = min(c["cpu"] for c in cycles if c["kind"] == "incremental")
    run.scenarios["S2"] = {
        "title": (
            f"history: {len(targets)} targets x ({fleet['jobs']:,} terminal + "
            f"{fleet['extra_active']} active)"
        ),
        "fleet": fleet,
        "full_listing_cpu": full,
        "incremental_cycle_cpu": inc,
        "baseline_cpu": cycles[0]["cpu"],
        "requests": {c["name"]: c["requests"] for c in cycles},
        "raw": jw,
        "goals": [_goal("incremental cycle / full listing, CPU", inc / full, "<=", 1 / 20, "")],
    }


async def _sim_faults(url: str, latency: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{url}/_sim/faults") as resp:
            resp.raise_for_status()
        async with session.post(
            f"{url}/_sim/faults", json={"kind": "latency", "seconds": latency}
        ) as resp:
            resp.raise_for_status()


def s3(run: Run) -> None:
    fleet = run.size(
        {"accounts": 1000, "regions": 2, "jobs": 10, "terminal_share": 0.5},
        {"accounts": 100, "regions": 2, "jobs": 10, "terminal_share": 0.5},
    )
    latency = 0.1
    concurrency = 32
    targets = h.fleet_targets(fleet)
    plan = [
        {"kind": "full", "name": "baseline"},
        {"kind": "incremental", "name": "no latency"},
        {"kind": "incremental", "name": "no latency"},
        {"kind": "incremental", "name": "latency", "latency": latency},
        {"kind": "incremental", "name": "latency"},
    ]
    boto_targets = targets[: run.size(100, 20)]
    with run.sim(fleet) as sim:
        jw = run.worker(
            "jobwatch",
            {
                "url": sim.url,
                "targets": targets,
                "plan": plan,
                "config": {"concurrency": concurrency},
            },
        )
        asyncio.run(_sim_faults(sim.url, latency))
        # The same calls an incremental cycle makes: the running jobs, then the
        # recently ended ones (a second, small listing), one target after another.
        boto = run.worker("boto3", {"url": sim.url, "targets": boto_targets, "recent": True})
    cycles = jw["cycles"]
    cpu_back_to_back = h.median([c["cpu"] for c in cycles if c["name"] == "no latency"])
    wall_no_latency = h.median([c["wall"] for c in cycles if c["name"] == "no latency"])
    wall = h.median([c["wall"] for c in cycles if c["name"] == "latency"])
    # Requests of a latency cycle (the counts are cumulative): two per target since
    # incremental polls also list the recently ended jobs.
    calls = h.median(
        [
            c["requests"] - cycles[i - 1]["requests"]
            for i, c in enumerate(cycles)
            if c["name"] == "latency"
        ]
    )
    latency_bound = calls / concurrency * latency
    ideal = max(latency_bound, cpu_back_to_back)
    boto_wall = boto["passes"][0]["wall"] * len(targets) / len(boto_targets)
    run.scenarios["S3"] = {
        "title": f"fan-out: {len(targets):,} targets, {latency * 1000:.0f} ms per call",
        "fleet": fleet,
        "concurrency": concurrency,
        "latency_bound_seconds": latency_bound,
        "calls_per_cycle": calls,
        "cpu_back_to_back_seconds": cpu_back_to_back,
        "wall_no_latency_seconds": wall_no_latency,
        "ideal_seconds": ideal,
        "cycle_wall_seconds": wall,
        "boto3": {
            "targets_measured": len(boto_targets),
            "wall_measured": boto["passes"][0]["wall"],
            "wall_extrapolated": boto_wall,
        },
        "raw": {"jobwatch": jw, "boto3": boto},
        "goals": [
            _goal("cycle wall / ideal", wall / ideal, "<=", 1.3, "x"),
            _goal("boto3 sequential / jobwatch, wall", boto_wall / wall, ">=", 20.0, "x"),
        ],
    }


def s5(run: Run) -> None:
    series = run.size(100_000, 10_000)
    accounts, regions = 10, 2
    # The synthetic mix has 2 ended jobs in 12: 12 + 2/12 series per job.
    per_target = math.ceil(series / (12 + 2 / 12) / (accounts * regions))
    targets = h.fleet_targets({"accounts": accounts, "regions": regions})
    result = run.worker(
        "render",
        {
            "url": "http://127.0.0.1:9",  # never contacted: nothing is polled
            "targets": targets,
            "jobs_per_target": per_target,
            "repeats": run.size(5, 2),
            "config": {"defaults": {"labels": {"team": "storage"}}},
        },
    )
    rendered = result.get("jobwatch_cpu", result["prometheus_client_cpu"])
    goals = [
        _goal("/metrics render / direct writing", rendered / result["direct_cpu"], "<=", 2.0, "x"),
        _goal(
            "byte-identical to prometheus_client",
            1.0 if result.get("jobwatch_identical") else 0.0,
            ">=",
            1.0,
        ),
    ]
    run.scenarios["S5"] = {
        "title": f"scrape: {result['series_per_job']:,} per-job series",
        "jobs": per_target * len(targets),
        **result,
        "goals": goals,
    }


def s6(run: Run) -> None:
    fleet = run.size(
        {"accounts": 1000, "regions": 2, "jobs": 0}, {"accounts": 100, "regions": 2, "jobs": 0}
    )
    targets = h.fleet_targets(fleet)
    with run.sim(fleet) as sim:
        start = run.worker("startup", {"url": sim.url, "targets": targets})
        # The default jitter (5 s) spreads the first polls on purpose; without it
        # the time is jobwatch's own.
        start_now = run.worker(
            "startup", {"url": sim.url, "targets": targets, "overrides": {"jitter": 0}}
        )
    mem_fleet = run.size(
        {"accounts": 50, "regions": 2, "jobs": 1000, "terminal_share": 0.0},
        {"accounts": 5, "regions": 2, "jobs": 1000, "terminal_share": 0.0},
    )
    with run.sim(mem_fleet) as sim:
        mem = run.worker("memory", {"url": sim.url, "targets": h.fleet_targets(mem_fleet)})
    run.scenarios["S6"] = {
        "title": (f"memory: {len(targets):,} idle targets; {mem['tracked']:,} tracked jobs"),
        "startup": start,
        "startup_no_jitter": start_now,
        "memory": mem,
        "goals": [
            _goal(
                "resident memory, idle targets polled once",
                start["rss_bytes"] / MiB,
                "<",
                150,
                "MiB",
            ),
            _goal("retained bytes per tracked job", mem["retained_per_job"], "<", 700, "B"),
            _goal("targets started (all polled once)", start["ready_seconds"], "<", 10, "s"),
            _goal("targets started, jitter off", start_now["ready_seconds"], "<", 3, "s"),
        ],
    }


def s8(run: Run) -> None:
    """S8: 100,000 per-job series scraped every 5 s while S1's listings run."""
    # S1's fleet with 7% of the jobs running: about 8,000 tracked jobs.
    fleet = run.size(
        {"accounts": 10, "regions": 2, "jobs": 5000, "terminal_share": 0.93},
        {"accounts": 2, "regions": 2, "jobs": 1000, "terminal_share": 0.93},
    )
    targets = h.fleet_targets(fleet)
    plan = [{"kind": "full", "name": "baseline"}] + [{"kind": "full"}] * run.size(30, 2)
    with run.sim(fleet) as sim:
        result = run.worker(
            "jobwatch",
            {
                "url": sim.url,
                "targets": targets,
                "plan": plan,
                # A Prometheus scraping every 5 s; /healthz as a kubelet would, more often.
                "http": {"paths": {"/metrics": 5.0, "/healthz": 0.05}},
                "scrape_cpu": True,
            },
        )
    scrapes = result["scrapes"]
    cpu = result["scrape_cpu"]
    run.scenarios["S8"] = {
        "title": f"scrape at scale: {cpu['series']:,} series every 5 s while listings run",
        "fleet": fleet,
        "cycles": len(result["cycles"]),
        "tracked_jobs": result["cycles"][-1]["tracked"],
        "series": cpu["series"],
        "metrics_bytes": cpu["bytes"],
        "scrape_cpu": cpu,
        "idle_metrics_seconds": result["idle_metrics_seconds"],
        "scrapes": scrapes,
        "loop_lag": result["loop_lag"],
        "callbacks": result["callbacks"],
        "gc": result["gc"],
        "raw": result,
        "goals": [
            _goal("/metrics p99", scrapes["/metrics"]["p99"] * 1000, "<", 250, "ms"),
            _goal("/healthz p99", scrapes["/healthz"]["p99"] * 1000, "<", 100, "ms"),
            _goal(
                "longest event-loop block (one callback)",
                result["callbacks"]["max"] * 1000,
                "<",
                50,
                "ms",
            ),
        ],
    }


def s7(run: Run) -> None:
    """The daemon with ``state_file`` on: S4's bounds and S6's memory, 100,000 tracked jobs."""
    fleet = run.size(
        {"accounts": 1000, "regions": 2, "jobs": 50, "terminal_share": 0.0},
        {"accounts": 100, "regions": 2, "jobs": 50, "terminal_share": 0.0},
    )
    targets = h.fleet_targets(fleet)
    base = {
        "targets": targets,
        "seconds": run.size(60, 12),
        "config": {"interval": "20s"},
        # /healthz every 50 ms as in S4 (a liveness probe would come every 10 s).
        "http": {"paths": {"/healthz": 0.05}},
    }
    with run.sim(fleet) as sim:
        on = run.worker("daemon", {**base, "url": sim.url, "state_file": True})
        off = run.worker("daemon", {**base, "url": sim.url, "state_file": False})
    hz, cb = on["scrapes"]["/healthz"], on["callbacks"]
    # The committer's own longest callback (comparing, encoding, its slices): what
    # the state file adds to the loop, apart from the polls and the machine's noise.
    committer = max((v for k, v in cb["by_name"].items() if "Committer" in k), default=0.0)
    run.scenarios["S7"] = {
        "title": f"state file: {len(targets):,} targets, {on['tracked']:,} tracked jobs",
        "fleet": fleet,
        "with_state_file": on,
        "without_state_file": off,
        "goals": [
            _goal("/healthz p99, state_file on", hz["p99"] * 1000, "<", 100, "ms"),
            _goal("longest event-loop block (one callback)", cb["max"] * 1000, "<", 50, "ms"),
            _goal("longest callback of the state committer", committer * 1000, "<", 50, "ms"),
            _goal(
                "/healthz p99, state_file on / off",
                hz["p99"] / max(off["scrapes"]["/healthz"]["p99"], 1e-9),
                "<=",
                1.5,
                "x",
            ),
            _goal(
                "resident memory, state_file on / off",
                on["rss_bytes"] / off["rss_bytes"],
                "<=",
                1.1,
                "x",
            ),
            # S6's bounds together: 150 MiB for 2,000 targets, 700 B per tracked job.
            _goal(
                "resident memory, state_file on",
                on["rss_bytes"] / MiB,
                "<",
                150 + on["tracked"] * 700 / MiB,
                "MiB",
            ),
            _goal(
                "state writes in steady polls (nothing changed)",
                on["writes"]["steady_writes"],
                "<=",
                0,
                "",
            ),
        ],
    }


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "S1": s1_s4,  # S4 runs on S1's simulator
    "S2": s2,
    "S3": s3,
    "S5": s5,
    "S6": s6,
    "S7": s7,
    "S8": s8,
}


# --------------------------------------------------------------------------- report


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("ms", "MiB", "B", "s"):
        return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if 0 < abs(value) < 0.1:
        return f"{value:.4f}" + (f" (1/{1 / value:.0f})" if value else "")
    return f"{value:,.2f}"


def table(result: Mapping[str, Any]) -> str:
    lines = ["| | scenario | measure | result | goal | holds |", "|---|---|---|---|---|---|"]
    for name in sorted(result["scenarios"]):
        sc = result["scenarios"][name]
        for i, g in enumerate(sc["goals"]):
            target = _fmt(g["target"], g["unit"])
            holds = "yes" if g["holds"] else "**no**"
            if result["quick"]:
                holds = "(quick)"
            label = name if i == 0 else ""
            title = sc["title"] if i == 0 else ""
            value = _fmt(g["value"], g["unit"])
            if g["goal"].startswith("byte-identical"):
                value, target = ("yes" if g["value"] else "no"), "yes"
            lines.append(
                f"| {label} | {title} | {g['goal']} | {value} | {g['op']} {target} | {holds} |"
            )
    return "\n".join(lines)


def details(result: Mapping[str, Any]) -> str:
    sc = result["scenarios"]
    out = []
    if "S1" in sc:
        out.append("S1 jobs per CPU-second (same pages):")
        for k, v in sc["S1"]["jobs_per_cpu_second"].items():
            out.append(f"  {k:44s} {v:>10,.0f}")
        out.append("  parse only (no HTTP), same bodies:")
        for k, v in sc["S1"]["parse_only_jobs_per_cpu_second"].items():
            out.append(f"    {k:42s} {v:>10,.0f}")
    if "S2" in sc:
        s = sc["S2"]
        out.append(
            f"S2 CPU: full listing {s['full_listing_cpu']:.3f} s, incremental cycle "
            f"{s['incremental_cycle_cpu']:.3f} s, baseline {s['baseline_cpu']:.3f} s"
        )
    if "S3" in sc:
        s = sc["S3"]
        out.append(
            f"S3: latency bound {s['latency_bound_seconds']:.2f} s, CPU back to back "
            f"{s['cpu_back_to_back_seconds']:.2f} s -> ideal {s['ideal_seconds']:.2f} s; "
            f"cycle {s['cycle_wall_seconds']:.2f} s; boto3 {s['boto3']['wall_measured']:.1f} s "
            f"for {s['boto3']['targets_measured']} targets -> "
            f"{s['boto3']['wall_extrapolated']:.0f} s extrapolated"
        )
    if "S4" in sc:
        s = sc["S4"]
        m, hz, lag = s["scrapes"]["/metrics"], s["scrapes"]["/healthz"], s["loop_lag"]
        out.append(
            f"S4: {s['tracked_jobs']:,} tracked jobs, /metrics {m['bytes'] / 1e6:.1f} MB "
            f"({m['wire_bytes'] / 1e6:.1f} MB gzipped) p50 {m['p50'] * 1000:.0f} ms "
            f"p99 {m['p99'] * 1000:.0f} ms "
            f"({m['count']} scrapes; {s['idle_metrics_seconds'] * 1000:.0f} ms with no polls "
            f"running); /healthz p99 {hz['p99'] * 1000:.0f} ms; loop lag max "
            f"{lag['max'] * 1000:.0f} ms, p99 {lag['p99'] * 1000:.1f} ms; longest single "
            f"callback {s['callbacks']['max'] * 1000:.0f} ms "
            f"({', '.join(c['callback'] for c in s['callbacks']['top'][:3])}; the most CPU "
            f"in one {s['callbacks']['max_cpu'] * 1000:.0f} ms); "
            f"{s['gc']['full_collections']} full collections, longest "
            f"{s['gc']['longest_full'] * 1000:.0f} ms "
            f"({s['gc']['longest_full_cpu'] * 1000:.0f} ms CPU)"
        )
    if "S5" in sc:
        s = sc["S5"]
        fast = s.get("jobwatch_cpu")
        out.append(
            f"S5: {s['jobs']:,} jobs, {s['bytes'] / 1e6:.1f} MB; prometheus_client "
            f"{s['prometheus_client_cpu']:.3f} s, direct {s['direct_cpu']:.3f} s "
            f"(identical: {s['direct_identical']})"
            + (f", jobwatch {fast:.3f} s" if fast is not None else "")
            + f"; GET /metrics (gzip) {s['http_wall']:.3f} s"
        )
    if "S6" in sc:
        st, mem = sc["S6"]["startup"], sc["S6"]["memory"]
        out.append(
            f"S6: {st['targets']:,} targets ready in {st['ready_seconds']:.1f} s "
            f"(jitter {st['jitter']:g} s, {st['cpu_seconds']:.1f} CPU-s), RSS "
            f"{st['rss_bytes'] / MiB:.0f} MiB; {mem['tracked']:,} jobs retain "
            f"{mem['retained_per_job']:.0f} B each (RSS delta {mem['rss_delta_per_job']:.0f} B/job)"
        )
        now = sc["S6"].get("startup_no_jitter")
        if now is not None:
            out.append(
                f"    jitter off: ready in {now['ready_seconds']:.2f} s "
                f"({now['cpu_seconds']:.2f} CPU-s): "
                + "; ".join(
                    f"{p['phase']} {p['wall']:.2f} s ({p['cpu']:.2f} CPU-s)" for p in now["phases"]
                )
            )
    if "S7" in sc:
        for label, key in (("on", "with_state_file"), ("off", "without_state_file")):
            d = sc["S7"][key]
            hz = d["scrapes"]["/healthz"]
            out.append(
                f"S7 state_file {label}: {d['tracked']:,} jobs, {d['polls']:,} polls in "
                f"{d['seconds']} s, {d['cpu_seconds']:.1f} CPU-s; /healthz p50 "
                f"{hz['p50'] * 1000:.1f} ms p99 {hz['p99'] * 1000:.1f} ms max "
                f"{hz['max'] * 1000:.0f} ms ({hz['count']} probes); loop lag max "
                f"{d['loop_lag']['max'] * 1000:.0f} ms p99 {d['loop_lag']['p99'] * 1000:.1f} ms; "
                f"longest callback {d['callbacks']['max'] * 1000:.0f} ms "
                f"({', '.join(c['callback'] for c in d['callbacks']['top'][:3])}); "
                f"RSS {d['rss_bytes'] / MiB:.0f} MiB"
            )
        by_name = sc["S7"]["with_state_file"]["callbacks"]["by_name"]
        out.append(
            "S7 longest callbacks over 20 ms, state_file on: "
            + ", ".join(f"{k[:40]} {v * 1000:.0f} ms" for k, v in list(by_name.items())[:6])
        )
        w = sc["S7"]["with_state_file"]["writes"]
        enc = sc["S7"]["with_state_file"]["whole_file_encode"]
        out.append(
            f"S7 writes: {w['appends']} appends (largest {w['largest_append'] / 1e6:.2f} MB), "
            f"{w['rewrites']} rewrites (largest {w['largest_rewrite'] / 1e6:.1f} MB), "
            f"{w['bytes'] / 1e6:.1f} MB in all, {w['failures']} failures; steady state "
            f"{w['steady_writes']} writes for {w['steady_polls']:,} polls; file "
            f"{w['file_bytes'] / 1e6:.1f} MB; the whole file encoded once (each write "
            f"before): {enc['cpu']:.2f} CPU-s, {enc['bytes'] / 1e6:.1f} MB"
        )
    if "S8" in sc:
        s = sc["S8"]
        m, hz, cpu = s["scrapes"]["/metrics"], s["scrapes"]["/healthz"], s["scrape_cpu"]
        out.append(
            f"S8: {s['tracked_jobs']:,} tracked jobs, {s['series']:,} series, "
            f"{s['metrics_bytes'] / 1e6:.1f} MB; /metrics p50 {m['p50'] * 1000:.0f} ms "
            f"p99 {m['p99'] * 1000:.0f} ms max {m['max'] * 1000:.0f} ms ({m['count']} scrapes, "
            f"{s['cycles']} full listings; {s['idle_metrics_seconds'] * 1000:.0f} ms idle); "
            f"/healthz p99 {hz['p99'] * 1000:.0f} ms; longest callback "
            f"{s['callbacks']['max'] * 1000:.0f} ms "
            f"({', '.join(c['callback'] for c in s['callbacks']['top'][:3])}; the most CPU "
            f"in one {s['callbacks']['max_cpu'] * 1000:.0f} ms); "
            f"{s['gc']['full_collections']} full collections, longest "
            f"{s['gc']['longest_full'] * 1000:.0f} ms "
            f"({s['gc']['longest_full_cpu'] * 1000:.0f} ms CPU); CPU per scrape (gzip) "
            f"{cpu['warm']['cpu'] * 1000:.0f} ms kept lines, {cpu['cold']['cpu'] * 1000:.0f} ms "
            f"all written = {cpu['warm']['cpu_per_series'] * 1e6:.2f} / "
            f"{cpu['cold']['cpu_per_series'] * 1e6:.2f} us per series"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no goals judged")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. S1,S5")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: results/)")
    parser.add_argument("--role", choices=["sim", "worker", "probe"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "sim":
        return role_sim(json.loads(args.spec))
    if args.role == "probe":
        return role_probe(json.loads(args.spec))
    if args.role == "worker":
        return role_worker(args.spec)

    wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    if "S4" in wanted and "S1" not in wanted:
        wanted.append("S1")
    names = [n for n in SCENARIOS if not wanted or n in wanted]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = RESULTS / f"{stamp}{'-quick' if args.quick else ''}"
    if args.out is not None:
        # Specs, logs and raw outputs of the workers go next to the result file.
        workdir = args.out.parent / f"{args.out.stem}-work"
    run = Run(args.quick, workdir)
    command = "bench/run.py " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"{name} ...", end=" ", flush=True)
        SCENARIOS[name](run)
        print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    result = {
        "version": 1,
        "started": stamp,
        "command": command.strip(),
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "machine": h.machine(),
        "scenarios": run.scenarios,
    }
    result["all_goals_hold"] = all(g["holds"] for sc in run.scenarios.values() for g in sc["goals"])
    out = args.out or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, sort_keys=False)
    out.write_text(text)
    if args.out is None:
        (RESULTS / ("latest-quick.json" if args.quick else "latest.json")).write_text(text)
    m = result["machine"]
    print(f"\ncommand: {result['command']}")
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}")
    print(table(result))
    print()
    print(details(result))
    print(f"\nresults: {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

"""Restart without loss or duplication: SIGKILL jobwatch fifty times while jobs move.

The simulator runs as its own process on the wall clock, so jobs keep changing
while jobwatch is dead. Afterwards every job's reported transitions must form
one unbroken chain ending at the simulator's truth, with no transition twice.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import child_env, free_port, jobwatch, wait_port

ACCOUNT = "111111111111"
REGIONS = ["us-east-1", "eu-west-1"]
KILLS = 50


def scenario() -> str:
    jobs = []
    for i in range(40):
        start = 2 * i
        job: dict[str, Any] = {
            "id": f"restart-job-{i:02d}",
            "region": REGIONS[i % 2],
            "created_at": f"{start}s",
            "tasks": 50 + 10 * (i % 5),
            "rate": 10,
        }
        if i % 4 == 1:
            job["timeline"] = [{"at": f"{start + 8}s", "action": "fail", "reason": f"r{i}"}]
        elif i % 5 == 2:
            job["timeline"] = [{"at": f"{start + 8}s", "action": "cancel"}]
        elif i % 7 == 3:
            job["confirmation_required"] = True
            job["timeline"] = [{"at": f"{start + 10}s", "action": "confirm"}]
        jobs.append(job)
    return json.dumps(
        {"name": "restarts", "accounts": [{"id": ACCOUNT, "regions": REGIONS, "jobs": jobs}]}
    )


def truth(sim_url: str) -> dict[str, str]:
    out = {}
    for region in REGIONS:
        url = f"{sim_url}/_sim/jobs?account={ACCOUNT}&region={region}"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            for job in json.load(r)["jobs"]:
                out[job["job_id"]] = job["status"]
    return out


@pytest.mark.slow
def test_fifty_sigkills_lose_and_repeat_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    scen = tmp_path / "scenario.yaml"
    scen.write_text(scenario())
    sim_port = free_port()
    sim = subprocess.Popen(
        jobwatch("sim", "--listen", f"127.0.0.1:{sim_port}", "--scenario", str(scen)),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sim_url = f"http://127.0.0.1:{sim_port}"
    cfg = tmp_path / "jobwatch.yaml"
    cfg.write_text(
        "\n".join(
            [
                f"endpoint_url: {sim_url}",
                "listen: '127.0.0.1:0'",
                "interval: 200ms",
                "jitter: 50ms",
                "resync_interval: 3s",
                "timeout: 2s",
                f"state_file: {tmp_path / 'state' / 'jobwatch.json'}",
                "terminal_retention: 1h",
                "stall: {no_progress: 1h}",
                "targets:",
                f"  - account_id: '{ACCOUNT}'",
                f"    regions: [{', '.join(REGIONS)}]",
            ]
        )
        + "\n"
    )
    lines: list[str] = []
    started = time.monotonic()
    try:
        wait_port(sim_port, sim)  # type: ignore[arg-type]
        for _ in range(KILLS):
            proc = subprocess.Popen(
                jobwatch("run", "-c", str(cfg)),
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(rng.uniform(0.6, 2.2))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
            lines += out.splitlines()
        # Let every job end, then one clean run to catch up and stop.
        while time.monotonic() - started < 110:
            time.sleep(1)
        proc = subprocess.Popen(
            jobwatch("run", "-c", str(cfg)),
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(4)
        final = truth(sim_url)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        lines += out.splitlines()
    finally:
        sim.terminate()
        sim.wait(timeout=10)

    events = [json.loads(line) for line in lines if line.startswith('{"timestamp"')]
    changes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    failed: dict[str, int] = defaultdict(int)
    ids: list[str] = []
    for e in events:
        if "job_id" not in e:
            continue
        ids.append(e["event_id"])
        if e["event"] == "job_status_changed":
            changes[e["job_id"]].append((e["previous_status"], e["status"]))
        elif e["event"] == "job_failed":
            failed[e["job_id"]] += 1
    assert all(s in ("Complete", "Failed", "Cancelled") for s in final.values()), final
    duplicated = len(ids) - len(set(ids))
    lost = []
    for jid, status in final.items():
        chain = changes.get(jid, [])
        for (_, before), (after_prev, _) in itertools.pairwise(chain):
            if before != after_prev:
                lost.append((jid, chain))
        if chain and chain[-1][1] != status:
            lost.append((jid, chain))
        if len(set(chain)) != len(chain):
            duplicated += 1
    # Each failed job reported failed exactly once.
    for jid, status in final.items():
        if status == "Failed":
            assert failed[jid] == 1, (jid, failed[jid], changes[jid])
    assert lost == []
    assert duplicated == 0
    # Jobs created after the first start were seen moving: the chains are real.
    assert sum(len(c) for c in changes.values()) > 100
    transitions = sum(len(c) for c in changes.values())
    print(f"kills={KILLS} events={len(ids)} transitions={transitions} lost=0 duplicated=0")

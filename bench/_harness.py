"""Plumbing shared by the benchmark roles: processes, pinning, accounting, fleets.

Every measurement runs in a fresh child process (``run.py --role worker``) so
that its CPU seconds come from that process's own accounting
(:func:`time.process_time`, :func:`resource.getrusage`) and nothing left over
from an earlier measurement (heap, caches, clients) colours the next one. The
simulator is another child (``--role sim``), pinned to the first CPU; workers
are pinned to the second. Only loopback is used, with dummy credentials and
every AWS configuration source switched off.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RUN_PY = BENCH_DIR / "run.py"
#: Authorization header shaped like SigV4 so the simulator finds the region in it.
AUTH = (
    "AWS4-HMAC-SHA256 Credential=bench/20260101/{region}/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)
#: The simulator's and jobwatch's clock start (2026-01-01T00:00:00Z), so ages agree.
EPOCH = 1_767_225_600.0
SIM_CPU = 0
WORKER_CPU = 1


def child_env() -> dict[str, str]:
    """The environment for every child: dummy keys, no AWS config, no metadata service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONHASHSEED="0",
    )
    return env


def pin(cpu: int) -> None:
    """Pin this process to one CPU (of those it may use); no-op where unsupported."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except (AttributeError, OSError):
        pass


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Span:
    """CPU and wall seconds of one measured section."""

    cpu: float = 0.0
    wall: float = 0.0


@contextmanager
def measure() -> Iterator[Span]:
    span = Span()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        yield span
    finally:
        span.cpu = time.process_time() - cpu0
        span.wall = time.perf_counter() - wall0


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("jobwatch", "aiobotocore", "botocore", "boto3", "aiohttp", "prometheus-client"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "?"
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    return {
        "cpu": model or platform.processor() or "?",
        "cpus": usable,
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


# --------------------------------------------------------------------------- fleets


def build_fleet(spec: Mapping[str, Any]) -> Any:
    """A simulator scenario from a small JSON-able spec.

    ``{"accounts", "regions", "jobs", "terminal_share", "seed"}`` as for
    :func:`jobwatch.simulator.generate_fleet`, plus ``"extra_active"``: that many
    more Active jobs per target, added to the same accounts (S2's "5,000
    terminal and 20 active" exactly, rather than a random share).
    """
    from jobwatch.simulator import generate_fleet

    fleet = generate_fleet(
        spec["accounts"],
        spec["regions"],
        spec["jobs"],
        seed=spec.get("seed", 1),
        terminal_share=spec.get("terminal_share", 0.0),
    )
    extra = int(spec.get("extra_active", 0))
    if not extra:
        return fleet
    active = generate_fleet(
        spec["accounts"], spec["regions"], extra, seed=spec.get("seed", 1) + 1, terminal_share=0.0
    )
    accounts = [
        a.model_copy(update={"jobs": [*a.jobs, *b.jobs]})
        for a, b in zip(fleet.accounts, active.accounts, strict=True)
    ]
    return fleet.model_copy(update={"accounts": accounts})


def fleet_targets(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(account, region)`` targets of a fleet spec, in config order."""
    from jobwatch.simulator import FLEET_REGIONS, fleet_account_id

    regions = spec["regions"]
    names = list(FLEET_REGIONS[:regions]) if isinstance(regions, int) else list(regions)
    return [(fleet_account_id(a), r) for a in range(spec["accounts"]) for r in names]


# --------------------------------------------------------------------------- children


class SimProcess:
    """The simulator in a child process on loopback, pinned to :data:`SIM_CPU`."""

    def __init__(self, fleet: Mapping[str, Any], log: Path) -> None:
        self.fleet = dict(fleet)
        self._log = log
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SimProcess:
        log = self._log.open("a")
        self._proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--role", "sim", "--spec", json.dumps(self.fleet)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=child_env(),
        )
        log.close()
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__()
            raise RuntimeError(f"simulator did not start (see {self._log})")
        self.url = f"http://127.0.0.1:{int(line)}"
        return self

    def cpu_seconds(self) -> float:
        assert self._proc is not None
        return process_cpu_seconds(self._proc.pid)

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def run_worker(kind: str, params: Mapping[str, Any], workdir: Path, timeout: float) -> Any:
    """Run one measurement in a fresh worker process; returns its JSON result."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("*.spec.json")))
    stem = workdir / f"{n:02d}-{kind}"
    spec_path = stem.with_suffix(".spec.json")
    out_path = stem.with_suffix(".out.json")
    spec_path.write_text(json.dumps({"kind": kind, **params}))
    with stem.with_suffix(".log").open("w") as log:
        proc = subprocess.run(
            [sys.executable, str(RUN_PY), "--role", "worker", "--spec", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0 or not out_path.exists():
        tail = stem.with_suffix(".log").read_text()[-2000:]
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}):\n{tail}")
    return json.loads(out_path.read_text())


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

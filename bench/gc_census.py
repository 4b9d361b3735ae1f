"""What each full garbage collection walks while S1's listings run, scraped as in S4.

Run: ``.venv/bin/python bench/gc_census.py`` (about half a minute; ``--quick`` for
a small fleet, ``--cycles N`` for more full listings).

S4's longest event-loop blocks were full collections inside a poll's step; their
cost follows the number of objects the collector tracks at that moment. This
runs S1's fleet (20 targets x 5,000 jobs on the simulator) through jobwatch with
S4's scrapes and, at the start of every full collection, counts the tracked
objects by type (job dicts from parsed pages, ``Job``, ``TrackedJob``...), then
times the collection itself (CPU). The census walks every object, so the runs
here are slower than S4's; the collections' own times are comparable.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import _workers

FLEET = {"accounts": 10, "regions": 2, "jobs": 5000, "terminal_share": 0.98}
QUICK = {"accounts": 2, "regions": 2, "jobs": 2000, "terminal_share": 0.98}


class Census:
    """At each full collection: tracked objects by type, then the collection's CPU."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            objects = gc.get_objects()
            kinds = collections.Counter(_kind(o) for o in objects)
            self.rows.append({"tracked": len(objects), "kinds": kinds.most_common(4)})
            del objects
            self._started = time.thread_time()
        elif self.rows:
            self.rows[-1]["cpu"] = time.thread_time() - self._started


def _kind(obj: object) -> str:
    if type(obj) is dict and "JobId" in obj:
        return "job dict (parsed page)"
    return type(obj).__name__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small fleet")
    parser.add_argument("--cycles", type=int, default=4, help="full listings after the first")
    args = parser.parse_args()
    fleet = QUICK if args.quick else FLEET
    workdir = Path(tempfile.gettempdir())
    os.environ.clear()
    os.environ.update(h.child_env())
    census = Census()
    with h.SimProcess(fleet, workdir / "gc_census_simulator.log") as sim:
        h.pin(h.WORKER_CPU)
        spec = {
            "url": sim.url,
            "targets": h.fleet_targets(fleet),
            "http": {"paths": {"/metrics": 0.3, "/healthz": 0.05}},
            "plan": [{"kind": "full", "name": "baseline"}] + [{"kind": "full"}] * args.cycles,
        }
        gc.callbacks.append(census)
        try:
            result = _workers.jobwatch_cycles(spec)
        finally:
            gc.callbacks.remove(census)
    tracked_jobs = result["cycles"][-1]["tracked"]
    print(f"{len(result['cycles'])} full listings, {tracked_jobs:,} tracked jobs")
    print("| full collection | tracked objects | CPU | most tracked |")
    print("|---|---|---|---|")
    for n, row in enumerate(census.rows, 1):
        kinds = ", ".join(f"{k} {c:,}" for k, c in row["kinds"])
        print(f"| {n} | {row['tracked']:,} | {row.get('cpu', 0.0) * 1000:.1f} ms | {kinds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

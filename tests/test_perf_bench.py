"""The benchmark harness runs: ``bench/run.py --quick`` end to end, no goals judged.

Timings are not checked here (the goals live in the benchmark); this only
keeps the harness from rotting: every scenario runs and the result is JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert set(result["scenarios"]) == {"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}
    for scenario in result["scenarios"].values():
        assert scenario["goals"]
        for goal in scenario["goals"]:
            assert isinstance(goal["value"], int | float)
            assert goal["op"] in ("<", "<=", ">=")
            assert isinstance(goal["holds"], bool)
    assert result["machine"]["python"]
    # Each scenario measured something: a harness that renders or polls nothing
    # still "passes" its ratios.
    s5 = result["scenarios"]["S5"]
    assert s5["series_per_job"] > 0
    assert s5["bytes"] > 1000
    assert result["scenarios"]["S3"]["calls_per_cycle"] > 0
    assert "| S1 |" in proc.stdout  # the table was printed
    # Workers' specs and logs went next to the result, not into bench/results.
    assert any((tmp_path / "quick-work").glob("*.log"))

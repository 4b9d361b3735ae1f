"""A short soak (6 simulated hours of 40 targets with faults); bench/soak.py runs 24 h x 200."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "soak", Path(__file__).resolve().parents[1] / "bench" / "soak.py"
)
assert spec is not None
assert spec.loader is not None
soak = importlib.util.module_from_spec(spec)
sys.modules["soak"] = soak  # dataclasses look their module up there
spec.loader.exec_module(soak)


@pytest.mark.slow
async def test_six_hours_of_forty_targets_lose_and_repeat_nothing() -> None:
    r = await soak.soak(targets=40, hours=6, interval=300)
    assert r.failed_polls > 0  # faults really fired
    assert r.transitions > 100  # jobs really moved
    assert r.lost == 0
    assert r.duplicated == 0
    assert r.tasks_end == r.tasks_warm
    assert r.fds_end == r.fds_warm
    assert r.rss_end_mib - r.rss_warm_mib < 30

"""Fixtures for the deploy tests: rendered kustomize output, parsed rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from deploykit import (
    KUSTOMIZE_BASE,
    KUSTOMIZE_OVERLAY,
    Manifests,
    ProcessGroup,
    output_of,
    require_tool,
    run,
)


def render_kustomize(directory: Path) -> Manifests:
    """``kubectl kustomize DIR``, parsed; fails the test with kubectl's message."""
    kubectl = require_tool("kubectl")
    proc = run([kubectl, "kustomize", str(directory)])
    assert proc.returncode == 0, output_of(proc)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    assert docs, f"{directory} rendered nothing"
    return docs


@pytest.fixture(scope="session")
def base_manifests() -> Manifests:
    return render_kustomize(KUSTOMIZE_BASE)


@pytest.fixture(scope="session")
def overlay_manifests() -> Manifests:
    return render_kustomize(KUSTOMIZE_OVERLAY)


@pytest.fixture(scope="session", params=["base", "overlay"])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    name = "base_manifests" if request.param == "base" else "overlay_manifests"
    value: Manifests = request.getfixturevalue(name)
    return value


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Start child processes through this; all are stopped at teardown, and their
    last log lines are printed (pytest shows them when the test failed)."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop()
        if group.children:
            print(group.logs())

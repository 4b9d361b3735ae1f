"""The Grafana dashboard: well-formed, laid out, wired to its variables, and every
panel query valid PromQL (promtool checks them as recording rules) over metrics
that jobwatch documents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from deploykit import DASHBOARD, REPO, output_of, require_tool, run

# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "4m",
    "$__interval": "1m",
    "$__range": "24h",
    "$account": ".*",
    "$region": ".*",
    "$namespace": ".*",
    "$cluster": ".*",
    "$job": ".*",
}
# What the issue asks the dashboard to show, by panel title.
REQUIRED_TITLES = {
    "Jobs by status per account",
    "Failures over time",
    "Stalled jobs now",
    "Progress of active jobs",
    "Target health",
    "API requests",
    "Throttled requests",
}


def dashboard() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return value


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title + refId, expr) for every query of the dashboard."""
    found = [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            match = re.fullmatch(r"label_values\((.+), *\w+\)", query)
            assert match, query
            found.append((f"variable {var['name']}", match.group(1)))
    return found


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_metadata() -> None:
    d = dashboard()
    assert d["uid"] == "jobwatch-s3-batch"
    assert d["title"]
    assert isinstance(d["schemaVersion"], int)
    names = [v["name"] for v in d["templating"]["list"]]
    # The cluster variable comes with the mixin's showMultiCluster (tests/deploy/test_mixin.py).
    assert names == ["datasource", "namespace", "job", "account", "region"]


def test_panels_are_unique_laid_out_and_use_the_datasource_variable() -> None:
    all_panels = dashboard()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert p["description"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]


def test_shows_what_the_issue_asks_for() -> None:
    titles = {p["title"] for p in panels()}
    assert titles >= REQUIRED_TITLES, REQUIRED_TITLES - titles


def test_queries_respect_the_account_and_region_selectors() -> None:
    """Per-target series are filtered by the dashboard's variables."""
    for where, expr in queries():
        for metric in re.findall(
            r"\b((?:s3batch|jobwatch_target|jobwatch_api)_\w+)\{([^}]*)\}", expr
        ):
            name, matchers = metric
            if where.startswith("variable account"):
                continue
            assert 'aws_account_id=~"$account"' in matchers, f"{where}: {name}"
            assert 'aws_region=~"$region"' in matchers or where.startswith("variable"), where


def test_every_panel_honours_every_variable() -> None:
    """Whatever a panel shows, choosing an account, region, namespace or job narrows it:
    series without an account (jobwatch_build_info) are joined to the chosen targets."""
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable in ("$account", "$region", "$namespace", "$job"):
                assert variable in expr, f"{panel['title']} [{target['refId']}]: no {variable}"
            # And the jobwatch selector of the mixin's _config.
            assert 'job="jobwatch"' in expr, panel["title"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": substitute(expr)}
                    for n, (_, expr) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = run([require_tool("promtool"), "check", "rules", str(path)])
    assert proc.returncode == 0, output_of(proc)
    assert f"SUCCESS: {len(queries())} rules found" in proc.stdout, output_of(proc)


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above would notice a broken query."""
    path = tmp_path / "broken.yaml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (a (b)"}]}]}
        )
    )
    proc = run([require_tool("promtool"), "check", "rules", str(path)])
    assert proc.returncode != 0


def test_queries_use_only_documented_metrics() -> None:
    documented = set(
        re.findall(r"`((?:s3batch|jobwatch)_\w+)`", (REPO / "docs/metrics.md").read_text())
    )
    for where, expr in queries():
        for name in re.findall(r"\b((?:s3batch|jobwatch)_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in documented, f"{where}: {name} is not in docs/metrics.md"

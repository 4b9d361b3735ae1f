"""deploy/mixin, jobwatch's monitoring mixin: the files deploy/ ships are its output,
it is self-contained, every _config field reaches the output, and a customised
rendering (another selector, runbook address, severity, several clusters) is still
valid for promtool and wires the dashboard's variables."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploykit import DEPLOY, output_of, require_module, require_tool, run

MIXIN = DEPLOY / "mixin"


def generator() -> ModuleType:
    require_module("_jsonnet", "jsonnet")
    spec = importlib.util.spec_from_file_location("mixin_generate", MIXIN / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config() -> dict[str, Any]:
    import _jsonnet

    value: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet(str(MIXIN / "x.jsonnet"), "(import 'mixin.libsonnet')._config")
    )
    return value


def alert_rules(rendered: dict[Path, str]) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rendered[Path("prometheus/jobwatch-rules.yaml")])["groups"]
    return [r for g in groups for r in g["rules"]]


def test_shipped_files_are_the_mixins_output() -> None:
    stale = generator().stale()
    assert stale == [], f"{[str(p) for p in stale]} differ from deploy/mixin: run make mixin"


def test_check_notices_a_file_that_differs(tmp_path: Path) -> None:
    gen = generator()
    rendered = gen.render()
    assert len(rendered) == 3
    for rel, text in rendered.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert gen.main(["--check", "--root", str(tmp_path)]) == 0
    for rel in rendered:
        path = tmp_path / rel
        original = path.read_text()
        path.write_text(original.replace("5m", "6m", 1).replace('"refresh": "1m"', '"x": 1', 1))
        assert path.read_text() != original
        assert gen.main(["--check", "--root", str(tmp_path)]) == 1, rel
        path.write_text(original)


def test_mixin_has_the_conventional_fields_and_entry_files() -> None:
    import _jsonnet

    mixin = generator().evaluate()
    assert set(mixin) == {"alerts", "rules", "dashboards"}
    assert mixin["alerts"]["groups"]
    assert "groups" in mixin["rules"]
    assert set(mixin["dashboards"]) == {"jobwatch-dashboard.json"}
    for entry, field in (("alerts", "alerts"), ("rules", "rules"), ("dashboards", "dashboards")):
        value = json.loads(_jsonnet.evaluate_file(str(MIXIN / f"{entry}.jsonnet")))
        assert value == mixin[field], entry


def test_mixin_is_self_contained() -> None:
    """No jsonnet-bundler step: every import is a file of deploy/mixin."""
    assert not (MIXIN / "jsonnetfile.json").exists()
    assert not (MIXIN / "vendor").exists()
    for path in MIXIN.glob("*sonnet"):
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        for target in re.findall(r"import(?:str)?\s+'([^']+)'", code):
            assert "/" not in target, f"{path.name} imports {target}"
            assert (MIXIN / target).is_file(), f"{path.name} imports missing {target}"


def _override(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 3 + 7
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)([smhd])", value)
        if match:
            return f"{int(match.group(1)) * 3 + 7}{match.group(2)}"
        if key == "runbookURLPattern":
            return "https://runbooks.example/jobwatch#%s"
        return value + "-x" if key.startswith("dashboard") else 'job="other"'
    if isinstance(value, list):
        return [*value, "extra"]
    raise AssertionError(f"{key}: no override for {value!r}")


def test_every_config_field_reaches_the_output() -> None:
    """Nothing is left hard-coded beside a _config field that no longer drives it."""
    gen = generator()
    baseline = gen.evaluate()
    fields = config()
    severities = fields.pop("severities")
    for key, value in fields.items():
        if key == "clusterLabel":  # used only with showMultiCluster
            multi = {"showMultiCluster": True}
            before = gen.evaluate(config=json.dumps(multi))
            after = gen.evaluate(config=json.dumps({**multi, key: _override(key, value)}))
            assert after != before, f"_config.{key} changes nothing"
            continue
        changed = gen.evaluate(config=json.dumps({key: _override(key, value)}))
        assert changed != baseline, f"_config.{key} changes nothing"
    for alert_key, severity in severities.items():
        other = "info" if severity != "info" else "warning"
        override = json.dumps({"severities": {**severities, alert_key: other}})
        assert gen.evaluate(config=override) != baseline, f"severities.{alert_key}"


CUSTOM = """{
  jobwatchSelector: 'job="s3-jobwatch", env="prod"',
  runbookURLPattern: 'https://wiki.example.com/runbooks/jobwatch#%s',
  severities+: { jobFailed: 'warning' },
  pollsStaleSeconds: 1234,
  showMultiCluster: true,
  clusterLabel: 'k8s_cluster',
  statusPageURL: 'https://jobwatch.example.com/',
}"""


@pytest.fixture(scope="module")
def custom() -> dict[Path, str]:
    rendered: dict[Path, str] = generator().render(config=CUSTOM)
    return rendered


def test_customised_rules_use_the_selector_runbooks_and_severity(
    custom: dict[Path, str], tmp_path: Path
) -> None:
    rules = alert_rules(custom)
    for rule in rules:
        expr = rule["expr"]
        selectors = re.findall(r"\b((?:s3batch|jobwatch)_\w+|up)\{([^}]*)\}", expr)
        assert selectors, rule["alert"]
        for name, matchers in selectors:
            assert matchers.startswith('job="s3-jobwatch", env="prod"'), (rule["alert"], name)
        assert 'job="jobwatch"' not in expr
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://wiki.example.com/runbooks/jobwatch#{rule['alert'].lower()}"
        link = rule["annotations"].get("status_page_url")
        if rule["alert"].startswith("S3BatchJob"):
            # One job per alert: the page opens on it (what jobwatch's events link to).
            assert link == (
                "https://jobwatch.example.com/?account={{ $labels.aws_account_id | urlquery }}"
                "&region={{ $labels.aws_region | urlquery }}&job={{ $labels.job_id | urlquery }}"
            ), rule["alert"]
        else:
            assert link is None, rule["alert"]
    by_name = {r["alert"]: r for r in rules}
    assert by_name["S3BatchJobFailed"]["labels"]["severity"] == "warning"
    assert "> 1234" in by_name["JobwatchPollsStale"]["expr"]
    # Fleets are told apart per cluster too.
    for name in ("JobwatchAbsent", "JobwatchShardMissing", "JobwatchShardMismatch"):
        assert "by (namespace, job, k8s_cluster)" in by_name[name]["expr"], name
    path = tmp_path / "rules.yaml"
    path.write_text(custom[Path("prometheus/jobwatch-rules.yaml")])
    proc = run([require_tool("promtool"), "check", "rules", str(path)])
    assert proc.returncode == 0, output_of(proc)


def test_customised_dashboard_has_a_cluster_variable_every_query_honours(
    custom: dict[Path, str],
) -> None:
    dashboard = json.loads(custom[Path("grafana/jobwatch-dashboard.json")])
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "cluster", "namespace", "job", "account", "region"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert 'k8s_cluster=~"$cluster"' in target["expr"], panel["title"]
            assert 'job="s3-jobwatch", env="prod"' in target["expr"], panel["title"]


def test_mixin_renders_without_the_repository(tmp_path: Path) -> None:
    """A user vendors deploy/mixin alone (a copy, no jsonnet-bundler) and renders it."""
    gen = generator()
    copy = tmp_path / "jobwatch-mixin"
    shutil.copytree(MIXIN, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    assert gen.render(copy) == gen.render()

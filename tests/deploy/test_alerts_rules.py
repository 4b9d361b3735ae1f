"""The alert rules: promtool checks and unit tests, and the promises the rules make
(every alert located by account, region and job, with a severity and a runbook)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    REPO,
    RULE_TESTS_DIR,
    RULES_FILE,
    RUNBOOKS,
    output_of,
    require_tool,
    run,
)

REQUIRED_ALERTS = {
    "S3BatchJobFailed",
    "S3BatchJobStalled",
    "S3BatchJobHighTaskFailureRatio",
    "S3BatchJobAwaitingConfirmation",
    "S3BatchJobStuckInStatus",
    "JobwatchTargetDown",
    "JobwatchPollsStale",
    "JobwatchThrottled",
    "JobwatchAbsent",
    "JobwatchScrapeFailing",
    "JobwatchShardMismatch",
    "JobwatchShardMissing",
    "JobwatchDiscoveryFailing",
    "JobwatchPushConsumerDown",
    "JobwatchPushDeadLetters",
}
# Alerts about one job name the job; alerts about one target name the target.
JOB_ALERTS = {a for a in REQUIRED_ALERTS if a.startswith("S3BatchJob")}
# Alerts about jobwatch as a whole have no account or region to name.
PROCESS_ALERTS = {
    "JobwatchAbsent",
    "JobwatchScrapeFailing",
    "JobwatchUnknownValues",
    "JobwatchShardMismatch",
    "JobwatchShardMissing",
    "JobwatchDiscoveryFailing",
    "JobwatchPushConsumerDown",
    "JobwatchPushDeadLetters",
}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_BASE = "https://github.com/jobwatch/jobwatch/blob/main/docs/runbooks.md"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS_DIR.glob("*.test.yaml"))
    assert files, f"no promtool tests in {RULE_TESTS_DIR}"
    return files


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_promtool_check_rules() -> None:
    proc = run([require_tool("promtool"), "check", "rules", str(RULES_FILE)])
    assert proc.returncode == 0, output_of(proc)
    assert "SUCCESS" in proc.stdout, output_of(proc)


@pytest.mark.parametrize("path", rule_test_files(), ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    proc = run([require_tool("promtool"), "test", "rules", path.name], cwd=path.parent)
    assert proc.returncode == 0, output_of(proc)
    assert "SUCCESS" in proc.stdout


def test_required_alerts_exist_once() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_located_and_explained(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    text = annotations["summary"] + annotations["description"]
    if name not in PROCESS_ALERTS:
        assert "{{ $labels.aws_account_id }}" in annotations["description"], name
        assert "{{ $labels.aws_region }}" in annotations["description"], name
    if name in JOB_ALERTS:
        assert "{{ $labels.job_id }}" in annotations["description"], name
        assert "{{ $labels.job_id }}" in annotations["summary"], name
    assert "\n" not in text


def test_runbook_urls_point_at_existing_sections() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, url
        assert anchor == github_anchor(rule["alert"]), url
        assert anchor in anchors, f"docs/runbooks.md has no section for {rule['alert']}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires (with its annotations checked)
    and one where it must stay silent."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in rule_test_files():
        spec = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == [f"../{RULES_FILE.name}"]
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                (firing if expected else silent).add(check["alertname"])
                for alert in expected:
                    assert alert.get("exp_annotations"), f"{case['name']}: annotations unchecked"
    names = {r["alert"] for r in alert_rules()}
    assert firing >= names, f"never shown firing: {names - firing}"
    assert silent >= names, f"never shown silent: {names - silent}"


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        (
            "S3BatchJobFailed",
            's3batch_job_status{job="jobwatch", status="Failed"}',
            's3batch_job_status{job="jobwatch", status="Failing"}',
        ),
        # A missed scrape or a rollout would resolve it.
        ("S3BatchJobFailed", "keep_firing_for: 10m", "keep_firing_for: 1m"),
        # A rollout would make a second alert.
        ("S3BatchJobFailed", "max without (instance, pod)", "max without (pod)"),
        # A counter first scraped above zero would go unseen.
        ("JobwatchUnknownValues", "> 0 unless", "> 1e9 unless"),
        ("JobwatchPollOverruns", "> 0 unless", "> 1e9 unless"),
        # Back to one absence for all fleets.
        (
            "JobwatchAbsent",
            'group by (namespace, job) (up{job="jobwatch"} == 1)',
            'group by (namespace, job) (up{job="jobwatch"} == 1) or on () count(up == 1)',
        ),
        ("JobwatchScrapeFailing", "== 0", "== 2"),
        # Two replicas reading one dead-letter queue would make two alerts.
        ("JobwatchPushDeadLetters", "max without (instance, pod)", "max without (pod)"),
        # A hung consumer (up, but not receiving) would go unseen.
        ("JobwatchPushConsumerDown", "> 300", "> 3000"),
        ("S3BatchJobHighTaskFailureRatio", ">= 100", ">= 1"),
        ("JobwatchPollsStale", "> 600", "> 6000"),
        ("JobwatchTargetDown", "for: 5m", "for: 15m"),
        ("JobwatchShardMissing", "< max by", "<= max by"),
        # The duplicate-ordinal half of the rule (the other half ends in "or").
        ("JobwatchShardMismatch", ") > 1\n    for: 15m", ") > 2\n    for: 15m"),
        ("JobwatchDiscoveryFailing", "for: 30m", "for: 10m"),
    ],
)
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, alert: str, old: str, new: str) -> None:
    """Mutate one rule in a copy: the promtool tests must then fail."""
    promtool = require_tool("promtool")
    text = RULES_FILE.read_text()
    start = text.index(f"alert: {alert}\n")
    end = text.find("- alert:", start)
    end = len(text) if end == -1 else end
    assert old in text[start:end]
    mutated = text[:start] + text[start:end].replace(old, new) + text[end:]
    (tmp_path / RULES_FILE.name).write_text(mutated)
    tests = tmp_path / "tests"
    tests.mkdir()
    for path in rule_test_files():
        shutil.copy(path, tests / path.name)
    proc = run([promtool, "test", "rules", *(p.name for p in rule_test_files())], cwd=tests)
    assert proc.returncode != 0, output_of(proc)
    assert alert in proc.stdout + proc.stderr


def test_rules_use_only_documented_metrics() -> None:
    """Every jobwatch metric the rules read is in docs/metrics.md."""
    documented = set(
        re.findall(r"`((?:s3batch|jobwatch)_\w+)`", (REPO / "docs/metrics.md").read_text())
    )
    used = set(re.findall(r"\b((?:s3batch|jobwatch)_[a-z_]+)", RULES_FILE.read_text()))
    assert used, "the rules read jobwatch's metrics"
    assert used <= documented, used - documented

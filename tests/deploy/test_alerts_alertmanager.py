"""The example Alertmanager config: amtool accepts it, it routes by severity and
groups by account, a failed job notifies once, every receiver's text renders
non-blank (amtool) for a one-alert and a many-alert group, and (with a real
Alertmanager on loopback) a down target's alert inhibits the same target's
stale-polls alert and nothing else."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_TEMPLATES,
    RULES_FILE,
    ProcessGroup,
    free_port,
    http_get,
    http_post_json,
    output_of,
    require_tool,
    run,
    wait_until,
)


def config() -> dict[str, Any]:
    value: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return value


def test_amtool_check_config() -> None:
    proc = run([require_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert proc.returncode == 0, output_of(proc)
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "alertname=S3BatchJobFailed"], "pager,chat"),
        (["severity=critical", "alertname=JobwatchAbsent"], "pager,chat"),
        (["severity=warning", "alertname=S3BatchJobStalled"], "chat"),
        # A failed job configured as a ticket rather than a page (the mixin's
        # severities.jobFailed).
        (["severity=warning", "alertname=S3BatchJobFailed"], "chat"),
        (["severity=info", "alertname=JobwatchUnknownValues"], "chat-low"),
        (["alertname=SomethingElse"], "chat"),
    ],
)
def test_routes_by_severity(labels: list[str], receivers: str) -> None:
    proc = run(
        [
            require_tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            *labels,
        ]
    )
    assert proc.returncode == 0, output_of(proc)
    assert proc.stdout.strip() == receivers


def test_every_rule_severity_has_a_route() -> None:
    severities = {
        r["labels"]["severity"]
        for g in yaml.safe_load(RULES_FILE.read_text())["groups"]
        for r in g["rules"]
    }
    routed = "\n".join(m for r in config()["route"]["routes"] for m in r["matchers"])
    for severity in severities:
        assert severity in routed, severity


def test_groups_by_account() -> None:
    assert config()["route"]["group_by"] == ["alertname", "aws_account_id"]


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def test_a_failed_job_notifies_once_and_outages_remind() -> None:
    """S3BatchJobFailed fires from the job's failure until it ages out of jobwatch
    (terminal_retention, 24h by default, plus keep_firing_for): a repeat_interval
    longer than that notifies once. Past the notification log's retention (120h by
    default) Alertmanager would forget it had notified, so stay below that."""
    route = config()["route"]
    rules = {
        r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
    }
    lifetime = _seconds("24h") + _seconds(rules["S3BatchJobFailed"]["keep_firing_for"])
    failed = [r for r in route["routes"] if 'alertname="S3BatchJobFailed"' in r["matchers"]]
    assert {r["receiver"] for r in failed} == {"pager", "chat"}
    for r in failed:
        assert lifetime < _seconds(r["repeat_interval"]) < _seconds("120h"), r
    # Other pages are conditions that last until someone acts: a reminder while
    # they last, but not every hour.
    (other,) = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    assert _seconds(other.get("repeat_interval", route["repeat_interval"])) >= _seconds("4h")


def test_down_target_inhibits_its_stale_alert() -> None:
    (rule,) = config()["inhibit_rules"]
    assert rule["source_matchers"] == ['alertname="JobwatchTargetDown"']
    assert rule["target_matchers"] == ['alertname="JobwatchPollsStale"']
    assert sorted(rule["equal"]) == ["aws_account_id", "aws_region"]


def _alert(name: str, account: str, region: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": name,
            "severity": "warning",
            "aws_account_id": account,
            "aws_region": region,
            "job": "jobwatch",
        },
        "annotations": {"summary": f"{name} {account} {region}"},
    }


def test_inhibition_in_a_real_alertmanager(tmp_path: Path, processes: ProcessGroup) -> None:
    """The example config, receivers emptied (nothing leaves the machine), run for
    real: PollsStale is suppressed only where the same target is down."""
    binary = require_tool("prometheus-alertmanager")
    local = config()
    local["receivers"] = [{"name": r["name"]} for r in local["receivers"]]
    local["templates"] = [str(ALERTMANAGER_TEMPLATES)]
    config_path = tmp_path / "alertmanager.yaml"
    config_path.write_text(yaml.safe_dump(local))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes.start(
        "alertmanager",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
    )
    wait_until(
        "alertmanager ready",
        lambda: http_get(f"{base}/-/ready")[0] == 200,
        timeout=20,
        processes=processes,
    )
    alerts = [
        _alert("JobwatchTargetDown", "111111111111", "us-east-1"),
        _alert("JobwatchPollsStale", "111111111111", "us-east-1"),
        _alert("JobwatchPollsStale", "111111111111", "eu-west-1"),
    ]
    assert http_post_json(f"{base}/api/v2/alerts", alerts) == 200

    expected = {
        ("JobwatchTargetDown", "us-east-1"): "active",
        ("JobwatchPollsStale", "us-east-1"): "suppressed",
        ("JobwatchPollsStale", "eu-west-1"): "active",
    }
    seen: dict[tuple[str, str], str] = {}

    def settled() -> bool:
        # The inhibitor learns of source alerts asynchronously: poll until the
        # listing settles on the expected states (or time out and show the last).
        status, body = http_get(f"{base}/api/v2/alerts")
        if status == 200:
            seen.clear()
            seen.update(
                {
                    (a["labels"]["alertname"], a["labels"]["aws_region"]): a["status"]["state"]
                    for a in json.loads(body)
                }
            )
        return seen == expected

    deadline = time.monotonic() + 20
    while not settled() and time.monotonic() < deadline:
        processes.assert_running()
        time.sleep(0.2)
    assert seen == expected
    # And it stays that way: the eu-west-1 alert is never swallowed.
    time.sleep(1)
    assert settled(), seen


# --- notification text -------------------------------------------------------------------


def _templated_fields(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(path, node)] if "{{" in node else []
    if isinstance(node, dict):
        return [f for k, v in node.items() for f in _templated_fields(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [f for i, v in enumerate(node) for f in _templated_fields(v, f"{path}[{i}]")]
    return []


def receiver_fields() -> list[tuple[str, str]]:
    """(receiver.config.field, template) of every templated field of every receiver."""
    found = []
    for receiver in config()["receivers"]:
        for key, configs in receiver.items():
            if key.endswith("_configs"):
                found += _templated_fields(configs, f"{receiver['name']}.{key}")
    assert found
    return found


def group(size: int) -> dict[str, Any]:
    """Alertmanager's template data for a group of ``size`` failed jobs in one account;
    the last has no summary (an alert from another rule file)."""
    alerts = []
    for n in range(size):
        region = ["us-east-1", "eu-west-1"][n % 2]
        labels = {
            "alertname": "S3BatchJobFailed",
            "severity": "critical",
            "aws_account_id": "111111111111",
            "aws_region": region,
            "job_id": f"job-{n:02d}",
            "operation": "S3PutObjectCopy",
            # The first job's failure code is known (DescribeJob answered); not the rest.
            **({"failure_code": "ManifestNotFound"} if n == 0 else {}),
        }
        annotations = {
            "summary": f"S3 Batch Operations job job-{n:02d} failed in account 111111111111, "
            f"region {region}",
            "description": f"Job job-{n:02d} ended with status Failed.",
            "runbook_url": "https://runbooks.example/jobwatch#s3batchjobfailed",
        }
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations if n < size - 1 or size == 1 else {},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": f"{n:016x}",
            }
        )
    common = {k: v for k, v in alerts[0]["labels"].items() if k not in ("job_id", "failure_code")}
    if size > 1:
        common = {k: v for k, v in common.items() if k not in ("aws_region",)}
    return {
        "receiver": "pager",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": "S3BatchJobFailed", "aws_account_id": "111111111111"},
        "commonLabels": common,
        "commonAnnotations": alerts[0]["annotations"] if size == 1 else {},
        "externalURL": "http://alertmanager.example:9093",
    }


def render(template: str, data: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    proc = run(
        [
            require_tool("amtool"),
            "template",
            "render",
            f"--template.glob={ALERTMANAGER_TEMPLATES}",
            f"--template.data={path}",
            f"--template.text={template}",
        ]
    )
    assert proc.returncode == 0, output_of(proc)
    return proc.stdout


def test_common_annotations_of_a_group_are_empty(tmp_path: Path) -> None:
    """Why no receiver may use .CommonAnnotations: two failed jobs differ in summary."""
    assert render("[{{ .CommonAnnotations.summary }}]", group(2), tmp_path).strip() == "[]"
    assert "CommonAnnotations" not in ALERTMANAGER_CONFIG.read_text()


@pytest.mark.parametrize("size", [1, 2, 14])
@pytest.mark.parametrize(
    ("field", "template"), [pytest.param(f, t, id=f) for f, t in receiver_fields()]
)
def test_every_receiver_field_renders_non_blank(
    field: str, template: str, size: int, tmp_path: Path
) -> None:
    text = render(template, group(size), tmp_path)
    assert text.strip(), f"{field} renders blank for a group of {size}"
    assert "<no value>" not in text, text
    if field.endswith((".description", ".text", ".alerts")):
        # Lists name the jobs (with account and region) and count what they leave out.
        for name in ("job-00", "111111111111", "us-east-1", "ManifestNotFound"):
            assert name in text, text
        if size == 2:
            assert "job-01" in text, text
        if size == 14:
            shown = len(set(re.findall(r"job-\d\d", text)))
            assert 0 < shown < 14, text
            assert f"and {14 - shown} more" in text, text
    if field.endswith(".title"):
        assert "S3BatchJobFailed" in text, text
        assert "111111111111" in text, text
    if field.endswith(".href"):
        assert text.startswith("https://runbooks.example/"), text

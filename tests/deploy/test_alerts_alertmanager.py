"""The example Alertmanager config: amtool accepts it, it routes by severity and
groups by account, and (with a real Alertmanager on loopback) a down target's
alert inhibits the same target's stale-polls alert and nothing else."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    ALERTMANAGER_CONFIG,
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

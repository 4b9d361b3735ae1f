"""deploy/aws: the push path's CloudFormation (docs/push.md). Both templates pass
cfn-lint, forward the same events, and those events are what the simulator
publishes and jobwatch parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import DEPLOY, output_of, require_tool, run

from jobwatch.clock import ManualClock
from jobwatch.push import parse_event
from jobwatch.simulator import Scenario, Simulator, job_event

AWS = DEPLOY / "aws"
TEMPLATES = sorted(AWS.glob("*.cfn.yaml"))


def _template(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((AWS / name).read_text())
    return doc


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge's matching for the pattern forms deploy/aws uses: lists of exact values."""
    if isinstance(pattern, dict):
        return isinstance(event, dict) and all(
            k in event and _matches(v, event[k]) for k, v in pattern.items()
        )
    return event in pattern


def test_there_are_both_templates() -> None:
    assert [p.name for p in TEMPLATES] == ["push-central.cfn.yaml", "push-member.cfn.yaml"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_pass_cfn_lint(path: Path) -> None:
    proc = run([require_tool("cfn-lint"), str(path)])
    assert proc.returncode == 0, output_of(proc)


def test_member_and_central_rules_forward_the_same_job_events() -> None:
    member = _template("push-member.cfn.yaml")["Resources"]["ForwardRule"]["Properties"]
    central = _template("push-central.cfn.yaml")["Resources"]["JobEventsRule"]["Properties"]
    assert member["EventBusName"] == "default"
    assert member["EventPattern"] == central["EventPattern"]
    assert member["EventPattern"]["detail"]["eventName"] == ["JobCreated", "JobStatusChanged"]


def test_the_simulator_s_events_match_the_rule_and_parse() -> None:
    pattern = _template("push-central.cfn.yaml")["Resources"]["JobEventsRule"]["Properties"][
        "EventPattern"
    ]
    sim = Simulator(Scenario.model_validate({"accounts": [{"id": "111111111111"}]}), ManualClock())
    job_id = sim.create_job("111111111111", "us-east-1", id="job-00001")
    (job,) = [j for j in sim.all_jobs() if j.job_id == job_id]
    for name in ("JobCreated", "JobStatusChanged"):
        event = job_event(job, name, "Active", sim.now(), "e-1")
        assert _matches(pattern, event)
        parsed = parse_event(json.dumps(event))
        assert parsed is not None
        assert parsed.key == ("111111111111", "us-east-1")
    other = job_event(job, "PutObject", "Active", sim.now(), "e-2")
    assert not _matches(pattern, other)


def test_the_central_queue_has_a_dead_letter_queue_and_only_the_rule_may_send() -> None:
    resources = _template("push-central.cfn.yaml")["Resources"]
    redrive = resources["Queue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    (statement,) = resources["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["JobEventsRule", "Arn"]}}
    }
    bus = resources["BusPolicy"]["Properties"]["Statement"]
    assert bus["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}

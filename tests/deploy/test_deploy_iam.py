"""IAM documents in deploy/iam: least privilege, consistent with each other, with the
Kubernetes manifests and jobwatch's config, and valid for CloudFormation (cfn-lint,
which also knows every IAM action name)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from deploykit import DEPLOY, KUSTOMIZE_OVERLAY, output_of, require_tool, run

IAM = DEPLOY / "iam"
PLACEHOLDERS = {"CENTRAL_ACCOUNT_ID", "OIDC_PROVIDER", "NAMESPACE", "EXTERNAL_ID"}
EXAMPLE = {
    "CENTRAL_ACCOUNT_ID": "123456789012",
    "OIDC_PROVIDER": "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
    "NAMESPACE": "jobwatch",
    "EXTERNAL_ID": "jobwatch-7f3c2a9e",
}
DOCUMENTS = [
    "jobwatch-pod-trust-policy.json",
    "jobwatch-pod-policy.json",
    "jobwatch-pod-push-policy.json",
    "member-role-trust-policy.json",
    "member-role-policy.json",
    "organizations-reader-trust-policy.json",
    "organizations-reader-policy.json",
]
# Every role jobwatch may assume: its trust and permission documents, and where
# jobwatch's config names it.
ROLES = {
    "jobwatch-reader": ("member-role-trust-policy.json", "member-role-policy.json"),
    "jobwatch-organizations-reader": (
        "organizations-reader-trust-policy.json",
        "organizations-reader-policy.json",
    ),
}
# The configs deploy/ ships (the base, the overlays).
SHIPPED_CONFIGS = sorted((DEPLOY / "kubernetes").glob("**/config.yaml"))
# What jobwatch's account discovery calls (docs/scaling.md#permissions).
DISCOVERY_ACTIONS = {
    "organizations:ListAccounts",
    "organizations:ListAccountsForParent",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:ListTagsForResource",
}


def load(name: str, values: dict[str, str] | None = None) -> dict[str, Any]:
    text = (IAM / name).read_text()
    if values is not None:
        text = Template(text).substitute(values)
    doc: dict[str, Any] = json.loads(text)
    return doc


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    value = doc["Statement"]
    return value if isinstance(value, list) else [value]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def actions(doc: dict[str, Any]) -> set[str]:
    return {a for s in statements(doc) for a in as_list(s["Action"])}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_documents_are_well_formed(name: str) -> None:
    text = (IAM / name).read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= PLACEHOLDERS, "unknown placeholder"
    doc = load(name, EXAMPLE)
    assert doc["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in statements(doc)]
    assert len(sids) == len(set(sids))
    for statement in statements(doc):
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{name}: wildcard action {action}"


def test_member_role_reads_batch_jobs_and_nothing_else() -> None:
    doc = load("member-role-policy.json")
    assert actions(doc) == {"s3:ListJobs", "s3:DescribeJob"}
    by_action = {a: s["Resource"] for s in statements(doc) for a in as_list(s["Action"])}
    # ListJobs takes no resource; DescribeJob is limited to job ARNs.
    assert by_action["s3:ListJobs"] == "*"
    assert re.fullmatch(r"arn:aws:s3:\*:\*:job/\*", by_action["s3:DescribeJob"])


def test_member_role_trusts_only_the_pod_role_with_the_external_id() -> None:
    (statement,) = statements(load("member-role-trust-policy.json", EXAMPLE))
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/jobwatch"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "jobwatch-7f3c2a9e"}}


def test_pod_role_only_assumes_the_reader_roles() -> None:
    doc = load("jobwatch-pod-policy.json")
    assert actions(doc) == {"sts:AssumeRole"}
    assert {s["Resource"] for s in statements(doc)} == {
        f"arn:aws:iam::*:role/{name}" for name in ROLES
    }


def test_pod_push_policy_consumes_the_central_queue_and_nothing_else() -> None:
    """What jobwatch.aws.SqsQueue calls (DeleteMessageBatch is sqs:DeleteMessage),
    on the queue and dead-letter queue deploy/aws/push-central.cfn.yaml names."""
    doc = load("jobwatch-pod-push-policy.json", EXAMPLE)
    by_action = {a: s["Resource"] for s in statements(doc) for a in as_list(s["Action"])}
    central = yaml.safe_load((DEPLOY / "aws" / "push-central.cfn.yaml").read_text())
    queue = central["Parameters"]["QueueName"]["Default"]
    assert by_action == {
        "sqs:ReceiveMessage": f"arn:aws:sqs:*:123456789012:{queue}",
        "sqs:DeleteMessage": f"arn:aws:sqs:*:123456789012:{queue}",
        "sqs:GetQueueAttributes": f"arn:aws:sqs:*:123456789012:{queue}-dlq",
    }


def test_organizations_reader_lists_accounts_and_nothing_else() -> None:
    assert actions(load("organizations-reader-policy.json")) == DISCOVERY_ACTIONS
    scaling = (DEPLOY.parent / "docs" / "scaling.md").read_text()
    assert all(f'"{a}"' in scaling for a in DISCOVERY_ACTIONS)


@pytest.mark.parametrize("name", ROLES)
def test_every_reader_trusts_only_the_pod_role_with_the_external_id(name: str) -> None:
    (statement,) = statements(load(ROLES[name][0], EXAMPLE))
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/jobwatch"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "jobwatch-7f3c2a9e"}}


def _assumed_roles(config: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(role ARN, external id sent) of every role the config makes jobwatch assume."""
    defaults = config.get("defaults", {})
    discovery = config.get("discovery") or {}
    found = []
    if defaults.get("role_arn"):
        found.append((defaults["role_arn"], defaults.get("external_id")))
    for target in config.get("targets", []):
        if target.get("role_arn"):
            found.append(
                (target["role_arn"], target.get("external_id", defaults.get("external_id")))
            )
    if discovery.get("role_arn"):
        found.append(
            (discovery["role_arn"], discovery.get("external_id", defaults.get("external_id")))
        )
    if discovery.get("organizations_role_arn"):
        # jobwatch sends only the discovery section's own external_id for this one.
        found.append((discovery["organizations_role_arn"], discovery.get("external_id")))
    return [(arn.replace("{account_id}", "444455556666"), external) for arn, external in found]


@pytest.mark.parametrize(
    "path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY / "kubernetes"))
)
def test_every_role_a_shipped_config_names_is_allowed(path: Path) -> None:
    """The pod role may assume it, a shipped trust policy lets it (with the external
    id the config sends), and a shipped policy says what it may do."""
    config = yaml.safe_load(path.read_text())
    roles = _assumed_roles(config)
    assert roles, f"{path} names no role"
    allowed = [
        s["Resource"]
        for s in statements(load("jobwatch-pod-policy.json"))
        if s["Action"] == "sts:AssumeRole"
    ]
    for arn, external_id in roles:
        assert any(fnmatch.fnmatchcase(arn, pattern) for pattern in allowed), (
            f"{path.name}: the pod role may not assume {arn}"
        )
        name = arn.rsplit("/", 1)[1]
        assert name in ROLES, f"{path.name}: deploy/iam ships no documents for role {name}"
        trust_name, _ = ROLES[name]
        (trust,) = statements(load(trust_name, {**EXAMPLE, "EXTERNAL_ID": str(external_id)}))
        wanted = trust["Condition"]["StringEquals"]["sts:ExternalId"]
        assert external_id is not None, (
            f"{path.name}: {arn} is assumed without the external id its trust policy requires"
        )
        assert wanted == external_id


def test_pod_role_trusts_only_the_service_account_via_irsa() -> None:
    (statement,) = statements(load("jobwatch-pod-trust-policy.json", EXAMPLE))
    provider = EXAMPLE["OIDC_PROVIDER"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::123456789012:oidc-provider/{provider}"
    }
    assert statement["Condition"] == {
        "StringEquals": {
            f"{provider}:sub": "system:serviceaccount:jobwatch:jobwatch",
            f"{provider}:aud": "sts.amazonaws.com",
        }
    }


def test_names_agree_with_the_manifests_and_config() -> None:
    """The role names, service account and external id line up across the files."""
    overlay_config = yaml.safe_load((KUSTOMIZE_OVERLAY / "config.yaml").read_text())
    kustomization = yaml.safe_load((KUSTOMIZE_OVERLAY / "kustomization.yaml").read_text())
    # Member role: the name the config's role_arn template asks for.
    assert (
        overlay_config["defaults"]["role_arn"] == "arn:aws:iam::{account_id}:role/jobwatch-reader"
    )
    assert overlay_config["defaults"]["external_id"] == EXAMPLE["EXTERNAL_ID"]
    # Pod role: the one the overlay's ServiceAccount annotation names.
    patches = "\n".join(p["patch"] for p in kustomization["patches"])
    assert "arn:aws:iam::123456789012:role/jobwatch\n" in patches + "\n"
    assert kustomization["namespace"] == EXAMPLE["NAMESPACE"]
    service_account = yaml.safe_load((DEPLOY / "kubernetes/base/serviceaccount.yaml").read_text())
    sub = load("jobwatch-pod-trust-policy.json", EXAMPLE)["Statement"][0]["Condition"]
    assert sub["StringEquals"][f"{EXAMPLE['OIDC_PROVIDER']}:sub"].endswith(
        ":" + service_account["metadata"]["name"]
    )


def _cfn_resolve(value: Any) -> Any:
    """Reduce the template's intrinsics to what the JSON documents spell."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return (
                value["Fn::Sub"]
                .replace("${AWS::Partition}", "aws")
                .replace("${AWS::AccountId}", "*")
                .replace("${CentralAccountId}", "${CENTRAL_ACCOUNT_ID}")
                .replace("${PodRoleName}", "jobwatch")
            )
        if value == {"Ref": "ExternalId"}:
            return "${EXTERNAL_ID}"
        return {k: _cfn_resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cfn_resolve(v) for v in value]
    return value


def test_cloudformation_template_matches_the_json_documents() -> None:
    template = yaml.safe_load((IAM / "member-role.cfn.yaml").read_text())
    role = template["Resources"]["ReaderRole"]["Properties"]
    assert role["RoleName"] == "jobwatch-reader"
    assert _cfn_resolve(role["AssumeRolePolicyDocument"]) == load("member-role-trust-policy.json")
    (policy,) = role["Policies"]
    assert _cfn_resolve(policy["PolicyDocument"]) == load("member-role-policy.json")


def test_cloudformation_template_passes_cfn_lint() -> None:
    proc = run([require_tool("cfn-lint"), str(IAM / "member-role.cfn.yaml")])
    assert proc.returncode == 0, output_of(proc)


def test_json_documents_pass_cfn_lint(tmp_path: Path) -> None:
    """Wrap the standalone documents in a template so cfn-lint checks their actions,
    ARNs and structure too."""
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "PodRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": "jobwatch",
                    "AssumeRolePolicyDocument": load("jobwatch-pod-trust-policy.json", EXAMPLE),
                    "Policies": [
                        {
                            "PolicyName": "assume-readers",
                            "PolicyDocument": load("jobwatch-pod-policy.json", EXAMPLE),
                        },
                        {
                            "PolicyName": "consume-job-events",
                            "PolicyDocument": load("jobwatch-pod-push-policy.json", EXAMPLE),
                        },
                    ],
                },
            },
            "OrganizationsReaderRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": "jobwatch-organizations-reader",
                    "AssumeRolePolicyDocument": load(
                        "organizations-reader-trust-policy.json", EXAMPLE
                    ),
                    "Policies": [
                        {
                            "PolicyName": "list-accounts",
                            "PolicyDocument": load("organizations-reader-policy.json", EXAMPLE),
                        }
                    ],
                },
            },
            "ReaderRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": "jobwatch-reader",
                    "AssumeRolePolicyDocument": load("member-role-trust-policy.json", EXAMPLE),
                    "Policies": [
                        {
                            "PolicyName": "read-batch-jobs",
                            "PolicyDocument": load("member-role-policy.json", EXAMPLE),
                        }
                    ],
                },
            },
        },
    }
    path = tmp_path / "iam.json"
    path.write_text(json.dumps(template, indent=2))
    cfn_lint = require_tool("cfn-lint")
    proc = run([cfn_lint, str(path)])
    assert proc.returncode == 0, output_of(proc)
    # cfn-lint is not blind to action names: a misspelt one is reported.
    broken = json.dumps(template, indent=2).replace('"s3:ListJobs"', '"s3:ListJob"')
    assert '"s3:ListJob"' in broken
    path.write_text(broken)
    proc = run([cfn_lint, str(path)])
    assert proc.returncode != 0
    assert "listjob" in proc.stdout.lower(), output_of(proc)

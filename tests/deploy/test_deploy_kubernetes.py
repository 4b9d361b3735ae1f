"""The kustomize base and example overlay, rendered with ``kubectl kustomize``.

Every rendered object is validated offline: built-in kinds against the Kubernetes
OpenAPI schemas that ``kubernetes-validate`` ships, the Prometheus Operator kinds
against the schemas in tests/deploy/schemas/. Then the properties the issue asks
for (hardening, probes, the one writable volume, selectors that select, the
network policy, IRSA) are asserted on the objects themselves.
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    KUSTOMIZE_BASE,
    KUSTOMIZE_OVERLAY,
    REPO,
    RULES_FILE,
    Manifests,
    output_of,
    require_module,
    run,
)

SCHEMAS = Path(__file__).parent / "schemas"
# Oldest and newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
EXPECTED_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "StatefulSet",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
NAMESPACED = EXPECTED_KINDS
ARN_ROLE = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]{1,64}")


def one(docs: Manifests, kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(docs: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def container(docs: Manifests) -> dict[str, Any]:
    (c,) = pod_spec(docs)["containers"]
    return c  # type: ignore[no-any-return]


def config_of(docs: Manifests) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    return data


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- schema validation ------------------------------------------------------------------


def test_renders_exactly_the_expected_objects(manifests: Manifests) -> None:
    kinds = [d["kind"] for d in manifests if d["kind"] != "Namespace"]
    assert sorted(kinds) == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_objects_validate_against_kubernetes_schemas(
    manifests: Manifests, version: str
) -> None:
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    for doc in manifests:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_validation_catches_a_typo() -> None:
    """The validator is strict: a misspelt field in a StatefulSet is an error."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    workload = yaml.safe_load((KUSTOMIZE_BASE / "statefulset.yaml").read_text())
    workload["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(workload, KUBERNETES_VERSIONS[-1], strict=True)


def _crd_validator(kind: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind.lower()}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_operator_objects_validate_against_their_schemas(manifests: Manifests, kind: str) -> None:
    validator = _crd_validator(kind)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(one(manifests, kind))
    ]
    assert not errors, errors


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="30s")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="30 s")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(four="5m")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr")),
    ],
)
def test_operator_schemas_reject_mistakes(
    base_manifests: Manifests, kind: str, breakage: Any
) -> None:
    doc = json.loads(json.dumps(one(base_manifests, kind)))
    breakage(doc)
    assert list(_crd_validator(kind).iter_errors(doc))


def test_service_monitor_timeout_within_interval(manifests: Manifests) -> None:
    def seconds(text: str) -> int:
        units = {"h": 3600, "m": 60, "s": 1}
        return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))

    for endpoint in one(manifests, "ServiceMonitor")["spec"]["endpoints"]:
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


# --- the pod ----------------------------------------------------------------------------


def test_one_replica_replaced_not_doubled(manifests: Manifests) -> None:
    """A StatefulSet of one with OrderedReady deletes the old pod before it starts
    the new one: two pods never poll (and emit events) at once."""
    spec = one(manifests, "StatefulSet")["spec"]
    assert spec["replicas"] == 1
    assert spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert "maxUnavailable" not in spec["updateStrategy"].get("rollingUpdate", {})


def test_pod_meets_the_restricted_pod_security_standard(manifests: Manifests) -> None:
    pod = pod_spec(manifests)
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] >= 1000
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace)
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert not any(p.get("hostPort") for p in c.get("ports", []))
    allowed_volumes = {"configMap", "emptyDir", "projected", "secret", "downwardAPI"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes, volume


def test_user_matches_the_image(manifests: Manifests) -> None:
    text = (REPO / "Dockerfile").read_text()
    uid = re.search(r"ARG JOBWATCH_UID=(\d+)", text)
    assert uid
    psc = pod_spec(manifests)["securityContext"]
    assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == int(uid.group(1))


def test_requests_and_limits(manifests: Manifests) -> None:
    resources = container(manifests)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_and_ports_agree_with_the_config(manifests: Manifests) -> None:
    c = container(manifests)
    (port,) = c["ports"]
    assert port == {"name": "metrics", "containerPort": 9877, "protocol": "TCP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    listen = config_of(manifests)["listen"]
    assert listen.rsplit(":", 1) == ["0.0.0.0", "9877"]


def test_the_only_writable_volume_holds_the_state_file(manifests: Manifests) -> None:
    pod = pod_spec(manifests)
    c = container(manifests)
    config_map = one(manifests, "ConfigMap")
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert len(writable) == 1
    (state,) = writable
    assert state["name"] not in volumes, "the state volume is a claim, not a pod volume"
    assert posixpath.dirname(config_of(manifests)["state_file"]) == state["mountPath"]
    (config_mount,) = [m for m in c["volumeMounts"] if m.get("readOnly")]
    assert config_mount["mountPath"] == "/etc/jobwatch"  # the image's entry point reads it
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert re.fullmatch(r"jobwatch-config-[a-z0-9]{10}", config_map["metadata"]["name"]), (
        "the generated name carries a content hash so a config change rolls the pod"
    )


def test_state_survives_pod_replacement(manifests: Manifests) -> None:
    """The state file (stall and overdue clocks, unacknowledged events) lives on a
    PersistentVolumeClaim of the StatefulSet, which a new pod mounts again: not on an
    emptyDir, which every rollout would empty."""
    workload = one(manifests, "StatefulSet")["spec"]
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    claims = {t["metadata"]["name"]: t["spec"] for t in workload["volumeClaimTemplates"]}
    (state_dir,) = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    (name,) = [n for n, m in mounts.items() if m["mountPath"] == state_dir]
    assert claims[name]["accessModes"] == ["ReadWriteOnce"]
    assert claims[name]["resources"]["requests"]["storage"] == "1Gi"
    for volume in pod_spec(manifests)["volumes"]:
        assert "emptyDir" not in volume, volume
    # The pod's group may write to it.
    assert pod_spec(manifests)["securityContext"]["fsGroup"] == 10001


def test_network_policy_allows_node_local_dns(manifests: Manifests) -> None:
    """NodeLocal DNSCache answers on 169.254.20.10, outside the kube-dns pods."""
    spec = one(manifests, "NetworkPolicy")["spec"]
    node_local = ipaddress.ip_address("169.254.20.10")
    allowed = [
        rule
        for rule in spec["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
        and node_local in ipaddress.ip_network(peer["ipBlock"]["cidr"])
        and not any(
            node_local in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])
        )
    ]
    ports = {(p["port"], p["protocol"]) for rule in allowed for p in rule["ports"]}
    assert ports >= {(53, "UDP"), (53, "TCP")}, ports


# --- wiring -----------------------------------------------------------------------------


def test_selectors_select_the_right_objects(manifests: Manifests) -> None:
    workload = one(manifests, "StatefulSet")
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    service = one(manifests, "Service")
    assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels)
    assert workload["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(
        one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels
    )
    assert selects(
        one(manifests, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels
    )
    monitor = one(manifests, "ServiceMonitor")["spec"]
    assert selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    # The alert rules rely on job="jobwatch" (JobwatchAbsent).
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "jobwatch"
    assert [e["port"] for e in monitor["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_pod_disruption_budget_does_not_block_drains(manifests: Manifests) -> None:
    spec = one(manifests, "PodDisruptionBudget")["spec"]
    assert spec.get("maxUnavailable") == 1
    assert "minAvailable" not in spec


def test_network_policy_allows_scrapes_in_and_dns_and_https_out(manifests: Manifests) -> None:
    spec = one(manifests, "NetworkPolicy")["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (peer,) = ingress["from"]
    assert peer["namespaceSelector"]["matchLabels"]
    assert peer["podSelector"]["matchLabels"]
    egress_ports = sorted(
        (p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "TCP"), (53, "UDP"), (53, "UDP"), (443, "TCP")]
    for rule in spec["egress"]:
        assert rule["to"], "every egress rule names its peers"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                imds = ipaddress.ip_address("169.254.169.254")
                block = peer["ipBlock"]
                assert imds not in ipaddress.ip_network(block["cidr"]) or any(
                    imds in ipaddress.ip_network(e) for e in block.get("except", [])
                ), "no way to the node's instance metadata credentials"


def test_service_account_is_for_irsa_only(manifests: Manifests) -> None:
    account = one(manifests, "ServiceAccount")
    assert pod_spec(manifests)["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod_spec(manifests)["automountServiceAccountToken"] is False
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_base_leaves_the_role_to_fill_in(base_manifests: Manifests) -> None:
    arn = one(base_manifests, "ServiceAccount")["metadata"]["annotations"][
        "eks.amazonaws.com/role-arn"
    ]
    assert "<CENTRAL_ACCOUNT_ID>" in arn


def test_overlay_fills_in_namespace_role_image_and_selectors(
    overlay_manifests: Manifests,
) -> None:
    namespace = one(overlay_manifests, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in overlay_manifests:
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["kind"]
    annotations = one(overlay_manifests, "ServiceAccount")["metadata"]["annotations"]
    assert ARN_ROLE.fullmatch(annotations["eks.amazonaws.com/role-arn"])
    image = container(overlay_manifests)["image"]
    assert re.fullmatch(r"[\w.-]+(:\d+)?(/[\w.-]+)+:[\w.-]+", image), image
    assert not image.endswith(":latest")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(overlay_manifests, kind)["metadata"]["labels"]["release"]
    config = config_of(overlay_manifests)
    assert len(config["targets"]) >= 2
    assert config["defaults"]["external_id"]


# --- rules and config -------------------------------------------------------------------


def test_prometheus_rule_holds_the_rules_file(manifests: Manifests) -> None:
    """Both are rendered from deploy/mixin (tests/deploy/test_mixin.py checks that)."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    assert one(manifests, "PrometheusRule")["spec"] == {"groups": rules["groups"]}


@pytest.mark.parametrize("directory", [KUSTOMIZE_BASE, KUSTOMIZE_OVERLAY], ids=["base", "overlay"])
def test_config_files_pass_check_config(directory: Path) -> None:
    """The shipped configs are valid for the jobwatch they deploy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = run(
        [sys.executable, "-m", "jobwatch", "check-config", "-c", str(directory / "config.yaml")],
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, output_of(proc)

"""The sharded overlay: the base StatefulSet with one shard per pod.

Rendered with ``kubectl kustomize`` and validated offline like the base; its pod
spec must stay the base's (which test_deploy_kubernetes.py hardens) plus POD_NAME;
its replicas must equal shard.total, and every pod name must give
a valid shard to ``jobwatch check-config``.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    DEPLOY,
    KUSTOMIZE_BASE,
    Manifests,
    output_of,
    require_module,
    require_tool,
    run,
)

SHARDED = DEPLOY / "kubernetes" / "overlays" / "sharded"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]


def render(directory: Path) -> Manifests:
    proc = run([require_tool("kubectl"), "kustomize", str(directory)])
    assert proc.returncode == 0, output_of(proc)
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


@pytest.fixture(scope="module")
def sharded() -> Manifests:
    return render(SHARDED)


def one(docs: Manifests, kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def config_of(docs: Manifests) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    return data


def test_renders_the_base_objects_and_a_namespace(sharded: Manifests) -> None:
    kinds = sorted(d["kind"] for d in sharded)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "StatefulSet",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    namespace = one(sharded, "Namespace")["metadata"]["name"]
    for doc in sharded:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_validate_against_kubernetes_schemas(sharded: Manifests, version: str) -> None:
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    for doc in sharded:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_replicas_equal_the_shard_count_and_pods_know_their_name(sharded: Manifests) -> None:
    sts = one(sharded, "StatefulSet")
    config = config_of(sharded)
    assert sts["spec"]["replicas"] == config["shard"]["total"] > 1
    assert "ordinal" not in config["shard"], "every pod reads the same file"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # POD_NAME's ordinal suffix comes from the StatefulSet's name.
    assert sts["metadata"]["name"] == "jobwatch"


def test_pod_spec_is_the_bases_plus_pod_name(sharded: Manifests) -> None:
    base = one(render(KUSTOMIZE_BASE), "StatefulSet")
    sts = one(sharded, "StatefulSet")
    ours = copy.deepcopy(sts["spec"]["template"]["spec"])
    theirs = copy.deepcopy(base["spec"]["template"]["spec"])
    for spec in (ours, theirs):
        for container in spec["containers"]:
            container["env"] = [e for e in container["env"] if e["name"] != "POD_NAME"]
            container.pop("image")
        for volume in spec["volumes"]:
            volume.get("configMap", {}).pop("name", None)  # hashed from each config
    assert ours == theirs
    assert sts["spec"]["selector"] == base["spec"]["selector"]
    # Each shard keeps its own state volume across rollouts.
    assert sts["spec"]["volumeClaimTemplates"] == base["spec"]["volumeClaimTemplates"]


def test_service_monitor_scrapes_every_pod(sharded: Manifests) -> None:
    sts = one(sharded, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    service = one(sharded, "Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    for kind, path in (("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
                       ("NetworkPolicy", ("spec", "podSelector", "matchLabels"))):  # fmt: skip
        node: Any = one(sharded, kind)
        for key in path:
            node = node[key]
        assert all(pod_labels.get(k) == v for k, v in node.items()), kind
    monitor = one(sharded, "ServiceMonitor")["spec"]
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    # The config volume follows the generated ConfigMap's hashed name.
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == one(sharded, "ConfigMap")["metadata"]["name"]


def _check_config(pod: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["POD_NAME"] = pod
    return run(
        [sys.executable, "-m", "jobwatch", "check-config", "-c", str(SHARDED / "config.yaml")],
        env=env,
        timeout=60,
    )


def test_every_pod_name_is_a_valid_shard_and_one_more_is_not(sharded: Manifests) -> None:
    replicas = one(sharded, "StatefulSet")["spec"]["replicas"]
    for ordinal in range(replicas):
        proc = _check_config(f"jobwatch-{ordinal}")
        assert proc.returncode == 0, output_of(proc)
        assert f"shard {ordinal}/{replicas}:" in proc.stdout
        assert "discovery: accounts of" in proc.stdout
    proc = _check_config(f"jobwatch-{replicas}")
    assert proc.returncode == 2, output_of(proc)
    assert "more replicas than shard.total" in proc.stderr

"""docs/deploy.md and docs/runbooks.md: links that resolve, tables that agree with
the rules, and the plain Prometheus example that deploy.md points at."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from deploykit import (
    DEPLOY,
    KUSTOMIZE_BASE,
    REPO,
    RULES_FILE,
    output_of,
    require_module,
    require_tool,
    run,
)

DOCS = [REPO / "docs" / "deploy.md", REPO / "docs" / "runbooks.md"]
PROMETHEUS_EXAMPLE = DEPLOY / "prometheus" / "prometheus.example.yaml"


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            assert resolved.exists(), f"{doc.name}: {target}"
            if anchor:
                assert resolved.suffix == ".md", f"{doc.name}: {target}"
                assert anchor in anchors(resolved), f"{doc.name}: no #{anchor} in {resolved.name}"


def test_deploy_alert_table_matches_the_rules() -> None:
    rules = {
        r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
    }
    rows = re.findall(
        r"^\| (\w+) \| (critical|warning|info) \| .+ \| (\S+) \|$",
        (REPO / "docs" / "deploy.md").read_text(),
        flags=re.MULTILINE,
    )
    assert {name for name, _, _ in rows} == set(rules)
    for name, severity, for_ in rows:
        assert rules[name]["labels"]["severity"] == severity, name
        assert rules[name].get("for", "0") == for_, name


def test_every_alert_has_a_runbook_with_a_describe_job_command_where_it_helps() -> None:
    text = (REPO / "docs" / "runbooks.md").read_text()
    sections = dict(
        re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    )
    for g in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in g["rules"]:
            body = sections[rule["alert"]]
            for part in ("**Meaning.**", "**Look.**", "**Act.**"):
                assert part in body, f"{rule['alert']}: {part}"
            if rule["alert"].startswith("S3BatchJob"):
                assert "aws s3control describe-job" in body, rule["alert"]
                assert '--account-id "$ACCOUNT" --job-id "$JOB" --region "$REGION"' in body


def test_plain_prometheus_example(tmp_path: Path) -> None:
    """promtool checks the example with its rule file. Debian's Prometheus is built
    without Kubernetes service discovery, so the check runs on a copy whose
    kubernetes_sd_configs is swapped for a static target; the relabelling that
    selects jobwatch's endpoints is checked against the Service here."""
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "jobwatch"
    (sd,) = job.pop("kubernetes_sd_configs")
    assert sd["role"] == "endpoints"
    keep = job["relabel_configs"][0]
    service = yaml.safe_load((KUSTOMIZE_BASE / "service.yaml").read_text())
    label = keep["source_labels"][0].removeprefix("__meta_kubernetes_service_label_")
    assert label == "app_kubernetes_io_name"
    assert keep["action"] == "keep"
    assert re.fullmatch(
        keep["regex"],
        f"{service['metadata']['labels']['app.kubernetes.io/name']};{service['spec']['ports'][0]['name']}",
    )
    job["static_configs"] = [{"targets": ["127.0.0.1:9877"]}]
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text())
    proc = run([require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yaml")])
    assert proc.returncode == 0, output_of(proc)
    assert "1 rule files found" in proc.stdout, output_of(proc)


def test_runbooks_paging_model_covers_every_alert() -> None:
    """docs/runbooks.md#paging-model: one row per alert, with its severity, who hears,
    how often and what resolves it; critical ones page."""
    text = (REPO / "docs" / "runbooks.md").read_text()
    section = text.split("## Paging model", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| `(\w+)` \| (critical|warning|info) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
        section,
        flags=re.MULTILINE,
    )
    rules = {
        r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
    }
    assert {row[0] for row in rows} == set(rules)
    for name, severity, who, how_often, resolves in rows:
        assert rules[name]["labels"]["severity"] == severity, name
        assert ("pager" in who) == (severity == "critical"), name
        assert how_often.strip(), name
        assert resolves.strip(), name


def test_deploy_md_mixin_example_renders(tmp_path: Path) -> None:
    """The customisation example in docs/deploy.md, run against a vendored copy of
    deploy/mixin, gives rules promtool accepts, with the example's selector."""
    require_module("_jsonnet", "jsonnet")
    import _jsonnet

    text = (REPO / "docs" / "deploy.md").read_text()
    (code,) = re.findall(r"```jsonnet\n(.*?)```", text, flags=re.DOTALL)
    shutil.copytree(DEPLOY / "mixin", tmp_path / "jobwatch-mixin")
    (tmp_path / "jobwatch.jsonnet").write_text(code)
    files = json.loads(_jsonnet.evaluate_file(str(tmp_path / "jobwatch.jsonnet")))
    rules = tmp_path / "jobwatch-rules.yaml"
    rules.write_text(files["jobwatch-rules.yaml"])
    proc = run([require_tool("promtool"), "check", "rules", str(rules)])
    assert proc.returncode == 0, output_of(proc)
    assert 'env="prod"' in rules.read_text()
    json.loads(files["jobwatch-dashboard.json"])

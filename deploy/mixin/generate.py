#!/usr/bin/env python3
"""Render jobwatch's monitoring mixin (deploy/mixin) into the files deploy/ ships.

    python deploy/mixin/generate.py          # rewrite them (also: make mixin)
    python deploy/mixin/generate.py --check  # exit 1 if any differs from the mixin

Outputs, all generated (edit the mixin, then rerun):

- deploy/prometheus/jobwatch-rules.yaml: prometheusAlerts + prometheusRules, a plain
  Prometheus rule file (promtool tests in deploy/prometheus/tests read it);
- deploy/kubernetes/base/prometheusrule.yaml: the same groups as a PrometheusRule;
- deploy/grafana/<name>: each of grafanaDashboards.

Needs the `jsonnet` Python package (a binary wheel, in the dev extra) and PyYAML.
tests/deploy/test_mixin.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
RULES = Path("prometheus/jobwatch-rules.yaml")
PROMETHEUS_RULE = Path("kubernetes/base/prometheusrule.yaml")
DASHBOARDS = Path("grafana")

HEADER = """\
# GENERATED from deploy/mixin (the jobwatch monitoring mixin) by `make mixin`
# (python deploy/mixin/generate.py): edit the mixin's _config or rules, then rerun.
# To change thresholds, selectors, severities or the runbook address for your
# installation, override _config instead: docs/deploy.md#customising-the-alerts-and-the-dashboard
"""
RULES_HEADER = """\
#
#   promtool check rules deploy/prometheus/jobwatch-rules.yaml
#   promtool test rules deploy/prometheus/tests/*.test.yaml
"""
# jsonnet writes object fields sorted; rules read better in Prometheus's own order.
RULE_KEYS = ["alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"]
ANNOTATION_KEYS = ["summary", "description", "runbook_url", "status_page_url"]


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL), plain style elsewhere."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _ordered(mapping: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    unknown = set(mapping) - set(keys)
    if unknown:
        raise ValueError(f"unexpected keys {sorted(unknown)} in {mapping}")
    return {k: mapping[k] for k in keys if k in mapping}


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    out = _ordered(rule, RULE_KEYS)
    if "annotations" in out:
        out["annotations"] = _ordered(out["annotations"], ANNOTATION_KEYS)
    return out


def _yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def evaluate(mixin_dir: Path = HERE, config: str = "") -> dict[str, Any]:
    """The mixin's three fields as Python values; ``config`` is jsonnet merged into
    ``_config`` (e.g. ``{showMultiCluster: true}``), for tests and one-off renders."""
    import _jsonnet  # the `jsonnet` wheel

    code = (
        "local m = (import 'mixin.libsonnet') + { _config+:: " + (config or "{}") + " }; "
        "{ alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards }"
    )
    text = _jsonnet.evaluate_snippet(str(mixin_dir / "snippet.jsonnet"), code)
    value: dict[str, Any] = json.loads(text)
    return value


def render(mixin_dir: Path = HERE, config: str = "") -> dict[Path, str]:
    """Every output file (relative to deploy/) and its text."""
    mixin = evaluate(mixin_dir, config)
    groups = [
        {**g, "rules": [_rule(r) for r in g["rules"]]}
        for g in mixin["alerts"]["groups"] + mixin["rules"]["groups"]
    ]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "jobwatch"},
        "spec": {"groups": groups},
    }
    out = {
        RULES: HEADER + RULES_HEADER + _yaml({"groups": groups}),
        PROMETHEUS_RULE: HEADER + _yaml(manifest),
    }
    for name, dashboard in mixin["dashboards"].items():
        out[DASHBOARDS / name] = json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
    return out


def stale(root: Path = DEPLOY, mixin_dir: Path = HERE) -> list[Path]:
    """The output files under ``root`` that differ from the mixin's rendering."""
    found = []
    for rel, text in render(mixin_dir).items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            found.append(rel)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if an output is stale")
    parser.add_argument("--root", type=Path, default=DEPLOY, help="the deploy/ directory")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.root)
        for rel in outdated:
            print(f"{args.root / rel} differs from deploy/mixin: run make mixin", file=sys.stderr)
        return 1 if outdated else 0
    for rel, text in render().items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate the PrometheusRule object from the plain Prometheus rules file.

deploy/prometheus/jobwatch-rules.yaml is the one source of jobwatch's alerting
rules. The Prometheus Operator wants the same groups wrapped in a PrometheusRule
object; this script writes that object into the kustomize base:

    python deploy/prometheus/generate_prometheusrule.py          # rewrite it
    python deploy/prometheus/generate_prometheusrule.py --check  # exit 1 if stale

tests/deploy/test_alerts_rules.py runs the check, so an edit of the rules file
that is not followed by a regeneration fails the tests. Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "jobwatch-rules.yaml"
TARGET = HERE.parent / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/jobwatch-rules.yaml by
# deploy/prometheus/generate_prometheusrule.py: edit the rules file, then rerun it.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL), plain style elsewhere."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_text: str) -> str:
    """The PrometheusRule manifest for the rules in ``rules_text``."""
    rules: dict[str, Any] = yaml.safe_load(rules_text)
    if set(rules) != {"groups"}:
        raise ValueError(f"{RULES.name}: expected only a top-level 'groups' key")
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "jobwatch"},
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text())
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != wanted:
            print(
                f"{TARGET} is stale: run python deploy/prometheus/generate_prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/metrics.md against the family tables of jobwatch.metrics: every family
exported is listed with its type and its labels, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from jobwatch.metrics import (
    DISCOVERY_FAMILIES,
    JOB_FAMILIES,
    PROCESS_FAMILIES,
    PUSH_FAMILIES,
    SHARD_FAMILIES,
    TARGET_FAMILIES,
)

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `((?:s3batch|jobwatch)_\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def documented() -> dict[str, tuple[str, set[str]]]:
    """Each documented family as the text format shows it: its type and its labels
    (for per-job and per-target families, those beyond the target's and job_id)."""
    rows = {}
    for name, kind, labels in ROW.findall(CATALOGUE.read_text()):
        # "`outcome` (`success`, `failure`)": the label, then its values.
        rows[name] = (kind, set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels))))
    return rows


def exported() -> dict[str, tuple[str, set[str]]]:
    families = {}
    for job_family in JOB_FAMILIES:
        families[job_family.name] = ("gauge", set(job_family.label_names))
    for family in (
        *TARGET_FAMILIES,
        *PROCESS_FAMILIES,
        *SHARD_FAMILIES,
        *DISCOVERY_FAMILIES,
        *PUSH_FAMILIES,
    ):
        shown = family.name + "_total" if family.kind == "counter" else family.name
        families[shown] = (family.kind, set(getattr(family, "labels", ())))
    return families


def test_every_family_is_documented_with_its_type_and_labels() -> None:
    docs = documented()
    assert len(docs) > 30  # the rows were found at all
    assert docs == exported()

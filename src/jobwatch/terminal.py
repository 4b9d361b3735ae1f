"""The terminal view of ``jobwatch once`` and ``jobwatch status``.

It prints the API's documents (docs/api.md): targets, then the jobs that need
attention with their reasons, then running jobs with their progress. On a
terminal it draws tables, progress bars and colour with ``rich``; into a pipe or
a file it writes plain aligned text that ``grep`` and ``awk`` can read. Status
words are always written out: colour only repeats them.
"""

from __future__ import annotations

import json
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from typing import Any, Final, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from jobwatch.model import KNOWN_STATUSES
from jobwatch.views import duration_words, percent_words

__all__ = ["SHOWN", "View", "fetch_view", "render"]

#: Jobs of each section the view lists; the rest is counted ("... and 12 more").
SHOWN: Final = 50
_WHY: Final = {
    "failed": "failed",
    "stalled": "stalled",
    "overdue": "overdue",
    "task_failure_ratio": "task failures",
}
_STYLE: Final = {"Failed": "bold red", "Complete": "green", "Suspended": "yellow"}

View = tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]
"""(targets document, attention jobs document, running jobs document)."""


def _counts(jobs: Mapping[str, int]) -> str:
    order = [s for s in KNOWN_STATUSES if s in jobs] + sorted(
        s for s in jobs if s not in KNOWN_STATUSES
    )
    return " ".join(f"{s}={jobs[s]}" for s in order) or "-"


def _details(job: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The lines under a job that needs attention: why, and where to look."""
    out: list[tuple[str, str]] = []
    if job["status"] == "Failed":
        reasons = [f"{r['code']}: {r['reason']}" for r in job.get("failure_reasons", [])]
        if not reasons:
            reasons = ["none given" if job.get("details_available") else "not known"]
        out += [("reason", r) for r in reasons]
        if job.get("status_update_reason"):
            out.append(("status update", str(job["status_update_reason"])))
        report = job.get("report")
        if report and report.get("enabled") and report.get("location"):
            out.append(("report", str(report["location"])))
    for key, label in (("console_url", "console"), ("status_url", "page")):
        if job.get(key):
            out.append((label, str(job[key])))
    return out


def _more(doc: Mapping[str, Any]) -> int:
    return int(doc["total"]) - len(doc["jobs"])


def _plain(view: View, out: TextIO) -> None:
    targets, attention, running = view
    out.write(f"{'ACCOUNT':<13} {'REGION':<15} {'UP':<4} JOBS\n")
    for t in targets["targets"]:
        extra = f"  error={t['last_error']}" if t["last_error"] else ""
        up = "yes" if t["up"] else "NO"
        line = f"{t['aws_account_id']:<13} {t['aws_region']:<15} {up:<4} {_counts(t['jobs'])}"
        out.write(line + extra + "\n")
    out.write(f"\nNEEDS ATTENTION ({attention['total']})\n")
    for j in attention["jobs"]:
        why = ",".join(_WHY.get(r, r) for r in j["attention"])
        out.write(
            f"{j['status']:<11} {j['job_id']:<36} {j['aws_account_id']:<13} "
            f"{j['aws_region']:<15} {why:<24} {percent_words(j['progress']):>6} "
            f"in status {duration_words(j['seconds_in_status'])}\n"
        )
        for label, text in _details(j):
            out.write(f"    {label}: {text}\n")
    if _more(attention) > 0:
        out.write(f"... and {_more(attention)} more\n")
    out.write(f"\nRUNNING ({running['total']})\n")
    for j in running["jobs"]:
        out.write(
            f"{j['status']:<11} {j['job_id']:<36} {j['aws_account_id']:<13} "
            f"{j['aws_region']:<15} {j['operation'] or '-':<24} {percent_words(j['progress']):>6} "
            f"ok={j['tasks_succeeded']} failed={j['tasks_failed']} "
            f"in status {duration_words(j['seconds_in_status'])}\n"
        )
    if _more(running) > 0:
        out.write(f"... and {_more(running)} more\n")


def _bar(progress: float | None) -> ProgressBar | Text:
    if progress is None:
        return Text("-")
    return ProgressBar(total=1.0, completed=progress, width=16)


def _rich(view: View, out: TextIO, width: int | None) -> None:
    targets, attention, running = view
    console = Console(file=out, force_terminal=True, width=width, highlight=False)
    up, down = targets["targets_up"], targets["targets_down"]
    t = Table(title=f"Targets: {up} up, {down} down", title_justify="left", expand=False)
    for col in ("Account", "Region", "State", "Last error", "Last success", "Jobs"):
        t.add_column(col)
    for row in targets["targets"]:
        state = Text("UP", "green") if row["up"] else Text("DOWN", "bold red")
        since = row["seconds_since_success"]
        t.add_row(
            row["aws_account_id"],
            row["aws_region"],
            state,
            row["last_error"] or "-",
            "never" if since is None else f"{duration_words(since)} ago",
            _counts(row["jobs"]),
        )
    console.print(t)

    a = Table(title=f"Needs attention ({attention['total']})", title_justify="left")
    for col in ("Status", "Job", "Account / region", "Why", "Progress", "In status"):
        a.add_column(col, overflow="fold")
    for j in attention["jobs"]:
        lines = [Text(j["job_id"], "bold"), Text(j["description"] or "", "dim")]
        lines += [Text(f"{label}: {text}") for label, text in _details(j)]
        a.add_row(
            Text(j["status"], _STYLE.get(j["status"], "")),
            Group(*lines),
            f"{j['aws_account_id']}\n{j['aws_region']}",
            Text(", ".join(_WHY.get(r, r) for r in j["attention"]), "red"),
            Group(_bar(j["progress"]), Text(percent_words(j["progress"]))),
            duration_words(j["seconds_in_status"]),
        )
    console.print(a)
    if _more(attention) > 0:
        console.print(f"... and {_more(attention)} more")

    r = Table(title=f"Running ({running['total']})", title_justify="left")
    for col in ("Status", "Job", "Account / region", "Operation", "Progress", "Tasks ok / failed"):
        r.add_column(col)
    r.add_column("In status")
    for j in running["jobs"]:
        r.add_row(
            Text(j["status"], _STYLE.get(j["status"], "")),
            Group(Text(j["job_id"]), Text(j["description"] or "", "dim")),
            f"{j['aws_account_id']}\n{j['aws_region']}",
            j["operation"] or "-",
            Group(_bar(j["progress"]), Text(percent_words(j["progress"]))),
            f"{j['tasks_succeeded']:,} / {j['tasks_failed']:,}",
            duration_words(j["seconds_in_status"]),
        )
    console.print(r)
    if _more(running) > 0:
        console.print(f"... and {_more(running)} more")


def render(
    view: View, out: TextIO, *, terminal: bool | None = None, width: int | None = None
) -> None:
    """Write ``view``: rich tables on a terminal (``out.isatty()``), plain text otherwise."""
    if terminal is None:
        terminal = out.isatty()
    if terminal:
        _rich(view, out, width)
    else:
        _plain(view, out)


def _get(url: str, auth: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - a URL the user gave
    if auth is not None:
        request.add_header("Authorization", auth)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.load(response)


def fetch_view(base_url: str, timeout: float = 10.0, shown: int = SHOWN) -> View:
    """The view of a running jobwatch, from its API (``user:password@`` in the URL is sent
    as basic auth)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    auth = None
    if parts.username is not None:
        pair = f"{parts.username}:{parts.password or ''}".encode()
        auth = "Basic " + b64encode(pair).decode()
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def jobs(group: str) -> Any:
        query = urlencode({"group": group, "per_page": shown})
        return _get(f"{base}/api/v1/jobs?{query}", auth, timeout)

    return (_get(f"{base}/api/v1/targets", auth, timeout), jobs("attention"), jobs("running"))

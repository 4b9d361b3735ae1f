"""The status page (``GET /``): server-rendered HTML from :mod:`jobwatch.views`.

No JavaScript and nothing fetched from elsewhere (a cluster may have no egress):
one HTML document with its style inline, refreshed by ``<meta http-equiv=refresh>``.
Status words are written out, so colour is a help, never the only signal. The
template is rendered in slices that give the event loop a turn (views.SLICE_SECONDS).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import jinja2

from jobwatch import __version__
from jobwatch.model import KNOWN_STATUSES
from jobwatch.state import Store
from jobwatch.turns import Pauser
from jobwatch.views import (
    SLICE_SECONDS,
    SORT_KEYS,
    JobQuery,
    duration_words,
    percent_words,
    query_jobs,
    targets_document,
)

__all__ = ["REFRESH_SECONDS", "render_status_page"]

#: How often the page reloads itself (``?refresh=0`` stops it, ``?refresh=N`` sets it).
REFRESH_SECONDS: Final = 30
_ATTENTION_WORDS: Final = {
    "failed": "FAILED",
    "stalled": "STALLED (no task progress)",
    "overdue": "OVERDUE in its status",
    "task_failure_ratio": "TASK FAILURES over the limit",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("jobwatch", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


_env.filters["duration"] = duration_words
_env.filters["percent"] = percent_words


def _refresh(params: Mapping[str, str]) -> int:
    raw = params.get("refresh", "")
    if raw.isdigit():
        return min(int(raw), 3600)
    return REFRESH_SECONDS


async def render_status_page(
    store: Store,
    query: JobQuery,
    params: Mapping[str, str],
    now: float,
    *,
    external_url: str | None = None,
) -> str:
    """The page for ``query``; ``params`` are the request's own, kept in every link."""
    jobs = await query_jobs(store, query, now, external_url=external_url)
    fleet = await targets_document(store, now)
    pause = Pauser(SLICE_SECONDS)
    seen: set[str] = set()
    for ts in list(store.targets.values()):
        seen.update(t.job.operation for t in (ts.jobs or {}).values())
        await pause()
    operations = sorted(seen - {""})
    # Pairs, not a dict: a parameter may repeat (``status=Failed&status=Active``).
    kept = [(k, v) for k, v in params.items() if v and k != "page"]

    def link(**changes: Any) -> str:
        """The request's parameters with ``changes`` (a value replaces every
        one of that name, in the place of the first; ``None`` drops them)."""
        pairs: list[tuple[str, str]] = []
        for k, v in kept:
            if k not in changes:
                pairs.append((k, v))
            elif changes[k] is not None and k not in (name for name, _ in pairs):
                pairs.append((k, str(changes[k])))
        named = {k for k, _ in pairs}
        pairs += [(k, str(v)) for k, v in changes.items() if v is not None and k not in named]
        return "?" + urlencode(pairs)

    def sort_link(key: str) -> str:
        order = "desc" if query.sort == key and not query.descending else "asc"
        return link(sort=key, order=order, page=None)

    template = _env.get_template("status.html")
    context = {
        "version": __version__,
        "q": query,
        "jobs": jobs,
        "fleet": fleet,
        "accounts": sorted({ts.target.account_id for ts in store.targets.values()}),
        "regions": sorted({ts.target.region for ts in store.targets.values()}),
        "statuses": KNOWN_STATUSES,
        "operations": operations,
        "sort_keys": SORT_KEYS,
        "attention_words": _ATTENTION_WORDS,
        "refresh": _refresh(params),
        "link": link,
        "sort_link": sort_link,
    }
    parts: list[str] = []
    for piece in template.generate(context):
        parts.append(piece)
        await pause()
    return "".join(parts)

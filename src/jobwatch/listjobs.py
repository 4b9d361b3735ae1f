"""The ListJobs page parser: botocore's result for a page, at a fraction of its CPU.

:func:`list_jobs_hook` is what :class:`jobwatch.aws.ClientPool` registers on
``before-parse.s3-control.ListJobs``; :func:`fast_timestamp` is the timestamp
parser it sets on its session for every response. Why and how much:
docs/aws-notes.md#parsing-cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.utils import parse_timestamp as default_timestamp_parser

from jobwatch.turns import BIG_BODY, CpuTurns

__all__ = [
    "fast_list_jobs_parser",
    "fast_timestamp",
    "list_jobs_hook",
    "parse_list_jobs",
]


def fast_timestamp(value: str) -> datetime:
    """botocore timestamp parser: ``fromisoformat`` first, botocore's own as fallback.

    botocore's default spends most of a ListJobs parse in ``dateutil``
    (docs/aws-notes.md#parsing-cost); AWS sends ISO-8601, which ``fromisoformat``
    reads ~10x faster.
    Always returns an aware UTC datetime.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = default_timestamp_parser(value)
    if parsed.tzinfo is UTC:  # "Z" and "+00:00": the usual case, nothing to convert
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# botocore parses a 1,000-job ListJobs page through a generic, shape-driven
# ElementTree walk: ~35 ms of CPU with the fast timestamp parser, on the event
# loop. The pattern below reads the same page ~10x faster, but only when the
# body is in the one plain form AWS (and the simulator) send: no comments,
# CDATA, processing instructions, self-closing members, attributes other than
# the root's xmlns, repeated or unknown elements, carriage returns or
# characters XML forbids. Anything else returns None and botocore parses the
# body as always, so every odd body (and every error botocore raises on one)
# behaves exactly as without this parser. tests/test_listjobs.py checks the
# two parsers against each other on the same bodies.

_WS = "[ \t\n]*"
# Text: anything but markup, the characters XML 1.0 forbids, and CR (which XML
# rewrites as LF). "]]>", also forbidden in text, is checked on the whole body.
_TEXT = "[^<\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]*"


def _leaf(tag: str) -> str:
    return f"(?:<{tag}>({_TEXT})</{tag}>{_WS})?"


_LIST_JOBS_HEAD = re.compile(
    r'(?:<\?xml version="1\.0"(?: encoding="[Uu][Tt][Ff]-8")?\?>)?'
    + _WS
    + '<ListJobsResult(?: xmlns="[^"<&\x00-\x1f\ufffe\uffff]*")?>'
    + _WS
)
_LIST_JOBS_TOKEN = re.compile(f"(?:<NextToken>({_TEXT})</NextToken>|(<NextToken/>))" + _WS)
_LIST_JOBS_OPEN = re.compile(r"(?:<Jobs>|(<Jobs/>))" + _WS)
_LIST_JOBS_CLOSE = re.compile(r"</Jobs>" + _WS)
_LIST_JOBS_END = re.compile(r"</ListJobsResult>" + _WS + r"\Z")
#: A JobListDescriptor's leaves, in the order AWS (and the simulator) sends them.
_MEMBER_FIELDS = (
    "JobId",
    "Description",
    "Operation",
    "Priority",
    "Status",
    "CreationTime",
    "TerminationDate",
)
_PROGRESS_FIELDS = ("TotalNumberOfTasks", "NumberOfTasksSucceeded", "NumberOfTasksFailed")
_LIST_JOBS_MEMBER = re.compile(
    "<member>"
    + _WS
    + "".join(_leaf(t) for t in _MEMBER_FIELDS)
    + "(?:(<ProgressSummary>)"
    + _WS
    + "".join(_leaf(t) for t in _PROGRESS_FIELDS)
    + "(?:(<Timers>)"
    + _WS
    + _leaf("ElapsedTimeInActiveSeconds")
    + "</Timers>"
    + _WS
    + ")?</ProgressSummary>"
    + _WS
    + ")?</member>"
    + _WS
)
# The member as AWS sends it for a job that has run: every field but the
# description and the termination date present. Most members take this path:
# groups are never None but for those two, so the dict is built in one go.
_LIST_JOBS_FULL_MEMBER = re.compile(
    "<member>"
    + _WS
    + "".join(
        f"<{t}>({_TEXT})</{t}>{_WS}" if t not in ("Description", "TerminationDate") else _leaf(t)
        for t in _MEMBER_FIELDS
    )
    + "<ProgressSummary>"
    + _WS
    + "".join(f"<{t}>({_TEXT})</{t}>{_WS}" for t in _PROGRESS_FIELDS)
    + "<Timers>"
    + _WS
    + f"<ElapsedTimeInActiveSeconds>({_TEXT})</ElapsedTimeInActiveSeconds>"
    + _WS
    + "</Timers>"
    + _WS
    + "</ProgressSummary>"
    + _WS
    + "</member>"
    + _WS
)
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class _NotPlain(Exception):  # control flow: leave the body to botocore
    pass


def _xml_char(code: int) -> str:
    if (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ):
        return chr(code)
    raise _NotPlain


def _entity(m: re.Match[str]) -> str:
    named, dec, hexa = m.groups()
    if named:
        return _NAMED[named]
    return _xml_char(int(dec) if dec else int(hexa, 16))


def _text(raw: str) -> str:
    if "&" not in raw:
        return raw
    if raw.count("&") != len(_ENTITY.findall(raw)):
        raise _NotPlain  # an undefined entity or a bare "&": not well-formed
    return _ENTITY.sub(_entity, raw)


def parse_list_jobs(body: bytes, timestamp_parser: Callable[[str], Any]) -> dict[str, Any] | None:
    """A ListJobs 200 body as botocore's parser would return it (without ResponseMetadata).

    Returns ``{"NextToken": ..., "Jobs": [...]}`` (each key only when present),
    equal, key order included, to what botocore's rest-xml parser gives with
    the same ``timestamp_parser``; or ``None`` when the body is not in the plain
    form this parser reads, in which case botocore must parse it. Raises what
    ``int()`` or ``timestamp_parser`` raise on a bad value.
    """
    if b"]]>" in body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    m = _LIST_JOBS_HEAD.match(text)
    if m is None:
        return None
    pos = m.end()
    out: dict[str, Any] = {}
    token: str | None = None
    jobs: list[dict[str, Any]] | None = None
    try:
        while _LIST_JOBS_END.match(text, pos) is None:
            if (m := _LIST_JOBS_TOKEN.match(text, pos)) is not None:
                if token is not None:
                    return None  # botocore makes a list of a repeated element
                token = "" if m.group(2) else _text(m.group(1))
                pos = m.end()
                continue
            if jobs is not None or (m := _LIST_JOBS_OPEN.match(text, pos)) is None:
                return None
            pos = m.end()
            jobs = []
            if m.group(1):
                continue
            entities = "&" in text
            full = None if entities else _LIST_JOBS_FULL_MEMBER.match
            member = _LIST_JOBS_MEMBER.match
            while True:
                if full is not None and (m := full(text, pos)) is not None:
                    jobs.append(_full_job_dict(m.groups(), timestamp_parser))
                elif (m := member(text, pos)) is not None:
                    groups = m.groups()
                    if entities:
                        groups = tuple(None if g is None else _text(g) for g in groups)
                    jobs.append(_job_dict(groups, timestamp_parser))
                else:
                    break
                pos = m.end()
            if (m := _LIST_JOBS_CLOSE.match(text, pos)) is None:
                return None
            pos = m.end()
    except _NotPlain:
        return None
    # botocore's order: the shape's members in model order.
    if token is not None:
        out["NextToken"] = token
    if jobs is not None:
        out["Jobs"] = jobs
    return out


def _job_dict(g: tuple[str | None, ...], ts: Callable[[str], Any]) -> dict[str, Any]:
    """One JobListDescriptor from the member pattern's groups (text already unescaped)."""
    (job_id, desc, op, prio, status, created, ended, summary, total, ok, failed, timers, active) = g
    d: dict[str, Any] = {}
    if job_id is not None:
        d["JobId"] = job_id
    if desc is not None:
        d["Description"] = desc
    if op is not None:
        d["Operation"] = op
    if prio is not None:
        d["Priority"] = int(prio)
    if status is not None:
        d["Status"] = status
    if created is not None:
        d["CreationTime"] = ts(created)
    if ended is not None:
        d["TerminationDate"] = ts(ended)
    if summary is not None:
        p: dict[str, Any] = {}
        if total is not None:
            p["TotalNumberOfTasks"] = int(total)
        if ok is not None:
            p["NumberOfTasksSucceeded"] = int(ok)
        if failed is not None:
            p["NumberOfTasksFailed"] = int(failed)
        if timers is not None:
            p["Timers"] = {} if active is None else {"ElapsedTimeInActiveSeconds": int(active)}
        d["ProgressSummary"] = p
    return d


def _full_job_dict(g: tuple[Any, ...], ts: Callable[[str], Any]) -> dict[str, Any]:
    """:func:`_job_dict` for a member the full pattern matched (same dict, key order too)."""
    job_id, desc, op, prio, status, created, ended, total, ok, failed, active = g
    progress = {
        "TotalNumberOfTasks": int(total),
        "NumberOfTasksSucceeded": int(ok),
        "NumberOfTasksFailed": int(failed),
        "Timers": {"ElapsedTimeInActiveSeconds": int(active)},
    }
    if desc is None:
        if ended is None:
            return {
                "JobId": job_id,
                "Operation": op,
                "Priority": int(prio),
                "Status": status,
                "CreationTime": ts(created),
                "ProgressSummary": progress,
            }
        return {
            "JobId": job_id,
            "Operation": op,
            "Priority": int(prio),
            "Status": status,
            "CreationTime": ts(created),
            "TerminationDate": ts(ended),
            "ProgressSummary": progress,
        }
    if ended is None:
        return {
            "JobId": job_id,
            "Description": desc,
            "Operation": op,
            "Priority": int(prio),
            "Status": status,
            "CreationTime": ts(created),
            "ProgressSummary": progress,
        }
    return {
        "JobId": job_id,
        "Description": desc,
        "Operation": op,
        "Priority": int(prio),
        "Status": status,
        "CreationTime": ts(created),
        "TerminationDate": ts(ended),
        "ProgressSummary": progress,
    }


def fast_list_jobs_parser(
    timestamp_parser: Callable[[str], Any] = fast_timestamp,
) -> Callable[..., None]:
    """A ``before-parse.s3-control.ListJobs`` handler that parses with :func:`parse_list_jobs`.

    botocore (and aiobotocore) still send, sign, retry and build
    ``ResponseMetadata``; the handler hands botocore the parsed members through
    ``customized_response_dict`` (which botocore merges into its result) and an
    empty body to parse. A body :func:`parse_list_jobs` does not read, a bad
    value in it, or any answer other than 200 is left to botocore untouched.
    """

    def handler(
        response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
    ) -> None:
        body = response_dict.get("body")
        if response_dict.get("status_code") != 200 or not isinstance(body, bytes) or not body:
            return
        try:
            parsed = parse_list_jobs(body, timestamp_parser)
        except Exception:  # a bad number or time: botocore raises its own error on it
            return
        if parsed is None:
            return
        customized_response_dict.update(parsed)
        response_dict["body"] = b""

    return handler


def list_jobs_hook(turns: CpuTurns) -> Callable[..., Any]:
    """:func:`fast_list_jobs_parser` as the pool's clients use it: a big body in a CPU turn."""
    parse = fast_list_jobs_parser(fast_timestamp)

    async def handler(response_dict: dict[str, Any], **kwargs: Any) -> None:
        body = response_dict.get("body")
        if isinstance(body, bytes) and len(body) > BIG_BODY:
            async with turns.turn():
                parse(response_dict=response_dict, **kwargs)
        else:
            parse(response_dict=response_dict, **kwargs)

    return handler

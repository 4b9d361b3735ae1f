"""The S3 Control REST-XML wire format, written with string building.

ListJobs pages are hot: up to 1,000 jobs each, served as fast as a client asks.
So XML is assembled from strings, the parts of a job that never change are
escaped once and cached on the job, and a job whose status does not move
(anything but Active) keeps its whole ``<member>`` until it changes.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from typing import Any

from ._lifecycle import SimJob
from ._model import ACTIVE, OPERATIONS

__all__ = [
    "NS",
    "CreateJobInput",
    "create_job_xml",
    "describe_job_xml",
    "error_xml",
    "escape",
    "iso8601",
    "list_jobs_xml",
    "list_member",
    "malformed",
    "parse_create_job",
    "truncated",
    "update_job_status_xml",
]

NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"
_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# XML 1.0 cannot carry C0 controls other than TAB/LF/CR, nor U+FFFE/U+FFFF or
# lone surrogates, even as character references; they become U+FFFD. A bare CR
# would reach the client as LF after line-end normalisation, so it travels as
# &#13;.
_ESCAPES: dict[int, str] = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("\r"): "&#13;",
}
for _c in range(0x20):
    if _c not in (0x09, 0x0A, 0x0D):
        _ESCAPES[_c] = "\ufffd"
_ESCAPES[0xFFFE] = "\ufffd"
_ESCAPES[0xFFFF] = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")
_NEEDS_ESCAPE = re.compile('[&<>"\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]')


def escape(text: str) -> str:
    """Text made safe for an XML 1.0 element (see the module notes for what changes)."""
    if not _NEEDS_ESCAPE.search(text):
        return text
    return _SURROGATES.sub("\ufffd", text).translate(_ESCAPES)


def iso8601(t: float) -> str:
    """``2026-01-01T00:00:00.000Z``: ISO-8601, UTC, milliseconds, as AWS writes it."""
    whole = int(t // 1)
    millis = round((t - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _static_parts(job: SimJob) -> tuple[str, str, str, str]:
    """Escaped pieces of a ListJobs member that never change, built on first use."""
    parts = job._xml_static
    if parts is None:
        desc = job.description
        head = f"<member><JobId>{escape(job.job_id)}</JobId>"
        if desc:
            head += f"<Description>{escape(desc)}</Description>"
        head += "<Operation>"
        parts = (
            head,
            escape(job.operation),
            f"</Operation><Priority>{job.priority}</Priority><Status>",
            f"<CreationTime>{iso8601(job.creation)}</CreationTime>",
        )
        job._xml_static = parts
    return parts


def list_member(
    job: SimJob, now: float, status: str | None = None, operation: str | None = None
) -> str:
    """One ``<member>`` of ListJobs for ``job`` at ``now`` (the job must be advanced).

    ``status``/``operation`` override the job's values (the unknown-enum faults).
    """
    cacheable = status is None and operation is None and job.status != ACTIVE
    if cacheable and job._xml_cache_version == job.version and job._xml_cache is not None:
        return job._xml_cache
    head, op, prio, created = _static_parts(job)
    total, ok, failed, elapsed = job.progress(now)
    term = job.termination
    out = (
        f"{head}{op if operation is None else escape(operation)}{prio}"
        f"{escape(job.status if status is None else status)}</Status>{created}"
        + (f"<TerminationDate>{iso8601(term)}</TerminationDate>" if term is not None else "")
        + f"<ProgressSummary><TotalNumberOfTasks>{total}</TotalNumberOfTasks>"
        f"<NumberOfTasksSucceeded>{ok}</NumberOfTasksSucceeded>"
        f"<NumberOfTasksFailed>{failed}</NumberOfTasksFailed>"
        f"<Timers><ElapsedTimeInActiveSeconds>{elapsed}</ElapsedTimeInActiveSeconds>"
        "</Timers></ProgressSummary></member>"
    )
    if cacheable:
        job._xml_cache = out
        job._xml_cache_version = job.version
    return out


def list_jobs_xml(members: list[str], next_token: str | None) -> bytes:
    """A whole ListJobsResult; ``next_token`` None means the last page (no element)."""
    token = f"<NextToken>{escape(next_token)}</NextToken>" if next_token is not None else ""
    return (
        f'{_DECL}<ListJobsResult xmlns="{NS}">{token}<Jobs>{"".join(members)}</Jobs>'
        "</ListJobsResult>"
    ).encode()


def _operation_xml(job: SimJob, name: str) -> str:
    """The DescribeJob ``<Operation>`` structure: one child named after the operation."""
    bucket = f"arn:aws:s3:::jobwatch-sim-{job.account_id}-{job.region}"
    inner = ""
    if name == "LambdaInvoke":
        inner = (
            f"<FunctionArn>arn:aws:lambda:{job.region}:{job.account_id}:function:"
            "batch-worker</FunctionArn><InvocationSchemaVersion>2.0</InvocationSchemaVersion>"
        )
    elif name == "S3PutObjectCopy":
        inner = f"<TargetResource>{bucket}-copy</TargetResource>"
    elif name == "S3PutObjectTagging":
        inner = "<TagSet><member><Key>jobwatch</Key><Value>sim</Value></member></TagSet>"
    elif name == "S3InitiateRestoreObject":
        inner = "<ExpirationInDays>1</ExpirationInDays><GlacierJobTier>BULK</GlacierJobTier>"
    elif name not in OPERATIONS:
        # An operation botocore does not know: AWS sends its element, botocore drops it.
        inner = "<Placeholder>true</Placeholder>"
    tag = escape(name) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) else "UnknownOperation"
    return f"<Operation><{tag}>{inner}</{tag}></Operation>"


def describe_job_xml(
    job: SimJob, now: float, status: str | None = None, operation: str | None = None
) -> bytes:
    """A DescribeJobResult for ``job`` at ``now`` (the job must be advanced)."""
    total, ok, failed, elapsed = job.progress(now)
    parts = [
        f'{_DECL}<DescribeJobResult xmlns="{NS}"><Job>',
        f"<JobId>{escape(job.job_id)}</JobId>",
        f"<ConfirmationRequired>{'true' if job.confirmation_required else 'false'}"
        "</ConfirmationRequired>",
    ]
    if job.description:
        parts.append(f"<Description>{escape(job.description)}</Description>")
    parts.append(
        f"<JobArn>arn:aws:s3:{escape(job.region)}:{job.account_id}:job/{escape(job.job_id)}"
        "</JobArn>"
    )
    parts.append(f"<Status>{escape(job.status if status is None else status)}</Status>")
    bucket = f"arn:aws:s3:::jobwatch-sim-{job.account_id}-{escape(job.region)}"
    parts.append(
        "<Manifest><Spec><Format>S3BatchOperations_CSV_20180820</Format>"
        "<Fields><member>Bucket</member><member>Key</member></Fields></Spec>"
        f"<Location><ObjectArn>{bucket}/manifests/{escape(job.job_id)}.csv</ObjectArn>"
        '<ETag>"60e460c9d1046e73f7dde5043ac3ae85"</ETag></Location></Manifest>'
    )
    parts.append(_operation_xml(job, job.operation if operation is None else operation))
    parts.append(f"<Priority>{job.priority}</Priority>")
    parts.append(
        f"<ProgressSummary><TotalNumberOfTasks>{total}</TotalNumberOfTasks>"
        f"<NumberOfTasksSucceeded>{ok}</NumberOfTasksSucceeded>"
        f"<NumberOfTasksFailed>{failed}</NumberOfTasksFailed>"
        f"<Timers><ElapsedTimeInActiveSeconds>{elapsed}</ElapsedTimeInActiveSeconds></Timers>"
        "</ProgressSummary>"
    )
    if job.status_update_reason:
        parts.append(f"<StatusUpdateReason>{escape(job.status_update_reason)}</StatusUpdateReason>")
    if job.failure_reasons:
        parts.append("<FailureReasons>")
        for code, reason in job.failure_reasons:
            parts.append(
                f"<member><FailureCode>{escape(code)}</FailureCode>"
                f"<FailureReason>{escape(reason)}</FailureReason></member>"
            )
        parts.append("</FailureReasons>")
    rep = job.report
    if rep.enabled:
        parts.append(
            f"<Report><Bucket>{escape(rep.bucket)}</Bucket><Format>{escape(rep.format)}</Format>"
            "<Enabled>true</Enabled>"
            + (f"<Prefix>{escape(rep.prefix)}</Prefix>" if rep.prefix else "")
            + f"<ReportScope>{escape(rep.scope)}</ReportScope></Report>"
        )
    else:
        parts.append("<Report><Enabled>false</Enabled></Report>")
    parts.append(f"<CreationTime>{iso8601(job.creation)}</CreationTime>")
    if job.termination is not None:
        parts.append(f"<TerminationDate>{iso8601(job.termination)}</TerminationDate>")
    parts.append(f"<RoleArn>{escape(job.role_arn)}</RoleArn>")
    if job.suspended_date is not None:
        parts.append(f"<SuspendedDate>{iso8601(job.suspended_date)}</SuspendedDate>")
    if job.suspended_cause:
        parts.append(f"<SuspendedCause>{escape(job.suspended_cause)}</SuspendedCause>")
    parts.append("</Job></DescribeJobResult>")
    return "".join(parts).encode()


def update_job_status_xml(job_id: str, status: str, reason: str | None) -> bytes:
    """An UpdateJobStatusResult."""
    r = f"<StatusUpdateReason>{escape(reason)}</StatusUpdateReason>" if reason else ""
    return (
        f'{_DECL}<UpdateJobStatusResult xmlns="{NS}"><JobId>{escape(job_id)}</JobId>'
        f"<Status>{escape(status)}</Status>{r}</UpdateJobStatusResult>"
    ).encode()


def create_job_xml(job_id: str) -> bytes:
    """A CreateJobResult."""
    return (
        f'{_DECL}<CreateJobResult xmlns="{NS}"><JobId>{escape(job_id)}</JobId></CreateJobResult>'
    ).encode()


def error_xml(code: str, message: str, request_id: str, host_id: str) -> bytes:
    """An S3-style error body: ``<Error><Code/><Message/><RequestId/><HostId/></Error>``."""
    return (
        f"{_DECL}<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{escape(request_id)}</RequestId><HostId>{escape(host_id)}</HostId></Error>"
    ).encode()


def truncated(body: bytes) -> bytes:
    """The first half of ``body``: a document that stops mid-element."""
    return body[: max(1, len(body) // 2)]


def malformed(body: bytes) -> bytes:
    """A body that is not well-formed XML (mismatched tags after a valid start)."""
    cut = body.find(b"<Jobs>")
    cut = cut if cut >= 0 else min(len(body), 60)
    return body[:cut] + b"<Jobs><member><JobId>broken</Jobs></member></ListJobsResult>"


class CreateJobInput:
    """The parts of a CreateJob body the simulator uses (everything else is ignored)."""

    __slots__ = (
        "client_request_token",
        "confirmation_required",
        "description",
        "operation",
        "priority",
        "report_enabled",
        "role_arn",
        "tags",
    )

    def __init__(self) -> None:
        self.confirmation_required = False
        self.operation = "S3PutObjectTagging"
        self.client_request_token: str | None = None
        self.description: str | None = None
        self.priority = 10
        self.role_arn: str | None = None
        self.report_enabled = False
        self.tags: dict[str, str] = {}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_create_job(body: bytes) -> CreateJobInput:
    """Read a CreateJobRequest body; raises ``ValueError`` with a message for a bad one.

    Simulation knobs ride on job tags: ``sim:tasks``, ``sim:rate``,
    ``sim:failure_ratio`` (AWS would store them as ordinary tags).
    """
    try:
        # The body comes from the client under test on loopback: parse, but refuse DTDs.
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise ValueError("DTDs are not accepted")
        root = ET.fromstring(body)  # noqa: S314 - DTDs refused above; loopback client
    except ET.ParseError as err:
        raise ValueError(f"The XML you provided was not well-formed: {err}") from None
    out = CreateJobInput()
    children: dict[str, Any] = {_local(c.tag): c for c in root}
    conf = children.get("ConfirmationRequired")
    if conf is not None:
        out.confirmation_required = (conf.text or "").strip().lower() == "true"
    op = children.get("Operation")
    if op is not None and len(op):
        out.operation = _local(op[0].tag)
    for name, attr in (
        ("ClientRequestToken", "client_request_token"),
        ("Description", "description"),
        ("RoleArn", "role_arn"),
    ):
        el = children.get(name)
        if el is not None and el.text:
            setattr(out, attr, el.text)
    prio = children.get("Priority")
    if prio is not None:
        try:
            out.priority = int((prio.text or "").strip())
        except ValueError:
            raise ValueError("Priority must be an integer") from None
    report = children.get("Report")
    if report is not None:
        for el in report:
            if _local(el.tag) == "Enabled":
                out.report_enabled = (el.text or "").strip().lower() == "true"
    tags = children.get("Tags")
    if tags is not None:
        for member in tags:
            kv = {_local(x.tag): (x.text or "") for x in member}
            if "Key" in kv:
                out.tags[kv["Key"]] = kv.get("Value", "")
    has_manifest = "Manifest" in children or "ManifestGenerator" in children
    if "Operation" not in children or not has_manifest:
        raise ValueError("CreateJob needs Operation and Manifest (or ManifestGenerator)")
    return out

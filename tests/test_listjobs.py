"""jobwatch's ListJobs parser against botocore's, on the same bodies.

The fast parser (``jobwatch.listjobs.parse_list_jobs`` behind the
``before-parse.s3-control.ListJobs`` hook) must give what botocore gives, or
leave the body to botocore. Each body goes through both routes exactly as
aiobotocore's endpoint runs them (hook, then parser, then the merge of
``customized_response_dict``); the outcomes, a dict or an exception, must be
equal. Generated bodies cover missing fields, unknown enum values, odd and bad
numbers, entities and character references, whitespace and empty NextTokens;
hand-written ones the forms the fast parser refuses. Last, the page's next step,
``source.job_from_api``, against its first, plain version.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
import botocore.session
import pytest
from aiobotocore.session import AioSession
from botocore.parsers import RestXMLParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwatch.aws import ClientPool, use_custom_endpoint
from jobwatch.clock import ManualClock
from jobwatch.listjobs import fast_list_jobs_parser, fast_timestamp, parse_list_jobs
from jobwatch.model import Job
from jobwatch.simulator import FaultSpec, Simulator, SimulatorServer, generate_fleet
from jobwatch.source import job_from_api

NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"
SHAPE = (
    botocore.session.get_session().get_service_model("s3control").operation_model("ListJobs")
).output_shape
HEADERS = {"x-amz-request-id": "REQ", "content-type": "application/xml"}
FIELDS = ("JobId", "Description", "Operation", "Priority", "Status", "CreationTime")


def normal(value: Any) -> Any:
    """``value`` with ElementTree nodes as (tag, text): botocore returns raw nodes for
    repeated scalar elements, and nodes from two parses never compare equal."""
    if isinstance(value, ET.Element):
        return ("element", value.tag, value.text)
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def outcome(parse: Any) -> tuple[str, Any]:
    try:
        return ("ok", normal(parse()))
    except Exception as e:
        return ("error", (type(e), str(e)))


def botocore_parse(body: bytes) -> dict[str, Any]:
    response = {"body": body, "headers": dict(HEADERS), "status_code": 200, "context": {}}
    parsed: dict[str, Any] = RestXMLParser(timestamp_parser=fast_timestamp).parse(response, SHAPE)
    return parsed


def hooked_parse(body: bytes) -> dict[str, Any]:
    """What aiobotocore's endpoint does for ListJobs with jobwatch's hook registered."""
    response = {"body": body, "headers": dict(HEADERS), "status_code": 200, "context": {}}
    custom: dict[str, Any] = {}
    fast_list_jobs_parser(fast_timestamp)(
        response_dict=response, customized_response_dict=custom, operation_model=None
    )
    parsed: dict[str, Any] = RestXMLParser(timestamp_parser=fast_timestamp).parse(response, SHAPE)
    parsed.update(custom)
    return parsed


def assert_same(body: bytes) -> tuple[str, Any]:
    expected = outcome(lambda: botocore_parse(body))
    got = outcome(lambda: hooked_parse(body))
    assert got == expected
    if expected[0] == "ok":
        # Key order too: callers may rely on what botocore gives.
        assert list(got[1]) == list(expected[1])
        for mine, theirs in zip(got[1].get("Jobs", []), expected[1].get("Jobs", []), strict=True):
            assert list(mine) == list(theirs)
    return expected


def page(members: Sequence[str], head: str | None = "<NextToken>abc</NextToken>") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListJobsResult xmlns="{NS}">'
        f"{head or ''}<Jobs>{''.join(members)}</Jobs></ListJobsResult>"
    ).encode()


MEMBER = (
    "<member><JobId>j-1</JobId><Description>copy &amp; tag</Description>"
    "<Operation>S3PutObjectCopy</Operation><Priority>10</Priority><Status>Active</Status>"
    "<CreationTime>2026-01-01T00:00:00.000Z</CreationTime>"
    "<ProgressSummary><TotalNumberOfTasks>100</TotalNumberOfTasks>"
    "<NumberOfTasksSucceeded>40</NumberOfTasksSucceeded>"
    "<NumberOfTasksFailed>2</NumberOfTasksFailed>"
    "<Timers><ElapsedTimeInActiveSeconds>30</ElapsedTimeInActiveSeconds></Timers>"
    "</ProgressSummary></member>"
)


# --------------------------------------------------------------------------- the plain form


def test_plain_page_takes_the_fast_path_and_equals_botocore() -> None:
    body = page([MEMBER, MEMBER.replace("j-1", "j-2")])
    assert parse_list_jobs(body, fast_timestamp) is not None
    status, parsed = assert_same(body)
    assert status == "ok"
    assert [j["JobId"] for j in parsed["Jobs"]] == ["j-1", "j-2"]
    assert parsed["Jobs"][0]["Description"] == "copy & tag"
    assert parsed["NextToken"] == "abc"
    assert parsed["ResponseMetadata"]["RequestId"] == "REQ"


@pytest.mark.parametrize(
    ("token", "expected"),
    [("<NextToken/>", ""), ("<NextToken></NextToken>", ""), ("", None)],
)
def test_empty_or_missing_next_token(token: str, expected: str | None) -> None:
    body = page([MEMBER], token)
    assert parse_list_jobs(body, fast_timestamp) is not None
    _, parsed = assert_same(body)
    assert parsed.get("NextToken") == expected


def test_unknown_enum_values_pass_through() -> None:
    member = MEMBER.replace("S3PutObjectCopy", "S3FutureOperation").replace(
        "<Status>Active", "<Status>Archiving"
    )
    body = page([member])
    assert parse_list_jobs(body, fast_timestamp) is not None
    _, parsed = assert_same(body)
    assert parsed["Jobs"][0]["Operation"] == "S3FutureOperation"
    assert parsed["Jobs"][0]["Status"] == "Archiving"


@pytest.mark.parametrize("description", [True, False])
@pytest.mark.parametrize("ended", [True, False])
def test_members_with_every_field(description: bool, ended: bool) -> None:
    member = MEMBER
    if not description:
        member = member.replace("<Description>copy &amp; tag</Description>", "")
    else:
        member = member.replace("copy &amp; tag", "copy and tag")  # no entity: fastest path
    if ended:
        member = member.replace(
            "</CreationTime>",
            "</CreationTime><TerminationDate>2026-01-02T00:00:00Z</TerminationDate>",
        )
    body = page([member, member.replace("j-1", "j-2").replace("<Priority>10", "<Priority> 7")])
    assert parse_list_jobs(body, fast_timestamp) is not None
    _, parsed = assert_same(body)
    assert ("Description" in parsed["Jobs"][0]) == description
    assert ("TerminationDate" in parsed["Jobs"][0]) == ended
    assert parsed["Jobs"][1]["Priority"] == 7


def test_missing_fields_and_empty_structures() -> None:
    bare = "<member><JobId>j</JobId></member>"
    empty_summary = "<member><JobId>k</JobId><ProgressSummary></ProgressSummary></member>"
    empty_timers = (
        "<member><JobId>t</JobId><ProgressSummary><Timers></Timers></ProgressSummary></member>"
    )
    body = page([bare, empty_summary, empty_timers, "<member></member>"])
    assert parse_list_jobs(body, fast_timestamp) is not None
    _, parsed = assert_same(body)
    assert parsed["Jobs"] == [
        {"JobId": "j"},
        {"JobId": "k", "ProgressSummary": {}},
        {"JobId": "t", "ProgressSummary": {"Timers": {}}},
        {},
    ]


@pytest.mark.parametrize(
    "jobs", ["<Jobs/>", "<Jobs></Jobs>", "<Jobs>\n  </Jobs>", ""], ids=["self", "empty", "ws", "no"]
)
def test_no_jobs(jobs: str) -> None:
    body = f'<ListJobsResult xmlns="{NS}">{jobs}</ListJobsResult>'.encode()
    assert parse_list_jobs(body, fast_timestamp) is not None
    assert_same(body)


def test_whitespace_between_elements_and_order_of_token() -> None:
    pretty = MEMBER.replace("><", ">\n  <")
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListJobsResult xmlns="{NS}">\n'
        f"  <Jobs>\n{pretty}\n</Jobs>\n  <NextToken>t</NextToken>\n</ListJobsResult>\n"
    ).encode()
    assert parse_list_jobs(body, fast_timestamp) is not None
    _, parsed = assert_same(body)
    assert parsed["NextToken"] == "t"
    assert parsed["Jobs"][0]["Priority"] == 10


@pytest.mark.parametrize(
    "value",
    ["", "abc", " 12 ", "+3", "-7", "1_000", "\u0661\u0662", "99999999999999999999999", "1.5"],
)
def test_odd_and_bad_numbers(value: str) -> None:
    # int() accepts some of these and rejects others; both parsers call it.
    body = page([MEMBER.replace("<Priority>10<", f"<Priority>{value}<")])
    status, _ = assert_same(body)
    if value in ("", "abc", "1.5"):
        assert status == "error"


@pytest.mark.parametrize(
    "value", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00", "2026-01-01", "yesterday", ""]
)
def test_odd_and_bad_timestamps(value: str) -> None:
    assert_same(page([MEMBER.replace("2026-01-01T00:00:00.000Z", value)]))


def test_fast_timestamp_parser_returns_utc() -> None:
    assert fast_timestamp("2026-01-02T03:04:05Z").isoformat() == "2026-01-02T03:04:05+00:00"
    assert (
        fast_timestamp("2026-01-02T03:04:05.5+01:00").isoformat()
        == "2026-01-02T02:04:05.500000+00:00"
    )
    assert fast_timestamp("2026-01-02T03:04:05").tzinfo is not None  # naive read as UTC
    assert fast_timestamp("Fri, 02 Jan 2026 03:04:05 GMT").year == 2026  # botocore's fallback


@pytest.mark.parametrize(
    "text",
    [
        "a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;",
        "cr&#13;lf&#10;tab&#9;",
        "emoji &#x1F600; and &#233;",
        "bad &#0; ref",
        "bad &#xD800; ref",
        "undefined &nbsp; entity",
        "bare & ampersand",
        "unterminated &amp",
        "gt > is fine",
    ],
)
def test_entities_and_character_references(text: str) -> None:
    body = page([MEMBER.replace("copy &amp; tag", text)])
    assert_same(body)


# --------------------------------------------------------------------------- refused forms

ODD = {
    "malformed": page([MEMBER.replace("</Status>", "</Statu>")]),
    "truncated": page([MEMBER])[:300],
    "not xml": b"Service Unavailable",
    "html": b"<html><body>oops</body></html>",
    "cdata": page([MEMBER.replace("copy &amp; tag", "<![CDATA[a <b> & c]]>")]),
    "comment": page([MEMBER.replace("<Status>", "<!-- c --><Status>")]),
    "processing instruction": page([MEMBER.replace("<Status>", "<?pi x?><Status>")]),
    "carriage return": page([MEMBER.replace("copy &amp; tag", "line\r\nend")]),
    "lone carriage return": page([MEMBER.replace("copy &amp; tag", "a\rb")]),
    "control character": page([MEMBER.replace("copy &amp; tag", "a\x01b")]),
    "cdata end in text": page([MEMBER.replace("copy &amp; tag", "a ]]> b")]),
    "not utf-8": page([MEMBER]).replace(b"copy", b"c\xffpy"),
    "latin-1 declared": page([MEMBER.replace("copy &amp; tag", "caf\u00e9")]).replace(
        b"UTF-8", b"ISO-8859-1"
    ),
    "bom": b"\xef\xbb\xbf" + page([MEMBER]),
    "duplicate token": page([MEMBER], "<NextToken>a</NextToken><NextToken>b</NextToken>"),
    "duplicate jobs": page([MEMBER]).replace(b"</Jobs>", b"</Jobs><Jobs></Jobs>"),
    "duplicate field": page([MEMBER.replace("<Status>Active</Status>", "<Status>A</Status>" * 2)]),
    "duplicate priority": page(
        [MEMBER.replace("<Priority>10</Priority>", "<Priority>1</Priority>" * 2)]
    ),
    "fields out of order": page(
        [
            MEMBER.replace(
                "<Priority>10</Priority><Status>Active</Status>",
                "<Status>Active</Status><Priority>10</Priority>",
            )
        ]
    ),
    "unknown field": page([MEMBER.replace("<Status>", "<UserArn>arn</UserArn><Status>")]),
    "unknown root child": page([MEMBER]).replace(b"<Jobs>", b"<Extra>x</Extra><Jobs>"),
    "self-closing field": page(
        [MEMBER.replace("<Description>copy &amp; tag</Description>", "<Description/>")]
    ),
    "attribute on member": page([MEMBER.replace("<member>", '<member a="1">')]),
    "other member tag": page([MEMBER.replace("member>", "item>")]),
    "other root": page([MEMBER]).replace(b"ListJobsResult", b"Other"),
    "prefixed namespace": (
        f'<s:ListJobsResult xmlns:s="{NS}"><s:Jobs></s:Jobs></s:ListJobsResult>'.encode()
    ),
    "no namespace": page([MEMBER]).replace(f' xmlns="{NS}"'.encode(), b""),
    "scalar with child": page([MEMBER.replace("<JobId>j-1</JobId>", "<JobId>j<b/>1</JobId>")]),
    "trailing garbage": page([MEMBER]) + b"<x/>",
    "text outside elements": page([MEMBER.replace("<Status>", "junk<Status>")]),
    "self-closing root": f'<ListJobsResult xmlns="{NS}"/>'.encode(),
    "whitespace before declaration": b"  " + page([MEMBER]),
    "nbsp between elements": page([MEMBER.replace("<Status>", "\u00a0<Status>")]),
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_bodies_behave_as_botocore(name: str) -> None:
    assert_same(ODD[name])


@pytest.mark.parametrize(
    "name",
    [
        "malformed",
        "cdata",
        "comment",
        "carriage return",
        "duplicate token",
        "unknown field",
        "not utf-8",
        "other root",
        "text outside elements",
    ],
)
def test_refused_forms_are_left_to_botocore(name: str) -> None:
    assert parse_list_jobs(ODD[name], fast_timestamp) is None


def test_hook_leaves_non_200_answers_alone() -> None:
    error = b"<Error><Code>SlowDown</Code><Message>slow</Message></Error>"
    response = {"body": error, "headers": {}, "status_code": 503, "context": {}}
    custom: dict[str, Any] = {}
    fast_list_jobs_parser()(response_dict=response, customized_response_dict=custom)
    assert custom == {}
    assert response["body"] == error


# --------------------------------------------------------------------------- generated bodies

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30
)  # any character; those XML cannot carry make the body one botocore rejects
ODD_NUMBER = st.sampled_from(["", " 5", "5 ", "+1", "1_0", "0x10", "1e3", "--1", "\u0663"])
ODD_STAMP = st.sampled_from(["2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00+05:30", "", "soon"])


def _mostly(valid: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` nine times in ten: a body is left to botocore as soon as one value is odd."""
    return st.integers(0, 9).flatmap(lambda k: odd if k == 0 else valid)


NUMBER = _mostly(st.integers(min_value=-(2**63), max_value=2**63).map(str), ODD_NUMBER)
STAMP = _mostly(st.datetimes().map(lambda d: d.isoformat() + "Z"), ODD_STAMP)


def _render_text(value: str, rng: random.Random, plain: bool = False) -> str:
    if plain:
        # Text as AWS mostly sends it: nothing escaped, nothing XML cannot carry.
        return "".join(c for c in value if c in "\t\n" or (ord(c) >= 0x20 and c not in "&<>"))
    out = []
    for ch in value:
        roll = rng.random()
        if ch in "&<>" or roll < 0.1:
            out.append(f"&#{ord(ch)};" if roll < 0.05 else f"&#x{ord(ch):x};")
        else:
            out.append(escape(ch, {'"': "&quot;", "'": "&apos;"}) if roll < 0.2 else ch)
    return "".join(out)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    rng = random.Random(draw(st.integers(0, 2**32)))
    plain = draw(st.booleans())
    ws = draw(st.sampled_from(["", "\n", "  ", "\t\n "]))
    members = []
    for _ in range(draw(st.integers(0, 4))):
        # Half the members have every field a job that ran has (the parser's
        # fastest path); the others lack any of them.
        complete = draw(st.booleans())
        optional = ("Description", "TerminationDate") if complete else ()
        parts = []
        for name, strategy in (
            ("JobId", TEXT),
            ("Description", TEXT),
            ("Operation", st.sampled_from(["S3PutObjectCopy", "LambdaInvoke", "S3Next"]) | TEXT),
            ("Priority", NUMBER),
            ("Status", st.sampled_from(["Active", "Complete", "Archiving"]) | TEXT),
            ("CreationTime", STAMP),
            ("TerminationDate", STAMP),
        ):
            if (complete and name not in optional) or draw(st.booleans()):
                parts.append(f"<{name}>{_render_text(draw(strategy), rng, plain)}</{name}>")
        if complete or draw(st.booleans()):
            inner = []
            for name in ("TotalNumberOfTasks", "NumberOfTasksSucceeded", "NumberOfTasksFailed"):
                if complete or draw(st.booleans()):
                    inner.append(f"<{name}>{draw(NUMBER)}</{name}>")
            if complete or draw(st.booleans()):
                active = (
                    f"<ElapsedTimeInActiveSeconds>{draw(NUMBER)}</ElapsedTimeInActiveSeconds>"
                    if complete or draw(st.booleans())
                    else ""
                )
                inner.append(f"<Timers>{active}</Timers>")
            parts.append(f"<ProgressSummary>{ws.join(inner)}</ProgressSummary>")
        members.append(f"<member>{ws}{ws.join(parts)}{ws}</member>")
    token = draw(
        st.sampled_from(["", "<NextToken/>", "<NextToken></NextToken>"])
        | TEXT.map(lambda t: f"<NextToken>{_render_text(t, rng, plain)}</NextToken>")
    )
    decl = draw(st.sampled_from(['<?xml version="1.0" encoding="UTF-8"?>\n', ""]))
    return (
        f'{decl}<ListJobsResult xmlns="{NS}">{ws}{token}{ws}<Jobs>{ws.join(members)}</Jobs>'
        f"{ws}</ListJobsResult>"
    ).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_generated_bodies_parse_as_botocore_does(body: bytes) -> None:
    assert_same(body)


# --------------------------------------------------------------------------- over real HTTP


async def test_pool_client_equals_a_plain_client_over_http() -> None:
    """The pool's client (with the hook) and a plain aiobotocore client, same pages."""
    sim = Simulator(
        generate_fleet(1, ["eu-west-1"], 2500, seed=3, terminal_share=0.5), ManualClock()
    )
    account = "100000000000"
    async with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        plain_session = AioSession()
        plain_session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=fast_timestamp
        )
        async with (
            ClientPool(endpoint_url=server.url) as pool,
            plain_session.create_client(
                "s3control", region_name="eu-west-1", endpoint_url=server.url
            ) as plain,
            aiohttp.ClientSession() as raw,
        ):
            use_custom_endpoint(plain)
            fast = await pool.client("eu-west-1")
            for fault in (None, "unknown_status", "unknown_operation"):
                if fault is not None:
                    sim.add_fault(FaultSpec(kind=fault))
                token = None
                pages = 0
                while True:
                    kwargs: dict[str, Any] = {"AccountId": account, "MaxResults": 1000}
                    if token:
                        kwargs["NextToken"] = token
                    mine = await fast.list_jobs(**kwargs)
                    theirs = await plain.list_jobs(**kwargs)
                    meta = mine.pop("ResponseMetadata")
                    theirs.pop("ResponseMetadata")
                    assert meta["HTTPStatusCode"] == 200
                    assert mine == theirs
                    pages += 1
                    token = mine.get("NextToken")
                    if not token:
                        break
                assert pages == 3
                sim.clear_faults()
            # The simulator's pages are in the plain form: the fast path is the one taken.
            auth = (
                "AWS4-HMAC-SHA256 Credential=x/20260101/eu-west-1/s3/aws4_request, "
                "SignedHeaders=host, Signature=0"
            )
            async with raw.get(
                f"{server.url}/v20180820/jobs",
                params={"maxResults": "1000"},
                headers={"Authorization": auth, "x-amz-account-id": account},
            ) as resp:
                body = await resp.read()
            assert parse_list_jobs(body, fast_timestamp) is not None
            assert_same(body)


# --------------------------------------------------------------------------- job_from_api


def _reference_job_from_api(d: dict[str, Any]) -> Job:
    """job_from_api as first written (before its fast paths), kept as the reference."""
    job_id = d.get("JobId")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job entry without JobId")
    progress = d.get("ProgressSummary") or {}
    timers = progress.get("Timers") or {}
    op = d.get("Operation")
    if isinstance(op, str):
        operation = op
    elif isinstance(op, dict) and op:
        operation = next(iter(op))
    else:
        operation = ""

    def as_int(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def epoch(value: Any) -> float | None:
        return value.timestamp() if isinstance(value, datetime) else None

    status = d.get("Status")
    active = timers.get("ElapsedTimeInActiveSeconds")
    description = d.get("Description")
    return Job.make(
        job_id=job_id,
        status=status if isinstance(status, str) and status else "Unknown",
        operation=operation,
        priority=as_int(d.get("Priority")),
        description=description if isinstance(description, str) else "",
        creation_time=epoch(d.get("CreationTime")),
        termination_time=epoch(d.get("TerminationDate")),
        tasks_total=as_int(progress.get("TotalNumberOfTasks")),
        tasks_succeeded=as_int(progress.get("NumberOfTasksSucceeded")),
        tasks_failed=as_int(progress.get("NumberOfTasksFailed")),
        active_seconds=float(active) if isinstance(active, int | float) else 0.0,
    )


class _Str(str):
    pass


class _Int(int):
    pass


class _When(datetime):
    pass


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    TEXT,
    st.just(_Str("sub")),
    st.just(_Int(7)),
    st.datetimes(timezones=st.just(UTC)),
    st.just(_When(2026, 1, 1, tzinfo=UTC)),
    st.dictionaries(st.sampled_from(["S3PutObjectCopy", "x"]), st.just({}), max_size=1),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            (
                "JobId",
                "Description",
                "Operation",
                "Priority",
                "Status",
                "CreationTime",
                "TerminationDate",
            ),
            ANY_VALUE,
        )
        | {
            "ProgressSummary": st.none()
            | st.fixed_dictionaries(
                {},
                optional={
                    "TotalNumberOfTasks": ANY_VALUE,
                    "NumberOfTasksSucceeded": ANY_VALUE,
                    "NumberOfTasksFailed": ANY_VALUE,
                    "Timers": st.none()
                    | st.fixed_dictionaries({}, optional={"ElapsedTimeInActiveSeconds": ANY_VALUE}),
                },
            )
        },
    ).map(lambda d: {**d, "JobId": d.get("JobId", "job-1")})
)
def test_job_from_api_behaves_as_its_reference(entry: dict[str, Any]) -> None:
    assert outcome(lambda: job_from_api(entry)) == outcome(lambda: _reference_job_from_api(entry))

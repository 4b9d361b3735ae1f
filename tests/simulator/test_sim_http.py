"""The wire: authentication, routing, validation, XML details, DescribeJob and friends."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from jobwatch.clock import ManualClock
from jobwatch.simulator import (
    Simulator,
    SimulatorServer,
    builtin_scenario,
    parse_listen,
    run_simulator,
)

A = "111111111111"
R = "us-east-1"
NS = "{http://awss3control.amazonaws.com/doc/2018-08-20/}"
AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)

WORLD = {
    "regions": ["us-east-1", "eu-west-1"],
    "accounts": [
        {
            "id": A,
            "jobs": [
                {
                    "id": "copy-job",
                    "region": "us-east-1",
                    "description": "nightly copy",
                    "operation": "S3PutObjectCopy",
                    "priority": 42,
                    "tasks": 1000,
                    "rate": 10,
                    "failure_ratio": 0.1,
                    "created_at": "-1m",
                    "report": {
                        "bucket": "arn:aws:s3:::reports",
                        "prefix": "jobs",
                        "scope": "FailedTasksOnly",
                    },
                },
                {
                    "id": "waiting-job",
                    "region": "us-east-1",
                    "confirmation_required": True,
                    "report": {"enabled": False},
                    "tasks": 10_000,
                    "rate": 100,
                },
                {"id": "west-job", "region": "eu-west-1"},
            ],
        },
        {"id": "444444444444", "access_denied": True},
    ],
}


def headers(region: str = R, account: str | None = A, **extra: str) -> dict[str, str]:
    out = {"Authorization": AUTH.format(region=region), **extra}
    if account is not None:
        out["x-amz-account-id"] = account
    return out


async def raw(
    stack: AsyncExitStack, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    session = await stack.enter_async_context(aiohttp.ClientSession())
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - the simulator's own output, read on loopback


def error_code(body: bytes) -> str:
    root = parse(body)
    assert root.tag == "Error"
    assert root.findtext("RequestId")
    assert root.findtext("HostId")
    assert root.findtext("Message")
    return root.findtext("Code") or ""


async def test_requests_without_sigv4_are_rejected(serve: Any, stack: AsyncExitStack) -> None:
    sim, server = await serve(WORLD)
    url = f"{server.url}/v20180820/jobs"
    status, hdrs, body = await raw(stack, "GET", url, headers={"x-amz-account-id": A})
    assert (status, error_code(body)) == (403, "AccessDenied")
    assert hdrs["Content-Type"].startswith("application/xml")
    assert parse(body).findtext("RequestId") == hdrs["x-amz-request-id"]

    sigv2 = {"Authorization": "AWS testing:c2lnbmF0dXJl", "x-amz-account-id": A}
    status, _, body = await raw(stack, "GET", url, headers=sigv2)
    assert (status, error_code(body)) == (400, "InvalidRequest")

    broken = {"Authorization": "AWS4-HMAC-SHA256 Credential=nonsense", "x-amz-account-id": A}
    status, _, body = await raw(stack, "GET", url, headers=broken)
    assert (status, error_code(body)) == (400, "AuthorizationHeaderMalformed")

    wrong_service = headers(Authorization=AUTH.format(region=R).replace("/s3/", "/sts/"))
    status, _, body = await raw(stack, "GET", url, headers=wrong_service)
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    assert sim.request_count(operation="ListJobs") == 4
    assert sim.request_count(outcome="ok") == 0


async def test_region_comes_from_host_or_credential_scope(
    serve: Any, stack: AsyncExitStack
) -> None:
    _, server = await serve(WORLD)
    url = f"{server.url}/v20180820/jobs"
    # As botocore addresses real AWS: the region is in the Host.
    aws_host = f"{A}.s3-control.eu-west-1.amazonaws.com"
    status, _, body = await raw(
        stack, "GET", url, headers=headers(region="eu-west-1", Host=aws_host)
    )
    assert status == 200
    assert [e.text for e in parse(body).iter(f"{NS}JobId")] == ["west-job"]
    # Host and credential scope disagree: AWS names the region it expected.
    status, _, body = await raw(stack, "GET", url, headers=headers(region=R, Host=aws_host))
    assert (status, error_code(body)) == (400, "AuthorizationHeaderMalformed")
    assert b"expecting 'eu-west-1'" in body
    # Host for another account than the header.
    other = "222222222222.s3-control.eu-west-1.amazonaws.com"
    status, _, body = await raw(stack, "GET", url, headers=headers(region="eu-west-1", Host=other))
    assert (status, error_code(body)) == (400, "InvalidRequestException")
    # A custom endpoint: only the credential scope says the region.
    status, _, body = await raw(stack, "GET", url, headers=headers(region="eu-west-1"))
    assert [e.text for e in parse(body).iter(f"{NS}JobId")] == ["west-job"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("maxResults=1001", "InvalidRequestException"),
        ("maxResults=-1", "InvalidRequestException"),
        ("maxResults=ten", "InvalidRequestException"),
        ("jobStatuses=Active&jobStatuses=Bogus", "InvalidRequestException"),
        ("jobStatuses=active", "InvalidRequestException"),
        ("nextToken=", "InvalidRequestException"),
        ("nextToken=" + "a" * 1025, "InvalidRequestException"),
        ("nextToken=abc", "InvalidNextTokenException"),
    ],
)
async def test_bad_list_parameters(
    serve: Any, stack: AsyncExitStack, query: str, code: str
) -> None:
    sim, server = await serve(WORLD)
    status, _, body = await raw(
        stack, "GET", f"{server.url}/v20180820/jobs?{query}", headers=headers()
    )
    assert (status, error_code(body)) == (400, code)
    assert sim.request_count(outcome=code) == 1


async def test_account_header_problems(serve: Any, stack: AsyncExitStack) -> None:
    _, server = await serve(WORLD)
    url = f"{server.url}/v20180820/jobs"
    status, _, body = await raw(stack, "GET", url, headers=headers(account=None))
    assert (status, error_code(body)) == (400, "InvalidRequestException")
    status, _, body = await raw(stack, "GET", url, headers=headers(account="12345"))
    assert (status, error_code(body)) == (400, "InvalidRequestException")
    status, _, body = await raw(stack, "GET", url, headers=headers(account="444444444444"))
    assert (status, error_code(body)) == (403, "AccessDenied")


async def test_other_paths_are_not_implemented(serve: Any, stack: AsyncExitStack) -> None:
    _, server = await serve(WORLD)
    status, _, body = await raw(
        stack, "GET", f"{server.url}/v20180820/configuration/publicAccessBlock", headers=headers()
    )
    assert (status, error_code(body)) == (501, "NotImplemented")
    status, _, body = await raw(stack, "DELETE", f"{server.url}/v20180820/jobs", headers=headers())
    assert (status, error_code(body)) == (501, "NotImplemented")


async def test_describe_job_fields(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    sim.advance(30)
    job = (await client.describe_job(AccountId=A, JobId="copy-job"))["Job"]
    truth = sim.job(A, R, "copy-job")
    assert job["JobId"] == "copy-job"
    assert job["JobArn"] == f"arn:aws:s3:us-east-1:{A}:job/copy-job"
    assert job["Status"] == truth.status == "Active"
    assert job["Description"] == "nightly copy"
    assert job["Priority"] == 42
    assert job["ConfirmationRequired"] is False
    assert list(job["Operation"]) == ["S3PutObjectCopy"]
    progress = job["ProgressSummary"]
    assert progress["TotalNumberOfTasks"] == 1000
    assert progress["NumberOfTasksSucceeded"] == truth.succeeded
    assert progress["NumberOfTasksFailed"] == truth.failed > 0
    assert progress["Timers"]["ElapsedTimeInActiveSeconds"] == truth.elapsed_active_seconds
    assert job["Report"] == {
        "Bucket": "arn:aws:s3:::reports",
        "Format": "Report_CSV_20180820",
        "Enabled": True,
        "Prefix": "jobs",
        "ReportScope": "FailedTasksOnly",
    }
    assert job["CreationTime"].astimezone(UTC) == datetime.fromtimestamp(truth.creation_time, UTC)
    assert "TerminationDate" not in job
    assert job["RoleArn"] == f"arn:aws:iam::{A}:role/batch-operations"
    assert job["Manifest"]["Spec"]["Format"] == "S3BatchOperations_CSV_20180820"

    sim.fail_job(A, R, "copy-job", code="ManifestGone", reason="manifest deleted")
    sim.advance(10)
    job = (await client.describe_job(AccountId=A, JobId="copy-job"))["Job"]
    assert job["Status"] == "Failed"
    assert job["FailureReasons"] == [
        {"FailureCode": "ManifestGone", "FailureReason": "manifest deleted"}
    ]
    assert job["TerminationDate"].timestamp() == pytest.approx(
        sim.job(A, R, "copy-job").termination_time, abs=0.01
    )

    waiting = (await client.describe_job(AccountId=A, JobId="waiting-job"))["Job"]
    assert waiting["Status"] == "Suspended"
    assert waiting["ConfirmationRequired"] is True
    assert waiting["SuspendedCause"] == "AwaitingConfirmation"
    # Suspended once New (1 s) and Preparing (4 s) were over.
    suspended_after = waiting["SuspendedDate"] - waiting["CreationTime"]
    assert suspended_after.total_seconds() == pytest.approx(5.0)
    assert waiting["Report"] == {"Enabled": False}


async def test_unknown_and_malformed_job_ids(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    with pytest.raises(ClientError) as err:
        await client.describe_job(AccountId=A, JobId="no-such-job")
    assert err.value.response["Error"]["Code"] == "NotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as err:
        await client.describe_job(AccountId=A, JobId="west-job")  # exists, other region
    assert err.value.response["Error"]["Code"] == "NotFoundException"
    with pytest.raises(ClientError) as err:
        await client.describe_job(AccountId=A, JobId="bad!id")
    assert err.value.response["Error"]["Code"] == "BadRequestException"
    assert sim.request_count(operation="DescribeJob", outcome="NotFoundException") == 2


async def test_update_job_status_confirms_and_cancels(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    sim.advance(10)
    with pytest.raises(ClientError) as err:  # only a Suspended job can be confirmed
        await client.update_job_status(AccountId=A, JobId="copy-job", RequestedJobStatus="Ready")
    assert err.value.response["Error"]["Code"] == "JobStatusException"

    out = await client.update_job_status(
        AccountId=A, JobId="waiting-job", RequestedJobStatus="Ready", StatusUpdateReason="ok"
    )
    assert (out["Status"], out["StatusUpdateReason"]) == ("Ready", "ok")
    sim.advance(2)
    assert sim.job(A, R, "waiting-job").status == "Active"

    out = await client.update_job_status(
        AccountId=A, JobId="copy-job", RequestedJobStatus="Cancelled", StatusUpdateReason="stop"
    )
    assert out["Status"] == "Cancelling"
    sim.advance(5)
    job = (await client.describe_job(AccountId=A, JobId="copy-job"))["Job"]
    assert (job["Status"], job["StatusUpdateReason"]) == ("Cancelled", "stop")
    assert "TerminationDate" in job
    with pytest.raises(ClientError) as err:
        await client.update_job_status(
            AccountId=A, JobId="copy-job", RequestedJobStatus="Cancelled"
        )
    assert err.value.response["Error"]["Code"] == "JobStatusException"
    with pytest.raises(ClientError) as err:
        await client.update_job_status(
            AccountId=A, JobId="no-such-job", RequestedJobStatus="Cancelled"
        )
    assert err.value.response["Error"]["Code"] == "NotFoundException"


async def test_create_job_over_the_wire(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    request = {
        "AccountId": A,
        "ConfirmationRequired": False,
        "Operation": {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        "Report": {"Enabled": False},
        "ClientRequestToken": "token-1",
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": "arn:aws:s3:::b/manifest.csv", "ETag": "etag"},
        },
        "Description": "created & tagged",
        "Priority": 7,
        "RoleArn": f"arn:aws:iam::{A}:role/ops",
        "Tags": [{"Key": "sim:tasks", "Value": "50"}, {"Key": "sim:rate", "Value": "10"}],
    }
    job_id = (await client.create_job(**request))["JobId"]
    assert (await client.create_job(**request))["JobId"] == job_id  # idempotent token
    job = (await client.describe_job(AccountId=A, JobId=job_id))["Job"]
    assert (job["Status"], job["Description"], job["Priority"]) == ("New", "created & tagged", 7)
    assert job["RoleArn"] == f"arn:aws:iam::{A}:role/ops"
    sim.advance(20)
    assert sim.job(A, R, job_id).status == "Complete"
    assert sim.job(A, R, job_id).succeeded == 50
    assert sim.request_count(operation="CreateJob", outcome="ok") == 2


async def test_text_is_escaped_and_survives_botocore(serve: Any, connect: Any) -> None:
    nasty = "a & b < c > d \"q\" 's' line1\r\nline2\ttab \x01bell"
    world = {"accounts": [{"id": A, "jobs": [{"id": "nasty-job", "description": nasty}]}]}
    sim, server = await serve(world)
    client = await connect(server.url, R)
    sim.fail_job(A, R, "nasty-job", reason="</FailureReason><Injected/>\r")
    (listed,) = (await client.list_jobs(AccountId=A))["Jobs"]
    expected = nasty.replace("\x01", "\ufffd")  # XML 1.0 cannot carry U+0001
    assert listed["Description"] == expected  # the bare \r arrives as \r, not \n
    job = (await client.describe_job(AccountId=A, JobId="nasty-job"))["Job"]
    assert job["FailureReasons"][0]["FailureReason"] == "</FailureReason><Injected/>\r"


async def test_admin_api(serve: Any, stack: AsyncExitStack, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    await client.list_jobs(AccountId=A)
    session = await stack.enter_async_context(aiohttp.ClientSession(base_url=server.url))

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with session.request(method, path, json=body) as resp:
            return resp.status, await resp.json()

    status, stats = await call("GET", "/_sim/stats")
    assert status == 200
    assert stats["total"] == 1
    assert stats["requests"] == [
        {"operation": "ListJobs", "account": A, "region": R, "outcome": "ok", "count": 1}
    ]
    assert (await call("POST", "/_sim/stats/reset"))[0] == 200
    assert sim.request_count() == 0

    before = sim.now()
    status, clock = await call("POST", "/_sim/clock/advance", {"seconds": 60})
    assert status == 200
    assert clock["now"] == pytest.approx(before + 60)
    assert (await call("POST", "/_sim/clock/advance", {"seconds": "soon"}))[0] == 400

    status, created = await call(
        "POST", "/_sim/faults", {"kind": "throttle", "accounts": [A], "from": "0s"}
    )
    assert status == 201
    _, listing = await call("GET", "/_sim/faults")
    assert [f["id"] for f in listing["faults"]] == [created["id"]]
    with pytest.raises(ClientError):
        await client.list_jobs(AccountId=A)
    assert (await call("DELETE", f"/_sim/faults/{created['id']}"))[0] == 200
    assert (await call("DELETE", "/_sim/faults/f999"))[0] == 404
    status, bad = await call("POST", "/_sim/faults", {"kind": "throttle", "colour": "red"})
    assert status == 400
    assert "colour" in bad["error"]
    await call("POST", "/_sim/faults", {"kind": "internal_error"})
    assert (await call("DELETE", "/_sim/faults"))[0] == 200
    assert sim.faults == []

    status, created_job = await call(
        "POST", "/_sim/jobs", {"account": A, "region": R, "id": "admin-job", "tasks": 10}
    )
    assert (status, created_job) == (201, {"job_id": "admin-job"})
    status, view = await call(
        "POST", f"/_sim/jobs/{A}/{R}/admin-job/actions", {"action": "fail", "reason": "why"}
    )
    assert (status, view["status"], view["failure_reasons"][0]["reason"]) == (
        200,
        "Failing",
        "why",
    )
    status, _ = await call(
        "POST", f"/_sim/jobs/{A}/{R}/copy-job/actions", {"action": "stall", "after": 5}
    )
    assert status == 200
    sim.advance(6)
    assert sim.job(A, R, "copy-job").stalled
    assert (await call("POST", f"/_sim/jobs/{A}/{R}/nope-job/actions", {"action": "stall"}))[
        0
    ] == 404
    assert (await call("POST", f"/_sim/jobs/{A}/{R}/copy-job/actions", {"action": "dance"}))[
        0
    ] == 400

    status, jobs = await call("GET", f"/_sim/jobs?account={A}&region={R}")
    assert {j["job_id"] for j in jobs["jobs"]} == {"copy-job", "waiting-job", "admin-job"}
    status, _ = await call("POST", f"/_sim/accounts/{A}/access", {"denied": True})
    with pytest.raises(ClientError):
        await client.list_jobs(AccountId=A)
    await call("POST", f"/_sim/accounts/{A}/access", {"denied": False})
    await client.list_jobs(AccountId=A)
    status, targets = await call("GET", "/_sim/targets")
    assert {"account": A, "region": "eu-west-1", "access_denied": False} in targets["targets"]
    assert (await call("GET", "/_sim/nothing-here"))[0] == 404
    # Admin calls are not S3 requests: they are not counted.
    assert sim.request_count(operation="Unknown") == 0


async def test_run_simulator_serves_until_cancelled(connect: Any) -> None:
    ready: asyncio.Queue[SimulatorServer] = asyncio.Queue()
    task = asyncio.create_task(
        run_simulator(
            "127.0.0.1:0", builtin_scenario("demo"), ManualClock(), on_ready=ready.put_nowait
        )
    )
    try:
        server = await asyncio.wait_for(ready.get(), 10)
        client = await connect(server.url, "eu-west-1")
        assert (await client.list_jobs(AccountId="222222222222"))["Jobs"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    for bad in ("9000", "host:", "host:99999", "host:abc"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


async def test_server_port_and_url() -> None:
    sim = Simulator(builtin_scenario("demo"), ManualClock())
    server = SimulatorServer(sim)
    with pytest.raises(RuntimeError):
        _ = server.port
    async with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
    await server.close()  # idempotent

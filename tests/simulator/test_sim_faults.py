"""Each fault surfaces as botocore surfaces the same failure from AWS."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.parsers import ResponseParserError

from jobwatch.simulator import FaultSpec

A, B = "111111111111", "222222222222"
R = "us-east-1"
WORLD = {
    "accounts": [
        {"id": A, "jobs": [{"id": f"job-a{n}", "tasks": 10_000, "rate": 1} for n in range(3)]},
        {"id": B, "jobs": [{"id": "job-b0", "tasks": 10_000, "rate": 1}]},
    ]
}


@pytest.mark.usefixtures("no_backoff")
@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (400, "TooManyRequestsException"), (429, "TooManyRequestsException")],
)
async def test_throttles_are_retried_in_standard_mode_and_counted(
    serve: Any, connect: Any, status: int, code: str
) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="throttle", status=status, accounts=[A], count=2))
    client = await connect(server.url, R, max_attempts=2)
    page = await client.list_jobs(AccountId=A)  # two throttles, then success on attempt 3
    assert len(page["Jobs"]) == 3
    assert page["ResponseMetadata"]["RetryAttempts"] == 2
    assert sim.request_count(operation="ListJobs", account=A, outcome=code) == 2
    assert sim.request_count(operation="ListJobs", account=A, outcome="ok") == 1

    # With fewer retries than throttles the throttle reaches the caller.
    sim.add_fault(FaultSpec(kind="throttle", status=status, accounts=[A], count=2))
    strict = await connect(server.url, R, max_attempts=1)
    with pytest.raises(ClientError) as err:
        await strict.list_jobs(AccountId=A)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # Another account is untouched by a fault scoped to A.
    assert len((await strict.list_jobs(AccountId=B))["Jobs"]) == 1


@pytest.mark.usefixtures("no_backoff")
async def test_legacy_mode_does_not_retry_a_400_throttle(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="throttle", status=400, count=1))
    client = await connect(server.url, R, max_attempts=3, mode="legacy")
    with pytest.raises(ClientError):
        await client.list_jobs(AccountId=A)
    assert sim.request_count() == 1


@pytest.mark.usefixtures("no_backoff")
async def test_internal_error_is_retried_then_surfaces(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="internal_error", operations=["DescribeJob"]))
    client = await connect(server.url, R, max_attempts=2)
    assert len((await client.list_jobs(AccountId=A))["Jobs"]) == 3  # other operations fine
    with pytest.raises(ClientError) as err:
        await client.describe_job(AccountId=A, JobId="job-a0")
    assert err.value.response["Error"]["Code"] == "InternalError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert sim.request_count(operation="DescribeJob", outcome="InternalError") == 3


async def test_generic_error_fault(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(
        FaultSpec(kind="error", status=400, code="InvalidRequestException", message="nope")
    )
    client = await connect(server.url, R)
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=A)
    assert err.value.response["Error"] == {
        "Code": "InvalidRequestException",
        "Message": "nope",
    } | {k: v for k, v in err.value.response["Error"].items() if k not in ("Code", "Message")}


async def test_invalid_next_token_in_the_middle_of_a_listing(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="invalid_next_token"))
    client = await connect(server.url, R)
    first = await client.list_jobs(AccountId=A, MaxResults=1)  # no token: unaffected
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=A, MaxResults=1, NextToken=first["NextToken"])
    assert err.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sim.request_count(outcome="InvalidNextTokenException") == 1
    assert sim.request_count(outcome="ok") == 1


@pytest.mark.parametrize("kind", ["malformed_xml", "truncated_xml"])
async def test_broken_xml_is_a_response_parser_error(serve: Any, connect: Any, kind: str) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind=kind))  # type: ignore[arg-type]
    client = await connect(server.url, R)
    with pytest.raises(ResponseParserError):
        await client.list_jobs(AccountId=A)
    with pytest.raises(ResponseParserError):
        await client.describe_job(AccountId=A, JobId="job-a0")
    assert sim.request_count(outcome=kind) == 2


@pytest.mark.usefixtures("no_backoff")
async def test_connection_reset(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    fault = sim.add_fault(FaultSpec(kind="connection_reset"))
    client = await connect(server.url, R, max_attempts=0)
    with pytest.raises(EndpointConnectionError):
        await client.list_jobs(AccountId=A)
    # aiohttp itself resends an idempotent request once on a reset socket, so one
    # botocore attempt reaches the server twice.
    assert sim.request_count(outcome="connection_reset") == 2
    sim.remove_fault(fault)
    sim.reset_stats()

    # Two resets cost one botocore attempt; standard mode retries it.
    sim.add_fault(FaultSpec(kind="connection_reset", count=2))
    retrying = await connect(server.url, R, max_attempts=1)
    page = await retrying.list_jobs(AccountId=A)
    assert page["ResponseMetadata"]["RetryAttempts"] == 1
    assert sim.request_count(outcome="connection_reset") == 2
    assert sim.request_count(outcome="ok") == 1


async def test_hang_ends_in_a_read_timeout(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="hang", count=1))
    client = await connect(server.url, R, max_attempts=0, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        await client.list_jobs(AccountId=A)
    assert 0.25 < time.monotonic() - started < 5
    assert sim.request_count(outcome="hang") == 1


async def test_a_hang_is_released_when_the_server_closes(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="hang", seconds=0.2))
    client = await connect(server.url, R, max_attempts=0, read_timeout=5)
    started = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        await client.list_jobs(AccountId=A)  # the hang ends after 0.2 s with a reset
    assert time.monotonic() - started < 4


async def test_access_denied_fault_and_account_setting(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    sim.add_fault(FaultSpec(kind="access_denied", accounts=[B]))
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=B)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    sim.clear_faults()
    assert len((await client.list_jobs(AccountId=B))["Jobs"]) == 1
    sim.deny_access(B, R)
    with pytest.raises(ClientError):
        await client.list_jobs(AccountId=B)
    sim.allow_access(B)
    assert len((await client.list_jobs(AccountId=B))["Jobs"]) == 1


async def test_unknown_enum_values_pass_through_botocore(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="unknown_status", value="Archiving"))
    sim.add_fault(FaultSpec(kind="unknown_operation"))
    client = await connect(server.url, R)
    jobs = (await client.list_jobs(AccountId=A))["Jobs"]
    assert {j["Status"] for j in jobs} == {"Archiving"}
    assert {j["Operation"] for j in jobs} == {"S3FutureOperation"}
    job = (await client.describe_job(AccountId=A, JobId="job-a0"))["Job"]
    assert job["Status"] == "Archiving"
    assert job["Operation"] == {}  # botocore drops an operation it does not know
    assert sim.request_count(outcome="ok") == 2  # enum rewrites are answers, not errors


async def test_latency_fixed_and_sampled(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    client = await connect(server.url, R)
    sim.add_fault(FaultSpec(kind="latency", seconds=0.3))
    started = time.monotonic()
    await client.list_jobs(AccountId=A)
    assert time.monotonic() - started >= 0.3
    sim.clear_faults()
    sim.add_fault(FaultSpec(kind="latency", distribution="uniform", low=0.05, high=0.1))
    started = time.monotonic()
    await client.list_jobs(AccountId=A)
    assert 0.05 <= time.monotonic() - started < 2


async def test_faults_follow_their_schedule(serve: Any, connect: Any) -> None:
    sim, server = await serve(WORLD)
    sim.add_fault(FaultSpec.model_validate({"kind": "throttle", "from": "10s", "until": "20s"}))
    client = await connect(server.url, R)
    await client.list_jobs(AccountId=A)
    sim.advance(15)
    with pytest.raises(ClientError):
        await client.list_jobs(AccountId=A)
    sim.advance(10)
    await client.list_jobs(AccountId=A)
    assert sim.request_count(outcome="SlowDown") == 1
    assert sim.request_count(outcome="ok") == 2


async def test_probability_is_honoured_roughly(serve: Any) -> None:
    sim, _ = await serve(WORLD)
    sim.add_fault(FaultSpec(kind="throttle", probability=0.3))
    fired = sum(
        sim.decide_faults("ListJobs", A, R, False).terminal is not None for _ in range(4000)
    )
    assert 0.25 < fired / 4000 < 0.35
    (_, _, count) = sim.faults[0]
    assert count == fired


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"kind": "throttle", "status": 500}, "503"),
        ({"kind": "throttle", "code": "X"}, "'code' does not apply"),
        ({"kind": "error", "status": 500}, "needs both"),
        ({"kind": "latency"}, "needs seconds"),
        ({"kind": "latency", "distribution": "uniform", "low": 2, "high": 1}, "low <= high"),
        ({"kind": "explode"}, "kind"),
        ({"kind": "hang", "from": 20, "until": 10}, "later than"),
        ({"kind": "throttle", "probability": 1.5}, "probability"),
    ],
)
def test_bad_fault_specs_are_rejected(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FaultSpec.model_validate(spec)

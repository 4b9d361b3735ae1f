"""ListJobs over real HTTP with unmodified aiobotocore: paging, filters, tokens, aging."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobwatch.clock import ManualClock

A = "111111111111"
R = "us-east-1"
DAY = 86400.0

# 1,250 finished jobs from two days ago and 1,250 running ones: 2,500 in all.
BIG = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {"id": "done", "count": 1250, "tasks": 10, "rate": 100, "created_at": "-2d"},
                {"id": "live", "count": 1250, "tasks": 1_000_000, "rate": 1, "created_at": "-1h"},
            ],
        }
    ]
}


async def test_2500_jobs_page_over_three_pages_while_jobs_change(serve: Any, connect: Any) -> None:
    sim, server = await serve(BIG)
    client = await connect(server.url, R)

    page1 = await client.list_jobs(AccountId=A, MaxResults=1000)
    assert len(page1["Jobs"]) == 1000
    token1 = page1["NextToken"]
    # Newest first: every job on page 1 is a running one created an hour ago.
    assert {j["JobId"].split("-")[0] for j in page1["Jobs"]} == {"live"}

    # Between pages: time passes, a job already seen fails, one not yet seen fails,
    # and a brand-new job is created.
    sim.advance(30)
    seen_first = page1["Jobs"][0]["JobId"]
    sim.fail_job(A, R, seen_first, reason="seen, then failed")
    sim.fail_job(A, R, "done-7", reason="cannot fail: already complete")
    sim.fail_job(A, R, "live-1", reason="not seen yet")
    new_id = sim.create_job(A, R, tasks=5, rate=1)

    page2 = await client.list_jobs(AccountId=A, MaxResults=1000, NextToken=token1)
    assert len(page2["Jobs"]) == 1000
    page3 = await client.list_jobs(AccountId=A, MaxResults=1000, NextToken=page2["NextToken"])
    assert len(page3["Jobs"]) == 500
    assert "NextToken" not in page3  # the last page carries no token at all

    ids = [j["JobId"] for p in (page1, page2, page3) for j in p["Jobs"]]
    assert len(ids) == len(set(ids)) == 2500  # no job twice, none skipped
    assert new_id not in ids  # it sorts before the cursor: a fresh listing shows it
    statuses = {j["JobId"]: j["Status"] for p in (page2, page3) for j in p["Jobs"]}
    assert statuses["live-1"] == "Failing"  # the change shows on a later page
    assert statuses["done-7"] == "Complete"
    later_live = next(j for j in page2["Jobs"] if j["JobId"].startswith("live"))
    # Page 2 was rendered 30 s later: the running jobs show more progress.
    first_live = page1["Jobs"][-1]
    assert (
        later_live["ProgressSummary"]["NumberOfTasksSucceeded"]
        > first_live["ProgressSummary"]["NumberOfTasksSucceeded"]
    )

    fresh = await client.list_jobs(AccountId=A, MaxResults=1)
    assert fresh["Jobs"][0]["JobId"] == new_id
    assert sim.request_count(operation="ListJobs", outcome="ok") == 4


async def test_default_page_size_is_1000_and_zero_means_default(serve: Any, connect: Any) -> None:
    _, server = await serve(BIG)
    client = await connect(server.url, R)
    assert len((await client.list_jobs(AccountId=A))["Jobs"]) == 1000
    assert len((await client.list_jobs(AccountId=A, MaxResults=0))["Jobs"]) == 1000
    assert len((await client.list_jobs(AccountId=A, MaxResults=7))["Jobs"]) == 7


MIXED = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {"id": "active-job", "tasks": 1000, "rate": 1, "created_at": "-1m"},
                {"id": "complete-job", "tasks": 10, "rate": 10, "created_at": "-1h"},
                {
                    "id": "failed-job",
                    "tasks": 100_000,
                    "rate": 1,
                    "created_at": "-1h",
                    "timeline": [{"at": "-30m", "action": "fail", "reason": "boom"}],
                },
                {
                    "id": "cancelled-job",
                    "tasks": 100_000,
                    "rate": 1,
                    "created_at": "-1h",
                    "timeline": [{"at": "-30m", "action": "cancel"}],
                },
                {"id": "waiting-job", "confirmation_required": True, "created_at": "-1m"},
            ],
        }
    ]
}


async def _all(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    token = None
    while True:
        extra = {"NextToken": token} if token else {}
        page = await client.list_jobs(AccountId=A, **kwargs, **extra)
        jobs.extend(page["Jobs"])
        token = page.get("NextToken")
        if not token:
            return jobs


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["Active"], {"active-job"}),
        (["Failed", "Cancelled"], {"failed-job", "cancelled-job"}),
        (["Suspended"], {"waiting-job"}),
        (["Paused"], set()),
        (None, {"active-job", "complete-job", "failed-job", "cancelled-job", "waiting-job"}),
    ],
)
async def test_status_filter(
    serve: Any, connect: Any, statuses: list[str] | None, expected: set[str]
) -> None:
    _, server = await serve(MIXED)
    client = await connect(server.url, R)
    kwargs = {"JobStatuses": statuses} if statuses else {}
    jobs = await _all(client, MaxResults=2, **kwargs)  # small pages: paging with a filter
    assert {j["JobId"] for j in jobs} == expected
    if statuses:
        assert {j["Status"] for j in jobs} <= set(statuses)


async def test_filtered_listing_sees_jobs_enter_and_leave_between_pages(
    serve: Any, connect: Any
) -> None:
    sim, server = await serve(BIG)
    client = await connect(server.url, R)
    page1 = await client.list_jobs(AccountId=A, JobStatuses=["Active"], MaxResults=500)
    assert {j["Status"] for j in page1["Jobs"]} == {"Active"}
    listed = {j["JobId"] for j in page1["Jobs"]}
    unseen = [v.job_id for v in sim.jobs(A, R) if v.status == "Active" and v.job_id not in listed]
    for job_id in unseen[:10]:  # ten running jobs not yet listed leave the filter
        sim.fail_job(A, R, job_id)
    page2 = await client.list_jobs(
        AccountId=A, JobStatuses=["Active"], MaxResults=1000, NextToken=page1["NextToken"]
    )
    assert len(page2["Jobs"]) == 1250 - 500 - 10
    assert "NextToken" not in page2


async def test_forged_expired_and_foreign_tokens_are_invalid_next_token(
    serve: Any, connect: Any, clock: ManualClock
) -> None:
    sim, server = await serve(BIG)
    client = await connect(server.url, R)
    token = (await client.list_jobs(AccountId=A, MaxResults=10))["NextToken"]

    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (forged, "not-a-token", token + "x"):
        with pytest.raises(ClientError) as err:
            await client.list_jobs(AccountId=A, NextToken=bad)
        assert err.value.response["Error"]["Code"] == "InvalidNextTokenException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # The same token for another listing (a filter added) is refused too.
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=A, NextToken=token, JobStatuses=["Active"])
    assert err.value.response["Error"]["Code"] == "InvalidNextTokenException"

    # Still valid just under an hour later, expired past it.
    sim.advance(3599)
    assert len((await client.list_jobs(AccountId=A, NextToken=token))["Jobs"]) == 1000
    sim.advance(2)
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=A, NextToken=token)
    assert err.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert "expired" in err.value.response["Error"]["Message"]
    assert sim.request_count(outcome="InvalidNextTokenException") == 5


async def test_terminal_jobs_leave_the_listing_90_days_after_termination(
    serve: Any, connect: Any
) -> None:
    scenario = {
        "accounts": [{"id": A, "jobs": [{"id": "short-job", "tasks": 10, "rate": 10}]}],
    }
    sim, server = await serve(scenario)
    client = await connect(server.url, R)
    sim.advance(60)
    (job,) = (await client.list_jobs(AccountId=A))["Jobs"]
    assert job["Status"] == "Complete"
    ended = job["TerminationDate"].timestamp()
    assert sim.job(A, R, "short-job").termination_time == pytest.approx(ended, abs=0.01)

    sim.clock.set(ended + 90 * DAY - 1)  # type: ignore[attr-defined]
    assert [j["JobId"] for j in (await client.list_jobs(AccountId=A))["Jobs"]] == ["short-job"]
    sim.advance(1)
    assert (await client.list_jobs(AccountId=A))["Jobs"] == []
    with pytest.raises(ClientError) as err:
        await client.describe_job(AccountId=A, JobId="short-job")
    assert err.value.response["Error"]["Code"] == "NotFoundException"
    (truth,) = sim.jobs(A, R)
    assert truth.job_id == "short-job"
    assert not truth.listed


async def test_retention_is_configurable(serve: Any, connect: Any) -> None:
    scenario = {
        "retention_days": 30,
        "accounts": [{"id": A, "jobs": [{"id": "short-job", "tasks": 10, "rate": 10}]}],
    }
    sim, server = await serve(scenario)
    client = await connect(server.url, R)
    sim.advance(30 * DAY)
    assert len((await client.list_jobs(AccountId=A))["Jobs"]) == 1
    sim.advance(60)
    assert (await client.list_jobs(AccountId=A))["Jobs"] == []


async def test_max_results_above_1000_is_invalid_request(serve: Any, connect: Any) -> None:
    sim, server = await serve(MIXED)
    client = await connect(server.url, R)
    with pytest.raises(ClientError) as err:
        await client.list_jobs(AccountId=A, MaxResults=1001)
    assert err.value.response["Error"]["Code"] == "InvalidRequestException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sim.request_count(outcome="InvalidRequestException") == 1


async def test_regions_and_accounts_are_isolated(serve: Any, connect: Any) -> None:
    scenario = {
        "regions": ["us-east-1", "eu-west-1"],
        "accounts": [
            {"id": A, "jobs": [{"id": "east-job", "region": "us-east-1"}]},
            {"id": "222222222222", "jobs": [{"id": "west-job", "region": "eu-west-1"}]},
        ],
    }
    sim, server = await serve(scenario)
    east = await connect(server.url, "us-east-1")
    west = await connect(server.url, "eu-west-1")
    assert [j["JobId"] for j in (await east.list_jobs(AccountId=A))["Jobs"]] == ["east-job"]
    assert (await west.list_jobs(AccountId=A))["Jobs"] == []
    assert [j["JobId"] for j in (await west.list_jobs(AccountId="222222222222"))["Jobs"]] == [
        "west-job"
    ]
    with pytest.raises(ClientError) as err:
        await east.list_jobs(AccountId="999999999999")
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert sim.request_count(account=A, region="eu-west-1") == 1

"""jobwatch against the simulator over real HTTP, real aiobotocore underneath."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import pytest
from structlog.testing import capture_logs

from jobwatch.model import KNOWN_STATUSES
from tests.helpers import World, running

A, B, C = "111111111111", "222222222222", "333333333333"
REGIONS = ["us-east-1", "eu-west-1"]


def _lifecycle_jobs(region: str) -> list[dict[str, object]]:
    """Jobs that between them pass through all 13 statuses."""
    tag = region.replace("-", "")
    return [
        {"id": f"complete-{tag}", "region": region, "tasks": 100, "rate": 10},
        {
            "id": f"pauser-{tag}",
            "region": region,
            "tasks": 1000,
            "rate": 10,
            "timeline": [{"at": "8s", "action": "pause"}, {"at": "16s", "action": "unpause"}],
        },
        {
            "id": f"failer-{tag}",
            "region": region,
            "tasks": 1000,
            "rate": 10,
            "timeline": [{"at": "10s", "action": "fail", "reason": "manifest not found"}],
        },
        {
            "id": f"cancel-{tag}",
            "region": region,
            "tasks": 1000,
            "rate": 10,
            "timeline": [{"at": "9s", "action": "cancel"}],
        },
        {
            "id": f"confirm-{tag}",
            "region": region,
            "tasks": 50,
            "rate": 10,
            "confirmation_required": True,
            "timeline": [{"at": "12s", "action": "confirm"}],
        },
    ]


LIFECYCLE = {
    "regions": REGIONS,
    "accounts": [
        {"id": acct, "regions": REGIONS, "jobs": [j for r in REGIONS for j in _lifecycle_jobs(r)]}
        for acct in (A, B, C)
    ],
}


def _check_matches_truth(w: World, account: str, region: str) -> None:
    truth = w.truth(account, region)
    assert w.tracked(account, region) == truth
    counts = Counter(truth.values())
    for status in KNOWN_STATUSES:
        got = w.sample("s3batch_jobs", aws_account_id=account, aws_region=region, status=status)
        assert got == counts.get(status, 0), (account, region, status)
    for jid, status in truth.items():
        labels = {"aws_account_id": account, "aws_region": region, "job_id": jid}
        assert w.sample("s3batch_job_status", **labels, status=status) == 1.0


async def test_every_status_metrics_and_events_match_the_simulator() -> None:
    async with running(LIFECYCLE, {"interval": "1s", "resync_interval": "7s"}) as w:
        await w.app.poll_all_once()
        assert w.sink.events == []  # the first poll is a silent baseline
        seen: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for _ in range(40):
            for account in (A, B, C):
                for region in REGIONS:
                    _check_matches_truth(w, account, region)
                    for jid, status in w.tracked(account, region).items():
                        trail = seen[(account, region, jid)]
                        if not trail or trail[-1] != status:
                            trail.append(status)
            await w.step(1)
        statuses = {s for trail in seen.values() for s in trail}
        assert statuses == set(KNOWN_STATUSES)  # the scenario really covers them all
        # Every transition observed gave exactly one job_status_changed, in order.
        changes: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
        for e in w.sink.of("job_status_changed"):
            key = (e.target.account_id, e.target.region, e.change.job.job_id)
            changes[key].append((e.change.previous_status or "", e.change.job.status))
        for key, trail in seen.items():
            assert changes[key] == list(itertools.pairwise(trail)), key
        failed = w.sink.of("job_failed")
        assert len(failed) == 6  # one failer per target
        assert all(e.detail and e.detail.failure_reasons for e in failed)
        assert w.sample("jobwatch_events_total", event="job_failed") == 6


STALL_AND_FAIL = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {
                    "id": "stuck-job",
                    "tasks": 1_000_000,
                    "rate": 10,
                    "timeline": [
                        {"at": "20s", "action": "stall"},
                        {"at": "120s", "action": "resume"},
                    ],
                },
                {
                    "id": "doomed-job",
                    "tasks": 1_000_000,
                    "rate": 10,
                    "description": "nightly copy",
                    "timeline": [
                        {
                            "at": "30s",
                            "action": "fail",
                            "reason": "Reading the manifest is forbidden",
                            "code": "AccessDenied",
                        }
                    ],
                },
                {"id": "healthy-job", "tasks": 1_000_000, "rate": 10},
            ],
        }
    ]
}


async def test_one_failure_one_stall_one_recovery_and_no_duplicates() -> None:
    async with running(STALL_AND_FAIL, {"stall": {"no_progress": "30s"}}) as w:
        await w.app.poll_all_once()
        for _ in range(40):  # 200 s of simulated time, a poll every 5 s
            await w.step(5)
        kinds = w.sink.kinds()
        assert len(w.sink.of("job_failed", "doomed-job")) == 1
        assert len(w.sink.of("job_stalled", "stuck-job")) == 1
        assert len(w.sink.of("job_stall_recovered", "stuck-job")) == 1
        assert w.sink.of("job_stalled", "healthy-job") == []
        (failed,) = w.sink.of("job_failed")
        doc = failed.to_dict()
        assert doc["failure_reasons"] == [
            {"code": "AccessDenied", "reason": "Reading the manifest is forbidden"}
        ]
        assert doc["description"] == "nightly copy"
        assert doc["report"] is not None
        assert doc["details_available"] is True
        (stalled,) = w.sink.of("job_stalled")
        assert stalled.change.stall_reason == "no_progress"
        labels = {"aws_account_id": A, "aws_region": "us-east-1", "job_id": "stuck-job"}
        assert w.sample("s3batch_job_stalled", **labels) == 0.0  # recovered by now
        for _ in range(10):
            await w.step(5)
        assert w.sink.kinds() == kinds  # ten more polls: nothing new


async def test_stalled_flag_is_exported_while_stalled() -> None:
    async with running(STALL_AND_FAIL, {"stall": {"no_progress": "30s"}}) as w:
        await w.app.poll_all_once()
        for _ in range(12):
            await w.step(5)  # t = 60 s: stalled since 20 s
        labels = {"aws_account_id": A, "aws_region": "us-east-1", "job_id": "stuck-job"}
        assert w.sample("s3batch_job_stalled", **labels) == 1.0
        assert w.sample("s3batch_job_stalled", **{**labels, "job_id": "healthy-job"}) == 0.0


BROKEN = {
    "accounts": [
        {"id": A, "jobs": [{"id": "fine-job-1", "tasks": 10_000, "rate": 1}]},
        {"id": B, "jobs": [{"id": "throttled-1", "tasks": 10_000, "rate": 1}]},
        {"id": C, "access_denied": True},
    ],
    "faults": [{"kind": "throttle", "accounts": [B], "status": 503}],
}


async def test_throttled_and_denied_accounts_do_not_affect_the_others() -> None:
    async with running(BROKEN) as w:
        for _ in range(3):
            await w.step(10)
            now = w.clock.time()
            assert w.app.store[(A, "us-east-1")].last_success == now  # on time, every poll
            assert w.sample("jobwatch_target_up", aws_account_id=A, aws_region="us-east-1") == 1
            assert w.sample("jobwatch_target_up", aws_account_id=B, aws_region="us-east-1") == 0
            assert w.sample("jobwatch_target_up", aws_account_id=C, aws_region="us-east-1") == 0
        assert w.tracked(A, "us-east-1") == {"fine-job-1": "Active"}

        def requests(account: str, outcome: str) -> float | None:
            return w.sample(
                "jobwatch_api_requests_total",
                aws_account_id=account,
                aws_region="us-east-1",
                operation="ListJobs",
                outcome=outcome,
            )

        # standard retry mode: 3 attempts per poll, each one counted, none more.
        assert requests(B, "throttled") == 9
        assert w.sim.request_count("ListJobs", account=B) == 9
        assert requests(C, "error") == 3  # AccessDenied is not retried
        # The first poll lists everything; each later one lists the running jobs,
        # then the jobs that ended since the last poll: 1 + 2 + 2.
        assert requests(A, "success") == 5
        assert w.app.store[(C, "us-east-1")].last_error == "AccessDenied"
        assert (
            w.sample(
                "jobwatch_target_consecutive_failures", aws_account_id=B, aws_region="us-east-1"
            )
            == 3
        )
        assert (
            w.sample(
                "jobwatch_target_last_success_timestamp_seconds",
                aws_account_id=B,
                aws_region="us-east-1",
            )
            is None
        )
        # The throttle lifts: the target recovers on its next poll.
        w.sim.clear_faults()
        await w.step(10)
        assert w.sample("jobwatch_target_up", aws_account_id=B, aws_region="us-east-1") == 1


UNKNOWN = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {
                    "id": "future-job",
                    "operation": "S3FutureOperation",
                    "tasks": 100_000,
                    "rate": 1,
                    "timeline": [{"at": "15s", "action": "set_status", "status": "Archiving"}],
                }
            ],
        }
    ]
}


async def test_unknown_status_and_operation_are_exported_and_logged_once() -> None:
    async with running(UNKNOWN) as w:
        with capture_logs() as logs:
            await w.app.poll_all_once()
            for _ in range(6):
                await w.step(5)
        labels = {"aws_account_id": A, "aws_region": "us-east-1", "job_id": "future-job"}
        assert w.sample("s3batch_job_status", **labels, status="Archiving") == 1
        assert (
            w.sample("s3batch_jobs", aws_account_id=A, aws_region="us-east-1", status="Archiving")
            == 1
        )
        assert (
            w.sample(
                "s3batch_job_info",
                **labels,
                operation="S3FutureOperation",
                priority="10",
                failure_code="",
            )
            == 1
        )
        assert w.sample("jobwatch_unknown_values_total", field="status") == 1
        assert w.sample("jobwatch_unknown_values_total", field="operation") == 1
        unknown = [e for e in logs if e["event"] == "unknown_value_seen"]
        assert sorted((e["field"], e["value"]) for e in unknown) == [
            ("operation", "S3FutureOperation"),
            ("status", "Archiving"),
        ]
        assert w.sample("jobwatch_target_up", aws_account_id=A, aws_region="us-east-1") == 1
        trail = [
            (e.change.previous_status, e.change.job.status) for e in w.sink.of("job_status_changed")
        ]
        assert trail == [("New", "Ready"), ("Ready", "Active"), ("Active", "Archiving")]


HISTORY = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {"id": "history-job", "count": 5000, "tasks": 10, "rate": 100, "created_at": "-2d"},
                {"id": "live-job", "count": 20, "tasks": 10_000_000, "rate": 1},
            ],
        }
    ]
}


async def test_steady_state_cycle_requests_only_active_jobs() -> None:
    async with running(HISTORY) as w:
        await w.app.poll_all_once()
        # The baseline is a full listing: 5,020 jobs, 6 pages of 1,000.
        assert w.sim.request_count("ListJobs", account=A) == 6
        assert len(w.tracked(A, "us-east-1")) == 20  # history past retention is not tracked
        w.sim.reset_stats()
        await w.step(10)
        # The running jobs, then one small page of recently ended ones (none).
        assert w.sim.request_count("ListJobs", account=A) == 2
        assert w.sim.request_count("DescribeJob", account=A) == 0
        # One live job ends: exactly one DescribeJob tells how.
        w.sim.fail_job(A, "us-east-1", "live-job-1", reason="boom")
        w.sim.reset_stats()
        await w.step(10)
        assert w.sim.request_count("ListJobs", account=A) == 2
        # one to learn how it ended, none more: the job_failed detail is reused.
        assert w.sim.request_count("DescribeJob", account=A) == 1
        assert w.tracked(A, "us-east-1")["live-job-1"] in ("Failing", "Failed")


PAGED = {
    "accounts": [{"id": A, "jobs": [{"id": "paged-job", "count": 2500, "tasks": 10**7, "rate": 1}]}]
}


async def test_listing_restarts_after_invalid_next_token() -> None:
    fault = {"kind": "invalid_next_token", "accounts": [A], "count": 1}
    async with running({**PAGED, "faults": [fault]}) as w:
        with capture_logs() as logs:
            await w.app.poll_all_once()
        assert len(w.tracked(A, "us-east-1")) == 2500
        # The pages read before the restart were forgotten, not counted twice.
        assert w.app.store[(A, "us-east-1")].last_full_size == 2500
        assert w.sample("jobwatch_target_up", aws_account_id=A, aws_region="us-east-1") == 1
        assert [e["event"] for e in logs if e["event"] == "listing_restarted"] == [
            "listing_restarted"
        ]
        # first page, the refused second page, then all three pages again
        assert w.sim.request_count("ListJobs", account=A) == 5


async def test_listing_that_keeps_refusing_tokens_fails_the_poll_only() -> None:
    fault = {"kind": "invalid_next_token", "accounts": [A]}
    async with running({**PAGED, "faults": [fault]}) as w:
        await w.app.poll_all_once()
        assert w.app.store[(A, "us-east-1")].last_error == "InvalidNextTokenException"
        assert w.sample("jobwatch_target_up", aws_account_id=A, aws_region="us-east-1") == 0


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("malformed_xml", "ResponseParserError"),
        ("truncated_xml", "ResponseParserError"),
        ("internal_error", "InternalError"),
        ("connection_reset", None),
    ],
)
async def test_bad_responses_fail_one_poll_and_recover(kind: str, code: str | None) -> None:
    scenario = {
        "accounts": [
            {"id": A, "jobs": [{"id": "steady-job", "tasks": 10**7, "rate": 1}]},
            {"id": B, "jobs": [{"id": "other-job", "tasks": 10**7, "rate": 1}]},
        ],
        "faults": [{"kind": kind, "accounts": [A], "until": "15s"}],
    }
    async with running(scenario) as w:
        await w.step(10)
        state = w.app.store[(A, "us-east-1")]
        assert not state.up
        if code is not None:
            assert state.last_error == code
        assert w.sample("jobwatch_target_up", aws_account_id=B, aws_region="us-east-1") == 1
        await w.step(10)  # the fault is spent: recovered
        assert state.up
        assert w.tracked(A, "us-east-1") == {"steady-job": "Active"}

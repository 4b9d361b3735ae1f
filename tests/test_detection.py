"""Detection fidelity: every job reported, promptly, however short-lived or numerous.

Over real HTTP against the simulator: jobs that live and end between two polls,
a simulator that does not list newest first, 500 jobs ending together under a
latency fault, and a job in a status jobwatch cannot name.
"""

from __future__ import annotations

import time
from typing import Any

from structlog.testing import capture_logs

from tests.helpers import World, running

A = "111111111111"
R = "us-east-1"
FAST = {"new": "500ms", "preparing": "500ms", "ready": "500ms", "completing": "500ms"}


def _short_lived(order: str = "newest_first") -> dict[str, Any]:
    return {
        "listing_order": order,
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {"id": "steady-job", "tasks": 10**7, "rate": 1},
                    # History: ended long ago, still listed for 90 days.
                    {"id": "old-done", "count": 30, "tasks": 5, "rate": 5, "created_at": "-3d"},
                    # Fails while Preparing, seconds after it was created (12 s).
                    {
                        "id": "short-fail",
                        "created_at": "12s",
                        "report": {"bucket": "arn:aws:s3:::reports", "prefix": "jobs"},
                        "timeline": [
                            {
                                "at": "13s",
                                "action": "fail",
                                "code": "ManifestNotFound",
                                "reason": "The manifest does not exist",
                            }
                        ],
                    },
                    # Both live and end between the polls at 20 s and 30 s.
                    {
                        "id": "short-done",
                        "created_at": "21s",
                        "tasks": 5,
                        "rate": 100,
                        "phases": FAST,
                    },
                    {
                        "id": "short-cancel",
                        "created_at": "22s",
                        "timeline": [{"at": "22.2s", "action": "cancel", "reason": "oops"}],
                    },
                ],
            }
        ],
    }


def _events(w: World, job_id: str) -> list[tuple[str, str]]:
    return [
        (e.kind, e.to_dict()["status"]) for e in w.sink.events if e.to_dict()["job_id"] == job_id
    ]


async def test_jobs_that_live_and_end_between_two_polls_are_reported_at_the_next() -> None:
    async with running(_short_lived()) as w:
        await w.step(10)  # t=10: the baseline
        w.sim.reset_stats()
        await w.step(10)  # t=20: short-fail was created at 12 and failed at 15
        assert _events(w, "short-fail") == [("job_discovered", "Failed"), ("job_failed", "Failed")]
        (failed,) = [e.to_dict() for e in w.sink.events if e.kind == "job_failed"]
        assert failed["failure_reasons"] == [
            {"code": "ManifestNotFound", "reason": "The manifest does not exist"}
        ]
        assert failed["report"]["bucket"] == "arn:aws:s3:::reports"
        assert failed["console_url"].endswith(f"/s3/jobs/short-fail?region={R}")
        # The failure code reaches the metrics (and through them the alert's text).
        info = {"aws_account_id": A, "aws_region": R, "job_id": "short-fail"}
        assert (
            w.sample(
                "s3batch_job_info",
                **info,
                operation="S3PutObjectTagging",
                priority="10",
                failure_code="ManifestNotFound",
            )
            == 1
        )
        # Cheap: the running jobs, one small page of recently ended ones, and one
        # DescribeJob for the failure's detail.
        assert w.sim.request_count("ListJobs", account=A) == 2
        assert w.sim.request_count("DescribeJob", account=A) == 1
        await w.step(10)  # t=30
        assert _events(w, "short-done") == [("job_discovered", "Complete")]
        assert _events(w, "short-cancel") == [("job_discovered", "Cancelled")]
        await w.step(10)  # nothing is reported twice
        assert len(w.sink.events) == 4
        assert w.sample("jobwatch_full_listings_total", reason="baseline") == 1
        assert w.sample("jobwatch_full_listings_total", reason="order") == 0


async def test_when_listjobs_is_not_newest_first_a_full_listing_is_taken() -> None:
    async with running(_short_lived("reversed_pages")) as w:
        await w.step(10)
        with capture_logs() as logs:
            await w.step(10)
        assert _events(w, "short-fail") == [("job_discovered", "Failed"), ("job_failed", "Failed")]
        assert [e["event"] for e in logs if e["event"] == "listing_order_unexpected"] == [
            "listing_order_unexpected"
        ]
        assert w.sample("jobwatch_full_listings_total", reason="order") == 1
        await w.step(10)
        assert _events(w, "short-done") == [("job_discovered", "Complete")]
        assert w.sample("jobwatch_full_listings_total", reason="order") == 2
        assert len(w.sink.events) == 4


def _mass(action: str) -> dict[str, Any]:
    timeline = [{"at": "25s", "action": action, "reason": "batch ended"}]
    if action == "fail":
        timeline[0]["code"] = "AccessDenied"
    return {
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {"id": "other-job", "tasks": 10**7, "rate": 1},
                    {
                        "id": "batch-copy",
                        "count": 500,
                        "tasks": 10**7,
                        "rate": 1,
                        # Started an hour ago: not among the recently created jobs.
                        "created_at": "-1h",
                        "timeline": timeline,
                    },
                ],
            }
        ],
        "faults": [{"kind": "latency", "accounts": [A], "seconds": 0.1}],
    }


async def test_500_jobs_failing_together_are_all_reported_without_an_overrun() -> None:
    async with running(_mass("fail"), {"concurrency": 64}) as w:
        await w.step(10)
        await w.step(10)  # t=20, all Active
        w.sim.reset_stats()
        started = time.monotonic()
        await w.step(10)  # t=30: all 500 failed at 25 (Failed at 27)
        took = time.monotonic() - started
        failed = [e for e in w.sink.events if e.kind == "job_failed"]
        assert len(failed) == 500
        assert len({e.to_dict()["job_id"] for e in failed}) == 500
        assert all(e.to_dict()["failure_reasons"][0]["code"] == "AccessDenied" for e in failed)
        # One full listing rather than 500 DescribeJob calls to learn that they
        # ended, then one DescribeJob per failed job for its detail, 64 at a
        # time: one at a time they would take 50 s at 100 ms each, five intervals.
        assert w.sample("jobwatch_full_listings_total", reason="departed") == 1
        assert w.sim.request_count("DescribeJob", account=A) == 500
        assert took < 10
        assert w.app.store[(A, R)].overruns == 0


async def test_500_jobs_ending_together_cost_one_full_listing_not_500_calls() -> None:
    async with running(_mass("cancel")) as w:
        await w.step(10)
        await w.step(10)  # t=20: all Active
        w.sim.reset_stats()
        await w.step(10)  # t=30: all Cancelled (at 25 s, then 2 s Cancelling)
        ended = [e for e in w.sink.events if e.to_dict()["status"] == "Cancelled"]
        assert len({e.to_dict()["job_id"] for e in ended}) == 500
        assert w.sample("jobwatch_full_listings_total", reason="departed") == 1
        assert w.sim.request_count("DescribeJob", account=A) == 0
        assert (
            w.sample(
                "jobwatch_api_requests_total",
                aws_account_id=A,
                aws_region=R,
                operation="ListJobs",
                outcome="success",
            )
            == 6
        )  # the baseline, two incremental polls of two calls, the full listing


async def test_a_job_in_a_status_jobwatch_cannot_name_costs_one_call_per_resync() -> None:
    scenario = {
        "accounts": [
            {
                "id": A,
                "jobs": [
                    {
                        "id": "odd-job",
                        "tasks": 10**7,
                        "rate": 1,
                        "timeline": [
                            {"at": "15s", "action": "set_status", "status": "Reticulating"},
                            {"at": "615s", "action": "set_status", "status": "Active"},
                        ],
                    }
                ],
            }
        ]
    }
    async with running(scenario, {"resync_interval": "5m"}) as w:
        await w.step(10)  # baseline: Active
        w.sim.reset_stats()
        for _ in range(60):  # ten minutes in the unknown status
            await w.step(10)
        changes = _events(w, "odd-job")
        assert changes == [("job_status_changed", "Reticulating")]
        assert w.tracked(A, R) == {"odd-job": "Reticulating"}
        assert w.sample("jobwatch_unknown_values_total", field="status") == 1
        # Once when it left the listed statuses; after that only the full
        # listings (every 5 minutes) see it.
        assert w.sim.request_count("DescribeJob", account=A) == 1
        assert w.sample("jobwatch_full_listings_total", reason="resync") == 2
        await w.step(10)  # back in a status jobwatch knows
        assert _events(w, "odd-job")[-1] == ("job_status_changed", "Active")

"""The job state machine under a driven clock (no HTTP: the truth the wire renders)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import model
from jobwatch.clock import ManualClock
from jobwatch.simulator import SimJobView, Simulator, _model, scenario_from_dict

A = "111111111111"
R = "us-east-1"


def world(*jobs: dict[str, Any], **extra: Any) -> Simulator:
    return Simulator(
        scenario_from_dict({"accounts": [{"id": A, "jobs": list(jobs)}], **extra}), ManualClock()
    )


def at(sim: Simulator, job_id: str) -> SimJobView:
    return sim.job(A, R, job_id)


def test_the_simulator_speaks_the_models_statuses() -> None:
    assert _model.JOB_STATUSES == model.KNOWN_STATUSES
    assert _model.TERMINAL_STATUSES == model.TERMINAL_STATUSES
    # Each name the state machine uses is bound to the model's word of that name.
    for word in model.KNOWN_STATUSES:
        assert getattr(_model, word.upper()) == word


def test_new_preparing_ready_active_completing_complete() -> None:
    sim = world({"id": "plain-job", "tasks": 100, "rate": 10})
    trail = []
    for _ in range(30):
        trail.append(at(sim, "plain-job").status)
        sim.advance(1)
    # default phases: New 1 s, Preparing 4 s, Ready 1 s, Active 10 s, Completing 3 s
    assert trail == (
        ["New"]
        + ["Preparing"] * 4
        + ["Ready"]
        + ["Active"] * 10
        + ["Completing"] * 3
        + ["Complete"] * 11
    )
    job = at(sim, "plain-job")
    assert (job.total_tasks, job.succeeded, job.failed) == (100, 100, 0)
    assert job.elapsed_active_seconds == 10
    assert job.termination_time == sim.origin + 19
    assert job.listed


def test_total_tasks_is_zero_until_the_manifest_is_read() -> None:
    sim = world({"id": "plain-job", "tasks": 100, "rate": 10})
    assert at(sim, "plain-job").total_tasks == 0
    sim.advance(4)
    assert (at(sim, "plain-job").status, at(sim, "plain-job").total_tasks) == ("Preparing", 0)
    sim.advance(1.5)
    assert at(sim, "plain-job").total_tasks == 100


def test_confirmation_required_waits_in_suspended() -> None:
    sim = world({"id": "console-job", "tasks": 100, "rate": 10, "confirmation_required": True})
    sim.advance(3600)
    job = at(sim, "console-job")
    assert job.status == "Suspended"
    assert job.suspended_date == sim.origin + 5
    assert job.suspended_cause == "AwaitingConfirmation"
    assert job.elapsed_active_seconds == 0
    sim.confirm_job(A, R, "console-job", reason="looks right")
    assert at(sim, "console-job").status == "Ready"
    sim.advance(1)
    assert at(sim, "console-job").status == "Active"
    assert at(sim, "console-job").status_update_reason == "looks right"


def test_timeline_confirm_before_suspension_skips_it() -> None:
    sim = world(
        {
            "id": "early-job",
            "confirmation_required": True,
            "timeline": [{"at": "2s", "action": "confirm"}],
        }
    )
    statuses = set()
    for _ in range(10):
        statuses.add(at(sim, "early-job").status)
        sim.advance(1)
    assert "Suspended" not in statuses
    assert at(sim, "early-job").status == "Active"


def test_the_50_percent_rule_fails_a_job_after_1000_tasks() -> None:
    sim = world({"id": "bad-job", "tasks": 5000, "rate": 100, "failure_ratio": 0.6})
    sim.advance(6 + 9.9)  # 990 tasks run: not yet
    assert at(sim, "bad-job").status == "Active"
    sim.advance(0.1)  # 1,000 tasks, 600 failed
    job = at(sim, "bad-job")
    assert (job.status, job.succeeded, job.failed) == ("Failing", 400, 600)
    assert job.failure_reasons[0][0] == "TaskFailureThresholdExceeded"
    sim.advance(2)
    job = at(sim, "bad-job")
    assert job.status == "Failed"
    assert job.termination_time == sim.origin + 18  # the rule at 16 s, Failing for 2 s


def test_the_50_percent_rule_needs_1000_tasks_and_more_than_half() -> None:
    sim = world(
        {"id": "small-job", "tasks": 900, "rate": 100, "failure_ratio": 0.9},
        {"id": "half-job", "tasks": 5000, "rate": 100, "failure_ratio": 0.5},
        {"id": "flaky-job", "tasks": 5000, "rate": 100, "failure_ratio": 0.2},
    )
    sim.advance(120)
    assert at(sim, "small-job").status == "Complete"  # never reached 1,000 tasks
    assert at(sim, "half-job").status == "Complete"  # exactly half is not more than half
    flaky = at(sim, "flaky-job")
    assert flaky.status == "Complete"
    assert flaky.failed == 1000


def test_a_failure_ratio_rising_mid_run_trips_the_rule_at_the_crossing() -> None:
    sim = world(
        {
            "id": "turning-job",
            "tasks": 100_000,
            "rate": 100,
            "failure_ratio": 0.1,
            "timeline": [{"at": "26s", "action": "set_failure_ratio", "failure_ratio": 0.9}],
        }
    )
    # 2,000 tasks by t=26 (200 failed); then 90 of each 100 fail. F > P/2 once
    # 200 + 90s > (2000 + 100s)/2, i.e. after s = 20 s.
    sim.advance(45.9)
    assert at(sim, "turning-job").status == "Active"
    sim.advance(0.2)
    assert at(sim, "turning-job").status == "Failing"


def test_stall_stops_progress_but_not_the_active_timer() -> None:
    sim = world(
        {
            "id": "stuck-job",
            "tasks": 100_000,
            "rate": 10,
            "timeline": [{"at": "16s", "action": "stall"}, {"at": "116s", "action": "resume"}],
        }
    )
    sim.advance(16)
    before = at(sim, "stuck-job")
    assert before.succeeded == 100
    sim.advance(99)
    during = at(sim, "stuck-job")
    assert (during.status, during.succeeded, during.stalled) == ("Active", 100, True)
    assert during.elapsed_active_seconds == before.elapsed_active_seconds + 99
    sim.advance(11)
    after = at(sim, "stuck-job")
    assert (after.succeeded, after.stalled) == (200, False)


def test_pause_and_unpause_stop_the_active_timer() -> None:
    sim = world(
        {
            "id": "pause-job",
            "tasks": 100_000,
            "rate": 10,
            "timeline": [{"at": "16s", "action": "pause"}, {"at": "60s", "action": "unpause"}],
        }
    )
    sim.advance(17)
    assert at(sim, "pause-job").status == "Pausing"
    sim.advance(2)
    paused = at(sim, "pause-job")
    assert paused.status == "Paused"
    assert paused.elapsed_active_seconds == 10
    sim.advance(40)
    assert at(sim, "pause-job").elapsed_active_seconds == 10
    sim.advance(11)
    resumed = at(sim, "pause-job")
    assert resumed.status == "Active"
    assert resumed.elapsed_active_seconds == 20


def test_cancel_and_fail_paths_end_terminal() -> None:
    sim = world(
        {"id": "cancel-job", "tasks": 100_000, "timeline": [{"at": "10s", "action": "cancel"}]},
        {
            "id": "fail-job",
            "tasks": 100_000,
            "timeline": [{"at": "10s", "action": "fail", "code": "X1", "reason": "broke"}],
        },
    )
    sim.advance(11)
    assert at(sim, "cancel-job").status == "Cancelling"
    assert at(sim, "fail-job").status == "Failing"
    sim.advance(2)
    assert at(sim, "cancel-job").status == "Cancelled"
    assert at(sim, "fail-job").status == "Failed"
    assert at(sim, "fail-job").failure_reasons == (("X1", "broke"),)
    # Actions on terminal jobs change nothing.
    sim.fail_job(A, R, "cancel-job")
    sim.cancel_job(A, R, "fail-job")
    assert at(sim, "cancel-job").status == "Cancelled"
    assert at(sim, "fail-job").status == "Failed"


def test_set_status_accepts_unknown_statuses_and_freezes_there() -> None:
    sim = world(
        {
            "id": "odd-job",
            "tasks": 100_000,
            "operation": "S3FutureOperation",
            "timeline": [{"at": "10s", "action": "set_status", "status": "Archiving"}],
        }
    )
    sim.advance(10)
    job = at(sim, "odd-job")
    assert (job.status, job.operation) == ("Archiving", "S3FutureOperation")
    sim.advance(3600)
    assert at(sim, "odd-job").status == "Archiving"
    assert at(sim, "odd-job").termination_time is None
    sim.set_job(A, R, "odd-job", status="Complete")
    assert at(sim, "odd-job").termination_time == sim.now()


def test_jobs_created_in_the_future_appear_on_time() -> None:
    sim = world({"id": "later-job", "created_at": "30s"})
    assert sim.jobs(A, R) == []
    with pytest.raises(KeyError):
        at(sim, "later-job")
    sim.advance(30)
    assert at(sim, "later-job").status == "New"


def test_runtime_creation_and_scheduling() -> None:
    sim = world()
    job_id = sim.create_job(A, R, tasks=50, rate=10, timeline=[{"at": "8s", "action": "stall"}])
    assert at(sim, job_id).status == "New"
    sim.schedule(A, R, job_id, 20, "resume")
    sim.advance(8)
    assert at(sim, job_id).stalled
    assert at(sim, job_id).succeeded == 20
    sim.advance(12)
    assert not at(sim, job_id).stalled
    with pytest.raises(ValueError, match="already exists"):
        sim.create_job(A, R, id=job_id)
    with pytest.raises(ValueError, match="action"):
        sim.act(A, R, job_id, "explode")


def test_a_clock_jump_back_freezes_jobs() -> None:
    sim = world({"id": "plain-job", "tasks": 1000, "rate": 10})
    sim.advance(20)
    seen = at(sim, "plain-job")
    sim.advance(-10)
    assert at(sim, "plain-job").succeeded == seen.succeeded
    sim.advance(15)
    assert at(sim, "plain-job").succeeded == seen.succeeded + 50


events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),
        st.sampled_from(
            [
                {"action": "stall"},
                {"action": "resume"},
                {"action": "pause"},
                {"action": "unpause"},
                {"action": "set_rate", "rate": 25},
                {"action": "set_failure_ratio", "failure_ratio": 0.7},
                {"action": "set_failure_ratio", "failure_ratio": 0.05},
                {"action": "cancel"},
                {"action": "fail"},
            ]
        ),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(
    timeline=events,
    looks=st.lists(st.floats(min_value=0, max_value=500), max_size=12),
    tasks=st.integers(min_value=0, max_value=20_000),
    ratio=st.sampled_from([0.0, 0.3, 0.55]),
)
def test_the_result_does_not_depend_on_when_anyone_looked(
    timeline: list[tuple[int, dict[str, Any]]], looks: list[float], tasks: int, ratio: float
) -> None:
    spec = {
        "id": "prop-job",
        "tasks": tasks,
        "rate": 40,
        "failure_ratio": ratio,
        "timeline": [{"at": t, **ev} for t, ev in timeline],
    }
    watched, unwatched = world(spec), world(spec)
    for t in sorted(looks):
        watched.clock.set(watched.origin + t)  # type: ignore[attr-defined]
        job = at(watched, "prop-job")
        assert job.succeeded + job.failed <= tasks
        assert job.elapsed_active_seconds <= t + 1
    for sim in (watched, unwatched):
        sim.clock.set(sim.origin + 600)  # type: ignore[attr-defined]
    a, b = at(watched, "prop-job"), at(unwatched, "prop-job")
    assert (a.status, a.succeeded, a.failed, a.elapsed_active_seconds, a.termination_time) == (
        b.status,
        b.succeeded,
        b.failed,
        b.elapsed_active_seconds,
        b.termination_time,
    )

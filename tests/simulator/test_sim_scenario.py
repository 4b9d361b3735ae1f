"""Scenario files, the built-in demo and the fleet generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobwatch.clock import ManualClock
from jobwatch.simulator import (
    Scenario,
    ScenarioError,
    Simulator,
    builtin_scenario,
    fleet_account_id,
    generate_fleet,
    load_scenario,
)

GOOD = """
name: small
regions: [us-east-1, eu-west-1]
accounts:
  - id: "111111111111"
    jobs:
      - id: first-job
        region: eu-west-1
        tasks: 500
        rate: 5
        created_at: -1m
        timeline:
          - at: 30s
            action: fail
            reason: "bad manifest"
faults:
  - kind: throttle
    status: 429
    accounts: ["111111111111"]
    probability: 0.5
    from: 1m
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.name == "small"
    job = scenario.accounts[0].jobs[0]
    assert (job.created_at, job.timeline[0].at, job.timeline[0].action) == (-60.0, 30.0, "fail")
    fault = scenario.faults[0]
    assert (fault.kind, fault.status, fault.from_) == ("throttle", 429, 60.0)
    sim = Simulator(scenario, ManualClock())
    sim.advance(31)
    assert sim.job("111111111111", "eu-west-1", "first-job").status == "Failing"


@pytest.mark.parametrize(
    ("mutation", "path", "hint"),
    [
        (("tasks: 500", "taks: 500"), "accounts[0].jobs[0].taks", "unknown key"),
        (("action: fail", "action: explode"), "accounts[0].jobs[0].timeline[0].action", "'fail'"),
        (("at: 30s", "at: soon"), "accounts[0].jobs[0].timeline[0].at", "not a duration"),
        (("rate: 5", "rate: -5"), "accounts[0].jobs[0].rate", "greater than or equal"),
        (('id: "111111111111"', 'id: "1111"'), "accounts[0].id", "pattern"),
        (("kind: throttle", "kind: meteor"), "faults[0].kind", "'throttle'"),
        (("status: 429", "status: 500"), "faults[0]", "503"),
        (
            ("region: eu-west-1", "region: ap-south-1"),
            "accounts[0].jobs[0].region",
            "not one of the account's",
        ),
        (('reason: "bad manifest"', "rate: 3"), "timeline[0]", "'rate' does not apply"),
    ],
)
def test_bad_files_name_the_key_and_the_fix(
    tmp_path: Path, mutation: tuple[str, str], path: str, hint: str
) -> None:
    old, new = mutation
    assert old in GOOD
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, GOOD.replace(old, new)))
    message = str(err.value)
    assert str(tmp_path / "scenario.yaml") in message
    assert path in message
    assert hint in message


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="not valid YAML at line"):
        load_scenario(write(tmp_path, "accounts:\n  - id: [unclosed\n"))
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(write(tmp_path, "- just\n- a list\n"))
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match="UTF-8"):
        load_scenario(tmp_path / "latin.yaml")
    with pytest.raises(ScenarioError, match="no built-in"):
        builtin_scenario("nope")


def test_duplicate_accounts_and_ambiguous_regions_are_errors(tmp_path: Path) -> None:
    text = GOOD.replace("faults:", '  - id: "111111111111"\nfaults:')
    with pytest.raises(ScenarioError, match=r"accounts\[1\]\.id: account 111111111111 appears"):
        load_scenario(write(tmp_path, text))
    with pytest.raises(ScenarioError, match=r"accounts\[0\]\.jobs\[0\]\.region: required"):
        load_scenario(write(tmp_path, GOOD.replace("        region: eu-west-1\n", "")))


def test_demo_shows_every_case_within_two_minutes() -> None:
    scenario = builtin_scenario("demo")
    accounts = {a.id: a for a in scenario.accounts}
    assert set(accounts) == {"111111111111", "222222222222", "333333333333", "444444444444"}
    sim = Simulator(scenario, ManualClock())
    seen: dict[str, set[str]] = {}
    progress: dict[str, list[int]] = {}
    for _ in range(0, 121, 5):
        for account, region in sim.targets():
            for job in sim.jobs(account, region):
                label = job.description or job.job_id
                seen.setdefault(label, set()).add(job.status)
                progress.setdefault(label, []).append(job.succeeded + job.failed)
        sim.advance(5)
    assert "Failed" in seen["ACL fix-up (fails at t=30s)"]
    assert "Failed" in seen["broken lambda (fails by the 50% rule near t=56s)"]
    assert seen["console job waiting for confirmation"] == {"Suspended"}
    assert "Complete" in seen["checksum audit (finishes during the demo)"]
    assert "New" in seen["replicate new uploads (appears at t=20s)"]
    # The stalled copy makes no progress from t=20 s to t=100 s, then moves again.
    stalled = progress["copy to the backup bucket (stalls t=20s..100s)"]
    assert stalled[5] == stalled[19] < stalled[21]
    flaky = sim.jobs("222222222222", "eu-west-1")
    (flaky_job,) = [j for j in flaky if j.description and j.description.startswith("flaky")]
    assert flaky_job.status == "Active"
    assert 0.18 < flaky_job.failed / (flaky_job.succeeded + flaky_job.failed) < 0.22
    assert sim.access_denied("444444444444", "us-east-1")
    assert not sim.access_denied("111111111111", "us-east-1")
    throttled = sum(
        sim.decide_faults("ListJobs", "333333333333", "us-east-1", False).terminal is not None
        for _ in range(2000)
    )
    assert 0.4 < throttled / 2000 < 0.62
    assert all(
        sim.decide_faults("ListJobs", "111111111111", "us-east-1", False).terminal is None
        for _ in range(100)
    )
    total = sum(len(sim.jobs(a, r)) for a, r in sim.targets())
    assert total <= 30  # modest, so the demo stays readable


def test_generate_fleet_is_deterministic_and_shaped() -> None:
    fleet = generate_fleet(3, ["us-east-1", "eu-west-1"], 200, seed=5, terminal_share=0.5)
    again = generate_fleet(3, ["us-east-1", "eu-west-1"], 200, seed=5, terminal_share=0.5)
    assert isinstance(fleet, Scenario)
    assert fleet.model_dump() == again.model_dump()
    assert [a.id for a in fleet.accounts] == [fleet_account_id(i) for i in range(3)]
    assert fleet_account_id(0) == "100000000000"
    sim = Simulator(fleet, ManualClock())
    sim2 = Simulator(again, ManualClock())
    views = sim.jobs(fleet_account_id(1), "eu-west-1")
    assert len(views) == 200
    assert [v.job_id for v in views] == [
        v.job_id for v in sim2.jobs(fleet_account_id(1), "eu-west-1")
    ]
    terminal = [v for v in views if v.terminal]
    assert 70 < len(terminal) < 130
    assert all(v.listed for v in views)
    assert {v.status for v in views if not v.terminal} == {"Active"}
    assert {v.status for v in terminal} <= {"Complete", "Failed", "Cancelled"}


def test_generate_fleet_waiting_jobs_and_region_count() -> None:
    fleet = generate_fleet(1, 3, 100, seed=1, active_share=0.0)
    assert list(fleet.regions) == ["us-east-1", "eu-west-1", "us-west-2"]
    sim = Simulator(fleet, ManualClock())
    statuses = {v.status for v in sim.jobs(fleet_account_id(0), "us-west-2")}
    assert statuses == {"Suspended", "Paused"}
    with pytest.raises(ValueError, match="terminal_share"):
        generate_fleet(1, 1, 1, terminal_share=2)
    with pytest.raises(ValueError, match="regions"):
        generate_fleet(1, 99, 1)

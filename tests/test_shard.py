"""Sharding: every target watched exactly once, few targets move when a shard is
added, the ordinal from a StatefulSet pod's name, and two real processes
splitting a fleet between them."""

from __future__ import annotations

import hashlib
import io
import random
import re
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobwatch.app import App
from jobwatch.cli import main
from jobwatch.clock import ManualClock
from jobwatch.config import Config
from jobwatch.errors import ConfigError
from jobwatch.model import Target
from jobwatch.shard import Shard, ordinal_from_pod, resolve_shard, shard_of
from jobwatch.targets import resolve_targets
from jobwatch.testing import MemorySink
from tests.helpers import running
from tests.test_cli import child_env, free_port, jobwatch, wait_http, wait_port

REGIONS = ("us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2")


def fleet(accounts: int = 1000, seed: int = 7) -> list[tuple[str, str]]:
    """``accounts`` random 12-digit accounts x 4 regions (4,000 targets by default)."""
    rng = random.Random(seed)
    ids = sorted({f"{rng.randrange(10**12):012d}" for _ in range(accounts * 2)})[:accounts]
    assert len(ids) == accounts
    return [(a, r) for a in ids for r in REGIONS]


TARGETS = fleet()


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5])
def test_shards_together_watch_every_target_exactly_once(total: int) -> None:
    owners = Counter[tuple[str, str]]()
    sizes = []
    for ordinal in range(total):
        mine = [t for t in TARGETS if Shard(ordinal, total).owns(Target(*t))]
        sizes.append(len(mine))
        owners.update(mine)
    assert set(owners) == set(TARGETS)
    assert set(owners.values()) == {1}
    # And evenly: within 10% of the fair share on 4,000 targets.
    fair = len(TARGETS) / total
    assert all(abs(n - fair) <= 0.1 * fair for n in sizes), sizes


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5])
def test_adding_a_shard_moves_about_one_in_n_plus_one_targets(total: int) -> None:
    before = {t: shard_of(*t, total) for t in TARGETS}
    after = {t: shard_of(*t, total + 1) for t in TARGETS}
    moved = [t for t in TARGETS if before[t] != after[t]]
    share = len(moved) / len(TARGETS)
    # Rendezvous hashing: only the targets the new shard wins move, 1/(N+1) of them.
    assert abs(share - 1 / (total + 1)) < 0.025, share
    assert {after[t] for t in moved} == {total}  # every moved target went to the new shard
    # Removing the shard again puts each one back where it was.
    assert all(shard_of(*t, total) == before[t] for t in moved)


def test_hash_mod_n_would_move_most_targets() -> None:
    """Why not md5 mod N (kube-state-metrics' scheme): 4 -> 5 shards moves ~80%."""

    def mod(t: tuple[str, str], n: int) -> int:
        return int(hashlib.md5(f"{t[0]}/{t[1]}".encode()).hexdigest(), 16) % n  # noqa: S324

    moved = sum(1 for t in TARGETS if mod(t, 4) != mod(t, 5)) / len(TARGETS)
    rendezvous = sum(1 for t in TARGETS if shard_of(*t, 4) != shard_of(*t, 5)) / len(TARGETS)
    assert moved > 0.75
    assert rendezvous < 0.225


def test_the_hash_is_pinned() -> None:
    """Every jobwatch version must agree, or an upgrade would reshuffle every target
    (and a half-upgraded StatefulSet would watch some twice and some never)."""
    assert [shard_of("111111111111", "us-east-1", n) for n in range(1, 9)] == [
        0, 1, 2, 2, 4, 4, 4, 4,
    ]  # fmt: skip
    assert [shard_of("012345678901", "ap-southeast-2", n) for n in range(1, 9)] == [
        0, 0, 0, 3, 3, 5, 5, 5,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [("jobwatch-0", 0), ("jobwatch-3", 3), ("jobwatch-12", 12), ("jobwatch-shard-2", 2)],
)
def test_ordinal_from_a_statefulset_pod_name(name: str, ordinal: int) -> None:
    assert ordinal_from_pod(name) == ordinal


@pytest.mark.parametrize("name", ["jobwatch", "jobwatch-5d8f7c9b4-x2x8k", "-3", "jobwatch-"])
def test_names_without_an_ordinal_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="does not end in -<ordinal>"):
        ordinal_from_pod(name)


def test_resolving_the_shard() -> None:
    # Flags beat keys, keys beat the pod name; one shard never needs an ordinal.
    assert resolve_shard(ordinal=1, total=3, pod="jobwatch-2", config_ordinal=0) == Shard(1, 3)
    assert resolve_shard(total=3, pod="jobwatch-2", config_ordinal=0) == Shard(0, 3)
    assert resolve_shard(pod="jobwatch-2", config_total=3) == Shard(2, 3)
    assert resolve_shard(total=4, config_total=3, pod="jobwatch-3") == Shard(3, 4)
    assert resolve_shard(pod="jobwatch-7f9c-abcde") == Shard(0, 1)
    assert resolve_shard() == Shard(0, 1)
    with pytest.raises(ConfigError, match="no ordinal for this process"):
        resolve_shard(config_total=3)
    with pytest.raises(ConfigError, match=r"--pod / POD_NAME: pod name 'jobwatch-7f9c-abcde'"):
        resolve_shard(pod="jobwatch-7f9c-abcde", config_total=3)
    with pytest.raises(ConfigError, match=r"more replicas than shard\.total"):
        resolve_shard(pod="jobwatch-3", config_total=3)
    with pytest.raises(ConfigError, match="total shards must be 1 to 1000"):
        resolve_shard(total=0)


def test_config_keys_are_checked() -> None:
    config = Config.model_validate(
        {"targets": [{"account_id": "111111111111"}], "shard": {"total": 4, "ordinal": 3}}
    )
    assert (config.shard.ordinal, config.shard.total) == (3, 4)
    for bad in ({"total": 0}, {"total": 2, "ordinal": 2}, {"ordinal": -1}, {"totl": 2}):
        with pytest.raises(ValueError, match="shard"):
            Config.model_validate({"targets": [{"account_id": "111111111111"}], "shard": bad})


def _accounts(n: int) -> list[str]:
    return [f"{100000000000 + i * 7919:012d}" for i in range(n)]


async def test_an_app_watches_only_its_shard_and_says_which() -> None:
    targets = [{"account_id": a, "regions": ["us-east-1", "eu-west-1"]} for a in _accounts(30)]
    seen: list[tuple[str, str]] = []
    for ordinal in range(3):
        config = Config.model_validate(
            {"targets": targets, "shard": {"total": 3, "ordinal": ordinal}}
        )
        async with App(config) as app:
            seen.extend(app.store.targets)
            sample = app.registry.get_sample_value
            assert sample("jobwatch_shard_ordinal") == ordinal
            assert sample("jobwatch_total_shards") == 3
            assert sample("jobwatch_shard_candidate_targets") == 60
            assert sample("jobwatch_targets") == len(app.store.targets)
    every = resolve_targets(Config.model_validate({"targets": targets})).targets
    assert sorted(seen) == sorted(t.key for t in every)
    async with App(Config.model_validate({"targets": targets})) as unsharded:
        assert unsharded.registry.get_sample_value("jobwatch_shard_ordinal") == 0
        assert unsharded.registry.get_sample_value("jobwatch_total_shards") == 1
        assert len(unsharded.targets) == 60


def test_check_config_shows_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "jobwatch.yaml"
    accounts = _accounts(10)
    path.write_text(
        "shard: {total: 3}\ntargets:\n" + "".join(f"  - account_id: '{a}'\n" for a in accounts)
    )
    monkeypatch.setenv("POD_NAME", "jobwatch-2")
    out = io.StringIO()
    assert main(["check-config", "-c", str(path)], out=out) == 0
    mine = sum(1 for a in accounts if shard_of(a, "us-east-1", 3) == 2)
    assert f"shard 2/3: {mine} of the 10 static target(s)" in out.getvalue()
    assert out.getvalue().count("(this shard)") == mine
    out = io.StringIO()
    assert main(["check-config", "-c", str(path), "--shard", "0"], out=out) == 0
    assert "shard 0/3:" in out.getvalue()
    # A Deployment's pod name carries no ordinal: exit 2, saying what to do.
    monkeypatch.setenv("POD_NAME", "jobwatch-5d8f7c9b4-x2x8k")
    assert main(["check-config", "-c", str(path)]) == 2
    monkeypatch.delenv("POD_NAME")
    assert main(["check-config", "-c", str(path), "--pod", "jobwatch-3"]) == 2
    # With no ordinal anywhere the file is still checked (running needs one).
    out = io.StringIO()
    assert main(["check-config", "-c", str(path)], out=out) == 0
    assert "3 shards: each process takes its ordinal from --shard or POD_NAME" in out.getvalue()
    assert main(["check-config", "-c", str(path), "--total-shards", "0"]) == 2
    assert main(["run", "-c", str(path), "--listen", "127.0.0.1:0"]) == 2
    assert main(["check-config", "-c", str(path), "--total-shards", "1"]) == 0


async def test_two_replicas_of_one_shard_report_everything_twice() -> None:
    """What docs/scaling.md says about running two replicas of one shard: the same
    series from both (Prometheus keeps both: they differ by pod), and every event
    twice, with different event_ids (a replica polls at its own moments)."""
    a = "111111111111"
    job = {
        "id": "twice-job",
        "tasks": 100_000,
        "rate": 1,
        "timeline": [{"at": "60s", "action": "fail", "reason": "bad manifest"}],
    }
    async with running({"accounts": [{"id": a, "jobs": [job]}]}) as w:
        twin_clock = ManualClock(w.clock.time() + 7)  # the second replica polls 7 s later
        twin_sink = MemorySink()
        async with App(w.app.config, clock=twin_clock, sinks=[twin_sink]) as twin:
            await w.app.poll_all_once()
            await twin.poll_all_once()
            w.sim.advance(120)
            twin_clock.set(w.clock.time() + 7)
            await w.app.poll_all_once()
            await twin.poll_all_once()
            labels = {"aws_account_id": a, "aws_region": "us-east-1", "job_id": "twice-job"}
            for registry in (w.app.registry, twin.registry):
                assert (
                    registry.get_sample_value("s3batch_job_status", {**labels, "status": "Failed"})
                    == 1
                )
        (first,) = w.sink.of("job_failed")
        (second,) = twin_sink.of("job_failed")
        assert first.to_dict()["job_id"] == second.to_dict()["job_id"] == "twice-job"
        assert first.event_id != second.event_id  # no downstream dedup by event_id


# --------------------------------------------------------------------------- real processes

ACCOUNTS = _accounts(12)
SCENARIO = "regions: [us-east-1, eu-west-1]\naccounts:\n" + "".join(
    f'  - id: "{a}"\n' for a in ACCOUNTS
)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    port = free_port()
    proc = subprocess.Popen(
        jobwatch("sim", "--listen", f"127.0.0.1:{port}", "--scenario", str(scenario)),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_two_statefulset_pods_split_the_fleet(simulator: str, tmp_path: Path) -> None:
    config = tmp_path / "jobwatch.yaml"
    config.write_text(
        f"endpoint_url: {simulator}\ninterval: 2s\njitter: 0s\ntimeout: 2s\n"
        "shard: {total: 2}\ndefaults: {regions: [us-east-1, eu-west-1]}\ntargets:\n"
        + "".join(f"  - account_id: '{a}'\n" for a in ACCOUNTS)
    )
    procs: list[subprocess.Popen[str]] = []
    ports = []
    try:
        for ordinal in range(2):
            port = free_port()
            ports.append(port)
            env = {**child_env(), "POD_NAME": f"jobwatch-{ordinal}"}
            procs.append(
                subprocess.Popen(
                    jobwatch("run", "-c", str(config), "--listen", f"127.0.0.1:{port}"),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        up: Counter[tuple[str, str]] = Counter()
        for ordinal, port in enumerate(ports):
            assert wait_http(f"http://127.0.0.1:{port}/readyz") == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert f"\njobwatch_shard_ordinal {float(ordinal)}\n" in text
            assert "\njobwatch_total_shards 2.0\n" in text
            assert "\njobwatch_shard_candidate_targets 24.0\n" in text
            found = re.findall(
                r'^jobwatch_target_up\{aws_account_id="(\d+)",aws_region="([a-z0-9-]+)"\} 1\.0$',
                text,
                flags=re.MULTILINE,
            )
            up.update(found)
            assert all(shard_of(a, r, 2) == ordinal for a, r in found)
        assert set(up) == {(a, r) for a in ACCOUNTS for r in ("us-east-1", "eu-west-1")}
        assert set(up.values()) == {1}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert [p.returncode for p in procs] == [0, 0]

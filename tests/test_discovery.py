"""Account discovery: filters, merging, moto's Organizations and STS in server mode,
targets joining and leaving a running jobwatch, failures that keep the last list."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.sts.models import sts_backends
from structlog.testing import capture_logs

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config, DiscoveryConfig, parse_config
from jobwatch.discovery import (
    Account,
    Discovery,
    DiscoveryError,
    OrganizationsSource,
    cache_path_for,
    passes_filters,
    tags_match,
)
from jobwatch.errors import ConfigError
from jobwatch.simulator import Scenario, Simulator, SimulatorServer
from jobwatch.targets import resolve_targets
from jobwatch.testing import MemorySink
from tests.helpers import World, free_port, reset_moto
from tests.helpers import moto_server as start_moto

MANAGEMENT = "123456789012"  # moto's default account: the organization's management account
R = "us-east-1"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovered targets assume a role: without moto, STS and Organizations calls
    go to a closed port on loopback, never to AWS."""
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ORGANIZATIONS", dead)


# --------------------------------------------------------------------------- pure parts


def _discovery(**kw: Any) -> DiscoveryConfig:
    return DiscoveryConfig.model_validate(kw)


def test_state_and_id_filters() -> None:
    d = _discovery(include=["1111*", "2222*"], exclude=["11119*"])
    assert passes_filters(Account("111100000000"), d)
    assert passes_filters(Account("222200000000"), d)
    assert not passes_filters(Account("333300000000"), d)  # not included
    assert not passes_filters(Account("111190000000"), d)  # excluded
    assert not passes_filters(Account("111100000000", state="SUSPENDED"), d)
    assert not passes_filters(Account("111100000000", state="PENDING_CLOSURE"), d)
    both = _discovery(statuses=["ACTIVE", "SUSPENDED"])
    assert passes_filters(Account("333300000000", state="SUSPENDED"), both)
    assert passes_filters(Account("333300000000"), _discovery())  # no include: every id


def test_tag_filter_needs_every_tag_and_star_takes_any_value() -> None:
    d = _discovery(tags={"jobwatch": "*", "env": "prod"})
    assert tags_match(Account("1" * 12, tags=(("env", "prod"), ("jobwatch", "yes"))), d)
    assert not tags_match(Account("1" * 12, tags=(("env", "dev"), ("jobwatch", "yes"))), d)
    assert not tags_match(Account("1" * 12, tags=(("env", "prod"),)), d)
    assert tags_match(Account("1" * 12), _discovery())


def _config(**kw: Any) -> Config:
    return Config.model_validate(kw)


def test_static_targets_win_and_discovered_ones_follow_the_templates() -> None:
    config = _config(
        defaults={"regions": [R, "eu-west-1"], "labels": {"stage": "prod"}, "external_id": "x1"},
        targets=[{"account_id": "111111111111", "regions": ["ap-south-1"], "labels": {"t": "s"}}],
        discovery={
            "regions": [R],
            "labels": {"source": "org"},
            "tag_labels": {"team": "team"},
            "role_arn": "arn:aws:iam::{account_id}:role/reader",
            "duration": "2h",
        },
    )
    discovered = [
        Account("333333333333", tags=(("team", "storage"),)),
        Account("111111111111", tags=(("team", "ignored"),)),  # static: taken from targets
        Account("222222222222"),
    ]
    targets = resolve_targets(config, discovered).targets
    assert [(t.account_id, t.region) for t in targets] == [
        ("111111111111", "ap-south-1"),
        ("222222222222", R),
        ("333333333333", R),
    ]
    static, plain, tagged = targets
    assert static.role_arn is None
    assert dict(static.labels) == {"stage": "prod", "t": "s"}
    assert plain.role_arn == "arn:aws:iam::222222222222:role/reader"
    assert plain.external_id == "x1"  # from defaults
    assert plain.duration_seconds == 7200
    assert dict(plain.labels) == {"stage": "prod", "source": "org"}
    assert dict(tagged.labels) == {"stage": "prod", "source": "org", "team": "storage"}
    assert config.label_names == ("source", "stage", "t", "team")
    # Discovered regions default to defaults.regions.
    config2 = _config(defaults={"regions": [R, "eu-west-1"]}, discovery={})
    assert [t.region for t in resolve_targets(config2, [Account("222222222222")]).targets] == [
        R,
        "eu-west-1",
    ]


def test_discovery_alone_is_a_valid_config() -> None:
    config = parse_config("discovery: {interval: 5m}\n")
    assert config.discovery is not None
    assert config.discovery.interval == 300.0
    assert config.discovery.statuses == ["ACTIVE"]
    assert config.discovery.role_arn == "arn:aws:iam::{account_id}:role/jobwatch-reader"
    with pytest.raises(ConfigError, match="configure discovery"):
        parse_config("interval: 60s\n")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("discovery: {organizational_units: [prod]}", "discovery.organizational_units"),
        ("discovery: {statuses: [active]}", "unknown account state 'active'"),
        ("discovery: {statuses: []}", "at least one account state"),
        ("discovery: {include: ['1111.*']}", "discovery.include: '1111.*' is not an account id"),
        ("discovery: {role_arn: 'arn:aws:iam::1:role/x'}", "must contain {account_id}"),
        ("discovery: {tag_labels: {Team: job}}", "set by jobwatch or Prometheus"),
        ("discovery: {tag_labels: {a: team, b: team}}", "same label name"),
        ("discovery: {interval: 5s}", "discovery.interval: must be at least 10s"),
        ("discovery: {regions: [mars-1]}", "discovery.regions"),
        ("discovery: {colour: blue}", "discovery.colour: unknown key"),
    ],
)
def test_bad_discovery_settings_name_the_key(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(yaml_text + "\n")
    assert message in str(e.value)


# --------------------------------------------------------------------------- moto


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with start_moto() as url:
        yield url


@pytest.fixture
def moto(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's Organizations and STS on loopback, empty, and the SDK pointed at them."""
    reset_moto(moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ORGANIZATIONS", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server)
    return moto_server


class Org:
    """An organization in moto, built with boto3 (as an administrator would)."""

    def __init__(self, credentials: Mapping[str, str] | None = None) -> None:
        self.client: Any = boto3.client("organizations", region_name=R, **(credentials or {}))
        self.client.create_organization(FeatureSet="ALL")
        self.root = self.client.list_roots()["Roots"][0]["Id"]

    def ou(self, name: str, parent: str | None = None) -> str:
        ou = self.client.create_organizational_unit(ParentId=parent or self.root, Name=name)
        return str(ou["OrganizationalUnit"]["Id"])

    def account(self, name: str, ou: str | None = None, **tags: str) -> str:
        status = self.client.create_account(
            AccountName=name,
            Email=f"{name}@example.com",
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )["CreateAccountStatus"]
        account_id = str(status["AccountId"])
        if ou is not None:
            self.move(account_id, ou)
        return account_id

    def move(self, account_id: str, ou: str) -> None:
        (parent,) = self.client.list_parents(ChildId=account_id)["Parents"]
        self.client.move_account(
            AccountId=account_id, SourceParentId=parent["Id"], DestinationParentId=ou
        )

    def close(self, account_id: str) -> None:
        self.client.close_account(AccountId=account_id)


async def _fetch(d: DiscoveryConfig, want_tags: Callable[[Account], bool] | None = None) -> Any:
    source = OrganizationsSource(d, max_attempts=1)
    return await source.fetch(want_tags or (lambda a: False))


async def test_organizations_whole_org_ous_recursion_and_tags(moto: str) -> None:
    org = Org()
    prod = org.ou("prod")
    prod_eu = org.ou("prod-eu", parent=prod)
    a = org.account("a", ou=prod, team="storage", jobwatch="yes")
    b = org.account("b", ou=prod_eu, team="analytics")
    c = org.account("c", team="storage", jobwatch="yes")  # in the root
    closed = org.account("closed", ou=prod, jobwatch="yes")
    org.close(closed)

    everything = await _fetch(_discovery())
    assert {x.account_id: x.state for x in everything} == {
        MANAGEMENT: "ACTIVE",
        a: "ACTIVE",
        b: "ACTIVE",
        c: "ACTIVE",
        closed: "SUSPENDED",
    }
    assert all(x.tags == () for x in everything)  # tags only when asked for
    under_prod = await _fetch(_discovery(organizational_units=[prod]))
    assert {x.account_id for x in under_prod} == {a, b, closed}
    direct = await _fetch(_discovery(organizational_units=[prod], recursive=False))
    assert {x.account_id for x in direct} == {a, closed}
    two = await _fetch(_discovery(organizational_units=[prod_eu, org.root], recursive=False))
    assert {x.account_id for x in two} == {b, c, MANAGEMENT}

    # Through Discovery: every filter together, tags looked up only where needed.
    config = _config(
        discovery={"tags": {"jobwatch": "*"}, "tag_labels": {"team": "team"}, "exclude": [c]}
    )
    assert config.discovery is not None
    discovery = Discovery(config, OrganizationsSource(config.discovery), ManualClock())
    assert await discovery.refresh()
    assert [(x.account_id, dict(x.tags)["team"]) for x in discovery.accounts or []] == [
        (a, "storage")
    ]
    (target,) = resolve_targets(config, discovery.accounts or []).targets
    assert dict(target.labels) == {"team": "storage"}
    assert target.role_arn == f"arn:aws:iam::{a}:role/jobwatch-reader"


async def test_organizations_role_is_assumed_for_the_calls(moto: str) -> None:
    # The organization lives in account 210987654321; the caller's own
    # credentials belong to 123456789012, which is in no organization. moto
    # routes a request by its access key's account, so only credentials from
    # the assumed role can see the organization (moto lists nothing, rather
    # than failing, for an account outside any organization).
    org_admin = "arn:aws:iam::210987654321:role/OrganizationAdmin"
    creds = boto3.client("sts", region_name=R).assume_role(
        RoleArn=org_admin, RoleSessionName="setup"
    )["Credentials"]
    org = Org(
        {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
    )
    member = org.account("member")

    assert member not in {x.account_id for x in await _fetch(_discovery())}

    reader = "arn:aws:iam::210987654321:role/jobwatch-discovery"
    found = await _fetch(_discovery(organizations_role_arn=reader))
    assert member in {x.account_id for x in found}
    assert "210987654321" in {x.account_id for x in found}  # the management account


# --------------------------------------------------------------------------- a running jobwatch


class FakeAccounts:
    """An :class:`~jobwatch.discovery.AccountSource` that answers from a list."""

    def __init__(self, accounts: list[Account]) -> None:
        self.accounts = accounts
        self.error: DiscoveryError | None = None
        self.hang = False
        self.calls = 0

    async def fetch(self, want_tags: Callable[[Account], bool]) -> list[Account]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        return list(self.accounts)


@asynccontextmanager
async def discovering(
    accounts: list[str],
    config: Mapping[str, Any],
    source: FakeAccounts | None = None,
) -> AsyncIterator[World]:
    """A simulator knowing ``accounts`` (one running job each) and a started App
    whose targets come from discovery (moto's, unless ``source`` is given)."""
    clock = ManualClock()
    scenario = {
        "accounts": [
            {"id": a, "jobs": [{"id": f"job-{a}", "tasks": 100_000, "rate": 1}]} for a in accounts
        ]
    }
    sim = Simulator(Scenario.model_validate(scenario), clock)
    async with SimulatorServer(sim, host="127.0.0.1", port=0) as server:
        cfg = Config.model_validate(
            {
                "interval": "10s",
                "jitter": 0,
                "timeout": "5s",
                "retry": {"mode": "standard", "max_attempts": 2},
                "endpoint_url": server.url,
                **config,
            }
        )
        sink = MemorySink()
        app = App(cfg, clock=clock, sinks=[sink], account_source=source)
        async with app:
            yield World(sim, app, sink, clock, server.url)


def _keys(w: World) -> set[str]:
    return {a for a, _ in w.app.store.targets}


async def test_accounts_join_and_leave_a_running_jobwatch(moto: str) -> None:
    org = Org()
    watched = org.ou("watched")
    a = org.account("a", ou=watched, team="storage")
    b = org.account("b", ou=watched, team="analytics")
    c = org.account("c")  # not under the watched OU (yet)
    config = {
        "discovery": {"organizational_units": [watched], "tag_labels": {"team": "team"}},
    }
    async with discovering([a, b, c], config) as w:
        app = w.app
        assert _keys(w) == {a, b}
        assert set(app.pollers) == {(a, R), (b, R)}
        await w.step(10)
        assert w.sample("jobwatch_target_up", aws_account_id=a, aws_region=R, team="storage") == 1
        assert w.sample("jobwatch_target_up", aws_account_id=b, aws_region=R, team="analytics")
        assert w.sample("jobwatch_discovered_accounts") == 2
        assert w.sample("jobwatch_discovery_up") == 1
        # Each discovered account was read through the role its template names.
        for account in (a, b):
            assumed = sts_backends[account]["aws"].assumed_roles
            assert [r.role_arn for r in assumed] == [f"arn:aws:iam::{account}:role/jobwatch-reader"]

        org.move(c, watched)  # joins
        org.close(b)  # leaves: SUSPENDED is filtered out
        with capture_logs() as logs:
            assert app.discovery is not None
            assert await app.discovery.refresh()
            await app.update_targets()
        assert _keys(w) == {a, c}
        assert set(app.pollers) == {(a, R), (c, R)}
        assert {e["event"] for e in logs} >= {"discovery_refreshed", "target_added"}
        removed = [e for e in logs if e["event"] == "target_removed"]
        assert [(e["aws_account_id"], e["aws_region"]) for e in removed] == [(b, R)]
        assert w.sample("jobwatch_target_changes_total", change="added") == 1
        assert w.sample("jobwatch_target_changes_total", change="removed") == 1
        # The account that left is gone from /metrics at once; the one that
        # joined is there (down until its first poll).
        assert (
            w.sample("jobwatch_target_up", aws_account_id=b, aws_region=R, team="analytics") is None
        )
        gone = {"aws_account_id": b, "aws_region": R, "team": "analytics", "status": "Active"}
        assert w.sample("s3batch_jobs", **gone) is None
        assert w.sample("jobwatch_target_up", aws_account_id=c, aws_region=R, team="") == 0
        assert w.sample("jobwatch_targets") == 2
        await w.step(10)
        assert w.sample("jobwatch_target_up", aws_account_id=c, aws_region=R, team="") == 1
        assert w.tracked(c, R) == {f"job-{c}": "Active"}
        # a's state went on untouched through the change.
        assert app.store[(a, R)].polls["success"] == 2


async def test_the_run_loop_follows_discovery_without_a_restart(moto: str) -> None:
    a, b = "111111111111", "222222222222"
    source = FakeAccounts([Account(a)])
    async with discovering([a, b], {"interval": "100ms", "discovery": {}}, source) as w:
        app = w.app
        assert app.discovery is not None
        # The interval is at least 10s in a config file; the loop is what is tested here.
        app.discovery._discovery = app.discovery._discovery.model_copy(update={"interval": 0.1})
        app.grace = 2.0
        run = asyncio.create_task(app.run_pollers())

        async def until(condition: Callable[[], bool]) -> None:
            for _ in range(200):
                if condition():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("condition not reached in 10 s")

        await until(lambda: app.store[(a, R)].up)
        source.accounts = [Account(a), Account(b)]
        await until(lambda: (b, R) in app.store.targets and app.store[(b, R)].up)
        source.accounts = [Account(b)]
        await until(lambda: (a, R) not in app.store.targets)
        assert set(app.pollers) == {(b, R)}
        assert [t.get_name() for t in app.supervisor.tasks.values()] == [f"poll {b}/{R}"]
        polls_before = app.store[(b, R)].polls["success"]
        await until(lambda: app.store[(b, R)].polls["success"] > polls_before)
        app.request_stop()
        await asyncio.wait_for(run, 10)
        assert not app.supervisor.tasks


async def test_a_crash_while_updating_targets_does_not_end_discovery(moto: str) -> None:
    a, b = "111111111111", "222222222222"
    source = FakeAccounts([Account(a)])
    async with discovering([a, b], {"interval": "100ms", "discovery": {}}, source) as w:
        app = w.app
        assert app.discovery is not None
        app.discovery._discovery = app.discovery._discovery.model_copy(update={"interval": 0.1})
        real, calls = app.update_targets, 0

        async def flaky() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            await real()

        app.update_targets = flaky  # type: ignore[method-assign]
        source.accounts = [Account(a), Account(b)]
        with capture_logs() as logs:
            run = asyncio.create_task(app.run_pollers())
            for _ in range(200):
                if (b, R) in app.store.targets:
                    break
                await asyncio.sleep(0.05)
            app.request_stop()
            await asyncio.wait_for(run, 10)
        assert (b, R) in app.store.targets
        assert calls >= 2
        assert any(e["event"] == "targets_update_crashed" for e in logs)


async def test_a_failed_refresh_keeps_the_last_list_and_polling_goes_on(moto: str) -> None:
    a, b = "111111111111", "222222222222"
    source = FakeAccounts([Account(a), Account(b)])
    async with discovering([a, b], {"discovery": {}}, source) as w:
        app = w.app
        assert app.discovery is not None
        await w.step(10)
        source.error = DiscoveryError("AccessDeniedException", "not allowed")
        with capture_logs() as logs:
            assert not await app.discovery.refresh()
            source.error = None
            source.hang = True
            assert not await app.discovery.refresh(limit=0.2)
        failed = [e for e in logs if e["event"] == "discovery_failed"]
        assert [e["error_code"] for e in failed] == ["AccessDeniedException", "Timeout"]
        assert all(e["keeping"] == 2 for e in failed)
        await app.update_targets()
        assert _keys(w) == {a, b}
        assert w.sample("jobwatch_discovery_up") == 0
        assert w.sample("jobwatch_discovery_refreshes_total", outcome="failure") == 2
        assert w.sample("jobwatch_discovery_refreshes_total", outcome="success") == 1
        assert w.sample("jobwatch_discovered_accounts") == 2
        await w.step(10)
        assert w.sample("jobwatch_target_up", aws_account_id=b, aws_region=R) == 1
        source.hang = False
        assert await app.discovery.refresh()
        assert w.sample("jobwatch_discovery_up") == 1


async def test_organizations_unreachable_at_start_still_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ORGANIZATIONS", f"http://127.0.0.1:{free_port()}")
    static = "111111111111"
    config = {"retry": {"max_attempts": 1}, "discovery": {}, "targets": [{"account_id": static}]}
    with capture_logs() as logs:
        async with discovering([static], config) as w:
            assert _keys(w) == {static}
            await w.step(10)
            assert w.sample("jobwatch_target_up", aws_account_id=static, aws_region=R) == 1
            assert w.sample("jobwatch_discovery_up") == 0
            assert w.sample("jobwatch_discovery_last_success_timestamp_seconds") is None
    (failed,) = [e for e in logs if e["event"] == "discovery_failed"]
    assert failed["error_code"] == "EndpointConnectionError"


async def test_a_restart_while_discovery_fails_watches_the_cached_accounts(
    tmp_path: Path, moto: str
) -> None:
    a, b = "111111111111", "222222222222"
    state = tmp_path / "state.json"
    config = {"state_file": str(state), "discovery": {"tags": {"watch": "yes"}}}
    source = FakeAccounts([Account(a, tags=(("watch", "yes"),)), Account(b)])
    async with discovering([a, b], config, source) as w:
        assert _keys(w) == {a}
        listed_at = w.clock.time()
        await w.step(10)
        assert w.tracked(a, R) == {f"job-{a}": "Active"}
        w.app.request_stop()
        await w.app.run_pollers()  # saves the state file on the way out
        cache = json.loads(cache_path_for(state).read_text())
        assert [row[0] for row in cache["accounts"]] == [a]

        # Organizations fails from now on; a new jobwatch starts.
        source.error = DiscoveryError("ServiceException", "down")
        sink = MemorySink()
        async with App(w.app.config, clock=w.clock, sinks=[sink], account_source=source) as again:
            assert set(again.store.targets) == {(a, R)}
            assert again.store[(a, R)].jobs is not None  # its snapshot came back too
            assert again.discovery is not None
            assert again.discovery.last_success == listed_at
            await again.poll_all_once()
        assert sink.kinds()["job_discovered"] == 0  # a carried-on baseline, not a new one

        # A changed discovery section does not trust a list filtered by the old one.
        changed = w.app.config.model_copy(
            update={"discovery": DiscoveryConfig.model_validate({"tags": {"watch": "no"}})}
        )
        with capture_logs() as logs:
            async with App(changed, clock=w.clock, account_source=source) as fresh:
                assert not fresh.store.targets
        assert any(e["event"] == "discovery_cache_ignored" for e in logs)


async def test_shards_split_the_discovered_accounts(moto: str) -> None:
    ids = [f"{n:012d}" for n in range(100000000001, 100000000041)]
    source = FakeAccounts([Account(i) for i in ids])
    seen: list[tuple[str, str]] = []
    for ordinal in range(3):
        config = {"discovery": {}, "shard": {"total": 3, "ordinal": ordinal}}
        async with discovering(ids[:1], config, source) as w:
            seen.extend(w.app.store.targets)
            assert w.sample("jobwatch_shard_candidate_targets") == 40
            assert w.sample("jobwatch_targets") == len(w.app.store.targets)
    assert sorted(seen) == [(i, R) for i in ids]

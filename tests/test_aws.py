"""The AWS edge: per-account signing, AssumeRole through moto's STS, failures kept local."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from jobwatch.aws import is_throttle, strip_account_host_prefix
from jobwatch.simulator import FaultSpec
from tests.helpers import World, free_port, running
from tests.helpers import moto_server as start_moto

A, B = "111111111111", "222222222222"
ROLE_A = f"arn:aws:iam::{A}:role/jobwatch-reader"
SCENARIO = {
    "accounts": [
        {"id": A, "jobs": [{"id": "job-in-a", "tasks": 100_000, "rate": 1}]},
        {"id": B, "jobs": [{"id": "job-in-b", "tasks": 100_000, "rate": 1}]},
    ]
}
_AKID = re.compile(r"Credential=([^/]+)/")


@pytest.fixture
def moto_sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with start_moto() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
        yield url


async def _capture_signers(w: World) -> dict[str, list[str]]:
    """Access key ids that signed each account's requests, as sent on the wire."""
    seen: dict[str, list[str]] = defaultdict(list)
    client: Any = await w.app.source._pool.client("us-east-1")  # type: ignore[union-attr]

    def capture(request: Any, **_: Any) -> None:
        account = request.headers["x-amz-account-id"]
        if isinstance(account, bytes):
            account = account.decode()
        auth = request.headers["Authorization"]
        if isinstance(auth, bytes):
            auth = auth.decode()
        match = _AKID.search(auth)
        assert match is not None
        seen[account].append(match.group(1))

    client.meta.events.register("before-send.s3-control", capture)
    return seen


async def test_each_account_is_signed_with_its_own_credentials(moto_sts: str) -> None:
    config = {
        "targets": [
            {"account_id": A, "role_arn": ROLE_A, "external_id": "ext-1"},
            {"account_id": B},
        ]
    }
    async with running(SCENARIO, config) as w:
        seen = await _capture_signers(w)
        # Throttle A's first two attempts: retries must be re-signed as A, too.
        w.sim.add_fault(
            FaultSpec.model_validate(
                {"kind": "throttle", "accounts": [A], "count": 2, "status": 503}
            )
        )
        await w.step(10)
        await w.step(10)
        assert w.tracked(A, "us-east-1") == {"job-in-a": "Active"}
        assert w.tracked(B, "us-east-1") == {"job-in-b": "Active"}
        # 2 throttled, the baseline, then an incremental poll of two calls
        assert len(seen[A]) == 5
        assert set(seen[B]) == {"testing"}  # no role: the base credentials
        assert len(set(seen[A])) == 1  # one assumed-role key, reused until refresh
        assert seen[A][0] != "testing"
        assert seen[A][0].startswith(("ASIA", "FSIA"))  # moto's temporary keys


async def test_short_lived_credentials_are_refreshed(moto_sts: str) -> None:
    # 900 s is inside botocore's refresh window: every call refreshes first.
    config = {"targets": [{"account_id": A, "role_arn": ROLE_A, "duration": "15m"}]}
    async with running({"accounts": SCENARIO["accounts"][:1]}, config) as w:
        seen = await _capture_signers(w)
        for _ in range(3):
            await w.step(10)
        assert w.app.store[(A, "us-east-1")].polls["success"] == 3
        # A new key for every call (the baseline, then two per incremental poll).
        assert len(set(seen[A])) == 5


async def test_role_that_cannot_be_assumed_marks_only_its_account_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{free_port()}")  # refused
    config = {"targets": [{"account_id": A, "role_arn": ROLE_A}, {"account_id": B}]}
    async with running(SCENARIO, config) as w:
        await w.step(10)
        assert w.sample("jobwatch_target_up", aws_account_id=A, aws_region="us-east-1") == 0
        assert w.sample("jobwatch_target_up", aws_account_id=B, aws_region="us-east-1") == 1
        assert w.app.store[(A, "us-east-1")].last_error


def test_host_prefix_is_stripped_only_for_the_calling_account() -> None:
    class Req:
        def __init__(self, url: str) -> None:
            self.url = url
            self.headers = {"x-amz-account-id": b"123456789012"}

    r = Req("http://123456789012.127.0.0.1:9000/v20180820/jobs?x=1")
    strip_account_host_prefix(r)
    assert r.url == "http://127.0.0.1:9000/v20180820/jobs?x=1"
    other = Req("http://999999999999.example.com/v20180820/jobs")
    strip_account_host_prefix(other)
    assert other.url == "http://999999999999.example.com/v20180820/jobs"


@pytest.mark.parametrize(
    ("status", "code", "throttled"),
    [
        (429, None, True),
        (503, "SlowDown", True),
        (400, "TooManyRequestsException", True),
        (500, "InternalError", False),
        (403, "AccessDenied", False),
    ],
)
def test_throttle_classification(status: int, code: str | None, throttled: bool) -> None:
    assert is_throttle(status, code) is throttled

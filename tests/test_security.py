"""Security: no secret in anything jobwatch prints or serves; TLS and basic auth; HTTP limits."""

from __future__ import annotations

import base64
import datetime
import io
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import generate_latest

from jobwatch.cli import main
from jobwatch.config import parse_config
from jobwatch.errors import ConfigError
from jobwatch.events import LogSink
from jobwatch.log import configure_logging
from tests.helpers import running
from tests.test_aws import moto_sts  # noqa: F401 - the fixture

A, B = "111111111111", "222222222222"
BASE_SECRET = "BASE-secret-key-do-not-print-0123456789"
EXTERNAL_ID = "external-id-do-not-print-42"
SCENARIO = {
    "accounts": [
        {
            "id": A,
            "jobs": [
                {"id": "sec-job-1", "tasks": 10**6, "rate": 1,
                 "timeline": [{"at": "15s", "action": "fail", "reason": "boom"}]},
            ],
        },
        {"id": B, "access_denied": True},
    ]
}  # fmt: skip


async def test_nothing_printed_or_served_contains_a_credential(
    moto_sts: str,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", BASE_SECRET)
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    config = {
        "targets": [
            {"account_id": A, "role_arn": f"arn:aws:iam::{A}:role/r", "external_id": EXTERNAL_ID},
            {"account_id": B, "role_arn": f"arn:aws:iam::{B}:role/r", "external_id": EXTERNAL_ID},
        ]
    }
    try:
        async with running(SCENARIO, config) as w:
            await w.step(10)
            pool: Any = w.app.source._pool  # type: ignore[union-attr]
            assumed = await pool._account_credentials[A].get_frozen_credentials()
            await w.step(10)
            await w.step(10)
            port = await w.app.serve_http("127.0.0.1:0")
            async with aiohttp.ClientSession() as http:
                served = ""
                for path in (
                    "/metrics",
                    "/healthz",
                    "/readyz",
                    "/",
                    "/api/v1/targets",
                    "/api/v1/jobs",
                ):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                        served += await r.text()
            served += generate_latest(w.app.registry).decode()
            served += repr(w.app.config) + repr(w.app.targets)
            log_sink = LogSink()  # every event, rendered as the daemon writes it
            for event in w.sink.events:
                log_sink.emit(event)
    finally:
        structlog.reset_defaults()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"targets: [{{account_id: '{A}', external_id: {EXTERNAL_ID},"
        f" role_arn: 'arn:aws:iam::{A}:role/r'}}]\n"
        "web: {basic_auth: {username: u, password_hash: not-a-hash}}\n"
    )
    checked = io.StringIO()
    main(["check-config", "-c", str(cfg_file)], out=checked)
    printed = out.getvalue() + checked.getvalue()
    assert "job_failed" in printed  # the run really logged events
    assert assumed.secret_key
    assert assumed.token
    for secret in (BASE_SECRET, EXTERNAL_ID, assumed.secret_key, assumed.token, assumed.access_key):
        assert secret not in printed
        assert secret not in served


def test_config_errors_never_echo_secret_values() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(
            f"targets: [{{account_id: '{A}', external_id: [{EXTERNAL_ID}]}}]\n"
            "web: {basic_auth: {username: u, password_hash: hunter2}}\n",
            environ={},
        )
    text = str(e.value)
    assert "web.basic_auth.password_hash" in text
    assert "targets[0].external_id" in text
    assert "hunter2" not in text
    assert EXTERNAL_ID not in text


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_and_basic_auth_on_metrics(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    password_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = {
        "tls": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth": {"username": "prometheus", "password_hash": password_hash},
    }
    async with running({"accounts": [{"id": A}]}, {"web": web}) as w:
        await w.app.poll_all_once()
        port = await w.app.serve_http("127.0.0.1:0")
        trust = ssl.create_default_context(cafile=str(cert))
        base = f"https://localhost:{port}"

        def basic(user: str, password: str) -> dict[str, str]:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Basic")
            refused = [basic("prometheus", "wrong"), basic("other", "s3cret")]
            refused += [{"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}]
            for headers in refused:
                async with http.get(f"{base}/metrics", headers=headers) as r:
                    assert r.status == 401
            for _ in range(2):  # the second time from the cache
                async with http.get(f"{base}/metrics", headers=basic("prometheus", "s3cret")) as r:
                    assert r.status == 200
                    assert "jobwatch_target_up" in await r.text()
            # The status page and its API: the same TLS, the same credentials.
            for path, expected in (("/", "jobwatch status"), ("/api/v1/jobs", '"jobs"')):
                async with http.get(base + path) as r:
                    assert r.status == 401, path
                async with http.get(base + path, headers=basic("prometheus", "wrong")) as r:
                    assert r.status == 401, path
                async with http.get(base + path, headers=basic("prometheus", "s3cret")) as r:
                    assert r.status == 200, path
                    assert expected in await r.text()
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200  # probes need no credentials
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{port}/healthz") as r:
                    await r.read()


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.tls\.cert_file: cannot read"):
        parse_config(
            f"targets: [{{account_id: '{A}'}}]\n"
            f"web: {{tls: {{cert_file: {tmp_path}/nope.crt, key_file: {tmp_path}/nope.key}}}}\n",
            environ={},
        )


async def test_oversized_requests_are_refused() -> None:
    async with running({"accounts": [{"id": A}]}) as w:
        port = await w.app.serve_http("127.0.0.1:0")
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{port}/metrics", headers={"X-Big": "a" * 20_000}
            ) as r:
                assert r.status in (400, 431)
            async with http.get(f"http://127.0.0.1:{port}/metrics?" + "q" * 20_000) as r:
                assert r.status in (400, 414)
            async with http.put(f"http://127.0.0.1:{port}/metrics", data=b"x" * 100) as r:
                assert r.status == 405

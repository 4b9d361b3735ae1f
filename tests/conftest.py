"""Shared fixtures. No test may reach AWS: every AWS_* variable is stripped."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    # Dummy keys: only ever sent to the simulator or moto on loopback.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # A client a test forgot to point somewhere goes to a closed loopback port,
    # never to AWS (endpoint_url and AWS_ENDPOINT_URL_<SERVICE> still win).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

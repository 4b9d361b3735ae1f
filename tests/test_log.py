"""Every line jobwatch writes is one JSON object, the libraries' lines included."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from jobwatch.log import configure_logging, get_logger
from tests.test_cli import child_env, free_port, jobwatch, wait_http

REFRESH_FAILED = "Refreshing temporary credentials failed during mandatory refresh period."


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        structlog.reset_defaults()


def _docs(text: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(d, dict) for d in docs), text
    return docs


def test_library_records_are_json_lines_with_level_logger_and_exception() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise ConnectionRefusedError("Connect call failed ('127.0.0.1', 9)")
    except ConnectionRefusedError:
        logging.getLogger("aiobotocore.credentials").warning(
            "Refreshing temporary credentials failed during %s refresh period.",
            "mandatory",
            exc_info=True,
        )
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    get_logger("jobwatch.poller").info("poll_done")
    docs = _docs(out.getvalue())
    assert [(d["level"], d["logger"], d["event"]) for d in docs] == [
        ("warning", "aiobotocore.credentials", REFRESH_FAILED),
        ("error", "asyncio", "Task exception was never retrieved"),
        ("info", "jobwatch.poller", "poll_done"),
    ]
    assert list(docs[0])[:4] == ["timestamp", "level", "event", "logger"]
    assert docs[0]["exception"].startswith("Traceback (most recent call last):")
    assert "ConnectionRefusedError: Connect call failed" in docs[0]["exception"]
    assert "exception" not in docs[1]


def test_the_configured_level_holds_for_libraries_and_their_debug_noise_stays_off() -> None:
    quiet = io.StringIO()
    configure_logging("error", "json", stream=quiet)
    logging.getLogger("botocore.credentials").warning("dropped at level error")
    logging.getLogger("aiohttp.client").error("kept")
    assert [d["event"] for d in _docs(quiet.getvalue())] == ["kept"]

    chatty = io.StringIO()
    configure_logging("debug", "json", stream=chatty)
    logging.getLogger("botocore.endpoint").setLevel(logging.DEBUG)  # as botocore's own debug mode
    logging.getLogger("botocore.endpoint").debug("Sending http request: ...")
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    get_logger("jobwatch.poller").debug("page_parsed")
    assert [(d["logger"], d["event"]) for d in _docs(chatty.getvalue())] == [
        ("jobwatch.poller", "page_parsed")
    ]
    logging.getLogger("botocore.endpoint").setLevel(logging.NOTSET)
    # Configured again: one handler, on the new stream only.
    assert quiet.getvalue().count("\n") == 1


def test_console_format_renders_library_records_too() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    text = out.getvalue()
    assert "Error handling request" in text
    assert "aiohttp.server" in text
    assert "ValueError: boom" in text


def test_the_daemon_writes_only_json_when_sts_is_out_of_reach(tmp_path: Path) -> None:
    # A role to assume, STS and S3 Control on closed loopback ports: botocore's
    # credential refresher fails on every poll and logs a traceback each time.
    port = free_port()
    config = tmp_path / "jobwatch.yaml"
    config.write_text(
        f"endpoint_url: http://127.0.0.1:{free_port()}\n"
        "interval: 1s\njitter: 0s\ntimeout: 2s\n"
        f"listen: '127.0.0.1:{port}'\n"
        "log: {level: debug}\n"
        "targets:\n"
        "  - account_id: '111111111111'\n"
        "    role_arn: arn:aws:iam::111111111111:role/jobwatch-reader\n"
    )
    env = child_env()
    env["AWS_ENDPOINT_URL_STS"] = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        jobwatch("run", "-c", str(config)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz") == 200
        time.sleep(3)  # a few polls, each failing to assume the role
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    logged = _docs(out) + _docs(err)
    refresh = [d for d in logged if d["event"] == REFRESH_FAILED]
    assert refresh, out
    assert all(d["level"] == "warning" for d in refresh)
    assert {d["logger"] for d in refresh} <= {"botocore.credentials", "aiobotocore.credentials"}
    assert all(d["exception"].startswith("Traceback") for d in refresh)
    assert any(d["event"] == "poll_failed" and d["logger"] == "jobwatch.poller" for d in logged)
    # log.level debug is jobwatch's: the libraries still speak from warning up.
    assert all(
        d["logger"].startswith("jobwatch") for d in logged if d["level"] in ("debug", "info")
    )

"""The command line, run as a user runs it: real processes, real signals."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobwatch import __version__
from jobwatch.serve import SignalHandler

A, D = "111111111111", "444444444444"
SCENARIO = f"""
name: cli-test
regions: [us-east-1]
accounts:
  - id: "{A}"
    jobs:
      - {{id: cli-active-job, tasks: 1000000, rate: 1, created_at: -1h}}
      - {{id: cli-paused-job, tasks: 1000000, rate: 1, created_at: -1h,
         timeline: [{{at: -30m, action: pause}}]}}
  - id: "{D}"
    access_denied: true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", PYTHONUNBUFFERED="1")
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # never AWS, whatever a child forgets
    return env


def jobwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobwatch", *args]


def wait_http(url: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
                return int(r.status)
        except urllib.error.HTTPError as e:
            if time.monotonic() > deadline:
                return e.code
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


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


def write_config(tmp_path: Path, url: str, accounts: list[str], **extra: str) -> Path:
    lines = [f"endpoint_url: {url}", "interval: 2s", "jitter: 0s", "timeout: 2s"]
    lines += ["retry: {mode: standard, max_attempts: 2}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append("targets:")
    lines += [f"  - account_id: '{a}'" for a in accounts]
    path = tmp_path / "jobwatch.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_version() -> None:
    out = subprocess.run(jobwatch("--version"), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"jobwatch {__version__}"


def test_once_prints_a_table_and_json(simulator: str, tmp_path: Path) -> None:
    ok = write_config(tmp_path, simulator, [A])
    table = subprocess.run(
        jobwatch("once", "-c", str(ok)), env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0, table.stderr
    assert f"{A:<13} us-east-1       yes  Active=1 Paused=1" in table.stdout
    # Piped: plain aligned text, no colour; events and logs went to stderr.
    assert "\x1b[" not in table.stdout
    assert "NEEDS ATTENTION (0)\n" in table.stdout
    assert re.search(r"^Active +cli-active-job +111111111111 +us-east-1 ", table.stdout, re.M)
    assert not any(line.startswith("{") for line in table.stdout.splitlines())
    both = write_config(tmp_path, simulator, [A, D])
    out = subprocess.run(
        jobwatch("once", "-c", str(both), "--json"),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1  # one target failed
    rows = {r["aws_account_id"]: r for r in json.loads(out.stdout)}
    assert rows[A]["up"] is True
    assert rows[A]["jobs"] == {"Active": 1, "Paused": 1}
    assert rows[D]["up"] is False
    assert rows[D]["error"] == "AccessDenied"


def test_once_draws_tables_on_a_terminal(simulator: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, simulator, [A, D])
    leader, follower = pty.openpty()
    log = (tmp_path / "stderr.log").open("wb")
    # A terminal 160 columns wide, as a laptop's.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(
        jobwatch("once", "-c", str(cfg)),
        env={**child_env(), "TERM": "xterm-256color"},
        stdout=follower,
        stderr=log,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    proc.wait(timeout=60)
    log.close()
    shown = b"".join(chunks).decode()
    assert proc.returncode == 1, (tmp_path / "stderr.log").read_text()  # D is down
    assert "\x1b[" in shown  # colour
    assert "Targets: 1 up, 1 down" in shown
    assert "Running (2)" in shown
    assert re.search(r"\u2503.*Status.*\u2503", shown)  # a drawn table heading
    assert "DOWN" in shown  # the word, not only red
    assert "\u2501" in shown  # progress bars


def test_run_serves_then_stops_cleanly_on_sigterm(simulator: str, tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, simulator, [A, D], listen=f"'127.0.0.1:{port}'")
    proc = subprocess.Popen(
        jobwatch("run", "-c", str(cfg)),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/readyz") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f'jobwatch_target_up{{aws_account_id="{A}",aws_region="us-east-1"}} 1.0' in text
        assert f'jobwatch_target_up{{aws_account_id="{D}",aws_region="us-east-1"}} 0.0' in text
        check_status_command(f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert events[0] == "started"
    assert "stopping" in events
    assert events[-1] == "stopped"


def check_status_command(url: str) -> None:
    """``jobwatch status`` against a running daemon: the view, JSON, --watch."""
    shown = subprocess.run(
        jobwatch("status", "--url", url),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 1, shown.stderr  # D is down
    assert f"{D:<13} us-east-1       NO   -  error=AccessDenied" in shown.stdout
    assert "RUNNING (2)" in shown.stdout
    assert re.search(r"^Paused +cli-paused-job +111111111111 ", shown.stdout, re.M)
    raw = subprocess.run(
        jobwatch("status", "--url", url, "--json"),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    doc = json.loads(raw.stdout)
    assert doc["targets"]["targets_down"] == 1
    assert {j["job_id"] for j in doc["running"]["jobs"]} == {"cli-active-job", "cli-paused-job"}
    watch = subprocess.Popen(
        jobwatch("status", "--url", url, "--watch", "--interval", "0.2s"),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        redraws = 0
        for line in watch.stdout:
            redraws += line.startswith("--- ")
            if redraws == 3:
                break
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    assert redraws == 3
    assert watch.returncode == 0, err
    closed = subprocess.run(
        jobwatch("status", "--url", f"http://127.0.0.1:{free_port()}"),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert closed.returncode == 1
    assert "jobwatch status: http://127.0.0.1:" in closed.stderr


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    hang = tmp_path / "hang.yaml"
    hang.write_text(SCENARIO + "faults:\n  - {kind: hang, operations: [ListJobs], seconds: 60}\n")
    sim_port, port = free_port(), free_port()
    sim = subprocess.Popen(
        jobwatch("sim", "--listen", f"127.0.0.1:{sim_port}", "--scenario", str(hang)),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    cfg = write_config(
        tmp_path, f"http://127.0.0.1:{sim_port}", [A], listen=f"'127.0.0.1:{port}'", timeout="30s"
    )
    proc = subprocess.Popen(
        jobwatch("run", "-c", str(cfg)),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(sim_port, sim)
        assert wait_http(f"http://127.0.0.1:{port}/healthz") == 200
        time.sleep(0.5)  # the first poll is now waiting on the hung simulator
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # draining: the grace period has not run out
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        for p in (proc, sim):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "forced_exit" in out


def test_bad_config_and_bad_scenario_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: nope\n")
    run = subprocess.run(jobwatch("run", "-c", str(bad)), capture_output=True, text=True)
    assert run.returncode == 2
    assert "targets" in run.stderr
    assert "Traceback" not in run.stderr
    sim = subprocess.run(
        jobwatch("sim", "--scenario", str(bad), "--listen", "127.0.0.1:1"),
        capture_output=True,
        text=True,
    )
    assert sim.returncode == 2
    assert "Traceback" not in sim.stderr


def test_lifecycle_first_signal_stops_second_forces() -> None:
    calls: list[str] = []
    codes: list[int] = []
    life = SignalHandler(lambda: calls.append("stop"), codes.append)
    life.handle_exit(signal.SIGINT)
    assert calls == ["stop"]
    assert codes == []
    life.handle_exit(signal.SIGTERM)
    assert calls == ["stop"]
    assert codes == [128 + signal.SIGTERM]

"""End to end, for real, on loopback: simulator -> jobwatch -> Prometheus (our rule
file) -> Alertmanager (our example routing) -> a webhook served by this test.

The scenario (tests/deploy/e2e-scenario.yaml) has one job that fails and one that
stalls among healthy ones. Everything runs at 1/60 of production time: jobwatch
polls every second instead of every minute, Prometheus scrapes and evaluates every
second, and each rule's ``for`` and ``keep_firing_for`` is divided by 60 in a test
copy of the rules (thresholds and expressions unchanged; floors for what process
start-up takes, below). The test asserts that
S3BatchJobFailed and S3BatchJobStalled reach the webhook, through the receivers the
example config routes them to, with the right account, region and job, and that no
other alert fires.

Then jobwatch is rolled out mid-run, as Kubernetes would: the process is stopped,
and a new one (same state file, another port, so another ``instance``) takes its
place in Prometheus's service discovery. Each alert must stay the one alert it was:
the webhook receives exactly one notification per failed job and receiver, and
nothing resolves. Every process is stopped in teardown, also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from deploykit import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_TEMPLATES,
    DASHBOARD,
    RULES_FILE,
    ProcessGroup,
    free_port,
    http_get,
    require_tool,
    wait_until,
)

SCENARIO = Path(__file__).with_name("e2e-scenario.yaml")
EXPECTED = {
    "S3BatchJobFailed": {
        "aws_account_id": "111111111111",
        "aws_region": "us-east-1",
        "job_id": "e2e-failing-job",
        "operation": "S3PutObjectCopy",
        "team": "storage",
        "severity": "critical",
    },
    "S3BatchJobStalled": {
        "aws_account_id": "222222222222",
        "aws_region": "eu-west-1",
        "job_id": "e2e-stalling-job",
        "operation": "LambdaInvoke",
        "team": "analytics",
        "severity": "warning",
    },
}
# Where the example Alertmanager config sends each severity.
EXPECTED_RECEIVERS = {"S3BatchJobFailed": {"pager", "chat"}, "S3BatchJobStalled": {"chat"}}
TIME_SCALE = 60  # production interval 60s, here 1s
DEADLINE = 75.0  # seconds for both alerts to arrive; they take about 15-20
#: How long to watch after the rollout for a second notification: a new alert, a
#: repeat or a resolve (Alertmanager notifies within its 1s group_interval).
AFTER_ROLLOUT = 10.0


class Webhook:
    """An Alertmanager webhook receiver on 127.0.0.1 collecting notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(receiver, status, labels) of every alert notified so far."""
        with self._lock:
            return [
                (n["receiver"], a["status"], a["labels"])
                for n in self.notifications
                for a in n["alerts"]
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


#: Prometheus's own start-up (first scrape, first ingestion) and a jobwatch process
#: starting are not time-scaled: on a loaded machine either can take a few seconds,
#: which a 5 s ``for`` on Prometheus's `up` would page on.
ABSENCE_FOR_FLOOR = "30s"
#: The same for the gap a rollout leaves: stopping one jobwatch and starting another
#: takes seconds, not 1/60 of the minutes it takes a pod. keep_firing_for (10m in
#: production) must bridge it here as it does there.
KEEP_FIRING_FLOOR = "20s"


def scaled_rules() -> dict[str, Any]:
    """Our rules with every ``for`` and ``keep_firing_for`` divided by TIME_SCALE;
    nothing else changed, except that rules on the scrape's own ``up`` keep a ``for``
    of at least ABSENCE_FOR_FLOOR and ``keep_firing_for`` is at least
    KEEP_FIRING_FLOOR."""
    rules: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = f"{int(_seconds(rule[key]) * 1000 / TIME_SCALE)}ms"
            if "for" in rule and re.search(r"\bup\{", rule["expr"]):
                rule["for"] = ABSENCE_FOR_FLOOR
            if "keep_firing_for" in rule and _seconds(rule["keep_firing_for"]) < _seconds(
                KEEP_FIRING_FLOOR
            ):
                rule["keep_firing_for"] = KEEP_FIRING_FLOOR
    return rules


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The example config with its timings shortened and every receiver replaced by
    our webhook (the receiver's name comes along in each notification)."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["templates"] = [str(ALERTMANAGER_TEMPLATES)]
    # repeat_interval stays as written (hours): a repeat inside this test would be a
    # second notification. test_alerts_alertmanager.py checks the values themselves.
    config["route"].update(group_wait="1s", group_interval="1s")
    for route in config["route"].get("routes", []):
        route.pop("group_wait", None)
        route.pop("group_interval", None)
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        for r in config["receivers"]
    ]
    return config


def child_env() -> dict[str, str]:
    """The environment minus anything that could reach real AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # never AWS, whatever a child forgets
    )
    return env


def prometheus_query(base: str, expr: str) -> dict[str, Any]:
    status, body = http_get(f"{base}/api/v1/query?query={quote(expr)}")
    assert status == 200, f"{expr}: HTTP {status} {body[:500]!r}"
    value: dict[str, Any] = json.loads(body)
    return value


@pytest.mark.e2e
@pytest.mark.slow
def test_failed_and_stalled_jobs_reach_the_webhook_once_and_nothing_else(
    tmp_path: Path, processes: ProcessGroup, webhook: Webhook
) -> None:
    prometheus_bin = require_tool("prometheus")
    alertmanager_bin = require_tool("prometheus-alertmanager")
    started = time.monotonic()
    env = child_env()
    sim_port, jobwatch_port, am_port, prom_port, rolled_port = (free_port() for _ in range(5))

    # 1. The S3 Control simulator.
    processes.start(
        "simulator",
        [sys.executable, "-m", "jobwatch", "sim", "--listen", f"127.0.0.1:{sim_port}",
         "--scenario", str(SCENARIO)],
        env=env,
    )  # fmt: skip
    wait_until(
        "the simulator to listen",
        lambda: http_get(f"http://127.0.0.1:{sim_port}/")[0] != 0,
        timeout=20,
        processes=processes,
    )

    # 2. jobwatch against it, at 1/60 of production time.
    config = {
        "interval": "1s",
        "jitter": "0s",
        "resync_interval": "10s",
        "concurrency": 8,
        "timeout": "5s",
        "retry": {"mode": "standard", "max_attempts": 3},
        "listen": f"127.0.0.1:{jobwatch_port}",
        "log": {"level": "info", "format": "json"},
        "endpoint_url": f"http://127.0.0.1:{sim_port}",
        "terminal_retention": "1h",
        # Where the StatefulSet's volume is mounted: stall clocks survive the rollout.
        "state_file": str(tmp_path / "state" / "state.json"),
        "stall": {"no_progress": "5s"},
        "defaults": {"regions": ["us-east-1", "eu-west-1"]},
        "targets": [
            {"account_id": "111111111111", "labels": {"team": "storage"}},
            {"account_id": "222222222222", "labels": {"team": "analytics"}},
        ],
    }
    (tmp_path / "state").mkdir()
    # Prometheus finds jobwatch through a file, as it would through the pods'
    # endpoints: the rollout below moves it to another address.
    targets_file = tmp_path / "jobwatch-targets.json"

    def start_jobwatch(name: str, port: int) -> str:
        config_path = tmp_path / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump({**config, "listen": f"127.0.0.1:{port}"}))
        processes.start(
            name, [sys.executable, "-m", "jobwatch", "run", "-c", str(config_path)], env=env
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(
            f"{name} /readyz",
            lambda: http_get(f"{url}/readyz")[0] == 200,
            timeout=30,
            processes=processes,
        )

        def all_targets_up() -> bool:
            _, metrics = http_get(f"{url}/metrics")
            up = re.findall(rb"^jobwatch_target_up\{[^}]*\} (\S+)$", metrics, flags=re.MULTILINE)
            return up == [b"1.0"] * 4

        wait_until(
            f"{name}: all four targets polled successfully",
            all_targets_up,
            timeout=30,
            processes=processes,
        )
        return url

    def discover(port: int) -> None:
        staged = targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
        staged.replace(targets_file)  # Prometheus never reads half a file

    start_jobwatch("jobwatch", jobwatch_port)
    discover(jobwatch_port)

    # 3. Alertmanager with the example routing, notifying our webhook.
    am_config = tmp_path / "alertmanager.yaml"
    am_config.write_text(yaml.safe_dump(alertmanager_config(webhook.url)))
    processes.start(
        "alertmanager",
        [alertmanager_bin, f"--config.file={am_config}",
         f"--storage.path={tmp_path / 'alertmanager'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
         "--log.level=debug"],
    )  # fmt: skip

    # 4. Prometheus scraping jobwatch every second with the (time-scaled) rules.
    rules_path = tmp_path / "jobwatch-rules.yaml"
    rules_path.write_text(yaml.safe_dump(scaled_rules()))
    prom_config = tmp_path / "prometheus.yaml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules_path)],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "jobwatch",
                        "file_sd_configs": [
                            {"files": [str(targets_file)], "refresh_interval": "1s"}
                        ],
                    }
                ],
            }
        )
    )
    prometheus = f"http://127.0.0.1:{prom_port}"
    processes.start(
        "prometheus",
        [prometheus_bin, f"--config.file={prom_config}",
         f"--storage.tsdb.path={tmp_path / 'prometheus'}",
         f"--web.listen-address=127.0.0.1:{prom_port}",
         "--rules.alert.resend-delay=1s", "--log.level=info"],
    )  # fmt: skip
    for name, url in (("alertmanager", f"http://127.0.0.1:{am_port}"), ("prometheus", prometheus)):
        ready = f"{url}/-/ready"
        wait_until(
            f"{name} ready",
            lambda ready=ready: http_get(ready)[0] == 200,
            timeout=30,
            processes=processes,
        )

    # 5. Both alerts arrive, firing, through the routes the example config sets.
    def arrived() -> bool:
        got = {(receiver, labels["alertname"]) for receiver, status, labels in webhook.alerts()}
        wanted = {(r, name) for name, receivers in EXPECTED_RECEIVERS.items() for r in receivers}
        return wanted <= got

    wait_until(
        "S3BatchJobFailed and S3BatchJobStalled at the webhook",
        arrived,
        timeout=DEADLINE,
        interval=0.5,
        processes=processes,
    )
    arrival = time.monotonic() - started

    # 6. A rollout: the pod goes, a new one with the same volume comes up elsewhere.
    processes.stop_one("jobwatch")
    start_jobwatch("jobwatch-rolled", rolled_port)
    discover(rolled_port)
    wait_until(
        "Prometheus to scrape the new jobwatch",
        lambda: any(
            r["metric"]["instance"] == f"127.0.0.1:{rolled_port}"
            for r in prometheus_query(prometheus, 'up{job="jobwatch"} == 1')["data"]["result"]
        ),
        timeout=20,
        processes=processes,
    )
    # Time for a second notification (a new alert, a repeat, a resolve) or an alert
    # that should not fire to show up.
    time.sleep(AFTER_ROLLOUT)

    notified = webhook.alerts()
    # One notification per failed (or stalled) job and receiver, however long it
    # fired and whichever pod exported it: no repeat, no resolve, no second alert.
    per_job: dict[tuple[str, str, str], int] = {}
    for receiver, _, labels in notified:
        key = (receiver, labels["alertname"], labels.get("job_id", ""))
        per_job[key] = per_job.get(key, 0) + 1
    assert per_job == {
        (receiver, name, EXPECTED[name]["job_id"]): 1
        for name, receivers in EXPECTED_RECEIVERS.items()
        for receiver in receivers
    }, per_job
    assert "instance" not in {k for _, _, labels in notified for k in labels}
    names = {labels["alertname"] for _, _, labels in notified}
    assert names == set(EXPECTED), f"unexpected alerts: {sorted(names - set(EXPECTED))}"
    for receiver, status, labels in notified:
        name = labels["alertname"]
        assert status == "firing", (name, status)
        assert receiver in EXPECTED_RECEIVERS[name], (name, receiver)
        for key, value in EXPECTED[name].items():
            assert labels.get(key) == value, f"{name}: {key}={labels.get(key)!r}, want {value!r}"
        assert labels["job"] == "jobwatch"

    # Prometheus agrees: these two are the only alerts firing or even pending.
    http_status, body = http_get(f"{prometheus}/api/v1/alerts")
    assert http_status == 200
    active = {
        (a["labels"]["alertname"], a["labels"].get("job_id"), a["state"])
        for a in json.loads(body)["data"]["alerts"]
    }
    assert active == {
        ("S3BatchJobFailed", "e2e-failing-job", "firing"),
        ("S3BatchJobStalled", "e2e-stalling-job", "firing"),
    }

    # The dashboard's queries run on this real Prometheus without errors.
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            for variable in ("$account", "$region", "$namespace", "$job", "$cluster"):
                expr = expr.replace(variable, ".*")
            result = prometheus_query(prometheus, expr)
            assert result["status"] == "success", (panel["title"], result)
    by_status = prometheus_query(prometheus, "sum by (status) (s3batch_jobs)")["data"]["result"]
    assert {r["metric"]["status"] for r in by_status} >= {"Active", "Failed", "Suspended"}

    print(f"alerts arrived {arrival:.1f}s after start; test body {time.monotonic() - started:.1f}s")
    assert arrival < DEADLINE

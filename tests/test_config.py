"""Configuration: defaults, resolution, and clear errors for bad files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jobwatch.cli import main
from jobwatch.config import load_config, parse_config
from jobwatch.errors import ConfigError
from jobwatch.targets import resolve_targets

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "targets: [{account_id: '123456789012'}]\n"


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "config" / "jobwatch.example.yaml", environ={})
    targets = resolve_targets(cfg).targets
    assert [(t.account_id, t.region) for t in targets] == [
        ("111111111111", "us-east-1"),
        ("111111111111", "eu-west-1"),
        ("222222222222", "us-east-1"),
    ]
    assert targets[0].role_arn == "arn:aws:iam::111111111111:role/jobwatch-reader"
    assert targets[0].labels == (("team", "storage"),)
    assert targets[2].external_id == "jobwatch-222"
    assert cfg.label_names == ("team",)


def test_defaults() -> None:
    cfg = parse_config(ACCOUNT, environ={})
    assert cfg.interval == 60
    assert cfg.listen == "0.0.0.0:9877"
    assert cfg.retry.mode == "standard"
    assert cfg.log.format == "json"
    assert cfg.stall.no_progress == 1800
    assert cfg.terminal_retention == 86400
    (t,) = resolve_targets(cfg).targets
    assert (t.account_id, t.region, t.role_arn) == ("123456789012", "us-east-1", None)


def test_environment_overrides_deployment_keys() -> None:
    cfg = parse_config(
        ACCOUNT + "log: {level: info}\n",
        environ={"JOBWATCH_LISTEN": "127.0.0.1:1234", "JOBWATCH_LOG_LEVEL": "DEBUG"},
    )
    assert cfg.listen == "127.0.0.1:1234"
    assert cfg.log.level == "debug"


# Five kinds of bad file: each message names the key and the fix, exit code 2.
BAD = {
    "unknown key": ("intervall: 30s\n" + ACCOUNT, ["intervall", "unknown key"]),
    "unquoted short account id": (
        "targets: [{account_id: 12345}]\n",
        ["targets[0].account_id", "quote"],
    ),
    "bad duration": ("interval: soon\n" + ACCOUNT, ["interval", "30s"]),
    "duplicate account": (
        "targets: [{account_id: '123456789012'}, {account_id: '123456789012'}]\n",
        ["targets[1].account_id", "already listed"],
    ),
    "bad enum": (ACCOUNT + "retry: {mode: turbo}\n", ["retry.mode", "standard", "turbo"]),
    "bad region": (
        "targets: [{account_id: '123456789012', regions: [EU]}]\n",
        ["regions", "us-east-1"],
    ),
    "reserved label": (
        "targets: [{account_id: '123456789012', labels: {instance: a}}]\n",
        ["labels", "instance", "choose another"],
    ),
    "no targets": ("interval: 30s\n", ["targets", "account_id"]),
    "not yaml": ("targets: [\n", ["line 2", "not valid YAML"]),
    "jitter too big": ("interval: 10s\njitter: 20s\n" + ACCOUNT, ["jitter", "interval"]),
    "unknown status limit": (
        ACCOUNT + "stall: {status_limits: {Complete: 1h}}\n",
        ["stall.status_limits", "terminal"],
    ),
    "metrics family typo": (
        ACCOUNT + "metrics: {deny: [s3batch_job_staled]}\n",
        ["metrics.deny[0]", "'s3batch_job_staled' matches no metric family", "s3batch_job_stalled"],
    ),
    "metrics not a glob": (
        ACCOUNT + "metrics: {allow: ['s3batch_job{status}']}\n",
        ["metrics.allow", "not a metric family name or a glob"],
    ),
    "metrics ended_jobs": (
        ACCOUNT + "metrics: {ended_jobs: some}\n",
        ["metrics.ended_jobs", "'all', 'failed' or 'none'"],
    ),
    "metrics unknown key": (
        ACCOUNT + "metrics: {allowlist: [s3batch_*]}\n",
        ["metrics.allowlist", "unknown key"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_exits_2_with_clear_message(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, needles = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "Traceback" not in err


def test_metrics_section_defaults_and_values() -> None:
    assert parse_config(ACCOUNT, environ={}).metrics.model_dump() == {
        "allow": [],
        "deny": [],
        "ended_jobs": "all",
    }
    cfg = parse_config(
        ACCOUNT + "metrics: {allow: ['s3batch_*', 'jobwatch_target_up'], ended_jobs: failed}\n",
        environ={},
    )
    assert cfg.metrics.allow == ["s3batch_*", "jobwatch_target_up"]
    assert cfg.metrics.ended_jobs == "failed"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_lists_targets(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        ACCOUNT
        + "defaults: {regions: [us-east-1, eu-west-1],"
        + " role_arn: 'arn:aws:iam::{account_id}:role/r'}\n"
    )
    out = io.StringIO()
    assert main(["check-config", "-c", str(path)], out=out) == 0
    text = out.getvalue()
    assert "OK, 2 target(s)" in text
    assert "123456789012  eu-west-1" in text
    assert "arn:aws:iam::123456789012:role/r" in text


@pytest.mark.parametrize(
    ("interval", "jitter", "resync"),
    [
        ("5s", 0.5, 900.0),
        ("30s", 3.0, 900.0),
        ("50s", 5.0, 900.0),
        ("2m", 5.0, 900.0),
        ("1h", 5.0, 3600.0),
    ],
)
def test_defaults_follow_the_interval(interval: str, jitter: float, resync: float) -> None:
    """``interval`` alone is valid at any value: the defaults that depend on it follow it."""
    cfg = parse_config(f"interval: {interval}\n{ACCOUNT}")
    assert cfg.jitter == jitter
    assert cfg.resync_interval == resync


def test_only_keys_the_user_wrote_are_named_in_a_clash() -> None:
    with pytest.raises(ConfigError, match=r"jitter \(5s\) must be smaller than interval \(5s\)"):
        parse_config(f"interval: 5s\njitter: 5s\n{ACCOUNT}")
    with pytest.raises(ConfigError, match=r"resync_interval \(60s\) must be at least interval"):
        parse_config(f"interval: 2m\nresync_interval: 1m\n{ACCOUNT}")
    # Explicit values that fit are kept as written.
    cfg = parse_config(f"interval: 5s\njitter: 4s\nresync_interval: 5s\n{ACCOUNT}")
    assert (cfg.jitter, cfg.resync_interval) == (4.0, 5.0)

"""One duration grammar: the config file, ``--duration`` and scenario files read the same text."""

from __future__ import annotations

import pytest

from jobwatch.config import parse_config
from jobwatch.duration import parse_duration, parse_signed_duration
from jobwatch.errors import ConfigError
from jobwatch.simulator import Scenario

ACCOUNT = "targets: [{account_id: '123456789012'}]\n"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (7.5, 7.5),
        ("90", 90.0),
        ("12.5", 12.5),
        ("500ms", 0.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("90d", 90 * 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 30 s ", 30.0),
        ("1m1s500ms", 61.5),
        ("+2m", 120.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert parse_signed_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", r"^'soon' is not a duration: write seconds \(90, 12\.5\) or a number with a unit"),
        ("5x", "'5x' is not a duration"),
        ("1 week", "'1 week' is not a duration"),
        ("", "'' is not a duration"),
        ("m", "'m' is not a duration"),
        ("1h30", "'1h30' is not a duration"),  # a bare number only on its own
        ("1e3", "'1e3' is not a duration"),
        ("nan", "'nan' is not a duration"),
        ("inf", "'inf' is not a duration"),
        ("--1s", "'--1s' is not a duration"),
        (
            True,
            "^a duration is a number of seconds or a string like '30s', '5m', '1h30m' or '2d', "
            "got True$",
        ),
        (None, "got None$"),
        ([30], r"got \[30\]$"),
        (float("inf"), "^a duration must be finite, got inf$"),
        (float("nan"), "^a duration must be finite, got nan$"),
    ],
)
def test_bad_durations_say_what_to_write(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_signed_duration(value)
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(("value", "seconds"), [("-10m", -600.0), (-5, -5.0), ("- 1h30m", -5400.0)])
def test_negative_durations_are_for_signed_fields_only(value: object, seconds: float) -> None:
    assert parse_signed_duration(value) == seconds
    with pytest.raises(ValueError, match=f"^a duration cannot be negative, got {value!r}$"):
        parse_duration(value)


def test_config_and_scenarios_read_the_same_text() -> None:
    config = parse_config(
        "resync_interval: 1h30m\nstall: {no_progress: 1h 30m}\n" + ACCOUNT, environ={}
    )
    assert config.resync_interval == 5400.0
    assert config.stall.no_progress == 5400.0
    scenario = Scenario.model_validate(
        {
            "next_token_ttl": "1h30m",
            "accounts": [{"id": "123456789012", "jobs": [{"id": "job-1", "created_at": "-1h30m"}]}],
        }
    )
    assert scenario.next_token_ttl == 5400.0
    assert scenario.accounts[0].jobs[0].created_at == -5400.0


def test_config_refuses_a_negative_duration_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"interval.*a duration cannot be negative, got '-10m'"):
        parse_config("interval: -10m\n" + ACCOUNT, environ={})

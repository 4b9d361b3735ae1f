"""Configuration: one YAML file, validated once, strictly, into frozen models.

:func:`load_config` is the only entry point. Every problem is reported with its
key path, the offending value and how to fix it, as a :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jobwatch.duration import Duration
from jobwatch.errors import ConfigError
from jobwatch.model import KNOWN_STATUSES, TERMINAL_STATUSES

__all__ = [
    "AccountConfig",
    "BasicAuthConfig",
    "Config",
    "Defaults",
    "DiscoveryConfig",
    "MetricsConfig",
    "PushConfig",
    "PushQueueConfig",
    "RetryConfig",
    "ShardConfig",
    "StallConfig",
    "TLSConfig",
    "WebConfig",
    "load_config",
    "parse_config",
]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names jobwatch sets itself, or that clash with Prometheus target labels.
RESERVED_LABELS = frozenset(
    {
        "aws_account_id",
        "aws_region",
        "job_id",
        "status",
        "operation",
        "priority",
        "event",
        "outcome",
        "field",
        "le",
        "quantile",
        "job",
        "instance",
    }
)
ENV_OVERRIDES = {
    "JOBWATCH_LISTEN": ("listen",),
    "JOBWATCH_LOG_LEVEL": ("log", "level"),
    "JOBWATCH_LOG_FORMAT": ("log", "format"),
}


def _account_id(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("an account id is 12 digits in quotes, e.g. '123456789012'")
    if isinstance(value, int):
        # YAML reads an unquoted id as a number and drops leading zeros.
        if len(str(value)) != 12:
            raise ValueError(
                f"{value} is not 12 digits: quote account ids in YAML ('012345678901') "
                "so leading zeros survive"
            )
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(r"\d{12}", value):
        raise ValueError(f"an account id is exactly 12 digits, e.g. '123456789012', got {value!r}")
    return value


AccountId = Annotated[str, BeforeValidator(_account_id)]
_REGION_NAME = r"[a-z]{2}(-[a-z]+)+-\d+"
_REGION = re.compile(f"^{_REGION_NAME}$")
_ENDPOINT_URL = re.compile(r"^https?://[^/\s]+/?$")


def _endpoint_url(v: str | None, example: str) -> str | None:
    """An ``endpoint_url`` key: scheme and host (and port) only, without a trailing slash."""
    if v is not None and not _ENDPOINT_URL.match(v):
        raise ValueError(f"expected a URL such as {example}, got {v!r}")
    return v.rstrip("/") if v else v


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class RetryConfig(_Model):
    mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(default=5, ge=1, le=20)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


def _default_status_limits() -> dict[str, float]:
    return {
        "New": 3600.0,
        "Preparing": 7200.0,
        "Suspended": 86400.0,
        "Ready": 21600.0,
        "Pausing": 3600.0,
        "Completing": 7200.0,
        "Failing": 3600.0,
        "Cancelling": 3600.0,
    }


class StallConfig(_Model):
    no_progress: Duration = 1800.0
    status_limits: dict[str, Duration] = Field(default_factory=_default_status_limits)
    task_failure_ratio: float = Field(default=0.1, gt=0.0, le=1.0)
    task_failure_min_tasks: int = Field(default=100, ge=1)

    @field_validator("no_progress")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be greater than 0, e.g. 30m")
        return v

    @field_validator("status_limits")
    @classmethod
    def _statuses(cls, v: dict[str, float]) -> dict[str, float]:
        for status in v:
            if status in TERMINAL_STATUSES:
                raise ValueError(f"{status} is terminal: a job cannot be held in it; remove it")
            if status not in KNOWN_STATUSES:
                raise ValueError(
                    f"unknown status {status!r}; use one of "
                    + ", ".join(s for s in KNOWN_STATUSES if s not in TERMINAL_STATUSES)
                )
        return v


def _check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(
                f"label name {name!r} is not a valid Prometheus label name "
                "(letters, digits and _, not starting with a digit or __)"
            )
        if name in RESERVED_LABELS:
            raise ValueError(
                f"label name {name!r} is set by jobwatch or Prometheus itself; choose another"
            )
    return labels


def _check_regions(regions: list[str] | None) -> list[str] | None:
    if regions is None:
        return None
    if not regions:
        raise ValueError("list at least one region, e.g. [us-east-1]")
    for r in regions:
        if not _REGION.match(r):
            raise ValueError(f"{r!r} is not an AWS region name such as us-east-1")
    if len(set(regions)) != len(regions):
        raise ValueError("a region is listed twice; list each once")
    return regions


class TLSConfig(_Model):
    """Serve HTTPS with this certificate (PEM); optionally require client certificates."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not os.access(v, os.R_OK):
            raise ValueError(f"cannot read {str(v)!r}: check the path and the file's permissions")
        return v


class BasicAuthConfig(_Model):
    """HTTP basic auth for ``/metrics`` (the probes stay open for the kubelet).

    As in the Prometheus exporter-toolkit, the password is stored as a bcrypt hash:
    ``python -c 'import bcrypt; print(bcrypt.hashpw(b"secret", bcrypt.gensalt()).decode())'``.
    """

    username: str = Field(min_length=1)
    password_hash: str = Field(repr=False)

    @field_validator("password_hash")
    @classmethod
    def _bcrypt(cls, v: str) -> str:
        if not re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", v):
            raise ValueError(
                "expected a bcrypt hash ($2b$12$...), not a plain password: "
                "see docs/configuration.md#web"
            )
        return v


class WebConfig(_Model):
    tls: TLSConfig | None = None
    basic_auth: BasicAuthConfig | None = None
    #: The status page (``/``) and its JSON API (``/api/v1/...``); docs/api.md.
    status_page: bool = True
    #: Where people reach this server (behind an Ingress, say): events and alert
    #: annotations then link each job to its place on the status page.
    external_url: str | None = None

    @field_validator("external_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError(
                "expected an http:// or https:// address without query or fragment, "
                "such as https://jobwatch.example.com"
            )
        return v.rstrip("/")


class Defaults(_Model):
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])
    role_arn: str | None = None
    external_id: str | None = Field(default=None, repr=False)
    session_name: str = "jobwatch"
    duration: Duration = 3600.0
    labels: dict[str, str] = Field(default_factory=dict)

    _regions = field_validator("regions")(_check_regions)
    _labels = field_validator("labels")(_check_labels)


class AccountConfig(_Model):
    account_id: AccountId
    regions: list[str] | None = None
    role_arn: str | None = None
    external_id: str | None = Field(default=None, repr=False)
    session_name: str | None = None
    duration: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    _regions = field_validator("regions")(_check_regions)
    _labels = field_validator("labels")(_check_labels)


_OU_ID = re.compile(r"^(ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32})$")
_ID_PATTERN = re.compile(r"^[0-9*?\[\]!-]{1,64}$")
#: Account states Organizations reports (``State``; the older ``Status`` uses a subset).
ACCOUNT_STATES = ("PENDING_ACTIVATION", "ACTIVE", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")


class DiscoveryConfig(_Model):
    """Accounts listed from AWS Organizations, refreshed every ``interval``.

    Every account that passes the filters becomes a target in each of ``regions``
    (default: ``defaults.regions``). An account also listed under ``targets`` is
    taken from there (static wins).
    """

    interval: Duration = 600.0
    timeout: Duration = 120.0
    organizational_units: list[str] = Field(default_factory=list)
    recursive: bool = True
    statuses: list[str] = Field(default_factory=lambda: ["ACTIVE"])
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    tag_labels: dict[str, str] = Field(default_factory=dict)
    regions: list[str] | None = None
    role_arn: str = "arn:aws:iam::{account_id}:role/jobwatch-reader"
    external_id: str | None = Field(default=None, repr=False)
    session_name: str | None = None
    duration: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    organizations_role_arn: str | None = None
    organizations_region: str = "us-east-1"

    _regions = field_validator("regions")(_check_regions)
    _labels = field_validator("labels")(_check_labels)

    @field_validator("interval", "timeout")
    @classmethod
    def _at_least_ten_seconds(cls, v: float) -> float:
        if v < 10:
            raise ValueError("must be at least 10s (Organizations allows a few calls a second)")
        return v

    @field_validator("organizational_units")
    @classmethod
    def _ous(cls, v: list[str]) -> list[str]:
        for ou in v:
            if not _OU_ID.match(ou):
                raise ValueError(
                    f"{ou!r} is not an organizational unit id (ou-ab12-cd34ef56) "
                    "or a root id (r-ab12)"
                )
        return v

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one account state, e.g. [ACTIVE]")
        for state in v:
            if state not in ACCOUNT_STATES:
                raise ValueError(
                    f"unknown account state {state!r}; use {', '.join(ACCOUNT_STATES)}"
                )
        return v

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not _ID_PATTERN.match(pattern):
                raise ValueError(
                    f"{pattern!r} is not an account id pattern: digits with the shell "
                    "wildcards * ? [0-4], e.g. '1111*'"
                )
        return v

    @field_validator("tag_labels")
    @classmethod
    def _tag_labels(cls, v: dict[str, str]) -> dict[str, str]:
        _check_labels({label: tag for tag, label in v.items()})
        if len(set(v.values())) != len(v):
            raise ValueError("two tags map to the same label name; give each its own")
        return v

    @field_validator("role_arn")
    @classmethod
    def _role_template(cls, v: str) -> str:
        if "{account_id}" not in v:
            raise ValueError(
                "the role ARN template must contain {account_id}, e.g. "
                "arn:aws:iam::{account_id}:role/jobwatch-reader"
            )
        return v

    @field_validator("organizations_region")
    @classmethod
    def _org_region(cls, v: str) -> str:
        if not _REGION.match(v):
            raise ValueError(f"{v!r} is not an AWS region name such as us-east-1")
        return v


class ShardConfig(_Model):
    """Split the targets between ``total`` processes; see docs/scaling.md."""

    total: int = Field(default=1, ge=1, le=1000)
    #: This process's shard; usually left out and taken from ``--shard`` or the pod name.
    ordinal: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _in_range(self) -> ShardConfig:
        if self.ordinal is not None and self.ordinal >= self.total:
            raise ValueError(
                f"shard.ordinal {self.ordinal} does not exist with shard.total {self.total} "
                f"(shards are 0 to {self.total - 1})"
            )
        return self


_SQS_URL = re.compile(r"^https?://(?P<host>[^/\s]+)/(?P<account>\d{12})/(?P<name>[\w-]{1,80})$")
_SQS_HOST_REGION = re.compile(rf"^sqs\.(?P<region>{_REGION_NAME})\.amazonaws\.com")


class PushQueueConfig(_Model):
    """One SQS queue the EventBridge rule delivers S3 Batch Operations events to."""

    url: str
    #: The queue's dead-letter queue: its depth is exported, for the alert.
    dead_letter_url: str | None = None
    #: Default: the region in an AWS queue URL (sqs.<region>.amazonaws.com).
    region: str | None = None
    role_arn: str | None = None
    external_id: str | None = Field(default=None, repr=False)
    session_name: str = "jobwatch-push"
    duration: Duration = 3600.0

    @field_validator("url", "dead_letter_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not _SQS_URL.match(v):
            raise ValueError(
                "expected a queue URL such as "
                "https://sqs.eu-west-1.amazonaws.com/123456789012/jobwatch-events"
            )
        return v

    @model_validator(mode="after")
    def _region(self) -> PushQueueConfig:
        if self.region is None:
            match = _SQS_URL.match(self.url)
            host = _SQS_HOST_REGION.match(match["host"]) if match else None
            if host is None:
                raise ValueError(
                    f"region: required for {self.url} (not an sqs.<region>.amazonaws.com URL)"
                )
            object.__setattr__(self, "region", host["region"])
        elif not _REGION.match(self.region):
            raise ValueError(f"region: {self.region!r} is not an AWS region name such as us-east-1")
        return self

    @property
    def queue_region(self) -> str:
        assert self.region is not None  # set by the validator
        return self.region


class PushConfig(_Model):
    """The push fast path: S3 Batch Operations job events from EventBridge through SQS.

    Each event makes jobwatch describe that job at once (docs/push.md); polling
    stays the reconciler.
    """

    queues: list[PushQueueConfig] = Field(min_length=1)
    #: Long-poll wait of each ReceiveMessage (SQS allows 0 to 20 s).
    wait: Duration = 20.0
    #: Messages per ReceiveMessage (SQS allows 1 to 10).
    batch_size: int = Field(default=10, ge=1, le=10)
    #: How long a received message stays hidden (default: the queue's own setting).
    visibility_timeout: Duration | None = None
    #: The SQS endpoint (default: AWS's for each queue's region); for tests and the demo.
    endpoint_url: str | None = None
    #: How often the dead-letter queues' depth is read (queues with ``dead_letter_url``).
    dead_letter_interval: Duration = 60.0

    @field_validator("wait")
    @classmethod
    def _wait(cls, v: float) -> float:
        if not 0 <= v <= 20:
            raise ValueError("SQS long polls wait 0 to 20s; use 20s")
        return v

    @field_validator("dead_letter_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v

    @field_validator("visibility_timeout")
    @classmethod
    def _visibility(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= 43200:
            raise ValueError("SQS visibility timeouts are 0s to 12h")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _endpoint_url(v, "http://127.0.0.1:5000")

    @model_validator(mode="after")
    def _distinct(self) -> PushConfig:
        urls = [q.url for q in self.queues]
        if len(set(urls)) != len(urls):
            raise ValueError("a queue is listed twice; list each once")
        return self


#: The longest default jitter; below 50 s of interval the default is a tenth of it.
MAX_DEFAULT_JITTER = 5.0
#: The default resync_interval, or interval if that is longer.
DEFAULT_RESYNC = 900.0


def default_jitter(interval: float) -> float:
    """The jitter used when the config sets none: a tenth of ``interval``, at most 5 s."""
    return min(interval / 10, MAX_DEFAULT_JITTER)


class MetricsConfig(_Model):
    """What ``/metrics`` shows; see docs/metrics.md#cardinality and docs/scaling.md.

    ``allow`` and ``deny`` are globs over family names (``s3batch_job_*``);
    ``ended_jobs`` says which ended jobs keep their per-job series.
    """

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    ended_jobs: Literal["all", "failed", "none"] = "all"

    @field_validator("allow", "deny")
    @classmethod
    def _globs(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not re.fullmatch(r"[a-zA-Z_:*?\[\]!0-9-]+", pattern):
                raise ValueError(
                    f"{pattern!r} is not a metric family name or a glob of one "
                    "(letters, digits, _ and the wildcards * ? [...]), e.g. s3batch_job_*"
                )
        return v


class Config(_Model):
    interval: Duration = 60.0
    #: Default: :func:`default_jitter` of ``interval``.
    jitter: Duration = MAX_DEFAULT_JITTER
    #: Default: ``DEFAULT_RESYNC``, or ``interval`` if that is longer.
    resync_interval: Duration = DEFAULT_RESYNC
    concurrency: int = Field(default=32, ge=1, le=1000)
    timeout: Duration = 10.0
    retry: RetryConfig = Field(default_factory=RetryConfig)
    listen: str = "0.0.0.0:9877"
    log: LogConfig = Field(default_factory=LogConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    endpoint_url: str | None = None
    state_file: Path | None = None
    terminal_retention: Duration = 86400.0
    stall: StallConfig = Field(default_factory=StallConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    targets: list[AccountConfig] = Field(default_factory=list)
    discovery: DiscoveryConfig | None = None
    shard: ShardConfig = Field(default_factory=ShardConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    push: PushConfig | None = None

    @field_validator("interval", "timeout", "resync_interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT such as 0.0.0.0:9877, got {v!r}")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _endpoint_url(v, "https://host or http://127.0.0.1:9000")

    @model_validator(mode="after")
    def _cross(self) -> Config:
        if not self.targets and self.discovery is None:
            raise ValueError(
                "targets: list at least one account (or configure discovery:), e.g.\n"
                "    targets:\n      - account_id: '123456789012'"
            )
        seen: dict[str, int] = {}
        for i, acct in enumerate(self.targets):
            if acct.account_id in seen:
                raise ValueError(
                    f"targets[{i}].account_id: {acct.account_id} is already listed at "
                    f"targets[{seen[acct.account_id]}]; list each account once with all its regions"
                )
            seen[acct.account_id] = i
        # Defaults that depend on interval follow it; only keys the user wrote can clash.
        if "jitter" not in self.model_fields_set:
            object.__setattr__(self, "jitter", default_jitter(self.interval))
        elif self.jitter >= self.interval:
            raise ValueError(
                f"jitter ({self.jitter:g}s) must be smaller than interval ({self.interval:g}s)"
            )
        if "resync_interval" not in self.model_fields_set:
            object.__setattr__(self, "resync_interval", max(DEFAULT_RESYNC, self.interval))
        elif self.resync_interval < self.interval:
            raise ValueError(
                f"resync_interval ({self.resync_interval:g}s) must be at least interval "
                f"({self.interval:g}s)"
            )
        return self

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every static label name any target uses (each series carries all, '' if unset)."""
        names = set(self.defaults.labels)
        for acct in self.targets:
            names.update(acct.labels)
        if self.discovery is not None:
            names.update(self.discovery.labels)
            names.update(self.discovery.tag_labels.values())
        return tuple(sorted(names))


_HINTS = {
    "extra_forbidden": "unknown key: remove it or check its spelling (see docs/configuration.md)",
    "missing": "required: add it",
    "literal_error": None,
    "int_parsing": "expected a whole number",
    "dict_type": "expected a mapping of key: value",
    "list_type": "expected a list, e.g. [us-east-1, eu-west-1]",
}


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"])
        loc = loc.replace(".[", "[")
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        hint = _HINTS.get(err["type"])
        if hint:
            msg = hint if err["type"] in ("extra_forbidden", "missing") else f"{msg}: {hint}"
        value = err.get("input")
        secret = any(part in ("password_hash", "external_id") for part in err["loc"])
        quiet = (
            err["type"] in ("missing", "value_error") or isinstance(value, dict | list) or secret
        )
        shown = "" if quiet else f" (got {value!r})"
        problems.append(f"{loc}: {msg}{shown}" if loc else msg)
    return problems


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for var, path in ENV_OVERRIDES.items():
        if var in environ and environ[var] != "":
            node = data
            for key in path[:-1]:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
            node[path[-1]] = environ[var]
    return data


def parse_config(
    text: str, *, source: str | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate YAML text. Raises :class:`ConfigError`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{where}not valid YAML: {problem}"], source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                "<top level>: expected a mapping of keys (interval:, targets: ...), "
                f"got {type(data).__name__}"
            ],
            source,
        )
    data = _apply_env(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e), source) from None


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``. Raises :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read the file: {e.strerror or e}"], str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], str(p)) from None
    return parse_config(text, source=str(p), environ=environ)

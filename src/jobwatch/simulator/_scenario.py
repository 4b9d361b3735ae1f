"""Scenario files: the declarative world a simulator starts from.

A scenario is YAML validated by strict pydantic models (unknown keys are
errors). :func:`load_scenario` turns every problem (missing file, YAML syntax,
a wrong key or value) into one :class:`ScenarioError` whose message names the
file, the key path (``accounts[1].jobs[0].timeline[2].action``) and the fix.

Times in a scenario are durations relative to the scenario start (the moment
the :class:`~jobwatch.simulator.Simulator` is built): ``created_at: -2h`` is a
job created two hours before, ``at: 30s`` an event thirty seconds after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobwatch.duration import SignedDuration

from ._faults import FaultSpec

__all__ = [
    "ACTIONS",
    "AccountSpec",
    "PhaseDurations",
    "ReportSpec",
    "Scenario",
    "ScenarioError",
    "SimJobSpec",
    "TimelineEvent",
    "builtin_scenario",
    "load_scenario",
    "scenario_from_dict",
]

Action = Literal[
    "fail",
    "stall",
    "resume",
    "pause",
    "unpause",
    "cancel",
    "confirm",
    "set_status",
    "set_rate",
    "set_failure_ratio",
]
ACTIONS: tuple[str, ...] = get_args(Action)

_ACTION_PARAMS: dict[str, frozenset[str]] = {
    "fail": frozenset({"reason", "code"}),
    "stall": frozenset(),
    "resume": frozenset(),
    "pause": frozenset({"reason"}),
    "unpause": frozenset({"reason"}),
    "cancel": frozenset({"reason"}),
    "confirm": frozenset({"reason"}),
    "set_status": frozenset({"status", "reason"}),
    "set_rate": frozenset({"rate"}),
    "set_failure_ratio": frozenset({"failure_ratio"}),
}
_REQUIRED_PARAMS = {
    "set_status": "status",
    "set_rate": "rate",
    "set_failure_ratio": "failure_ratio",
}

_JOB_ID = re.compile(r"[A-Za-z0-9\-_]{5,36}")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the key path and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TimelineEvent(_Strict):
    """``at`` (seconds after the job's origin) ``action`` happens to the job.

    The origin is the scenario start for jobs in a scenario, the moment of
    creation for jobs created at run time.
    """

    at: SignedDuration
    action: Action
    reason: str | None = Field(default=None, min_length=1, max_length=256)
    code: str | None = Field(default=None, min_length=1, max_length=64)
    status: str | None = Field(default=None, min_length=1, max_length=64)
    rate: float | None = Field(default=None, ge=0.0)
    failure_ratio: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> TimelineEvent:
        allowed = _ACTION_PARAMS[self.action]
        for name in ("reason", "code", "status", "rate", "failure_ratio"):
            if name not in allowed and getattr(self, name) is not None:
                takes = ", ".join(sorted(allowed)) or "nothing besides 'at'"
                raise ValueError(
                    f"'{name}' does not apply to action {self.action!r} (it takes: {takes})"
                )
        needed = _REQUIRED_PARAMS.get(self.action)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"action {self.action!r} needs '{needed}'")
        return self

    def params(self) -> dict[str, Any]:
        """The action's parameters that are set."""
        return {
            k: v
            for k in ("reason", "code", "status", "rate", "failure_ratio")
            if (v := getattr(self, k)) is not None
        }


class PhaseDurations(_Strict):
    """How long a job stays in each transient status before moving on by itself."""

    new: SignedDuration = Field(default=1.0, ge=0.0)
    preparing: SignedDuration = Field(default=4.0, ge=0.0)
    ready: SignedDuration = Field(default=1.0, ge=0.0)
    completing: SignedDuration = Field(default=3.0, ge=0.0)
    pausing: SignedDuration = Field(default=2.0, ge=0.0)
    failing: SignedDuration = Field(default=2.0, ge=0.0)
    cancelling: SignedDuration = Field(default=2.0, ge=0.0)


class ReportSpec(_Strict):
    """The completion report DescribeJob shows (``enabled: false`` shows only that)."""

    enabled: bool = True
    bucket: str = "arn:aws:s3:::jobwatch-sim-reports"
    prefix: str | None = "batch-reports"
    format: str = "Report_CSV_20180820"
    scope: str = "AllTasks"


class SimJobSpec(_Strict):
    """One job (or ``count`` identical ones) and its timeline.

    ``tasks`` is the manifest size, ``rate`` tasks per second while Active and
    not stalled, ``failure_ratio`` the share of run tasks that fail.
    ``created_at`` is relative to the origin (default 0: the job is created,
    ``New``, at the scenario start, and is Active about 6 s later with the
    default phases); negative values make history.
    """

    id: str | None = None
    region: str | None = None
    description: str | None = Field(default=None, max_length=256)
    operation: str = Field(default="S3PutObjectTagging", min_length=1, max_length=64)
    priority: int = Field(default=10, ge=0, le=2_147_483_647)
    tasks: int = Field(default=1000, ge=0)
    rate: float = Field(default=10.0, ge=0.0)
    failure_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    created_at: SignedDuration = 0.0
    confirmation_required: bool = False
    report: ReportSpec = ReportSpec()
    role_arn: str | None = None
    phases: PhaseDurations | None = None
    timeline: Sequence[TimelineEvent] = ()
    count: int = Field(default=1, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _check_id(self) -> SimJobSpec:
        if self.id is not None:
            # Copies are named "{id}-1".."{id}-{count}"; every name must be a valid job id.
            names = [self.id] if self.count == 1 else [f"{self.id}-1", f"{self.id}-{self.count}"]
            if not all(_JOB_ID.fullmatch(n) for n in names):
                raise ValueError(
                    f"job id {self.id!r} gives ids like {names[-1]!r}: job ids are 5-36 "
                    "characters of A-Z a-z 0-9 - _"
                )
        return self


class AccountSpec(_Strict):
    """An account: its regions, its jobs, and whether it answers AccessDenied.

    ``access_denied`` is ``true`` (every region) or a list of regions.
    ``regions`` defaults to the scenario's ``regions``.
    """

    id: str = Field(pattern=r"^\d{12}$")
    name: str | None = None
    regions: Sequence[str] | None = None
    access_denied: bool | Sequence[str] = False
    jobs: Sequence[SimJobSpec] = ()


class Scenario(_Strict):
    """A whole simulated world. Build one with :func:`load_scenario`,
    :func:`builtin_scenario` or :func:`~jobwatch.simulator.generate_fleet`.
    """

    name: str = "custom"
    description: str | None = None
    seed: int = 0
    regions: Sequence[str] = ("us-east-1",)
    retention_days: float = Field(default=90.0, gt=0.0)
    next_token_ttl: SignedDuration = Field(default=3600.0, gt=0.0)
    #: ListJobs order: ``newest_first`` (what AWS does in practice, though it does
    #: not document it), or ``reversed_pages``: the same pages, each oldest first.
    listing_order: Literal["newest_first", "reversed_pages"] = "newest_first"
    phases: PhaseDurations = PhaseDurations()
    accounts: Sequence[AccountSpec] = ()
    faults: Sequence[FaultSpec] = ()

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if not self.regions:
            raise ValueError("'regions' needs at least one region, e.g. [us-east-1]")
        seen: set[str] = set()
        # Cross-field rules: messages start with the key path, since pydantic
        # reports an after-validator's error at the top level.
        for a, account in enumerate(self.accounts):
            if account.id in seen:
                raise ValueError(f"accounts[{a}].id: account {account.id} appears twice")
            seen.add(account.id)
            regions = list(account.regions or self.regions)
            for i, job in enumerate(account.jobs):
                if job.region is None and len(regions) > 1:
                    raise ValueError(
                        f"accounts[{a}].jobs[{i}].region: required because the account has "
                        f"several regions ({', '.join(regions)})"
                    )
                if job.region is not None and job.region not in regions:
                    raise ValueError(
                        f"accounts[{a}].jobs[{i}].region: {job.region!r} is not one of the "
                        f"account's regions ({', '.join(regions)}); add it to 'regions'"
                    )
        return self

    def account_regions(self, account: AccountSpec) -> list[str]:
        """The regions ``account`` is served in."""
        return list(account.regions or self.regions)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("bool", "list[str]"):
            # pydantic adds union-branch names to the location; they mean nothing to a user.
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


_HINTS = {
    "extra_forbidden": "unknown key: remove it or fix its spelling",
    "missing": "required key: add it",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "fix the value to match the pattern",
}


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid scenario ({err.error_count()} problem(s))"]
    for e in err.errors(include_url=False):
        hint = _HINTS.get(e["type"])
        msg = e["msg"].removeprefix("Value error, ")
        where = _path(e["loc"])
        # A top-level (cross-field) message already starts with its own key path.
        text = msg if where == "(top level)" and ": " in msg else f"{where}: {msg}"
        lines.append(f"  {text}" + (f" ({hint})" if hint else ""))
    return "\n".join(lines)


def scenario_from_dict(data: object, source: str = "<scenario>") -> Scenario:
    """Validate already-parsed YAML/JSON into a :class:`Scenario`.

    Raises :class:`ScenarioError` naming ``source`` and each bad key path.
    """
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{source}: a scenario is a mapping with keys like 'accounts', 'regions', 'faults'"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_errors(source, err)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Raises :class:`ScenarioError` (never a bare ``OSError``/YAML error) with a
    message that names the file, the key path and the fix.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(f"{p}: cannot read scenario file: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: a scenario file must be UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err)
        raise ScenarioError(f"{p}: not valid YAML{where}: {problem}") from None
    return scenario_from_dict(data, str(p))


_BUILTINS = ("demo",)


def builtin_scenario(name: str = "demo") -> Scenario:
    """A scenario shipped with jobwatch (today: ``"demo"``).

    Raises :class:`ScenarioError` for an unknown name.
    """
    if name not in _BUILTINS:
        raise ScenarioError(f"no built-in scenario {name!r}; choose one of: {', '.join(_BUILTINS)}")
    ref = resources.files("jobwatch.simulator").joinpath("scenarios", f"{name}.yaml")
    data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    return scenario_from_dict(data, f"builtin:{name}")

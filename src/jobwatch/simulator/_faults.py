"""Faults: what can go wrong between a client and S3 Control, and when it does.

A :class:`FaultSpec` says *what* (the kind and its parameters), *where* (accounts,
regions, operations; empty means all) and *when* (a probability, a window of
simulated time, a maximum number of firings). The :class:`FaultBook` holds the
active specs and decides, per request, which fire.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobwatch.duration import SignedDuration

__all__ = ["FAULT_KINDS", "FaultBook", "FaultDecision", "FaultKind", "FaultSpec"]

FaultKind = Literal[
    "throttle",
    "internal_error",
    "error",
    "latency",
    "connection_reset",
    "hang",
    "truncated_xml",
    "malformed_xml",
    "invalid_next_token",
    "access_denied",
    "unknown_status",
    "unknown_operation",
]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

OperationName = Literal["ListJobs", "DescribeJob", "UpdateJobStatus", "CreateJob"]

# Which optional parameters each kind takes; anything else set is a mistake the
# author wants to hear about (a `code` on a throttle would silently do nothing).
_PARAMS: dict[str, frozenset[str]] = {
    "throttle": frozenset({"status", "message"}),
    "internal_error": frozenset({"message"}),
    "error": frozenset({"status", "code", "message"}),
    "latency": frozenset({"seconds", "distribution", "low", "high", "mean", "median", "sigma"}),
    "connection_reset": frozenset(),
    "hang": frozenset({"seconds"}),
    "truncated_xml": frozenset(),
    "malformed_xml": frozenset(),
    "invalid_next_token": frozenset({"message"}),
    "access_denied": frozenset({"message"}),
    "unknown_status": frozenset({"value"}),
    "unknown_operation": frozenset({"value"}),
}
_ALL_PARAMS = frozenset(
    {"status", "code", "message", "seconds", "distribution", "low", "high"}
    | {"mean", "median", "sigma", "value"}
)

#: Kinds that shape the answer without replacing it.
_LATENCY = "latency"
_MODIFIERS = frozenset({"unknown_status", "unknown_operation"})


class FaultSpec(BaseModel):
    """One fault: kind, parameters, scope and schedule. Immutable.

    Scope: ``accounts``, ``regions`` and ``operations`` restrict where it applies
    (empty: everywhere). Schedule: ``from``/``until`` are seconds of simulated
    time since the scenario start (``from_`` in Python), ``probability`` is the
    chance per matching request, ``count`` caps how many times it fires.

    Kinds and their parameters:

    - ``throttle``: ``status`` 503 (``SlowDown``, the default), 400 or 429
      (``TooManyRequestsException``).
    - ``internal_error``: 500 ``InternalError``.
    - ``error``: any ``status`` (400-599) with any ``code`` and ``message``.
    - ``latency``: ``seconds`` fixed, or ``distribution`` ``uniform`` (``low``,
      ``high``), ``exponential`` (``mean``) or ``lognormal`` (``median``,
      ``sigma``). Adds to the answer; other faults may still fire.
    - ``connection_reset``: the TCP connection is reset (RST) with no answer.
    - ``hang``: no answer until the client gives up (or ``seconds`` pass).
    - ``truncated_xml``: a 200 whose XML body stops halfway.
    - ``malformed_xml``: a 200 whose body is not well-formed XML.
    - ``invalid_next_token``: ListJobs with a ``nextToken`` gets 400
      ``InvalidNextTokenException`` (requests without a token are unaffected).
    - ``access_denied``: 403 ``AccessDenied``.
    - ``unknown_status`` / ``unknown_operation``: every job in the answer carries
      ``value`` (default ``Archiving`` / ``S3FutureOperation``) as its
      ``Status`` / ``Operation``. Adds to the answer like latency.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: FaultKind
    accounts: Sequence[str] = ()
    regions: Sequence[str] = ()
    operations: Sequence[OperationName] = ()
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    from_: SignedDuration | None = Field(default=None, alias="from")
    until: SignedDuration | None = None
    count: int | None = Field(default=None, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    code: str | None = Field(default=None, min_length=1, max_length=128)
    message: str | None = None
    seconds: SignedDuration | None = Field(default=None, ge=0.0)
    distribution: Literal["fixed", "uniform", "exponential", "lognormal"] | None = None
    low: float | None = Field(default=None, ge=0.0)
    high: float | None = Field(default=None, ge=0.0)
    mean: float | None = Field(default=None, gt=0.0)
    median: float | None = Field(default=None, gt=0.0)
    sigma: float | None = Field(default=None, ge=0.0)
    value: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _check_params(self) -> FaultSpec:
        allowed = _PARAMS[self.kind]
        for name in sorted(_ALL_PARAMS - allowed):
            if getattr(self, name) is not None:
                takes = ", ".join(sorted(allowed)) or "no parameters"
                raise ValueError(
                    f"'{name}' does not apply to kind {self.kind!r} (it takes: {takes})"
                )
        if self.kind == "throttle" and self.status not in (None, 400, 429, 503):
            raise ValueError("a throttle's status is 503 (SlowDown), 400 or 429")
        if self.kind == "error" and (self.status is None or self.code is None):
            raise ValueError("kind 'error' needs both 'status' (400-599) and 'code'")
        if self.kind == "latency":
            self._check_latency()
        if self.from_ is not None and self.until is not None and self.until <= self.from_:
            raise ValueError("'until' must be later than 'from'")
        return self

    def _check_latency(self) -> None:
        dist = self.distribution or ("fixed" if self.seconds is not None else None)
        needs = {
            None: ("seconds",),
            "fixed": ("seconds",),
            "uniform": ("low", "high"),
            "exponential": ("mean",),
            "lognormal": ("median", "sigma"),
        }[dist]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"latency ({dist or 'fixed'}) needs {', '.join(missing)}: e.g. "
                "{kind: latency, seconds: 0.2} or {kind: latency, distribution: uniform, "
                "low: 0.05, high: 0.5}"
            )
        extra = {"seconds", "low", "high", "mean", "median", "sigma"} - set(needs)
        stray = [n for n in sorted(extra) if getattr(self, n) is not None]
        if stray:
            raise ValueError(f"latency ({dist}) does not use {', '.join(stray)}")
        if dist == "uniform" and self.low is not None and self.high is not None:  # noqa: SIM102
            # Two steps: the first narrows the types for mypy, the second is the rule.
            if self.high < self.low:
                raise ValueError("uniform latency needs low <= high")

    def applies_to(self, operation: str, account: str, region: str) -> bool:
        """True when the scope (not the schedule) covers this request."""
        return (
            (not self.operations or operation in self.operations)
            and (not self.accounts or account in self.accounts)
            and (not self.regions or region in self.regions)
        )

    def sample_latency(self, rng: random.Random) -> float:
        """Seconds of delay for one request (``latency`` kind only)."""
        dist = self.distribution or "fixed"
        if dist == "uniform":
            assert self.low is not None
            assert self.high is not None
            return rng.uniform(self.low, self.high)
        if dist == "exponential":
            assert self.mean is not None
            return rng.expovariate(1.0 / self.mean)
        if dist == "lognormal":
            assert self.median is not None
            assert self.sigma is not None
            return rng.lognormvariate(math.log(self.median), self.sigma)
        return self.seconds or 0.0


@dataclass(slots=True)
class FaultDecision:
    """What the faults decided for one request.

    ``delay`` seconds to wait first; then ``terminal`` (if set) replaces the
    answer; ``status_value``/``operation_value`` rewrite jobs in a normal answer.
    """

    delay: float = 0.0
    terminal: FaultSpec | None = None
    status_value: str | None = None
    operation_value: str | None = None
    fired: list[str] = field(default_factory=list)


_NO_FAULT = FaultDecision()


class FaultBook:
    """The active faults, each with an id, and how often each has fired."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._faults: dict[str, FaultSpec] = {}
        self._fired: dict[str, int] = {}
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> str:
        """Activate ``spec``; returns its id (``f1``, ``f2``...), stable until removed."""
        fault_id = f"f{next(self._ids)}"
        self._faults[fault_id] = spec
        self._fired[fault_id] = 0
        return fault_id

    def remove(self, fault_id: str) -> bool:
        """Deactivate one fault; False when no fault has that id."""
        self._fired.pop(fault_id, None)
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        """Deactivate every fault."""
        self._faults.clear()
        self._fired.clear()

    def items(self) -> list[tuple[str, FaultSpec, int]]:
        """``(id, spec, times fired)`` for every active fault, in the order added."""
        return [(i, s, self._fired[i]) for i, s in self._faults.items()]

    def decide(
        self, operation: str, account: str, region: str, elapsed: float, has_token: bool
    ) -> FaultDecision:
        """Roll the dice for one request at ``elapsed`` seconds of simulated time.

        Faults are considered in the order they were added; latency and enum
        rewrites accumulate, and the first answer-replacing fault that fires
        stops the evaluation.
        """
        if not self._faults:
            return _NO_FAULT
        decision = FaultDecision()
        for fault_id, spec in self._faults.items():
            if not spec.applies_to(operation, account, region):
                continue
            if spec.from_ is not None and elapsed < spec.from_:
                continue
            if spec.until is not None and elapsed >= spec.until:
                continue
            if spec.kind == "invalid_next_token" and not (has_token and operation == "ListJobs"):
                continue
            if spec.count is not None and self._fired[fault_id] >= spec.count:
                continue
            if spec.probability < 1.0 and self._rng.random() >= spec.probability:
                continue
            self._fired[fault_id] += 1
            decision.fired.append(fault_id)
            if spec.kind == _LATENCY:
                decision.delay += spec.sample_latency(self._rng)
            elif spec.kind == "unknown_status":
                decision.status_value = spec.value or "Archiving"
            elif spec.kind == "unknown_operation":
                decision.operation_value = spec.value or "S3FutureOperation"
            else:
                decision.terminal = spec
                break
        return decision

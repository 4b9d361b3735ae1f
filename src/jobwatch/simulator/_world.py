"""The simulated world: accounts, regions, jobs, faults, time and request counts.

:class:`Simulator` is the one object tests, the admin API and the HTTP server
share. It is not thread-safe: it belongs to the event loop that serves it
(tests call it from that same loop).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jobwatch.clock import Clock

from ._faults import FaultBook, FaultDecision, FaultSpec
from ._lifecycle import SimJob
from ._model import RequestKey, SimJobView
from ._scenario import AccountSpec, ReportSpec, Scenario, SimJobSpec, TimelineEvent
from ._wire import list_member

__all__ = ["DEFAULT_MAX_RESULTS", "InvalidTokenError", "Simulator", "UnknownJobError"]

#: ListJobs page size when ``maxResults`` is absent or 0 (AWS documents no default;
#: the simulator uses the maximum so that a client which never sets it still pages).
DEFAULT_MAX_RESULTS = 1000
MAX_RESULTS = 1000


class UnknownJobError(KeyError):
    """No job with that id in that account and region (or it aged out)."""


class InvalidTokenError(ValueError):
    """A ListJobs ``nextToken`` that is forged, damaged, for another listing, or expired."""


class _Target:
    """The jobs of one (account, region), in ListJobs order (newest last in the list)."""

    __slots__ = ("by_id", "client_tokens", "jobs", "keys", "rng")

    def __init__(self, seed: str) -> None:
        self.jobs: list[SimJob] = []
        self.keys: list[tuple[float, str]] = []
        self.by_id: dict[str, SimJob] = {}
        self.client_tokens: dict[str, str] = {}
        self.rng = random.Random(seed)

    def new_id(self) -> str:
        while True:
            job_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            if job_id not in self.by_id:
                return job_id

    def add(self, job: SimJob) -> None:
        key = (job.creation, job.job_id)
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.jobs.insert(i, job)
        self.by_id[job.job_id] = job

    def bulk_load(self, jobs: Iterable[SimJob]) -> None:
        merged = sorted([*self.jobs, *jobs], key=lambda j: (j.creation, j.job_id))
        self.jobs = merged
        self.keys = [(j.creation, j.job_id) for j in merged]
        self.by_id = {j.job_id: j for j in merged}


class Simulator:
    """A scenario brought to life on a clock.

    Scenario times are relative to :attr:`origin`, the clock's time when the
    simulator was built. Jobs are evaluated lazily, when a request or a caller
    looks at them, with the same result as if they had been stepped
    continuously.
    """

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self._scenario = scenario
        self._clock = clock
        self._skew = 0.0
        #: Epoch seconds at which scenario time 0 falls.
        self.origin: float = clock.time()
        self._rng = random.Random(scenario.seed)
        self._secret = os.urandom(16)
        self._retention = scenario.retention_days * 86400.0
        self._token_ttl = float(scenario.next_token_ttl)
        self._reversed_pages = scenario.listing_order == "reversed_pages"
        self._phases = scenario.phases
        self._accounts: dict[str, set[str]] = {}
        self._denied_all: set[str] = set()
        self._denied: set[tuple[str, str]] = set()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._stats: Counter[RequestKey] = Counter()
        self._listeners: list[Callable[[SimJob, str, str, float], None]] = []
        self._faults = FaultBook(self._rng)
        for spec in scenario.faults:
            self._faults.add(spec)
        for account in scenario.accounts:
            self._load_account(account)

    # -- construction --------------------------------------------------------

    def _target(self, account: str, region: str) -> _Target:
        target = self._targets.get((account, region))
        if target is None:
            target = _Target(f"{self._scenario.seed}/{account}/{region}")
            self._targets[(account, region)] = target
            self._accounts.setdefault(account, set()).add(region)
        return target

    def _load_account(self, account: AccountSpec) -> None:
        regions = self._scenario.account_regions(account)
        self._accounts.setdefault(account.id, set()).update(regions)
        if account.access_denied is True:
            self._denied_all.add(account.id)
        elif account.access_denied is not False:
            self._denied.update((account.id, r) for r in account.access_denied)
        pending: dict[str, list[SimJob]] = {r: [] for r in regions}
        #: Job ids in use per region, kept up to date job by job (rebuilding it
        #: per job spec made loading a fleet of one-job specs quadratic).
        taken: dict[str, set[str]] = {}
        for region in regions:
            taken[region] = set(self._target(account.id, region).by_id)
        for spec in account.jobs:
            region = spec.region or regions[0]
            target = self._targets[(account.id, region)]
            ids = taken[region]
            for copy in range(spec.count):
                job = self._build_job(account.id, region, spec, self.origin, target, copy, ids)
                ids.add(job.job_id)
                pending[region].append(job)
        for region, jobs in pending.items():
            self._targets[(account.id, region)].bulk_load(jobs)

    def _build_job(
        self,
        account: str,
        region: str,
        spec: SimJobSpec,
        origin: float,
        target: _Target,
        copy: int = 0,
        taken: set[str] | frozenset[str] = frozenset(),
    ) -> SimJob:
        if spec.id is None:
            job_id = target.new_id()
            while job_id in taken:
                job_id = target.new_id()
        else:
            job_id = spec.id if spec.count == 1 else f"{spec.id}-{copy + 1}"
        phases = spec.phases or self._phases
        events: list[tuple[float, str, dict[str, Any]]] = [
            (origin + ev.at, str(ev.action), ev.params()) for ev in spec.timeline
        ]
        job = SimJob(
            account_id=account,
            region=region,
            job_id=job_id,
            creation=origin + spec.created_at,
            total=spec.tasks,
            rate=spec.rate,
            failure_ratio=spec.failure_ratio,
            phases=phases,
            operation=spec.operation,
            description=spec.description,
            priority=spec.priority,
            confirmation_required=spec.confirmation_required,
            report=spec.report,
            role_arn=spec.role_arn,
            events=events,
        )
        job.listener = self._status_changed
        return job

    def _status_changed(self, job: SimJob, old: str, new: str, t: float) -> None:
        for listener in self._listeners:
            listener(job, old, new, t)

    def subscribe(self, listener: Callable[[SimJob, str, str, float], None]) -> None:
        """Call ``listener(job, old status, new status, time)`` at every status change.

        Jobs move lazily, when something looks at them (:meth:`jobs` evaluates
        them all); ``time`` is when the change happened in simulated time.
        """
        self._listeners.append(listener)

    def all_jobs(self) -> list[SimJob]:
        """Every job of every target brought up to :meth:`now` (created ones only)."""
        now = self.now()
        out = []
        for target in self._targets.values():
            for job in target.jobs:
                if job.exists(now):
                    job.advance(now)
                    out.append(job)
        return out

    # -- time ----------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock the simulator reads (shared with the code under test in tests)."""
        return self._clock

    @property
    def scenario(self) -> Scenario:
        """The scenario the world was built from."""
        return self._scenario

    @property
    def retention_seconds(self) -> float:
        """How long a terminal job stays listed after its termination."""
        return self._retention

    def now(self) -> float:
        """Simulated time, epoch seconds: the clock plus any :meth:`advance` on a clock
        that cannot be moved (the system clock)."""
        return self._clock.time() + self._skew

    def elapsed(self) -> float:
        """Seconds of simulated time since the scenario start."""
        return self.now() - self.origin

    def advance(self, seconds: float) -> float:
        """Move simulated time forward; returns the new :meth:`now`.

        A clock with an ``advance`` method (``ManualClock``) is advanced itself,
        so code sharing that clock sees the same time. Any other clock is left
        alone and the simulator keeps an offset from it instead.
        """
        move = getattr(self._clock, "advance", None)
        if callable(move):
            move(seconds)
        else:
            self._skew += seconds
        return self.now()

    # -- the truth -----------------------------------------------------------

    def accounts(self) -> list[str]:
        """Every account the world knows, sorted."""
        return sorted(self._accounts)

    def targets(self) -> list[tuple[str, str]]:
        """Every (account, region) the world knows, sorted."""
        return sorted((a, r) for a, regions in self._accounts.items() for r in regions)

    def knows_account(self, account: str) -> bool:
        """True for an account of the scenario (or one a job was created in)."""
        return account in self._accounts

    def access_denied(self, account: str, region: str) -> bool:
        """True when requests for (account, region) get AccessDenied by configuration."""
        return account in self._denied_all or (account, region) in self._denied

    def deny_access(self, account: str, region: str | None = None) -> None:
        """Make (account, region), or the whole account, answer AccessDenied."""
        if region is None:
            self._denied_all.add(account)
        else:
            self._denied.add((account, region))

    def allow_access(self, account: str, region: str | None = None) -> None:
        """Undo :meth:`deny_access` (for a region, or for the account and all its regions)."""
        if region is None:
            self._denied_all.discard(account)
            self._denied = {(a, r) for a, r in self._denied if a != account}
        else:
            self._denied.discard((account, region))

    def jobs(self, account_id: str, region: str) -> list[SimJobView]:
        """Every created job of the target at :meth:`now`, newest first.

        Includes jobs that aged out of the listing (``listed=False``); excludes
        jobs whose creation time is still in the future. An unknown target
        gives an empty list.
        """
        target = self._targets.get((account_id, region))
        if target is None:
            return []
        now = self.now()
        return [job.view(now, self._retention) for job in reversed(target.jobs) if job.exists(now)]

    def job(self, account_id: str, region: str, job_id: str) -> SimJobView:
        """One job's truth at :meth:`now`; raises :class:`UnknownJobError`."""
        return self._job(account_id, region, job_id).view(self.now(), self._retention)

    def _job(self, account_id: str, region: str, job_id: str) -> SimJob:
        target = self._targets.get((account_id, region))
        job = target.by_id.get(job_id) if target is not None else None
        if job is None or not job.exists(self.now()):
            raise UnknownJobError(f"no job {job_id!r} in account {account_id} region {region}")
        return job

    # -- changing the world --------------------------------------------------

    def create_job(self, account: str, region: str, **spec: Any) -> str:
        """Create a job now; returns its id.

        ``spec`` takes the keys of a scenario job (``tasks``, ``rate``,
        ``failure_ratio``, ``operation``, ``timeline`` with ``at`` relative to
        now, ``created_at`` relative to now, ...). An account or region the
        world did not know is added. Raises ``ValueError`` for a bad spec and
        for an id that already exists in the target.
        """
        parsed = SimJobSpec.model_validate({**spec, "count": 1})
        target = self._target(account, region)
        if parsed.id is not None and parsed.id in target.by_id:
            raise ValueError(f"job id {parsed.id!r} already exists in {account}/{region}")
        job = self._build_job(account, region, parsed, self.now(), target)
        target.add(job)
        return job.job_id

    def act(self, account: str, region: str, job_id: str, action: str, **params: Any) -> SimJobView:
        """Apply a timeline action to a job now and return the job's new truth.

        ``action`` is one of ``fail`` (``reason``, ``code``), ``stall``,
        ``resume``, ``pause``, ``unpause``, ``cancel``, ``confirm`` (``reason``),
        ``set_status`` (``status``, ``reason``), ``set_rate`` (``rate``),
        ``set_failure_ratio`` (``failure_ratio``). Raises ``ValueError`` for a
        bad action or parameter, :class:`UnknownJobError` for an unknown job.
        """
        event = TimelineEvent.model_validate({"at": 0, "action": action, **params})
        job = self._job(account, region, job_id)
        now = self.now()
        job.act(event.action, event.params(), now)
        return job.view(now, self._retention)

    def schedule(
        self, account: str, region: str, job_id: str, after: float, action: str, **params: Any
    ) -> None:
        """Queue an action ``after`` seconds from now (a timeline entry added at run time)."""
        event = TimelineEvent.model_validate({"at": after, "action": action, **params})
        job = self._job(account, region, job_id)
        now = self.now()
        job.advance(now)
        job.schedule(now + max(0.0, event.at), event.action, event.params())

    def fail_job(
        self,
        account: str,
        region: str,
        job_id: str,
        *,
        reason: str | None = None,
        code: str | None = None,
    ) -> SimJobView:
        """Fail a job now (Failing, then Failed) with a FailureReasons entry."""
        params = {k: v for k, v in (("reason", reason), ("code", code)) if v is not None}
        return self.act(account, region, job_id, "fail", **params)

    def stall_job(self, account: str, region: str, job_id: str) -> SimJobView:
        """Stop a job's progress (it stays Active; its active timer keeps running)."""
        return self.act(account, region, job_id, "stall")

    def resume_job(self, account: str, region: str, job_id: str) -> SimJobView:
        """Let a stalled job progress again."""
        return self.act(account, region, job_id, "resume")

    def pause_job(self, account: str, region: str, job_id: str) -> SimJobView:
        """Active -> Pausing -> Paused."""
        return self.act(account, region, job_id, "pause")

    def unpause_job(self, account: str, region: str, job_id: str) -> SimJobView:
        """Paused (or Pausing) -> Active."""
        return self.act(account, region, job_id, "unpause")

    def cancel_job(
        self, account: str, region: str, job_id: str, *, reason: str | None = None
    ) -> SimJobView:
        """Cancelling, then Cancelled (ignored for a job that has ended)."""
        params = {"reason": reason} if reason else {}
        return self.act(account, region, job_id, "cancel", **params)

    def confirm_job(
        self, account: str, region: str, job_id: str, *, reason: str | None = None
    ) -> SimJobView:
        """Confirm a Suspended job (Ready, then Active); before Suspended, pre-confirms it."""
        params = {"reason": reason} if reason else {}
        return self.act(account, region, job_id, "confirm", **params)

    def set_job(
        self,
        account: str,
        region: str,
        job_id: str,
        *,
        status: str | None = None,
        rate: float | None = None,
        failure_ratio: float | None = None,
        stalled: bool | None = None,
        reason: str | None = None,
    ) -> SimJobView:
        """Change several things about a job at once, now.

        ``status`` may be any string, including statuses AWS does not have; a
        known status continues the state machine from there, an unknown one
        stays until changed.
        """
        if rate is not None:
            self.act(account, region, job_id, "set_rate", rate=rate)
        if failure_ratio is not None:
            self.act(account, region, job_id, "set_failure_ratio", failure_ratio=failure_ratio)
        if stalled is not None:
            self.act(account, region, job_id, "stall" if stalled else "resume")
        if status is not None:
            params = {"reason": reason} if reason else {}
            self.act(account, region, job_id, "set_status", status=status, **params)
        return self.job(account, region, job_id)

    # -- faults --------------------------------------------------------------

    def add_fault(self, spec: FaultSpec) -> str:
        """Activate a fault; returns its id. ``from``/``until`` are scenario seconds."""
        return self._faults.add(spec)

    def remove_fault(self, fault_id: str) -> bool:
        """Deactivate one fault; False when the id is unknown."""
        return self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        """Deactivate every fault, including the scenario's."""
        self._faults.clear()

    @property
    def faults(self) -> list[tuple[str, FaultSpec, int]]:
        """``(id, spec, times fired)`` for each active fault."""
        return self._faults.items()

    def decide_faults(
        self, operation: str, account: str, region: str, has_token: bool
    ) -> FaultDecision:
        """Which faults fire for one request now (used by the server)."""
        return self._faults.decide(operation, account, region, self.elapsed(), has_token)

    # -- stats ---------------------------------------------------------------

    def record(self, operation: str, account: str, region: str, outcome: str) -> None:
        """Count one request (the server calls this once per request it answers or drops)."""
        self._stats[RequestKey(operation, account, region, outcome)] += 1

    @property
    def stats(self) -> Mapping[RequestKey, int]:
        """A copy of the request counts by (operation, account, region, outcome)."""
        return dict(self._stats)

    def request_count(
        self,
        operation: str | None = None,
        account: str | None = None,
        region: str | None = None,
        outcome: str | None = None,
    ) -> int:
        """Requests matching every given field (None matches anything)."""
        return sum(
            n
            for k, n in self._stats.items()
            if (operation is None or k.operation == operation)
            and (account is None or k.account == account)
            and (region is None or k.region == region)
            and (outcome is None or k.outcome == outcome)
        )

    def reset_stats(self) -> None:
        """Forget every request count."""
        self._stats.clear()

    # -- serving (used by the HTTP layer) ------------------------------------

    def list_page(
        self,
        account: str,
        region: str,
        statuses: frozenset[str] | None,
        max_results: int,
        token: str | None,
        status_value: str | None = None,
        operation_value: str | None = None,
    ) -> tuple[list[str], str | None]:
        """One ListJobs page: the rendered ``<member>`` strings and the next token.

        Jobs come newest first (by creation time, then id); with the scenario's
        ``listing_order: reversed_pages`` each page is reversed. The token holds the
        position after the last job returned, so a page boundary stays put
        while jobs change status or new jobs appear (they sort before it).
        A token is returned only when at least one more matching job exists.
        Raises :class:`InvalidTokenError`.
        """
        now = self.now()
        target = self._targets.get((account, region))
        if target is None:
            if token is not None:
                self._decode_token(token, account, region, statuses, now)
            return [], None
        keys = target.keys
        # Jobs created in the future are not there yet.
        hi = bisect.bisect_right(keys, (now, "\U0010ffff"))
        if token is not None:
            cursor = self._decode_token(token, account, region, statuses, now)
            hi = min(hi, bisect.bisect_left(keys, cursor))
        jobs = target.jobs
        retention = self._retention
        members: list[str] = []
        last: SimJob | None = None
        more = False
        cacheable = status_value is None and operation_value is None
        for i in range(hi - 1, -1, -1):
            job = jobs[i]
            job.advance(now)
            term = job.termination
            if term is not None and now >= term + retention:
                continue
            if statuses is not None and job.status not in statuses:
                continue
            if len(members) == max_results:
                more = True
                break
            if cacheable:
                members.append(list_member(job, now))
            else:
                members.append(list_member(job, now, status_value, operation_value))
            last = job
        if self._reversed_pages:
            members.reverse()
        if not more or last is None:
            return members, None
        return members, self._encode_token(account, region, statuses, last, now)

    def describe(self, account: str, region: str, job_id: str) -> SimJob | None:
        """The job DescribeJob shows, advanced to now; None when unknown or aged out."""
        target = self._targets.get((account, region))
        job = target.by_id.get(job_id) if target is not None else None
        now = self.now()
        if job is None or not job.exists(now):
            return None
        job.advance(now)
        if not job.listed(now, self._retention):
            return None
        return job

    def update_status(
        self, account: str, region: str, job_id: str, requested: str, reason: str | None
    ) -> tuple[SimJob | None, str | None]:
        """UpdateJobStatus: ``(job, None)`` on success, ``(job, message)`` when refused,
        ``(None, None)`` for an unknown job."""
        job = self.describe(account, region, job_id)
        if job is None:
            return None, None
        return job, job.update_status(requested, reason, self.now())

    def create_from_request(
        self,
        account: str,
        region: str,
        *,
        client_token: str | None,
        tasks: int,
        rate: float,
        failure_ratio: float,
        operation: str,
        description: str | None,
        priority: int,
        confirmation_required: bool,
        role_arn: str | None,
        report_enabled: bool,
    ) -> str:
        """CreateJob over the wire; the same ClientRequestToken returns the same job."""
        target = self._target(account, region)
        if client_token is not None and client_token in target.client_tokens:
            return target.client_tokens[client_token]
        spec = SimJobSpec.model_construct(
            id=None,
            region=region,
            description=description,
            operation=operation,
            priority=priority,
            tasks=tasks,
            rate=rate,
            failure_ratio=failure_ratio,
            created_at=0.0,
            confirmation_required=confirmation_required,
            report=ReportSpec(enabled=report_enabled),
            role_arn=role_arn,
            phases=None,
            timeline=(),
            count=1,
        )
        job = self._build_job(account, region, spec, self.now(), target)
        target.add(job)
        if client_token is not None:
            target.client_tokens[client_token] = job.job_id
        return job.job_id

    # -- tokens --------------------------------------------------------------

    @staticmethod
    def _filter_digest(statuses: frozenset[str] | None) -> str:
        if statuses is None:
            return "*"
        return hashlib.sha256(",".join(sorted(statuses)).encode()).hexdigest()[:8]

    def _encode_token(
        self, account: str, region: str, statuses: frozenset[str] | None, last: SimJob, now: float
    ) -> str:
        payload = "|".join(
            (
                "1",
                account,
                region,
                self._filter_digest(statuses),
                repr(last.creation),
                last.job_id,
                repr(now),
            )
        ).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]
        return (
            base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
            + "."
            + base64.urlsafe_b64encode(mac).decode()
        )

    def _decode_token(
        self, token: str, account: str, region: str, statuses: frozenset[str] | None, now: float
    ) -> tuple[float, str]:
        try:
            body, _, mac_text = token.partition(".")
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            mac = base64.urlsafe_b64decode(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidTokenError("The continuation token provided is invalid.") from None
        good = hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]
        if not hmac.compare_digest(mac, good):
            raise InvalidTokenError("The continuation token provided is invalid.")
        _, acc, reg, digest, creation, job_id, issued = payload.decode().split("|")
        if (acc, reg) != (account, region) or digest != self._filter_digest(statuses):
            raise InvalidTokenError(
                "The continuation token was issued for a different listing "
                "(account, region or jobStatuses)."
            )
        if now - float(issued) > self._token_ttl:
            raise InvalidTokenError("The continuation token has expired.")
        return float(creation), job_id

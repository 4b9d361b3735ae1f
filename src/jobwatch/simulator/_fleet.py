"""Large generated worlds for benchmarks and scale tests."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._model import OPERATIONS
from ._scenario import AccountSpec, PhaseDurations, Scenario, SimJobSpec, TimelineEvent

__all__ = ["FLEET_REGIONS", "fleet_account_id", "generate_fleet"]

#: Regions :func:`generate_fleet` draws from when given a count.
FLEET_REGIONS: tuple[str, ...] = (
    "us-east-1",
    "eu-west-1",
    "us-west-2",
    "eu-central-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "us-east-2",
    "eu-west-2",
    "ca-central-1",
    "sa-east-1",
    "ap-south-1",
    "eu-north-1",
)

_DAY = 86400.0


def fleet_account_id(index: int) -> str:
    """The account id :func:`generate_fleet` gives account number ``index`` (from 0)."""
    return f"{100_000_000_000 + index:012d}"


def generate_fleet(
    accounts: int,
    regions: Sequence[str] | int,
    jobs_per_target: int,
    seed: int = 0,
    terminal_share: float = 0.0,
    active_share: float = 1.0,
    failed_share: float = 0.1,
    retention_days: float = 90.0,
    name: str = "fleet",
) -> Scenario:
    """A scenario of ``accounts`` x ``regions`` targets with ``jobs_per_target`` jobs each.

    Deterministic for a given ``seed``. Account ids come from
    :func:`fleet_account_id` (``100000000000``, ``100000000001``...). ``regions``
    is a list, or a count taken from :data:`FLEET_REGIONS`.

    Of the jobs, ``terminal_share`` are history that ended inside the
    retention window (``failed_share`` of those Failed, a few Cancelled, the
    rest Complete). Of the others, ``active_share`` are Active part-way
    through, and the rest wait: Suspended for confirmation or Paused. Raises
    ``ValueError`` for out-of-range arguments.
    """
    if accounts < 0 or jobs_per_target < 0:
        raise ValueError("accounts and jobs_per_target must be >= 0")
    for label, share in (
        ("terminal_share", terminal_share),
        ("active_share", active_share),
        ("failed_share", failed_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{label} must be between 0 and 1")
    if isinstance(regions, int):
        if not 1 <= regions <= len(FLEET_REGIONS):
            raise ValueError(f"regions must be between 1 and {len(FLEET_REGIONS)}")
        region_list = list(FLEET_REGIONS[:regions])
    else:
        region_list = list(regions)
        if not region_list:
            raise ValueError("regions must not be empty")
    rng = random.Random(seed)
    phases = PhaseDurations()
    before_active = phases.new + phases.preparing + phases.ready
    history_span = min(retention_days, 80.0) * _DAY
    account_specs = []
    for a in range(accounts):
        account_id = fleet_account_id(a)
        jobs: list[SimJobSpec] = []
        for region in region_list:
            for n in range(jobs_per_target):
                jobs.append(
                    _job(
                        rng,
                        region,
                        n,
                        terminal_share,
                        active_share,
                        failed_share,
                        before_active,
                        history_span,
                    )
                )
        account_specs.append(
            AccountSpec.model_construct(
                id=account_id,
                name=f"fleet-{a}",
                regions=region_list,
                access_denied=False,
                jobs=jobs,
            )
        )
    return Scenario.model_construct(
        name=name,
        description=(
            f"{accounts} accounts x {len(region_list)} regions x {jobs_per_target} jobs "
            f"(seed {seed})"
        ),
        seed=seed,
        regions=region_list,
        retention_days=retention_days,
        next_token_ttl=3600.0,
        phases=phases,
        accounts=account_specs,
        faults=(),
    )


def _job(
    rng: random.Random,
    region: str,
    n: int,
    terminal_share: float,
    active_share: float,
    failed_share: float,
    before_active: float,
    history_span: float,
) -> SimJobSpec:
    operation = OPERATIONS[rng.randrange(len(OPERATIONS))]
    description = f"fleet job {n} ({operation})"
    priority = rng.randrange(1, 100)
    if rng.random() < terminal_share:
        tasks = rng.randrange(100, 20_000)
        duration = rng.uniform(60.0, 3600.0)
        created = -rng.uniform(duration + 3600.0, history_span)
        timeline: list[TimelineEvent] = []
        roll = rng.random()
        if roll < failed_share:
            timeline.append(
                TimelineEvent.model_construct(
                    at=created + before_active + duration / 2,
                    action="fail",
                    reason="Simulated failure in generated history",
                    code="SimulatedFailure",
                    status=None,
                    rate=None,
                    failure_ratio=None,
                )
            )
        elif roll < failed_share + 0.05:
            timeline.append(
                TimelineEvent.model_construct(
                    at=created + before_active + duration / 3,
                    action="cancel",
                    reason="Cancelled by operator",
                    code=None,
                    status=None,
                    rate=None,
                    failure_ratio=None,
                )
            )
        return SimJobSpec.model_construct(
            region=region,
            description=description,
            operation=operation,
            priority=priority,
            tasks=tasks,
            rate=tasks / duration,
            failure_ratio=rng.uniform(0.0, 0.05),
            created_at=created,
            timeline=timeline,
        )
    if rng.random() < active_share:
        tasks = rng.randrange(1_000, 1_000_000)
        rate = rng.uniform(5.0, 500.0)
        done = rng.uniform(0.05, 0.9)
        return SimJobSpec.model_construct(
            region=region,
            description=description,
            operation=operation,
            priority=priority,
            tasks=tasks,
            rate=rate,
            failure_ratio=rng.uniform(0.0, 0.02),
            created_at=-(before_active + done * tasks / rate),
        )
    if rng.random() < 0.5:
        return SimJobSpec.model_construct(
            region=region,
            description=description,
            operation=operation,
            priority=priority,
            tasks=rng.randrange(100, 100_000),
            rate=50.0,
            confirmation_required=True,
            created_at=-rng.uniform(60.0, _DAY),
        )
    tasks = rng.randrange(10_000, 1_000_000)
    created = -rng.uniform(600.0, _DAY)
    pause_at = created + before_active + rng.uniform(10.0, 300.0)
    return SimJobSpec.model_construct(
        region=region,
        description=description,
        operation=operation,
        priority=priority,
        tasks=tasks,
        rate=20.0,
        created_at=created,
        timeline=[
            TimelineEvent.model_construct(
                at=pause_at,
                action="pause",
                reason="Paused for a higher-priority job",
                code=None,
                status=None,
                rate=None,
                failure_ratio=None,
            )
        ],
    )

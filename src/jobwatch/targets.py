"""Targets: every ``(account, region)`` jobwatch watches, resolved in one place.

Config defaults, ``{account_id}`` templating in role ARNs, label merging, the
accounts discovery found and this process's shard all meet in
:func:`resolve_targets`. Nothing else builds a :class:`~jobwatch.model.Target`
from configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jobwatch.config import Config
from jobwatch.model import Account, Target
from jobwatch.shard import Shard

__all__ = ["TargetSet", "resolve_targets"]


@dataclass(frozen=True, slots=True)
class TargetSet:
    """What one process watches, and how many targets it chose them from."""

    #: Static targets in config order, then discovered accounts' targets by account id.
    candidates: tuple[Target, ...]
    #: This shard's share of ``candidates``, in the same order.
    targets: tuple[Target, ...]


def _targets(
    account_id: str,
    regions: Iterable[str],
    *,
    role_template: str | None,
    external_id: str | None,
    session_name: str,
    duration: float,
    labels: Mapping[str, str],
) -> list[Target]:
    role = role_template.replace("{account_id}", account_id) if role_template else None
    label_pairs = tuple(sorted(labels.items()))
    return [
        Target(
            account_id=account_id,
            region=region,
            role_arn=role,
            external_id=external_id,
            session_name=session_name,
            duration_seconds=int(duration),
            labels=label_pairs,
        )
        for region in regions
    ]


def resolve_targets(
    config: Config, discovered: Iterable[Account] = (), shard: Shard | None = None
) -> TargetSet:
    """Every target of ``config`` and ``discovered``, and ``shard``'s share of them.

    A static account (listed under ``targets``) takes its settings from there,
    falling back to ``defaults``; a discovered account takes them from
    ``discovery``, falling back to ``defaults``, plus the labels its tags map to.
    An account both listed and discovered is taken from the list only (static wins).
    """
    d = config.defaults
    out: list[Target] = []
    for acct in config.targets:
        out += _targets(
            acct.account_id,
            acct.regions or d.regions,
            role_template=acct.role_arn if acct.role_arn is not None else d.role_arn,
            external_id=acct.external_id or d.external_id,
            session_name=acct.session_name or d.session_name,
            duration=acct.duration or d.duration,
            labels={**d.labels, **acct.labels},
        )
    disc = config.discovery
    if disc is not None:
        seen = {a.account_id for a in config.targets}
        for account in sorted(discovered, key=lambda a: a.account_id):
            if account.account_id in seen:
                continue
            seen.add(account.account_id)
            tags = dict(account.tags)
            labels = {**d.labels, **disc.labels}
            labels.update(
                {label: tags[tag] for tag, label in disc.tag_labels.items() if tag in tags}
            )
            out += _targets(
                account.account_id,
                disc.regions or d.regions,
                role_template=disc.role_arn,
                external_id=disc.external_id or d.external_id,
                session_name=disc.session_name or d.session_name,
                duration=disc.duration or d.duration,
                labels=labels,
            )
    mine = out if shard is None else shard.select(out)
    return TargetSet(candidates=tuple(out), targets=tuple(mine))

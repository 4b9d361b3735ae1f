"""Sharding: which targets one jobwatch process watches when several share a fleet.

A target belongs to exactly one of ``total`` shards, chosen by rendezvous
(highest-random-weight) hashing of ``"account_id/region"``: every shard ordinal
gets a weight from a stable hash of the target and the ordinal, and the highest
weight wins. Unlike ``hash mod total`` (kube-state-metrics' scheme), adding a
shard moves only the targets the new shard wins, about ``1/(total+1)`` of them,
and removing one moves only that shard's targets. The hash is BLAKE2b, so every
process, Python version and machine agrees (Python's own ``hash()`` is salted
per process).

The ordinal comes from ``--shard``, the ``shard.ordinal`` key, or a StatefulSet
pod's name (``jobwatch-3`` is shard 3) through ``--pod`` or ``POD_NAME``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jobwatch.errors import ConfigError
from jobwatch.model import Target

__all__ = [
    "MAX_SHARDS",
    "Shard",
    "ordinal_from_pod",
    "resolve_shard",
    "shard_of",
]

#: More shards than this is a configuration mistake, not a fleet.
MAX_SHARDS = 1000
#: Keeps jobwatch's weights apart from any other BLAKE2b use of the same keys.
_PERSON = b"jobwatch-shard"
_POD_ORDINAL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?-(\d+)$")


def shard_of(account_id: str, region: str, total: int) -> int:
    """The shard (``0 <= shard < total``) that watches ``(account_id, region)``."""
    if total <= 1:
        return 0
    base = hashlib.blake2b(f"{account_id}/{region}".encode(), digest_size=8, person=_PERSON)
    best, best_weight = 0, -1
    for ordinal in range(total):
        h = base.copy()
        h.update(ordinal.to_bytes(4, "big"))
        w = int.from_bytes(h.digest(), "big")
        if w > best_weight:  # ties (a 64-bit collision) go to the lowest ordinal
            best, best_weight = ordinal, w
    return best


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's share of the fleet: shard ``ordinal`` of ``total``."""

    ordinal: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.total <= MAX_SHARDS:
            raise ValueError(f"total shards must be 1 to {MAX_SHARDS}, got {self.total}")
        if not 0 <= self.ordinal < self.total:
            raise ValueError(
                f"shard {self.ordinal} does not exist with {self.total} shard(s): "
                f"shards are numbered 0 to {self.total - 1}"
            )

    def owns(self, target: Target) -> bool:
        return shard_of(target.account_id, target.region, self.total) == self.ordinal

    def select(self, targets: Iterable[Target]) -> list[Target]:
        """The targets this shard watches, in their original order."""
        if self.total == 1:
            return list(targets)
        return [t for t in targets if self.owns(t)]

    def __str__(self) -> str:
        return f"{self.ordinal}/{self.total}"


def ordinal_from_pod(name: str) -> int:
    """A StatefulSet pod's ordinal from its name: ``jobwatch-3`` -> 3.

    Raises ``ValueError`` for a name that does not end in ``-<number>`` (a
    Deployment's pod, ``jobwatch-5d8f7c9b4-x2x8k``, does not).
    """
    m = _POD_ORDINAL.match(name.strip())
    if m is None:
        raise ValueError(
            f"pod name {name!r} does not end in -<ordinal> as a StatefulSet pod's does "
            "(jobwatch-0, jobwatch-1, ...)"
        )
    return int(m.group(2))


def resolve_shard(
    *,
    ordinal: int | None = None,
    total: int | None = None,
    pod: str | None = None,
    config_ordinal: int | None = None,
    config_total: int = 1,
) -> Shard:
    """Decide this process's shard; raises :class:`ConfigError` naming what to fix.

    ``total``: ``--total-shards``, else the ``shard.total`` key. ``ordinal``:
    ``--shard``, else ``shard.ordinal``, else the pod name's ordinal (``--pod`` or
    ``POD_NAME``). With one shard the pod name is not consulted at all.
    """
    n = total if total is not None else config_total
    chosen = ordinal if ordinal is not None else config_ordinal
    problems: list[str] = []
    if chosen is None and n > 1:
        if pod:
            try:
                chosen = ordinal_from_pod(pod)
            except ValueError as e:
                problems.append(f"--pod / POD_NAME: {e}; or pass --shard N")
        else:
            problems.append(
                f"shard: {n} shards but no ordinal for this process: pass --shard N, "
                "set shard.ordinal, or run in a StatefulSet with POD_NAME set from "
                "metadata.name (the downward API)"
            )
    if problems:
        raise ConfigError(problems)
    try:
        return Shard(chosen or 0, n)
    except ValueError as e:
        hint = ""
        if chosen is not None and chosen >= n:
            hint = (
                ": the StatefulSet has more replicas than shard.total (or --total-shards); "
                "make them equal"
            )
        raise ConfigError([f"shard: {e}{hint}"]) from None

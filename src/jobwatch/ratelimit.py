"""Per-account client-side rate limiting, driven by throttle responses.

botocore's ``adaptive`` retry mode rate-limits a whole *client*. jobwatch
shares one client per region across every account (see docs/architecture.md),
so botocore's limiter would let one throttled account slow every account in
the region: measured with 2,000 targets of which 10% were always throttled, a
cycle took 575 s instead of 5 s. AWS throttles per account, so jobwatch limits
per account instead: ``retry.mode: adaptive`` means botocore's ``standard``
retries plus this limiter.

The policy is additive-increase, multiplicative-decrease: an account starts
unlimited; a throttled attempt halves its allowed rate (from ``initial`` on the
first throttle, never below ``minimum``); each successful attempt adds
``increase`` requests per second, and past ``maximum`` the account is unlimited
again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["AccountRateLimiter"]


@dataclass(slots=True)
class _Bucket:
    rate: float
    next_at: float


class AccountRateLimiter:
    def __init__(
        self,
        *,
        initial: float = 5.0,
        minimum: float = 0.05,
        maximum: float = 50.0,
        increase: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._initial = initial
        self._minimum = minimum
        self._maximum = maximum
        self._increase = increase
        self._now = monotonic
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}

    def rate(self, account: str) -> float | None:
        """Requests per second allowed for ``account``; ``None`` when unlimited."""
        bucket = self._buckets.get(account)
        return bucket.rate if bucket else None

    def record(self, account: str, *, throttled: bool) -> None:
        """Feed the outcome of one HTTP attempt."""
        bucket = self._buckets.get(account)
        if throttled:
            if bucket is None:
                self._buckets[account] = _Bucket(self._initial * 0.5, self._now())
            else:
                bucket.rate = max(self._minimum, bucket.rate * 0.5)
            return
        if bucket is not None:
            bucket.rate += self._increase
            if bucket.rate >= self._maximum:
                del self._buckets[account]

    async def acquire(self, account: str) -> None:
        """Wait until ``account`` may send its next request."""
        bucket = self._buckets.get(account)
        if bucket is None:
            return
        now = self._now()
        start = max(now, bucket.next_at)
        bucket.next_at = start + 1.0 / bucket.rate
        if start > now:
            await self._sleep(start - now)

    @property
    def limited(self) -> int:
        """How many accounts are rate-limited now."""
        return len(self._buckets)

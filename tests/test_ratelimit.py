"""Per-account adaptive rate limiting, on a driven clock."""

from __future__ import annotations

from jobwatch.ratelimit import AccountRateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(t: FakeTime) -> AccountRateLimiter:
    return AccountRateLimiter(
        initial=4.0, minimum=0.5, maximum=4.0, increase=1.0, monotonic=t.monotonic, sleep=t.sleep
    )


async def test_unthrottled_accounts_never_wait() -> None:
    t = FakeTime()
    rl = limiter(t)
    for _ in range(100):
        await rl.acquire("a")
        rl.record("a", throttled=False)
    assert t.slept == []
    assert rl.rate("a") is None


async def test_throttles_halve_the_rate_of_that_account_only() -> None:
    t = FakeTime()
    rl = limiter(t)
    rl.record("a", throttled=True)
    assert rl.rate("a") == 2.0
    rl.record("a", throttled=True)
    assert rl.rate("a") == 1.0
    for _ in range(5):
        rl.record("a", throttled=True)
    assert rl.rate("a") == 0.5  # the floor
    assert rl.rate("b") is None
    assert rl.limited == 1
    # a's requests are spaced 2 s apart; b's are not delayed at all.
    for _ in range(3):
        await rl.acquire("a")
    assert t.slept == [2.0, 2.0]
    await rl.acquire("b")
    assert t.slept == [2.0, 2.0]


async def test_successes_restore_the_rate_then_lift_the_limit() -> None:
    t = FakeTime()
    rl = limiter(t)
    rl.record("a", throttled=True)  # 2.0
    rl.record("a", throttled=False)  # 3.0
    assert rl.rate("a") == 3.0
    rl.record("a", throttled=False)  # 4.0: at the maximum, unlimited again
    assert rl.rate("a") is None
    assert rl.limited == 0

"""CpuTurns: one CPU-heavy step per turn of the event loop, scrapes first, never stuck."""

from __future__ import annotations

import asyncio

import pytest

from jobwatch.turns import CpuTurns


async def test_a_turn_lasts_until_the_loop_came_round() -> None:
    turns = CpuTurns()
    log: list[str] = []

    async def heavy(name: str) -> None:
        async with turns.turn():
            log.append(name)

    async def light() -> None:
        for _ in range(3):
            log.append("light")
            await asyncio.sleep(0)

    await asyncio.gather(heavy("a"), heavy("b"), heavy("c"), light())
    # Without turns all three heavy steps would run back to back in the first turn.
    assert log.index("b") - log.index("a") > 1
    assert log.index("c") - log.index("b") > 1
    assert [x for x in log if x != "light"] == ["a", "b", "c"]


async def test_hold_goes_before_waiting_turns_and_keeps_them() -> None:
    turns = CpuTurns()
    log: list[str] = []
    release = asyncio.Event()

    async def long_step() -> None:
        async with turns.turn():
            log.append("a")
            await release.wait()

    async def heavy(name: str) -> None:
        async with turns.turn():
            log.append(name)

    async def scrape() -> None:
        async with turns.hold():
            log.append("scrape start")
            for _ in range(3):
                await asyncio.sleep(0)  # the loop turns, but no page gets a turn
            log.append("scrape end")

    a = asyncio.create_task(long_step())
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(heavy(n)) for n in ("b", "c")]
    await asyncio.sleep(0)
    s = asyncio.create_task(scrape())
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(a, s, *waiting)
    assert log == ["a", "scrape start", "scrape end", "b", "c"]


async def test_cancelled_waiters_do_not_keep_the_turn() -> None:
    turns = CpuTurns()
    release = asyncio.Event()
    done: list[str] = []

    async def holder() -> None:
        async with turns.hold():
            await release.wait()

    async def heavy(name: str) -> None:
        async with turns.turn():
            done.append(name)

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    b = asyncio.create_task(heavy("b"))
    c = asyncio.create_task(heavy("c"))
    await asyncio.sleep(0)
    b.cancel()
    release.set()
    await asyncio.gather(h, c)
    with pytest.raises(asyncio.CancelledError):
        await b
    assert done == ["c"]
    # Free again: a newcomer gets it at once.
    async with turns.turn():
        pass


async def test_a_waiter_cancelled_while_waiting_leaves_the_holder_alone() -> None:
    turns = CpuTurns()
    log: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.turn():
            log.append("a starts")
            await release.wait()
            log.append("a ends")

    async def heavy(name: str) -> None:
        async with turns.turn():
            log.append(name)

    a = asyncio.create_task(holder())
    await asyncio.sleep(0)
    b = asyncio.create_task(heavy("b"))
    await asyncio.sleep(0)
    b.cancel()  # cancelled in the queue: it must not pass on a turn it never had
    await asyncio.gather(b, return_exceptions=True)
    c = asyncio.create_task(heavy("c"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == ["a starts"]  # c waits: a still has the turn
    release.set()
    await asyncio.gather(a, c)
    assert log == ["a starts", "a ends", "c"]


async def test_a_waiter_cancelled_after_being_handed_the_turn_passes_it_on() -> None:
    turns = CpuTurns()
    done: list[str] = []

    async def heavy(name: str) -> None:
        async with turns.turn():
            done.append(name)

    async with turns.hold():
        b = asyncio.create_task(heavy("b"))
        c = asyncio.create_task(heavy("c"))
        await asyncio.sleep(0)  # both wait
    # The hold ended: b was handed the turn; cancel it before it runs.
    b.cancel()
    await asyncio.gather(b, c, return_exceptions=True)
    assert done == ["c"]


async def test_an_error_in_a_step_frees_the_turn() -> None:
    turns = CpuTurns()
    with pytest.raises(ZeroDivisionError):
        async with turns.turn():
            _ = 1 / 0
    async with asyncio.timeout(1):
        async with turns.hold():
            pass


async def test_finishing_steps_go_before_new_work_but_after_a_hold() -> None:
    turns = CpuTurns()
    log: list[str] = []
    release = asyncio.Event()

    async def long_step() -> None:
        async with turns.turn():
            log.append("parse 1")
            await release.wait()

    async def step(name: str, finishing: bool = False) -> None:
        async with turns.turn(finishing=finishing):
            log.append(name)

    async def scrape() -> None:
        async with turns.hold():
            log.append("scrape")

    first = asyncio.create_task(long_step())
    await asyncio.sleep(0)
    # Queued in this order while the first step holds the turn.
    queued = [
        asyncio.create_task(step("parse 2")),
        asyncio.create_task(step("convert 1", finishing=True)),
        asyncio.create_task(scrape()),
        asyncio.create_task(step("parse 3")),
        asyncio.create_task(step("convert 2", finishing=True)),
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *queued)
    assert log == ["parse 1", "scrape", "convert 1", "convert 2", "parse 2", "parse 3"]

"""The rate budget: the pace it grants, who goes first, and how it backs off and recovers (AIMD)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mcsdns.clients import budget as budget_module
from mcsdns.clients.budget import Priority, RateBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_grants_one_seconds_worth_then_nothing() -> None:
    clock = Clock()
    budget = RateBudget(10, clock=clock)
    assert [budget.try_take() for _ in range(11)] == [True] * 10 + [False]
    clock.now += 0.1  # 10/s: one more token
    assert budget.try_take()
    assert not budget.try_take()


def test_a_throttle_halves_the_rate_once_per_storm_down_to_the_floor() -> None:
    clock = Clock()
    budget = RateBudget(100, clock=clock)
    budget.throttled()
    budget.throttled()  # the same storm: counted once
    assert budget.allowed == 50
    for _ in range(20):
        clock.now += budget_module.DECREASE_EVERY
        budget.throttled()
    assert budget.allowed == pytest.approx(100 * budget_module.FLOOR_SHARE)


def test_the_rate_holds_then_climbs_back_linearly_to_the_budget() -> None:
    clock = Clock()
    budget = RateBudget(100, clock=clock)
    budget.throttled()
    clock.now += budget_module.HOLD - 0.5
    budget.try_take()
    assert budget.allowed == 50, "held while throttles are recent"
    clock.now += 0.5 + 5.0  # 5 s of climbing at 100/20 per second
    budget.try_take()
    assert budget.allowed == pytest.approx(75)
    clock.now += 60
    budget.try_take()
    assert budget.allowed == 100, "never above the budget"


def waiting_order(calls: list[tuple[str, Priority]]) -> list[str]:
    """The order in which ``calls``, all waiting for an empty budget, are granted."""

    async def main() -> list[str]:
        # The clock stands still until every call waits, so that no token refilled while the calls are
        # being made (a loaded machine) lets the first comers skip the queue.
        frozen = True
        started = time.monotonic()
        budget = RateBudget(200, clock=lambda: 0.0 if frozen else time.monotonic() - started)
        while budget.try_take():
            pass
        order: list[str] = []

        async def call(name: str, priority: Priority) -> None:
            await budget.take(priority)
            order.append(name)

        tasks = [asyncio.create_task(call(name, priority)) for name, priority in calls]
        await asyncio.sleep(0)  # each task runs to its wait
        assert budget.waiting == len(calls)
        frozen = False
        await asyncio.gather(*tasks)
        return order

    return asyncio.run(main())


def test_waiting_calls_take_weighted_turns_by_class_then_arrival() -> None:
    order = waiting_order(
        [
            ("sweep-1", Priority.SWEEP),
            ("change-1", Priority.CHANGE),
            ("write-1", Priority.WRITE),
            ("sweep-2", Priority.SWEEP),
            ("write-2", Priority.WRITE),
        ]
    )
    assert order == ["write-1", "change-1", "write-2", "sweep-1", "sweep-2"]


def test_a_flood_of_writes_leaves_reads_and_the_sweep_their_share() -> None:
    calls = [(f"w{i}", Priority.WRITE) for i in range(60)]
    calls += [(f"c{i}", Priority.CHANGE) for i in range(60)]
    calls += [(f"s{i}", Priority.SWEEP) for i in range(60)]
    first = waiting_order(calls)[:60]
    counts = {kind: sum(1 for name in first if name[0] == kind) for kind in "wcs"}
    # 3 : 2 : 1 while all three wait.
    expected = {"w": 30, "c": 20, "s": 10}
    assert counts == expected


def test_calls_are_paced_at_the_allowed_rate() -> None:
    async def main() -> float:
        budget = RateBudget(40)
        while budget.try_take():
            pass
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(budget.take() for _ in range(8)))
        return loop.time() - started

    assert 0.15 <= asyncio.run(main()) < 1.0  # 8 calls at 40/s: 0.2 s


def test_a_cancelled_waiter_does_not_take_a_token() -> None:
    async def main() -> int:
        budget = RateBudget(20)
        while budget.try_take():
            pass
        waiter = asyncio.ensure_future(budget.take())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(budget.take(), return_exceptions=True)
        return budget.waiting

    assert asyncio.run(main()) == 0


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateBudget(0)

"""One process's budget of Cloud Map calls per second: a token bucket every caller shares, served by
priority, that halves its rate when Cloud Map throttles and climbs back slowly (AIMD).

Why one budget and not a limit per operation only: Cloud Map's quotas are per account and Region, shared by
every cluster of the clusterset ("DiscoverInstances ... one token bucket for the whole Region", Cloud Map
Developer Guide, "Cloud Map API request throttling"), so what an operator sizes is what one process may spend
in all (docs/cloudmap-scale.md has the arithmetic). Inside it, callers take turns by class, weighted: while
all three wait, an export's writes get three calls in six, the reads a change asks for two, the background
sweep one. Weighted, not strict: a burst of 1,000 new exports must not stop this cluster from importing
what the others export, nor the sweep from bounding staleness; an idle class's turns go to the others.

AIMD (as TCP's congestion control and the AWS SDKs' adaptive retry mode do): each throttle halves the allowed
rate (at most once per ``DECREASE_EVERY`` s, so one storm of throttled calls counts once), down to
``FLOOR_SHARE`` of the budget; after ``HOLD`` s without a throttle it climbs back by ``1/RECOVER_SECONDS`` of
the budget per second. Pure arithmetic apart from ``take``, which sleeps; the clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from enum import IntEnum

FLOOR_SHARE = 0.05  # the allowed rate never falls below this share of the budget
DECREASE_EVERY = 1.0  # seconds: throttles closer together than this halve the rate once
HOLD = 5.0  # seconds without a throttle before the rate climbs again
RECOVER_SECONDS = 20.0  # from the floor back to the whole budget, linearly, takes about this long


class Priority(IntEnum):
    """The classes that share the budget when calls wait for it."""

    WRITE = 0  # an export's writes and its operation polls: what a user waits for
    CHANGE = 1  # reads a change asked for (a beacon named the service, a new service, an export's read)
    SWEEP = 2  # the background checks that bound staleness (and service lists)


# The turns of one round while every class waits (weighted round robin): 3 writes, 2 change reads, 1 sweep.
TURNS = (Priority.WRITE, Priority.CHANGE, Priority.WRITE, Priority.SWEEP, Priority.WRITE, Priority.CHANGE)


class RateBudget:
    """Calls per second for a whole process. ``take()`` before each call; ``throttled()`` when Cloud Map
    throttled one."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"a rate budget must be positive, not {rate}")
        self.limit = float(rate)
        self.allowed = float(rate)
        self.burst = max(1.0, self.limit)  # one second's worth: a cycle's calls start together
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._last_throttle = -float("inf")
        self._last_decrease = -float("inf")
        self._waiting: dict[Priority, collections.deque[asyncio.Future[None]]] = {
            priority: collections.deque() for priority in Priority
        }
        self._turn = 0
        self._pump: asyncio.Task[None] | None = None
        self.decreases = 0

    @property
    def waiting(self) -> int:
        return sum(1 for queue in self._waiting.values() for future in queue if not future.done())

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        if now - self._last_throttle > HOLD and self.allowed < self.limit:
            climbing_since = max(self._last_throttle + HOLD, now - elapsed)
            self.allowed = min(
                self.limit, self.allowed + self.limit / RECOVER_SECONDS * max(0.0, now - climbing_since)
            )
        self._tokens = min(self.burst, self._tokens + elapsed * self.allowed)

    def try_take(self) -> bool:
        """Take a token now if one is there and nobody waits; False otherwise."""
        self._refill()
        if self._tokens >= 1 and not any(self._waiting.values()):
            self._tokens -= 1
            return True
        return False

    async def take(self, priority: Priority = Priority.CHANGE) -> None:
        if self.try_take():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(future)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._serve())
        await future  # a cancelled waiter is skipped by the pump

    async def _serve(self) -> None:
        while (future := self._next()) is not None:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.allowed)
                self._refill()
            if not future.done():  # cancelled while it waited for the token: the next one gets it
                self._tokens -= 1
                future.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        """The next waiter by the weighted turns; a class with nobody waiting passes its turn on."""
        for queue in self._waiting.values():
            while queue and queue[0].done():
                queue.popleft()  # cancelled
        for _ in range(len(TURNS)):
            queue = self._waiting[TURNS[self._turn]]
            self._turn = (self._turn + 1) % len(TURNS)
            if queue:
                return queue.popleft()
        return None

    def throttled(self) -> None:
        """Cloud Map said slow down: halve the allowed rate (once per storm), and hold it a while."""
        self._refill()
        now = self._clock()
        self._last_throttle = now
        if now - self._last_decrease >= DECREASE_EVERY:
            self._last_decrease = now
            self.allowed = max(self.limit * FLOOR_SHARE, self.allowed / 2)
            self._tokens = min(self._tokens, 0.0)  # the calls already granted this second were too many
            self.decreases += 1

"""The one retry backoff of every loop that talks to an API: exponential, capped, with full jitter, reset
after a success.

Full jitter (the n-th delay is uniform in [0, min(cap, base * 2**n)]) is what AWS recommends for clients that
share a service ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015) and what client-go's
``wait.Backoff`` approximates with its Jitter factor: replicas that failed together do not retry together.
Pure: the delay is computed here, the caller sleeps (``sleep``) or schedules (``next_delay``).
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays for consecutive failures of one thing (a watch, an API call, one export)."""

    __slots__ = ("_base", "_cap", "_failures", "_rng")

    def __init__(self, base: float, cap: float, *, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, not base={base} cap={cap}")
        self._base, self._cap, self._failures = base, cap, 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The most the next delay can be: base * 2**failures, capped."""
        return float(min(self._cap, self._base * 2 ** min(self._failures, 64)))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before trying again."""
        delay = self._rng.uniform(0, self.ceiling())
        self._failures += 1
        return delay

    def reset(self) -> None:
        """A success: the next failure starts from ``base`` again."""
        self._failures = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

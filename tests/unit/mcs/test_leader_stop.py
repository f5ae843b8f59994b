"""A leader loop stops when cancelled even if its API call fails at that very moment: SIGTERM during an API
outage used to hang mcsdns, as Python 3.11's ``asyncio.wait_for`` lost the cancellation (gh-86296)."""

from __future__ import annotations

import asyncio
from typing import Any

from mcsdns.errors import SourceError
from mcsdns.mcs.leader import LeaderElector
from mcsdns.settings import LeaseSettings


class FailingAsCancelled:
    """A Lease store whose get fails in the same loop turn as the caller is cancelled: what an
    unreachable API server does when SIGTERM arrives while a request is on its way to fail."""

    def __init__(self) -> None:
        self.pending: asyncio.Future[Any] | None = None

    async def get(self, namespace: str, name: str) -> Any:
        self.pending = asyncio.get_running_loop().create_future()
        return await self.pending

    async def create(self, namespace: str, body: Any) -> Any:
        raise SourceError("unreachable", source="kubernetes")

    async def replace(self, namespace: str, name: str, body: Any) -> Any:
        raise SourceError("unreachable", source="kubernetes")


async def _cancel_while_failing() -> bool:
    store = FailingAsCancelled()
    elector = LeaderElector(store, LeaseSettings(duration=3.0, renew_deadline=2.0), identity="me")
    task = asyncio.create_task(elector.run())
    while store.pending is None:
        await asyncio.sleep(0)
    store.pending.set_exception(SourceError("connection refused", source="kubernetes"))
    task.cancel()
    try:
        async with asyncio.timeout(2.0):
            await task
    except asyncio.CancelledError:
        return True
    except TimeoutError:
        task.cancel()
        return False
    return True


def test_a_leader_loop_stops_when_cancelled_as_its_call_fails() -> None:
    assert asyncio.run(_cancel_while_failing()), "the loop went on after it was cancelled"

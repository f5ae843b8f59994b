"""The export work queue: fair across namespaces, changes before resyncs, each key once."""

from __future__ import annotations

import asyncio

from mcsdns.mcs.workqueue import FairQueue


def drain(queue: FairQueue[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    while (key := queue.get_nowait()) is not None:
        out.append(key)
    return out


def test_a_bulk_namespace_does_not_hold_up_another() -> None:
    queue: FairQueue[tuple[str, str]] = FairQueue()
    for i in range(100):
        queue.put(("bulk", f"s{i}"))
    queue.put(("team", "api"))
    order = drain(queue)
    assert order.index(("team", "api")) == 1, "one turn per busy namespace, not after the 100"
    assert [k for k in order if k[0] == "bulk"] == [("bulk", f"s{i}") for i in range(100)], "FIFO within one"


def test_changes_go_before_resyncs_and_a_resync_that_changes_moves_up() -> None:
    queue: FairQueue[tuple[str, str]] = FairQueue()
    queue.put(("a", "1"), resync=True)
    queue.put(("a", "2"), resync=True)
    queue.put(("b", "1"))
    queue.put(("a", "2"))  # changed while waiting as a resync
    queue.put(("b", "1"), resync=True)  # already queued as a change: stays one
    assert len(queue) == 3
    assert drain(queue) == [("b", "1"), ("a", "2"), ("a", "1")]


def test_get_waits_for_a_key() -> None:
    async def main() -> tuple[str, str]:
        queue: FairQueue[tuple[str, str]] = FairQueue()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, queue.put, ("ns", "late"))
        return await asyncio.wait_for(queue.get(), 2)

    assert asyncio.run(main()) == ("ns", "late")

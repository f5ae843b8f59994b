"""The export controller's work queue: fair across namespaces, changes before resyncs, each key once.

Why not FIFO: Cloud Map calls are rationed (clients/budget.py), so a burst of 1,000 new ServiceExports in one
namespace takes minutes to register. In a FIFO queue an export made in another namespace a second later would
wait for all of them; here every namespace with work takes a turn (round robin, as Kubernetes' API Priority
and Fairness shares a server between flows), so one team's bulk export delays another's by one turn per busy
namespace. Resyncs (drift repair) wait until no change is queued. A key already queued is not queued twice;
one queued as a resync that changes moves up to the changes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=tuple[str, str])
CHANGE, RESYNC = 0, 1


class FairQueue(Generic[K]):
    """Keys ``(namespace, name)``; ``get()`` returns the next key by class, then namespace turn, then age."""

    def __init__(self) -> None:
        # Per class: namespace → its keys in arrival order; the namespaces in turn order.
        self._keys: tuple[dict[str, dict[K, None]], ...] = ({}, {})
        self._turns: tuple[collections.deque[str], ...] = (collections.deque(), collections.deque())
        self._queued: dict[K, int] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._queued

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._queued))

    def put(self, key: K, *, resync: bool = False) -> None:
        wanted = RESYNC if resync else CHANGE
        queued = self._queued.get(key)
        if queued is not None and queued <= wanted:
            return  # already waiting, as urgently or more
        if queued is not None:
            self._drop(key, queued)
        self._queued[key] = wanted
        namespaces = self._keys[wanted]
        if key[0] not in namespaces:
            namespaces[key[0]] = {}
            self._turns[wanted].append(key[0])
        namespaces[key[0]][key] = None
        self._ready.set()

    def _drop(self, key: K, klass: int) -> None:
        keys = self._keys[klass][key[0]]
        del keys[key]
        if not keys:
            del self._keys[klass][key[0]]
            self._turns[klass].remove(key[0])

    def get_nowait(self) -> K | None:
        for klass in (CHANGE, RESYNC):
            turns = self._turns[klass]
            if not turns:
                continue
            namespace = turns.popleft()
            keys = self._keys[klass][namespace]
            key = next(iter(keys))
            del keys[key]
            if keys:
                turns.append(namespace)  # its next key waits for every other namespace's turn
            else:
                del self._keys[klass][namespace]
            del self._queued[key]
            return key
        self._ready.clear()
        return None

    async def get(self) -> K:
        while True:
            key = self.get_nowait()
            if key is not None:
                return key
            await self._ready.wait()

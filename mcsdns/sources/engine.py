"""Sources → state → snapshot → publish: the loop that keeps the zone current.

Changes from every source land in one queue; the engine applies them to ``ClusterSetState``, coalesces
what arrives within a short window, renders only the services that changed (in a worker thread, so a
large rebuild does not stall the packet path for long) and publishes on the event-loop thread. Nothing is
published until every source has listed once: until then the server answers SERVFAIL, because a partial
zone would deny names that exist. A source that fails is logged and keeps its last records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mcsdns.sources.events import Change, Contact, Listed, Retune, Source
from mcsdns.sources.state import ClusterSetState
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.model import ServiceKey
from mcsdns.zone.store import ZoneStore

logger = logging.getLogger(__name__)

BATCH_WINDOW = 0.01  # seconds to wait for more changes before rendering (a relist arrives in bursts)


@dataclass(slots=True)
class SourceStats:
    events: int = 0
    listed: bool = False
    last_change: float = 0.0  # Unix time
    up: bool = True  # the last contact with the backend worked (or none failed yet)
    last_success: float = 0.0  # Unix time of the last good list, poll or watch event; 0: none yet
    failure: str = ""  # why the last contact failed, while it is down

    def stale_for(self, now: float) -> float | None:
        """Seconds the zone has not been refreshed from this source while it is down; None when it is up."""
        if self.up:
            return None
        return now - self.last_success if self.last_success else float("inf")


class SyncEngine:
    def __init__(
        self,
        *,
        store: ZoneStore,
        builder: ZoneBuilder,
        sources: Sequence[Source],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._builder = builder
        self._sources = tuple(sources)
        self._clock = clock
        self._state = ClusterSetState()
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._serial = 0
        self.stats = {str(source.name): SourceStats() for source in self._sources}

    @property
    def waiting_for(self) -> list[str]:
        """The sources that have not listed yet (why the zone is not served)."""
        return sorted(s.name for s in self._sources if s.name not in self._state.listed)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for source in self._sources:
                group.create_task(source.run(self._queue.put_nowait), name=f"source {source.name}")
            group.create_task(self._publish_loop(), name="publish")

    def retune(self, *, ttl: int | None = None, local_cluster: str | None = None) -> None:
        """Render every service again with a new TTL or preferred cluster, in the next publish."""
        self._queue.put_nowait(Retune(ttl=ttl, local_cluster=local_cluster))

    def _apply(self, change: Change) -> set[ServiceKey]:
        if isinstance(change, Retune):  # applied between builds, never while one runs in its thread
            return self._builder.retune(ttl=change.ttl, local_cluster=change.local_cluster)
        stats = self.stats.setdefault(str(change.source), SourceStats())
        # Any change is news from the backend, so the source is up; a Contact says so, or why it is not.
        failure = change.failure if isinstance(change, Contact) else ""
        if failure:
            if stats.up:  # once per outage: the client logs its retries
                then = "serving the last good zone" if stats.listed else "nothing from it to serve yet"
                logger.warning("%s: %s; %s", change.source, failure, then)
        else:
            if not stats.up:
                logger.info("%s: reachable again", change.source)
            stats.last_success = self._clock()
        stats.up, stats.failure = not failure, failure
        if isinstance(change, Contact):
            return set()
        stats.events += 1
        stats.last_change = self._clock()
        stats.listed = stats.listed or isinstance(change, Listed)
        return self._state.apply(change)

    async def _publish_loop(self) -> None:
        dirty: set[ServiceKey] = set()
        loop = asyncio.get_running_loop()
        while True:
            dirty |= self._apply(await self._queue.get())
            deadline = loop.time() + BATCH_WINDOW
            while True:
                try:
                    change = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:  # not wait_for: on 3.11 it can drop an item got as the timeout fires (gh-86296)
                        async with asyncio.timeout(remaining):
                            change = await self._queue.get()
                    except TimeoutError:
                        break
                dirty |= self._apply(change)
            if self.waiting_for or (not dirty and self._store.current is not None):
                continue
            services = {key: self._state.service(key) for key in dirty}
            dirty = set()
            self._serial = max(self._serial + 1, int(self._clock()))  # RFC 1982: the serial only grows
            snapshot = await asyncio.to_thread(self._builder.build, services, serial=self._serial)
            self._store.publish(snapshot)

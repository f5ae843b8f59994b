"""The published zone: one reference the query path reads once per packet.

``publish`` runs on the event-loop thread only, so a packet handled there sees either the old or the new
snapshot, never a mix. Before the first publish ``current`` is None and in-zone queries get SERVFAIL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mcsdns.zone.snapshot import ZoneSnapshot

logger = logging.getLogger(__name__)


class ZoneStore:
    def __init__(self) -> None:
        self.current: ZoneSnapshot | None = None
        self._listeners: list[Callable[[ZoneSnapshot], None]] = []

    def publish(self, snapshot: ZoneSnapshot) -> None:
        first = self.current is None
        self.current = snapshot
        logger.info(
            "%s zone serial %d: %d services, %d names, %d answers",
            "serving" if first else "published",
            snapshot.serial,
            snapshot.services,
            len(snapshot.names),
            len(snapshot.answers),
        )
        for listener in self._listeners:
            listener(snapshot)

    def subscribe(self, listener: Callable[[ZoneSnapshot], None]) -> None:
        """Call ``listener`` after every publish (tests and metrics wait on serials this way)."""
        self._listeners.append(listener)

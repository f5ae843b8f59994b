"""The only currency between sources and the engine: changes to the objects a source reports.

``Listed`` replaces everything a source said before (at start and after a relist, e.g. a 410 Gone), so
deletions missed while disconnected are not lost; ``Upserted``/``Deleted`` are single watch events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NewType, Protocol

from mcsdns.sources.objects import ObjectRef, Record

SourceName = NewType("SourceName", str)


@dataclass(frozen=True, slots=True)
class Listed:
    source: SourceName
    records: Mapping[ObjectRef, Record]


@dataclass(frozen=True, slots=True)
class Upserted:
    source: SourceName
    ref: ObjectRef
    record: Record


@dataclass(frozen=True, slots=True)
class Deleted:
    source: SourceName
    ref: ObjectRef


@dataclass(frozen=True, slots=True)
class Contact:
    """Whether a source reaches its backend: ``failure`` empty after a good list, poll or watch event, else
    the error, one line. Changes nothing in the zone; the engine keeps it for /readyz and /metrics, so an
    outage is visible while the last good zone keeps serving."""

    source: SourceName
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Retune:
    """Not from a source: how the zone is rendered changed (a reloaded ``--ttl``, the cluster that
    ``--prefer-local-cluster`` prefers, learnt late), so every service is rendered again."""

    ttl: int | None = None
    local_cluster: str | None = None
    source: SourceName = SourceName("zone settings")


Change = Listed | Upserted | Deleted | Contact | Retune
Emit = Callable[[Change], None]


class Source(Protocol):
    """Something that reports ServiceImports and EndpointSlices; runs until cancelled."""

    @property
    def name(self) -> SourceName: ...

    async def run(self, emit: Emit) -> None:
        """Call ``emit`` on the event-loop thread for every change, starting with one ``Listed``."""
        ...

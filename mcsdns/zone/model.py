"""What the zone is built from: imported services and their endpoints, as frozen values.

Sources (manifests, Kubernetes, Cloud Map) convert their objects into these at their boundary; nothing
below this point sees a client library's objects or a raw manifest. Pure data: no I/O, no asyncio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

ClusterId = NewType("ClusterId", str)


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServiceType(enum.Enum):
    CLUSTERSET_IP = "ClusterSetIP"
    HEADLESS = "Headless"


@dataclass(frozen=True, slots=True, order=True)
class Port:
    """A service or endpoint port. ``name`` is "" for an unnamed port, which gets no SRV record."""

    name: str
    protocol: str  # TCP | UDP | SCTP
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One EndpointSlice endpoint of one source cluster."""

    cluster: ClusterId
    addresses: tuple[str, ...]
    hostname: str = ""
    ready: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceImport:
    """A ServiceImport's spec: what the clusterset says the service is."""

    key: ServiceKey
    type: ServiceType
    ips: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointGroup:
    """The endpoints one EndpointSlice contributes to a service, with the slice's ports."""

    service: ServiceKey
    cluster: ClusterId
    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedService:
    """Everything the zone needs about one service: its import and the endpoint groups of every cluster."""

    spec: ServiceImport
    groups: tuple[EndpointGroup, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return self.spec.key

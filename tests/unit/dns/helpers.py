"""A zone written as a few readable lines, built and published the way the product does it.

``Svc("web.prod", "ClusterSetIP", ips=[...], ports=["http:80/TCP", "9090/TCP"])`` is a ServiceImport;
``clusters={"cls1": ["10.1.0.10 host=db-0", "10.1.0.12 not-ready"]}`` adds one EndpointSlice per cluster,
each endpoint as ``ADDRESS[,ADDRESS] [host=HOSTNAME] [not-ready]``. ``publish`` turns the description
into ``zone.model`` values, renders them with ``ZoneBuilder`` and publishes the snapshot on a
``ZoneStore`` (what ``sources.engine`` does after its sources have listed). Also here: raw query bytes
for the packets dnspython will not make, and replies as zone-file lines.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dns.rrset

from mcsdns.settings import ZoneSettings
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.model import (
    ClusterId,
    Endpoint,
    EndpointGroup,
    ImportedService,
    Port,
    ServiceImport,
    ServiceKey,
    ServiceType,
)
from mcsdns.zone.store import ZoneStore


@dataclass(frozen=True)
class Svc:
    """One imported service: ``name`` is ``<svc>.<ns>``; ``endpoint_ports`` are the slices' ports
    (default: the service's, as an EndpointSlice normally carries them)."""

    name: str
    type: str  # "ClusterSetIP" | "Headless"
    ips: Sequence[str] = ()
    ports: Sequence[str] = ()
    clusters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    endpoint_ports: Sequence[str] | None = None


def port(text: str) -> Port:
    """``"http:80/TCP"`` → a named port; ``"9090/TCP"`` → an unnamed one."""
    name, _, rest = text.rpartition(":")
    number, _, protocol = rest.partition("/")
    return Port(name, protocol or "TCP", int(number))


def endpoint(cluster: str, text: str) -> Endpoint:
    """``"10.1.0.10,fd00::10 host=db-0 not-ready"`` → an Endpoint of ``cluster``."""
    addresses, *flags = text.split()
    hostname, ready = "", True
    for flag in flags:
        if flag.startswith("host="):
            hostname = flag.removeprefix("host=")
        elif flag == "not-ready":
            ready = False
        else:
            raise ValueError(f"unknown endpoint flag {flag!r} in {text!r}")
    return Endpoint(
        cluster=ClusterId(cluster), addresses=tuple(addresses.split(",")), hostname=hostname, ready=ready
    )


def imported(svc: Svc) -> ImportedService:
    name, namespace = svc.name.split(".")
    key = ServiceKey(namespace, name)
    ports = tuple(port(text) for text in svc.ports)
    slice_ports = ports if svc.endpoint_ports is None else tuple(port(text) for text in svc.endpoint_ports)
    return ImportedService(
        spec=ServiceImport(key=key, type=ServiceType(svc.type), ips=tuple(svc.ips), ports=ports),
        groups=tuple(
            EndpointGroup(
                service=key,
                cluster=ClusterId(cluster),
                ports=slice_ports,
                endpoints=tuple(endpoint(cluster, text) for text in endpoints),
            )
            for cluster, endpoints in svc.clusters.items()
        ),
    )


def publish(services: Iterable[Svc], settings: ZoneSettings, *, serial: int) -> ZoneStore:
    """A store serving ``services``: one ``ZoneBuilder.build`` and one ``ZoneStore.publish``."""
    changes: dict[ServiceKey, ImportedService | None] = {}
    for svc in services:
        service = imported(svc)
        changes[service.key] = service
    store = ZoneStore()
    store.publish(ZoneBuilder(settings).build(changes, serial=serial))
    return store


# --- raw packets --------------------------------------------------------------------------------------------


def header(
    *, qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    """A 12-octet DNS header (RFC 1035 §4.1.1); ``flags`` 0x0100 is a plain query with RD."""
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: str, qtype: int = 1, qclass: int = 1) -> bytes:
    """A question section entry with the name's labels exactly as given (no case folding)."""
    labels = [label.encode() for label in name.rstrip(".").split(".") if label]
    return (
        b"".join(bytes((len(label),)) + label for label in labels)
        + b"\x00"
        + struct.pack("!HH", qtype, qclass)
    )


def question_end(wire: bytes) -> int:
    """The offset after the first question of a well-formed query (uncompressed labels only)."""
    pos = 12
    while wire[pos]:
        pos += wire[pos] + 1
    return pos + 5


def lines(section: Iterable[dns.rrset.RRset]) -> list[str]:
    """A reply section as sorted zone-file lines, names in the case the reply carries them."""
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())

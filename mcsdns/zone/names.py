"""The names of the MCS DNS schema (KEP-1645 specification.md §2), as label tuples.

``Name`` values are tuples of lower-cased ASCII labels without the root; ``wire.name_to_wire`` turns them
into bytes. Matching is case-insensitive (Kubernetes DNS spec §2.1), so every name is lower-cased here,
once, at build time.
"""

from __future__ import annotations

import re

from mcsdns.wire import MAX_LABEL, Name
from mcsdns.zone.model import ClusterId, Endpoint, Port, ServiceKey

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_PROTOCOLS = {"TCP": b"_tcp", "UDP": b"_udp", "SCTP": b"_sctp"}


def is_label(text: str) -> bool:
    """A DNS label as Kubernetes names use them (RFC 1123, lower-case after folding)."""
    return bool(_LABEL.match(text.lower()))


def service_name(zone: Name, key: ServiceKey) -> Name:
    """``<svc>.<ns>.svc.<zone>`` (spec §2.3.1)."""
    return (key.name.lower().encode(), key.namespace.lower().encode(), b"svc", *zone)


def namespace_name(zone: Name, namespace: str) -> Name:
    return (namespace.lower().encode(), b"svc", *zone)


def srv_name(service: Name, port: Port) -> Name | None:
    """``_<port>._<proto>.<service>`` (spec §2.3.2), or None: unnamed ports have no SRV record."""
    proto = _PROTOCOLS.get(port.protocol.upper())
    if not port.name or proto is None or not is_label(port.name):
        return None
    return (b"_" + port.name.lower().encode(), proto, *service)


def cluster_labels(cluster: ClusterId) -> Name | None:
    """A cluster id as labels: one, or two joined by a dot (KEP-1645 README §"Cluster ID"); else None."""
    labels = cluster.lower().split(".")
    if not 1 <= len(labels) <= 2 or not all(is_label(label) for label in labels):
        return None
    return tuple(label.encode() for label in labels)


def endpoint_hostname(endpoint: Endpoint) -> bytes:
    """The endpoint's ``hostname``, else its first address with ``.``/``:`` → ``-`` (spec §2.4.1).

    The spec leaves the fallback to the implementation; CoreDNS and the mcs-api conformance suite use the
    dashed IP, so clients written against either keep working. Like CoreDNS, a trailing ``-`` (an IPv6
    address ending in ``::``) gets a ``0`` so the label is a valid hostname.
    """
    if endpoint.hostname and is_label(endpoint.hostname) and len(endpoint.hostname) <= MAX_LABEL:
        return endpoint.hostname.lower().encode()
    dashed = endpoint.addresses[0].lower().replace(".", "-").replace(":", "-")
    if dashed.endswith("-"):
        dashed += "0"
    return dashed.encode()

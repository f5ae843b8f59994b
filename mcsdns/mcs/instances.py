"""Cloud Map instances ↔ exported endpoints: the attribute contract shared with the AWS controller.

One instance per (endpoint address x port), with the attribute keys the AWS Cloud Map MCS controller
writes and reads (reference/aws-cloudmap-mcs-controller.md §1.7), so a clusterset can mix both. Pure: no
boto3 here; ``sync.cloudmap`` moves the attribute maps.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from mcsdns import __version__

IPV4 = "AWS_INSTANCE_IPV4"
IPV6 = "AWS_INSTANCE_IPV6"
PORT = "AWS_INSTANCE_PORT"
ENDPOINT_PORT_NAME = "ENDPOINT_PORT_NAME"
ENDPOINT_PROTOCOL = "ENDPOINT_PROTOCOL"
SERVICE_PORT_NAME = "SERVICE_PORT_NAME"
SERVICE_PORT = "SERVICE_PORT"
SERVICE_TARGET_PORT = "SERVICE_TARGET_PORT"
SERVICE_PROTOCOL = "SERVICE_PROTOCOL"
SERVICE_TYPE = "SERVICE_TYPE"
CLUSTER_ID = "CLUSTER_ID"
CLUSTERSET_ID = "CLUSTERSET_ID"
EXPORT_CREATED = "SERVICE_EXPORT_CREATION_TIMESTAMP"
READY = "READY"
HOSTNAME = "HOSTNAME"
NODENAME = "NODENAME"
CONTROLLER = "K8S_CONTROLLER"

CONTROLLER_NAME = f"mcsdns {__version__}"
# Keys compared when deciding whether an instance must be registered again. K8S_CONTROLLER is left out so
# an upgrade does not re-register every instance; keys other writers add are never compared (the AWS
# controller re-registers on any difference, reference §1.8, issue #312).
COMPARED = (
    IPV4,
    IPV6,
    PORT,
    ENDPOINT_PORT_NAME,
    ENDPOINT_PROTOCOL,
    SERVICE_PORT_NAME,
    SERVICE_PORT,
    SERVICE_TARGET_PORT,
    SERVICE_PROTOCOL,
    SERVICE_TYPE,
    CLUSTER_ID,
    CLUSTERSET_ID,
    EXPORT_CREATED,
    READY,
    HOSTNAME,
    NODENAME,
)
OURS = (*COMPARED, CONTROLLER)
MAX_INSTANCE_ID = 64  # Cloud Map: InstanceId is at most 64 characters


class InvalidInstance(ValueError):
    """An instance lacks an attribute the import needs, or has one that does not parse."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedEndpoint:
    """What one Cloud Map instance says: an endpoint address and port of a service in one cluster."""

    cluster_id: str
    clusterset_id: str
    address: str
    port: int  # the endpoint (target) port
    endpoint_port_name: str
    protocol: str
    service_port_name: str
    service_port: int
    service_target_port: str
    service_protocol: str
    service_type: str  # ClusterSetIP | Headless
    ready: bool
    hostname: str = ""
    nodename: str = ""
    export_created_ms: int = 0

    @property
    def ipv6(self) -> bool:
        return ":" in self.address

    def attributes(self) -> dict[str, str]:
        return {
            IPV6 if self.ipv6 else IPV4: self.address,
            PORT: str(self.port),
            ENDPOINT_PORT_NAME: self.endpoint_port_name,
            ENDPOINT_PROTOCOL: self.protocol,
            SERVICE_PORT_NAME: self.service_port_name,
            SERVICE_PORT: str(self.service_port),
            SERVICE_TARGET_PORT: self.service_target_port,
            SERVICE_PROTOCOL: self.service_protocol,
            SERVICE_TYPE: self.service_type,
            CLUSTER_ID: self.cluster_id,
            CLUSTERSET_ID: self.clusterset_id,
            EXPORT_CREATED: str(self.export_created_ms),
            READY: "true" if self.ready else "false",
            HOSTNAME: self.hostname,
            NODENAME: self.nodename,
            CONTROLLER: CONTROLLER_NAME,
        }

    def instance_id(self) -> str:
        """Cluster-scoped: the AWS format ``tcp-10_0_0_1-80`` collides when two clusters reuse an IP.

        ``<proto>-<ip>-<port>-<cluster>``, with the cluster id hashed when the whole would pass 64
        characters (ids may be 128 long).
        """
        base = f"{self.protocol.lower()}-{self.address.replace('.', '_').replace(':', '_')}-{self.port}"
        candidate = f"{base}-{self.cluster_id}"
        if len(candidate) <= MAX_INSTANCE_ID:
            return candidate
        return f"{base}-{hashlib.sha256(self.cluster_id.encode()).hexdigest()[:12]}"


def _required(attributes: Mapping[str, str], key: str) -> str:
    value = attributes.get(key)
    if value is None:
        raise InvalidInstance(f"missing {key}")
    return value


def _number(attributes: Mapping[str, str], key: str, *, low: int = 0, high: int = 65535) -> int:
    text = _required(attributes, key)
    try:
        value = int(text)
    except ValueError:
        raise InvalidInstance(f"{key}={text!r} is not a number") from None
    if not low <= value <= high:
        raise InvalidInstance(f"{key}={value} is out of range")
    return value


def from_attributes(attributes: Mapping[str, str]) -> ExportedEndpoint:
    """Read an instance written by mcsdns or by the AWS controller (same required keys, §1.7)."""
    address = attributes.get(IPV4) or attributes.get(IPV6)  # the AWS controller prefers IPv4 when both
    if not address:
        raise InvalidInstance(f"missing {IPV4} and {IPV6}")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInstance(f"{address!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        # fe80::1%eth0 parses, but no endpoint has a zone index, and the text (unbounded) would go into the
        # instance id and the dashed hostname of its DNS name (fuzz/cloudmap.py).
        raise InvalidInstance(f"{address!r} has a zone index, not an endpoint address")
    address = str(ip)
    service_type = _required(attributes, SERVICE_TYPE)
    if service_type not in ("ClusterSetIP", "Headless"):
        raise InvalidInstance(f"{SERVICE_TYPE}={service_type!r}")
    protocol = _required(attributes, ENDPOINT_PROTOCOL).upper()
    service_protocol = _required(attributes, SERVICE_PROTOCOL).upper()
    if protocol not in ("TCP", "UDP", "SCTP") or service_protocol not in ("TCP", "UDP", "SCTP"):
        raise InvalidInstance(f"unknown protocol {protocol!r}/{service_protocol!r}")
    return ExportedEndpoint(
        cluster_id=_required(attributes, CLUSTER_ID),
        clusterset_id=_required(attributes, CLUSTERSET_ID),
        address=address,
        port=_number(attributes, PORT, low=1),
        endpoint_port_name=_required(attributes, ENDPOINT_PORT_NAME),
        protocol=protocol,
        service_port_name=_required(attributes, SERVICE_PORT_NAME),
        service_port=_number(attributes, SERVICE_PORT, low=1),
        service_target_port=_required(attributes, SERVICE_TARGET_PORT),
        service_protocol=service_protocol,
        service_type=service_type,
        ready=_required(attributes, READY).lower() == "true",
        hostname=attributes.get(HOSTNAME, ""),
        nodename=attributes.get(NODENAME, ""),
        export_created_ms=_number(attributes, EXPORT_CREATED, high=2**63),
    )


def needs_register(current: Mapping[str, str] | None, desired: Mapping[str, str]) -> bool:
    """Whether an instance must be (re-)registered: only the keys we own and compare count."""
    if current is None:
        return True
    return any(current.get(key, "") != desired.get(key, "") for key in COMPARED)


def merged_attributes(current: Mapping[str, str] | None, desired: Mapping[str, str]) -> dict[str, str]:
    """RegisterInstance replaces every attribute: keep what other writers added, ours on top."""
    kept = {k: v for k, v in (current or {}).items() if k not in OURS}
    return {**kept, **desired}

"""Cloud Map instances ↔ exported endpoints: the attribute contract shared with the AWS controller.

One instance per (endpoint address x port), with the attribute keys the AWS Cloud Map MCS controller
writes and reads (reference/aws-cloudmap-mcs-controller.md §1.7), so a clusterset can mix both. Pure: no
boto3 here; ``sync.cloudmap`` moves the attribute maps.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

# mcsdns's own keys: what mcs-api v1beta1 carries from the exported Service (and its ServiceExport) to every
# ServiceImport. The AWS controller has no key for any of them (it never sets these fields, reference §2.8)
# and reads only the keys it knows, so a mixed clusterset keeps working; an instance without them (the AWS
# controller's, or a plain Service's) means the Kubernetes defaults. Written only when not the default, so
# the instances of a plain Service look exactly as before and an upgrade re-registers nothing.
IP_FAMILIES = "MCSDNS_IP_FAMILIES"  # "IPv4,IPv6": the exported Service's families, primary first
SESSION_AFFINITY = "MCSDNS_SESSION_AFFINITY"  # ClientIP (None is the default)
SESSION_AFFINITY_TIMEOUT = "MCSDNS_SESSION_AFFINITY_TIMEOUT"  # seconds, with ClientIP
INTERNAL_TRAFFIC_POLICY = "MCSDNS_INTERNAL_TRAFFIC_POLICY"  # Local (Cluster is the default)
TRAFFIC_DISTRIBUTION = "MCSDNS_TRAFFIC_DISTRIBUTION"  # e.g. PreferClose
EXPORTED_LABELS = "MCSDNS_EXPORTED_LABELS"  # ServiceExport spec.exportedLabels, as compact JSON
EXPORTED_ANNOTATIONS = "MCSDNS_EXPORTED_ANNOTATIONS"  # spec.exportedAnnotations, likewise
PROPERTY_KEYS = (
    IP_FAMILIES,
    SESSION_AFFINITY,
    SESSION_AFFINITY_TIMEOUT,
    INTERNAL_TRAFFIC_POLICY,
    TRAFFIC_DISTRIBUTION,
    EXPORTED_LABELS,
    EXPORTED_ANNOTATIONS,
)
MAX_ATTRIBUTE_VALUE = 1024  # Cloud Map: an attribute value is at most 1,024 characters

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
    *PROPERTY_KEYS,
)
OURS = (*COMPARED, CONTROLLER)
MAX_INSTANCE_ID = 64  # Cloud Map: InstanceId is at most 64 characters


class InvalidInstance(ValueError):
    """An instance lacks an attribute the import needs, or has one that does not parse."""


Pairs = tuple[tuple[str, str], ...]
_TIMEOUT = re.compile(r"[0-9]{1,5}")


def family(address: str) -> str:
    """An address's Kubernetes IP family name (``IPv4``/``IPv6``)."""
    return "IPv6" if ":" in address else "IPv4"


def _compact_json(pairs: Pairs) -> str:
    """The map as written into an attribute: compact, sorted, so equal maps are equal strings."""
    return json.dumps(dict(pairs), separators=(",", ":"), sort_keys=True)


def _pairs(text: str | None) -> Pairs:
    """A JSON object of strings (exportedLabels/Annotations); anything else reads as none, and so does a
    value longer than Cloud Map holds (what is written is read back the same)."""
    if not text or len(text) > MAX_ATTRIBUTE_VALUE:
        return ()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested past the parser's depth
        return ()
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items() if isinstance(v, str)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceProperties:
    """What an export says about its Service beyond type and ports, carried to the ServiceImport (mcs-api
    v1beta1 ``ipFamilies``, ``sessionAffinity(Config)``, ``internalTrafficPolicy``, ``trafficDistribution``
    and the ServiceExport's ``exportedLabels``/``exportedAnnotations``). KEP-1645: the oldest export's win;
    a difference is a conflict, reported with the reason mcs-api names."""

    ip_families: tuple[str, ...] = ("IPv4",)
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    internal_traffic_policy: str = "Cluster"
    traffic_distribution: str = ""
    labels: Pairs = ()
    annotations: Pairs = ()

    @classmethod
    def of(cls, service: Mapping[str, Any], export: Mapping[str, Any]) -> ServiceProperties:
        spec = service.get("spec") or {}
        export_spec = export.get("spec") or {}
        families = tuple(str(f) for f in spec.get("ipFamilies") or ()) or ("IPv4",)
        affinity = str(spec.get("sessionAffinity") or "None")
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        return cls(
            ip_families=families,
            session_affinity=affinity,
            session_affinity_timeout=int(timeout) if affinity == "ClientIP" and timeout is not None else None,
            internal_traffic_policy=str(spec.get("internalTrafficPolicy") or "Cluster"),
            traffic_distribution=str(spec.get("trafficDistribution") or ""),
            labels=tuple(sorted((export_spec.get("exportedLabels") or {}).items())),
            annotations=tuple(sorted((export_spec.get("exportedAnnotations") or {}).items())),
        )

    def attributes(self, address: str) -> dict[str, str]:
        """The non-default properties as Cloud Map attributes; a map too long for one value is left out
        (``too_long`` says which), the rest still exported."""
        out: dict[str, str] = {}
        if self.ip_families != (family(address),):
            out[IP_FAMILIES] = ",".join(self.ip_families)
        if self.session_affinity != "None":
            out[SESSION_AFFINITY] = self.session_affinity
            if self.session_affinity_timeout is not None:
                out[SESSION_AFFINITY_TIMEOUT] = str(self.session_affinity_timeout)
        if self.internal_traffic_policy != "Cluster":
            out[INTERNAL_TRAFFIC_POLICY] = self.internal_traffic_policy
        if self.traffic_distribution:
            out[TRAFFIC_DISTRIBUTION] = self.traffic_distribution
        for key, pairs in ((EXPORTED_LABELS, self.labels), (EXPORTED_ANNOTATIONS, self.annotations)):
            text = _compact_json(pairs)
            if pairs and len(text) <= MAX_ATTRIBUTE_VALUE:
                out[key] = text
        return out

    def too_long(self) -> list[str]:
        """The maps that do not fit one Cloud Map attribute value (1,024 characters) and are not exported."""
        return [
            name
            for name, pairs in (("exportedLabels", self.labels), ("exportedAnnotations", self.annotations))
            if len(_compact_json(pairs)) > MAX_ATTRIBUTE_VALUE
        ]

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str], address: str) -> ServiceProperties:
        """Lenient: a property that does not parse reads as its default (it never drops the endpoint)."""
        families = tuple(
            f for f in (attributes.get(IP_FAMILIES) or "").split(",") if f in ("IPv4", "IPv6")
        ) or (family(address),)
        affinity = attributes.get(SESSION_AFFINITY) or "None"
        # ASCII digits, at most 5 (86400): str.isdigit() passes "²" and 5,000 digits, which int() refuses
        # (found by fuzz/cloudmap.py).
        timeout_text = attributes.get(SESSION_AFFINITY_TIMEOUT) or ""
        timeout = int(timeout_text) if _TIMEOUT.fullmatch(timeout_text) else None
        timeout = timeout if timeout is not None and 0 < timeout <= 86400 else None
        return cls(
            ip_families=families[:2],
            session_affinity=affinity if affinity in ("None", "ClientIP") else "None",
            session_affinity_timeout=timeout if affinity == "ClientIP" else None,
            internal_traffic_policy=attributes.get(INTERNAL_TRAFFIC_POLICY) or "Cluster",
            traffic_distribution=attributes.get(TRAFFIC_DISTRIBUTION) or "",
            labels=_pairs(attributes.get(EXPORTED_LABELS)),
            annotations=_pairs(attributes.get(EXPORTED_ANNOTATIONS)),
        )

    def conflicts(self, winner: ServiceProperties, *, vips: bool = True) -> list[str]:
        """The mcs-api conflict reasons of this export against the one the clusterset uses. IP families
        count only where both have VIPs (``vips``): a headless Service's families are whatever its
        cluster defaults them to, and its endpoints are imported in every family anyway."""
        checks = (
            ("SessionAffinityConflict", self.session_affinity != winner.session_affinity),
            (
                "SessionAffinityConfigConflict",
                self.session_affinity == winner.session_affinity
                and self.session_affinity_timeout != winner.session_affinity_timeout,
            ),
            ("InternalTrafficPolicyConflict", self.internal_traffic_policy != winner.internal_traffic_policy),
            ("TrafficDistributionConflict", self.traffic_distribution != winner.traffic_distribution),
            ("IPFamilyConflict", vips and self.ip_families != winner.ip_families),
            ("LabelsConflict", self.labels != winner.labels),
            ("AnnotationsConflict", self.annotations != winner.annotations),
        )
        return [reason for reason, differs in checks if differs]


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
    properties: ServiceProperties = field(default_factory=ServiceProperties)

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
            **self.properties.attributes(self.address),
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
        properties=ServiceProperties.from_attributes(attributes, address),
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

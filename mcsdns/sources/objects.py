"""Kubernetes objects (plain JSON/YAML mappings) → zone model values, checked at the boundary.

Shared by every source that sees ServiceImports and EndpointSlices (the manifests directory and the
Kubernetes watch), so they agree on what an object means. An object we cannot use raises ``ManifestError``
with the object's name and the field at fault; an object of an unrelated kind is ignored (None).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

from mcsdns.errors import ManifestError
from mcsdns.mcs.labels import MCS_GROUP, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL
from mcsdns.zone.model import ClusterId, Endpoint, EndpointGroup, Port, ServiceImport, ServiceKey, ServiceType

IMPORT_VERSIONS = (f"{MCS_GROUP}/v1alpha1", f"{MCS_GROUP}/v1beta1")
SLICE_VERSIONS = ("discovery.k8s.io/v1",)

ObjectRef = tuple[str, str, str]  # kind, namespace, name
Record = ServiceImport | EndpointGroup


def describe(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` for messages, with what is known of a broken object."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    name = metadata.get("name") or metadata.get("generateName") or "<no name>"
    namespace = metadata.get("namespace") or "default"
    return f"{obj.get('kind', '<no kind>')} {namespace}/{name}"


def convert(obj: Mapping[str, Any]) -> tuple[ObjectRef, Record] | None:
    """The zone's view of ``obj``; None for kinds the zone does not read."""
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if kind == "ServiceImport" and api_version in IMPORT_VERSIONS:
        key = _key(obj)
        return ("ServiceImport", key.namespace, key.name), _service_import(obj, key)
    if kind == "EndpointSlice" and api_version in SLICE_VERSIONS:
        key = _key(obj)
        group = _endpoint_group(obj, key.namespace)
        if group is None:
            return None
        return ("EndpointSlice", key.namespace, key.name), group
    return None


def _fail(obj: Mapping[str, Any], problem: str) -> ManifestError:
    return ManifestError(f"{describe(obj)}: {problem}")


def _key(obj: Mapping[str, Any]) -> ServiceKey:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise _fail(obj, "metadata.name is missing")
    namespace = metadata.get("namespace") or "default"  # what `kubectl apply` assumes
    if not isinstance(namespace, str):
        raise _fail(obj, "metadata.namespace is not a string")
    return ServiceKey(namespace, metadata["name"])


def _ports(obj: Mapping[str, Any], raw: Any, field: str) -> tuple[Port, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(obj, f"{field} is not a list")
    ports: list[Port] = []
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise _fail(obj, f"{where} is not a mapping")
        number = item.get("port")
        if number is None and field == "ports":
            continue  # EndpointSlice: a nil port means "all ports"; there is no number to publish
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise _fail(obj, f"{where}.port must be a number 1-65535, got {number!r}")
        protocol = item.get("protocol") or "TCP"
        if protocol not in ("TCP", "UDP", "SCTP"):
            raise _fail(obj, f"{where}.protocol must be TCP, UDP or SCTP, got {protocol!r}")
        name = item.get("name") or ""
        if not isinstance(name, str):
            raise _fail(obj, f"{where}.name is not a string")
        ports.append(Port(name, protocol, number))
    return tuple(ports)


def _service_import(obj: Mapping[str, Any], key: ServiceKey) -> ServiceImport:
    # v1alpha1 keeps type/ips/ports under spec; the v1beta1 reshaping moves them to the top level.
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else obj
    assert isinstance(spec, Mapping)
    raw_type = spec.get("type")
    try:
        service_type = ServiceType(raw_type)
    except ValueError:
        raise _fail(obj, f"spec.type must be ClusterSetIP or Headless, got {raw_type!r}") from None
    raw_ips = spec.get("ips") or []
    if not isinstance(raw_ips, list):
        raise _fail(obj, "spec.ips is not a list")
    ips: list[str] = []
    for ip in raw_ips:
        try:
            ips.append(str(ipaddress.ip_address(str(ip))))
        except ValueError:
            raise _fail(obj, f"spec.ips has {ip!r}, not an IP address") from None
    return ServiceImport(
        key=key, type=service_type, ips=tuple(ips), ports=_ports(obj, spec.get("ports"), "spec.ports")
    )


def _is_mapping(value: object) -> bool:
    # Runs for every endpoint of a clusterset (300,000 in the benchmark): the exact type check first, for
    # what JSON decodes to, because the Mapping ABC check costs more.
    return type(value) is dict or isinstance(value, Mapping)


def _endpoint_group(obj: Mapping[str, Any], namespace: str) -> EndpointGroup | None:
    metadata = obj["metadata"]
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise _fail(obj, "metadata.labels is not a mapping")
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return None  # an ordinary EndpointSlice, not one of an imported service
    cluster = labels.get(SOURCE_CLUSTER_LABEL)
    if not isinstance(cluster, str) or not cluster:
        raise _fail(obj, f"label {SOURCE_CLUSTER_LABEL} is missing (which cluster are these endpoints in?)")
    address_type = obj.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise _fail(obj, f"addressType must be IPv4, IPv6 or FQDN, got {address_type!r}")
    if address_type == "FQDN":
        return None  # deprecated in Kubernetes and not addressable by A/AAAA records
    family = socket.AF_INET if address_type == "IPv4" else socket.AF_INET6
    raw_endpoints = obj.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        raise _fail(obj, "endpoints is not a list")
    endpoints: list[Endpoint] = []
    for index, item in enumerate(raw_endpoints):
        if not _is_mapping(item):
            raise _fail(obj, f"endpoints[{index}] is not a mapping")
        addresses = item.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            raise _fail(obj, f"endpoints[{index}].addresses must list at least one address")
        parsed: list[str] = []
        for address in addresses:
            try:
                # inet_pton/inet_ntop: the canonical text of an address of the slice's family, ten times
                # faster than ipaddress. inet_pton takes IPv4 only in its one canonical form (no leading
                # zeros, four parts), so that text is kept as it is.
                packed = socket.inet_pton(family, address)
                parsed.append(address if family == socket.AF_INET else socket.inet_ntop(family, packed))
            except (OSError, TypeError, ValueError):
                problem = f"endpoints[{index}].addresses has {address!r}, not {address_type}"
                raise _fail(obj, problem) from None
        conditions = item.get("conditions") or {}
        # EndpointSlice API: a nil "ready" means ready; only ready endpoints are published (spec §2.4).
        ready = conditions.get("ready") if _is_mapping(conditions) else None
        hostname = item.get("hostname") or ""
        endpoints.append(
            Endpoint(
                cluster=ClusterId(cluster),
                addresses=tuple(parsed),
                hostname=str(hostname),
                ready=ready is not False,
            )
        )
    return EndpointGroup(
        service=ServiceKey(namespace, str(service)),
        cluster=ClusterId(cluster),
        ports=_ports(obj, obj.get("ports"), "ports"),
        endpoints=tuple(endpoints),
    )

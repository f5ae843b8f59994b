"""Kubernetes objects (plain JSON/YAML mappings) → zone model values, checked at the boundary.

Shared by every source that sees ServiceImports and EndpointSlices (the manifests directory and the
Kubernetes watch), so they agree on what an object means. ``check`` gives an object's record, or every
reason it is invalid, or why it is not read (another kind, an EndpointSlice of no imported service);
``convert`` is the same for the watch, raising ``ManifestError`` with every reason.

Names are validated as Kubernetes validates them, with its wording: namespaces, ServiceImport names, port
and endpoint host names are RFC 1123 labels, EndpointSlice names RFC 1123 subdomains. A ServiceImport is
named after its Service, whose name Kubernetes checked as an RFC 1035 label (first character a letter)
until KEP-5311 relaxed it to an RFC 1123 label (feature gate RelaxedServiceNameValidation: alpha 1.34, beta
1.36, GA 1.37); the relaxed rule is used, so the import of a Service named ``1web`` is served.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from mcsdns.errors import ManifestError
from mcsdns.mcs.labels import MCS_GROUP, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL
from mcsdns.zone.model import ClusterId, Endpoint, EndpointGroup, Port, ServiceImport, ServiceKey, ServiceType

IMPORT_VERSIONS = (f"{MCS_GROUP}/v1alpha1", f"{MCS_GROUP}/v1beta1")
SLICE_VERSIONS = ("discovery.k8s.io/v1",)
KINDS: dict[str, tuple[str, ...]] = {"ServiceImport": IMPORT_VERSIONS, "EndpointSlice": SLICE_VERSIONS}
"""The kinds mcsdns reads, with the apiVersions it reads them in."""

# Real kinds that look like ours: never taken for a misspelling of one (ServiceExport is one letter pair
# from ServiceImport, and sits in the same group).
_NEIGHBOURS = ("ServiceExport", "Service", "Endpoints")
_MISSPELT_CUTOFF = 0.8  # difflib ratio: ServiceImports, Serviceimport, EndpointSlices, ServiceImprt, ...

MAX_REASONS = 20
"""Reasons shown per invalid object; the rest are counted ("and 12 more")."""

ObjectRef = tuple[str, str, str]  # kind, namespace, name
Record = ServiceImport | EndpointGroup

# apimachinery/pkg/util/validation: IsDNS1123Label, IsDNS1123Subdomain, and their messages.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?").fullmatch
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*").fullmatch
LABEL_MAX = 63
SUBDOMAIN_MAX = 253
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)


class Checked(NamedTuple):  # a tuple, not a frozen dataclass: made for every object the watch delivers
    """What one object means to the zone: a record, every reason it is invalid, or why it is not read."""

    ref: ObjectRef | None
    """kind/namespace/name as far as known; the kind is the one meant when a misspelling is recognised."""
    record: Record | None = None
    """The zone's view of a valid object; None when it is invalid or not read."""
    problems: tuple[str, ...] = ()
    """Every reason the object is invalid, in Kubernetes' field-path wording; empty when it is valid."""
    ignored: str | None = None
    """Why a valid object is not read (``apps/v1 Deployment``, an EndpointSlice of no imported service)."""


def describe(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` for messages, with what is known of a broken object."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    name = metadata.get("name") or metadata.get("generateName") or "<no name>"
    namespace = metadata.get("namespace") or "default"
    return f"{obj.get('kind') or '<no kind>'} {namespace}/{name}"


def summary(problems: tuple[str, ...] | list[str]) -> str:
    """The reasons joined for one line, at most ``MAX_REASONS`` of them."""
    shown = "; ".join(problems[:MAX_REASONS])
    if len(problems) > MAX_REASONS:
        shown += f"; and {len(problems) - MAX_REASONS} more"
    return shown


def convert(obj: Mapping[str, Any]) -> tuple[ObjectRef, Record] | None:
    """The zone's view of ``obj``; None for objects the zone does not read; ``ManifestError`` with every
    reason for an invalid one."""
    checked = check(obj)
    if checked.problems:
        raise ManifestError(f"{describe(obj)}: {summary(checked.problems)}")
    if checked.record is None or checked.ref is None:
        return None
    return checked.ref, checked.record


def check(obj: Mapping[str, Any]) -> Checked:
    """Validate ``obj`` as Kubernetes would and convert it, collecting every problem instead of the first."""
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    problems: list[str] = []
    if not isinstance(kind, str) or not kind:
        problems.append("kind is missing" if not kind else f"kind is not a string: {kind!r}")
        if not api_version:
            problems.append("apiVersion is missing")
        return Checked(None, problems=tuple(problems))
    if kind in KINDS:
        if api_version not in KINDS[kind]:
            problems.append(_version_problem(kind, api_version))
    else:
        meant = misspelt(kind)
        if meant is None:
            return Checked(None, ignored=f"{api_version or '<no apiVersion>'} {kind}")
        problems.append(
            f"kind: Unsupported value: {_quote(kind)}: did you mean {_quote(meant)}? "
            f"(mcsdns reads {' and '.join(KINDS)})"
        )
        if api_version not in KINDS[meant]:
            problems.append(_version_problem(meant, api_version))
        kind = meant
    if kind == "ServiceImport":
        return _check_import(obj, problems)
    return _check_slice(obj, problems)


def misspelt(kind: str) -> str | None:
    """The kind mcsdns reads that ``kind`` is probably a misspelling of, or None."""
    lowered = kind.lower()
    candidates = {name.lower(): name for name in (*KINDS, *_NEIGHBOURS)}
    match = difflib.get_close_matches(lowered, candidates, n=1, cutoff=_MISSPELT_CUTOFF)
    meant = candidates[match[0]] if match else None
    return meant if meant in KINDS else None


def _version_problem(kind: str, api_version: object) -> str:
    known = ", ".join(KINDS[kind])
    if not api_version:
        return f"apiVersion is missing (mcsdns reads {kind} in {known})"
    return f"apiVersion: Unsupported value: {_quote(api_version)}: mcsdns reads {kind} in {known}"


def _quote(value: object) -> str:
    """A value as Go's %q prints it in Kubernetes' messages: strings in double quotes."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _name_problems(
    field: str, value: str, limit: int, matches: Callable[[str], object], message: str
) -> list[str]:
    """apimachinery's ValidateDNS1123Label/Subdomain: one ``Invalid value`` per broken rule."""
    problems = []
    if len(value) > limit:
        problems.append(f"{field}: Invalid value: {_quote(value)}: must be no more than {limit} characters")
    if not matches(value):
        problems.append(f"{field}: Invalid value: {_quote(value)}: {message}")
    return problems


def _label_problems(field: str, value: str) -> list[str]:
    return _name_problems(field, value, LABEL_MAX, _LABEL, LABEL_MESSAGE)


def _subdomain_problems(field: str, value: str) -> list[str]:
    return _name_problems(field, value, SUBDOMAIN_MAX, _SUBDOMAIN, SUBDOMAIN_MESSAGE)


def _metadata(obj: Mapping[str, Any], kind: str, problems: list[str]) -> tuple[ObjectRef | None, ServiceKey]:
    """The object's ref and key, with its name and namespace checked (``problems`` gets what is wrong)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or "default"  # what `kubectl apply` assumes
    if not isinstance(namespace, str):
        problems.append("metadata.namespace is not a string")
        namespace = str(namespace)
    elif len(namespace) > LABEL_MAX or not _LABEL(namespace):
        problems += _label_problems("metadata.namespace", namespace)
    if not isinstance(name, str) or not name:
        problems.append(
            "metadata.name is missing" if not name else f"metadata.name is not a string: {name!r}"
        )
        return None, ServiceKey(namespace, "")
    if kind == "ServiceImport":
        if len(name) > LABEL_MAX or not _LABEL(name):
            problems += _label_problems("metadata.name", name)
    elif len(name) > SUBDOMAIN_MAX or not _SUBDOMAIN(name):
        problems += _subdomain_problems("metadata.name", name)
    return (kind, namespace, name), ServiceKey(namespace, name)


def _ports(raw: Any, field: str, problems: list[str], *, of_slice: bool) -> tuple[Port, ...]:
    """A ServiceImport's (``spec.ports``) or an EndpointSlice's (``ports``) ports.

    Names as Kubernetes checks a Service's and an EndpointSlice's ports: RFC 1123 labels, unique (a
    slice's unnamed ports count as the name "", so it may have one). A ServiceImport may have several
    unnamed ports, where a Service must name them all: an unnamed port only has no SRV record.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{field} is not a list")
        return ()
    ports: list[Port] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where} is not a mapping")
            continue
        valid = True
        name = item.get("name") or ""
        if not isinstance(name, str):
            problems.append(f"{where}.name is not a string")
            valid = False
        else:
            if name and (len(name) > LABEL_MAX or not _LABEL(name)):
                problems += _label_problems(f"{where}.name", name)
                valid = False
            if name or of_slice:
                if name in names:
                    problems.append(f"{where}.name: Duplicate value: {_quote(name)}")
                    valid = False
                names.add(name)
        protocol = item.get("protocol") or "TCP"
        if protocol not in ("TCP", "UDP", "SCTP"):
            problems.append(f"{where}.protocol must be TCP, UDP or SCTP, got {protocol!r}")
            valid = False
        number = item.get("port")
        if number is None and of_slice:
            continue  # EndpointSlice: a nil port means "all ports"; there is no number to publish
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            problems.append(f"{where}.port must be a number 1-65535, got {number!r}")
        elif valid:
            ports.append(Port(name, protocol, number))
    return tuple(ports)


def _check_import(obj: Mapping[str, Any], problems: list[str]) -> Checked:
    ref, key = _metadata(obj, "ServiceImport", problems)
    # v1alpha1 keeps type/ips/ports under spec; the v1beta1 reshaping moves them to the top level.
    spec = obj.get("spec")
    at = "spec."
    if not isinstance(spec, Mapping):
        spec, at = obj, ""
    raw_type = spec.get("type")
    service_type = ServiceType.CLUSTERSET_IP
    try:
        service_type = ServiceType(raw_type)
    except ValueError:
        problems.append(f"{at}type must be ClusterSetIP or Headless, got {raw_type!r}")
    raw_ips = spec.get("ips") or []
    ips: list[str] = []
    if not isinstance(raw_ips, list):
        problems.append(f"{at}ips is not a list")
        raw_ips = []
    for ip in raw_ips:
        try:
            ips.append(str(ipaddress.ip_address(str(ip))))
        except ValueError:
            problems.append(f"{at}ips has {ip!r}, not an IP address")
    ports = _ports(spec.get("ports"), f"{at}ports", problems, of_slice=False)
    if problems:
        return Checked(ref, problems=tuple(problems))
    return Checked(ref, ServiceImport(key=key, type=service_type, ips=tuple(ips), ports=ports))


def _is_mapping(value: object) -> bool:
    # Runs for every endpoint of a clusterset (300,000 in the benchmark): the exact type check first, for
    # what JSON decodes to, because the Mapping ABC check costs more.
    return type(value) is dict or isinstance(value, Mapping)


def _check_slice(obj: Mapping[str, Any], problems: list[str]) -> Checked:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if labels is not None and not isinstance(labels, Mapping):
        ref, _ = _metadata(obj, "EndpointSlice", problems)
        problems.append("metadata.labels is not a mapping")
        return Checked(ref, problems=tuple(problems))
    service = (labels or {}).get(SERVICE_NAME_LABEL)
    if not service:
        # An ordinary EndpointSlice, not one of an imported service: not ours to judge.
        ref, _ = _metadata(obj, "EndpointSlice", [])
        return Checked(
            ref, problems=tuple(problems), ignored=f"EndpointSlice without label {SERVICE_NAME_LABEL}"
        )
    assert labels is not None
    ref, key = _metadata(obj, "EndpointSlice", problems)
    cluster = labels.get(SOURCE_CLUSTER_LABEL)
    if not isinstance(cluster, str) or not cluster:
        problems.append(f"label {SOURCE_CLUSTER_LABEL} is missing (which cluster are these endpoints in?)")
        cluster = ""
    address_type = obj.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        problems.append(f"addressType must be IPv4, IPv6 or FQDN, got {address_type!r}")
    elif address_type == "FQDN":
        # Deprecated in Kubernetes and not addressable by A/AAAA records.
        if problems:
            return Checked(ref, problems=tuple(problems))
        return Checked(ref, ignored="EndpointSlice with addressType FQDN")
    family = socket.AF_INET6 if address_type == "IPv6" else socket.AF_INET
    raw_endpoints = obj.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        problems.append("endpoints is not a list")
        raw_endpoints = []
    endpoints: list[Endpoint] = []
    for index, item in enumerate(raw_endpoints):
        if not _is_mapping(item):
            problems.append(f"endpoints[{index}] is not a mapping")
            continue
        addresses = item.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            problems.append(f"endpoints[{index}].addresses must list at least one address")
            continue
        parsed: list[str] = []
        for address in addresses:
            try:
                # inet_pton/inet_ntop: the canonical text of an address of the slice's family, ten times
                # faster than ipaddress. inet_pton takes IPv4 only in its one canonical form (no leading
                # zeros, four parts), so that text is kept as it is.
                packed = socket.inet_pton(family, address)
                parsed.append(address if family == socket.AF_INET else socket.inet_ntop(family, packed))
            except (OSError, TypeError, ValueError):
                if address_type in ("IPv4", "IPv6"):
                    problems.append(f"endpoints[{index}].addresses has {address!r}, not {address_type}")
        hostname = item.get("hostname") or ""
        if hostname and (type(hostname) is not str or len(hostname) > LABEL_MAX or not _LABEL(hostname)):
            problems += (
                _label_problems(f"endpoints[{index}].hostname", hostname)
                if isinstance(hostname, str)
                else [f"endpoints[{index}].hostname is not a string"]
            )
        conditions = item.get("conditions") or {}
        # EndpointSlice API: a nil "ready" means ready; only ready endpoints are published (spec §2.4).
        ready = conditions.get("ready") if _is_mapping(conditions) else None
        endpoints.append(
            Endpoint(
                cluster=ClusterId(cluster),
                addresses=tuple(parsed),
                hostname=hostname,
                ready=ready is not False,
            )
        )
    ports = _ports(obj.get("ports"), "ports", problems, of_slice=True)
    if problems:
        return Checked(ref, problems=tuple(problems))
    group = EndpointGroup(
        service=ServiceKey(key.namespace, str(service)),
        cluster=ClusterId(cluster),
        ports=ports,
        endpoints=tuple(endpoints),
    )
    return Checked(ref, group)

"""Server-side printing: the ``meta.k8s.io/v1`` Table answers ``kubectl get`` asks for.

Columns copy the real printers (pkg/printers/internalversion) for built-in kinds and the CRDs'
``additionalPrinterColumns`` for the MCS and about-api kinds; ages are rendered like
``duration.HumanDuration``. Pure functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from .errors import Obj
from .resources import ResourceType

Cell = str | int | None
Column = tuple[str, str, Callable[[Obj, datetime], Cell]]


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(obj: Obj, now: datetime) -> Cell:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((now - moment).total_seconds())


def _path(*keys: str) -> Callable[[Obj, datetime], Cell]:
    def get(obj: Obj, _: datetime) -> Cell:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
        return value if isinstance(value, str | int) else json.dumps(value, separators=(",", ":"))

    return get


def _service_ports(obj: Obj, _: datetime) -> Cell:
    ports = obj.get("spec", {}).get("ports") or []
    parts = []
    for p in ports:
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        parts.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _service_external(obj: Obj, _: datetime) -> Cell:
    spec = obj.get("spec", {})
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName"))
    ips = spec.get("externalIPs") or []
    return ",".join(ips) if ips else "<none>"


def _selector(obj: Obj, _: datetime) -> Cell:
    selector = obj.get("spec", {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


def _slice_ports(obj: Obj, _: datetime) -> Cell:
    ports = obj.get("ports")
    if not ports:
        return "<unset>"
    return ",".join(str(p.get("port")) if p.get("port") is not None else "<unset>" for p in ports)


def _slice_endpoints(obj: Obj, _: datetime) -> Cell:
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<none>"
    shown = ",".join(addresses[:3])
    return shown if len(addresses) <= 3 else f"{shown} + {len(addresses) - 3} more..."


_NAME: Final[Column] = ("Name", "name", _path("metadata", "name"))
_AGE: Final[Column] = ("Age", "", _age)

COLUMNS: Final[dict[str, list[Column]]] = {
    "namespaces": [_NAME, ("Status", "", _path("status", "phase")), _AGE],
    "services": [
        _NAME,
        ("Type", "", _path("spec", "type")),
        ("Cluster-IP", "", _path("spec", "clusterIP")),
        ("External-IP", "", _service_external),
        ("Port(s)", "", _service_ports),
        _AGE,
        ("Selector", "", _selector),
    ],
    "endpointslices.discovery.k8s.io": [
        _NAME,
        ("AddressType", "", _path("addressType")),
        ("Ports", "", _slice_ports),
        ("Endpoints", "", _slice_endpoints),
        _AGE,
    ],
    "leases.coordination.k8s.io": [_NAME, ("Holder", "", _path("spec", "holderIdentity")), _AGE],
    "serviceimports.multicluster.x-k8s.io": [
        _NAME,
        ("Type", "", _path("spec", "type")),
        ("IP", "", _path("spec", "ips")),
        _AGE,
    ],
    "clusterproperties.about.k8s.io": [_NAME, ("value", "", _path("spec", "value")), _AGE],
}
_PRIORITY_ONE: Final = {"Selector"}


def to_table(
    rt: ResourceType,
    objects: list[Obj],
    *,
    api_version: str,
    resource_version: str,
    continue_token: str | None,
    include_object: str,
    now: datetime | None = None,
    with_columns: bool = True,
) -> Obj:
    columns = COLUMNS.get(rt.key, [_NAME, _AGE])
    moment = now or datetime.now(UTC)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [get(obj, moment) for _, _, get in columns]}
        if include_object == "Object":
            row["object"] = {**obj, "apiVersion": api_version}
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "rows": rows}
    if with_columns:
        table["columnDefinitions"] = [
            {
                "name": name,
                "type": "string",
                "format": fmt,
                "description": "",
                "priority": int(name in _PRIORITY_ONE),
            }
            for name, fmt, _ in columns
        ]
    return table

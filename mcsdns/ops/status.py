"""``mcsdns status``: the clusterset at a glance, read from the cluster and Cloud Map directly, so it works
while mcsdns itself is down.

``build`` turns what was read into a ``Status`` (pure: the time is passed in); ``table`` and ``as_json``
render it. Cloud Map is the clusterset's truth (which clusters export what, their endpoints, their
heartbeats); the cluster adds its own view: the ServiceImports' VIPs and age, and its ServiceExports'
Conflict conditions. Without Cloud Map, the clusters and endpoints come from the imported EndpointSlices.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mcsdns.mcs import heartbeat
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.import_ import import_model
from mcsdns.mcs.labels import SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL
from mcsdns.ops.reader import CloudMapView

Obj = dict[str, Any]
WIDTH = 120


@dataclass
class ClusterRow:
    id: str
    heartbeat_age: float | None = None  # seconds since its last heartbeat (its clock), None: never beat
    last_export_age: float | None = None  # seconds since its newest export was created
    services: int = 0
    ready_endpoints: int = 0
    local: bool = False


@dataclass
class ServiceRow:
    namespace: str
    name: str
    type: str = ""
    vips: list[str] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    ready: dict[str, list[int]] = field(default_factory=dict)  # cluster -> [ready, total] endpoints
    conflict: str = ""  # this cluster's ServiceExport Conflict condition, when True: reason (message)
    exported_here: bool = False
    import_age: float | None = None  # seconds since this cluster's ServiceImport was created


@dataclass
class Status:
    clusterset_id: str | None
    cluster_id: str | None
    clusters: list[ClusterRow]
    services: list[ServiceRow]
    sources: list[str]  # what was read ("cluster", "cloudmap")
    notes: list[str]  # what could not be read, and why


def _age(now: float, timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, now - moment.timestamp())


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def build(
    *,
    now: float,
    cluster_id: str | None,
    clusterset_id: str | None,
    exports: Sequence[Obj] = (),
    imports: Sequence[Obj] = (),
    slices: Sequence[Obj] = (),
    view: CloudMapView | None = None,
    namespace: str | None = None,
    service: str | None = None,
    notes: Sequence[str] = (),
    sources: Sequence[str] = (),
) -> Status:
    rows: dict[tuple[str, str], ServiceRow] = {}

    def row(key: tuple[str, str]) -> ServiceRow:
        if key not in rows:
            rows[key] = ServiceRow(key[0], key[1])
        return rows[key]

    clusters: dict[str, ClusterRow] = {}

    def cluster(name: str) -> ClusterRow:
        if name not in clusters:
            clusters[name] = ClusterRow(name, local=name == cluster_id)
        return clusters[name]

    if view is not None:
        for key, found in view.instances.items():
            model = import_model(key, found)
            if model is None:
                continue
            r = row(key)
            r.type = model.type
            r.clusters = sorted(model.clusters)
            r.ready = {
                c: [sum(1 for e in ends.endpoints if e.ready), len(ends.endpoints)]
                for c, ends in model.clusters.items()
            }
            newest: dict[str, int] = {}
            for instance in found:
                c = instance.attributes.get(attrs.CLUSTER_ID)
                created = instance.attributes.get(attrs.EXPORT_CREATED, "")
                if c and created.isdigit():
                    newest[c] = max(newest.get(c, 0), int(created))
            for c in r.clusters:
                entry = cluster(c)
                if c in newest:
                    age = max(0.0, now - newest[c] / 1000)
                    entry.last_export_age = (
                        age if entry.last_export_age is None else min(entry.last_export_age, age)
                    )
        for c, beat in heartbeat.beats(view.heartbeats, clusterset_id or "").items() if clusterset_id else ():
            if beat.isdigit():
                cluster(c).heartbeat_age = max(0.0, now - int(beat) / 1000)
    else:
        # No Cloud Map: the imported EndpointSlices say which clusters export what, as imported here.
        for obj in slices:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            source, name = labels.get(SOURCE_CLUSTER_LABEL), labels.get(SERVICE_NAME_LABEL)
            if not source or not name:
                continue
            r = row((_key(obj)[0], str(name)))
            if source not in r.clusters:
                r.clusters = sorted({*r.clusters, str(source)})
            counts = r.ready.setdefault(str(source), [0, 0])
            for endpoint in obj.get("endpoints") or []:
                counts[1] += 1
                if (endpoint.get("conditions") or {}).get("ready", True) is not False:
                    counts[0] += 1
            cluster(str(source))
    for obj in imports:
        r = row(_key(obj))
        spec = obj.get("spec") or {}
        r.type = r.type or str(spec.get("type") or "")
        r.vips = [str(ip) for ip in spec.get("ips") or []]
        r.import_age = _age(now, (obj.get("metadata") or {}).get("creationTimestamp"))
        if not r.clusters:
            r.clusters = sorted(
                str(c.get("cluster")) for c in (obj.get("status") or {}).get("clusters") or []
            )
    for obj in exports:
        r = row(_key(obj))
        r.exported_here = True
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Conflict" and condition.get("status") == "True":
                r.conflict = f"{condition.get('reason')}: {condition.get('message')}".strip(": ")
    if cluster_id:
        cluster(cluster_id)
    selected = [
        r
        for key, r in sorted(rows.items())
        if (namespace is None or key[0] == namespace) and (service is None or key[1] == service)
    ]
    for r in rows.values():
        for c in r.clusters:
            entry = cluster(c)
            entry.services += 1
            entry.ready_endpoints += r.ready.get(c, [0, 0])[0]
    return Status(
        clusterset_id=clusterset_id,
        cluster_id=cluster_id,
        clusters=[clusters[c] for c in sorted(clusters)],
        services=selected,
        sources=list(sources),
        notes=list(notes),
    )


# --- rendering ---------------------------------------------------------------------------------------------


def age(seconds: float | None) -> str:
    """kubectl's way: 42s, 5m, 3h, 2d; "-" when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size or (unit == "m" and s >= size):
            return f"{s // size}{unit}"
    return f"{s}s"


def grid(headers: Sequence[str], rows: Iterable[Sequence[str]], width: int = WIDTH) -> list[str]:
    """Columns two spaces apart; the widest column is cut (…) until a line fits ``width``."""
    cells = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= max(len(headers[widest]), 4):
            break
        widths[widest] -= 1

    def cut(text: str, size: int) -> str:
        return text if len(text) <= size else text[: size - 1] + "…"

    return [
        "  ".join(cut(c, widths[i]).ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells
    ]


def table(status: Status) -> str:
    who = f"cluster {status.cluster_id}" if status.cluster_id else "this cluster (id unknown)"
    lines = [
        f"clusterset {status.clusterset_id or '(id unknown)'}, seen from {who}; read from "
        + (" and ".join(status.sources) or "nothing")
    ]
    lines += [f"note: {note}" for note in status.notes]
    lines.append("")
    lines += grid(
        ("CLUSTER", "HEARTBEAT", "LAST EXPORT", "SERVICES", "READY ENDPOINTS"),
        (
            (
                c.id + (" (this)" if c.local else ""),
                age(c.heartbeat_age) + (" ago" if c.heartbeat_age is not None else ""),
                age(c.last_export_age) + (" ago" if c.last_export_age is not None else ""),
                str(c.services),
                str(c.ready_endpoints),
            )
            for c in status.clusters
        ),
    )
    lines.append("")
    if not status.services:
        lines.append("no services" + (" match" if status.clusters else ""))
    else:
        lines += grid(
            ("SERVICE", "TYPE", "VIPS", "EXPORTED BY", "READY", "CONFLICT", "IMPORTED"),
            (
                (
                    f"{r.namespace}/{r.name}",
                    r.type or "-",
                    ",".join(r.vips) or "-",
                    ",".join(r.clusters) or "-",
                    " ".join(f"{c}:{n[0]}/{n[1]}" for c, n in sorted(r.ready.items())) or "-",
                    r.conflict or "-",
                    age(r.import_age),
                )
                for r in status.services
            ),
        )
    return "\n".join(lines) + "\n"


def as_json(status: Status) -> str:
    return json.dumps(asdict(status), indent=2, sort_keys=False) + "\n"


# --- reading (I/O) -----------------------------------------------------------------------------------------


async def gather(
    *,
    kubeconfig: str | None,
    region: str | None,
    cluster_id: str | None,
    clusterset_id: str | None,
    namespace: str | None,
    service: str | None,
    now: float,
) -> Status:
    """Read the cluster (when a kubeconfig is given) and Cloud Map, and build the status. Raises
    ``McsDnsError`` only when neither could be read."""
    from mcsdns.errors import McsDnsError, SourceError, StartupError
    from mcsdns.ops import reader

    notes: list[str] = []
    sources: list[str] = []
    exports: list[Obj] = []
    imports: list[Obj] = []
    slices: list[Obj] = []
    if kubeconfig:
        from mcsdns.clients.kube import CLUSTER_PROPERTIES, ENDPOINT_SLICES, SERVICE_EXPORTS, SERVICE_IMPORTS
        from mcsdns.mcs.identity import CLUSTER_ID_PROPERTY, CLUSTERSET_ID_PROPERTY, cluster_properties

        async with reader.kube_api(kubeconfig) as api:
            kube = reader.KubeReader(api)

            async def listed(what: str, resources: Any, **options: Any) -> list[Obj]:
                plural = (resources[0] if isinstance(resources, tuple) else resources).plural
                group = (resources[0] if isinstance(resources, tuple) else resources).group
                # Asked first so that a refusal reads as one plain note; when the authorization API
                # cannot answer, the list itself says whether it is allowed.
                if await kube.may("list", group, plural) is False:
                    notes.append(f"{what}: this user may not list them")
                    return []
                try:
                    return await kube.list_all(resources, **options)
                except SourceError as exc:
                    notes.append(f"{what}: {' '.join(str(exc).split())}")
                    return []

            try:
                await kube.served_versions("multicluster.x-k8s.io")
            except SourceError as exc:
                notes.append(f"cluster not read: {' '.join(str(exc).split())}")
            else:
                sources.append("the cluster")
                if not (cluster_id and clusterset_id):
                    props = cluster_properties(
                        dict(enumerate(await listed("ClusterProperties", CLUSTER_PROPERTIES)))
                    )
                    cluster_id = cluster_id or props.get(CLUSTER_ID_PROPERTY)
                    clusterset_id = clusterset_id or props.get(CLUSTERSET_ID_PROPERTY)
                ns = namespace
                exports = await listed("ServiceExports", SERVICE_EXPORTS, namespace=ns)
                imports = await listed("ServiceImports", SERVICE_IMPORTS, namespace=ns)
                slices = await listed(
                    "EndpointSlices", ENDPOINT_SLICES, namespace=ns, label_selector=SOURCE_CLUSTER_LABEL
                )
                if kube.unanswered:
                    notes.append(f"permissions not asked first, read anyway: {kube.unanswered}")
    view: CloudMapView | None = None
    try:
        client = reader.cloudmap_client(region)
        view = await reader.read_cloudmap(client, clusterset_id)
        sources.append(f"Cloud Map ({client.endpoint})")
        notes += [f"Cloud Map: could not read {failure}" for failure in view.failures]
        if not clusterset_id:
            notes.append("the clusterset id is unknown: every clusterset's instances are shown")
    except (StartupError, SourceError) as exc:
        notes.append(f"Cloud Map not read: {' '.join(str(exc).split())}")
    if not sources:
        raise McsDnsError("; ".join(notes) or "nothing to read: give --kubeconfig and/or AWS settings")
    return build(
        now=now,
        cluster_id=cluster_id,
        clusterset_id=clusterset_id,
        exports=exports,
        imports=imports,
        slices=slices,
        view=view,
        namespace=namespace,
        service=service,
        notes=notes,
        sources=sources,
    )

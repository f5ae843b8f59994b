"""Import: Cloud Map → ServiceImport + derived Service + EndpointSlices in this cluster (leader only).

Every poll, for the namespaces that exist here (namespace sameness, KEP-1645): revision checks, then
DiscoverInstances only for services that changed. The plan is pure (``import_model``, ``desired_*``):
type and ports merged per the KEP (the oldest export wins a conflict), one derived Service per import whose
ClusterIP is the import's single VIP (the AWS controller makes one per exporting cluster), EndpointSlices
of at most 100 endpoints per source cluster and address family, carrying READY, hostname and node name,
and updated when those change. Objects are only written and deleted when labelled as ours, and an import
is only removed after Cloud Map answered that its service has no instances: never because of an error.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcsdns.clients.budget import Priority
from mcsdns.clients.cloudmap import CloudMapClient, CloudMapError, Instance
from mcsdns.clients.kube import (
    ENDPOINT_SLICES,
    NAMESPACES,
    SERVICE_IMPORTS,
    SERVICES,
    Informers,
    Key,
    KubeApi,
)
from mcsdns.errors import SourceError
from mcsdns.mcs import changes, heartbeat
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.conditions import Condition, comparable, merge_conditions
from mcsdns.mcs.identity import ClusterIdentity
from mcsdns.mcs.labels import MCS_GROUP, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL, labels_of
from mcsdns.mcs.leader import LeaderElector
from mcsdns.mcs.reconcile import ReconcileStats
from mcsdns.mcs.workqueue import FairQueue

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
MANAGED_LABEL = "app.kubernetes.io/managed-by"
SLICE_MANAGED_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGER = "mcsdns"
SLICE_SERVICE_LABEL = "kubernetes.io/service-name"
MAX_SLICE_ENDPOINTS = 100  # the EndpointSlice controller's default, and the AWS controller's
CONCURRENCY = 32  # Cloud Map reads in flight at once: a poll's change reads, and apart, the sweep's checks
ENSURE_ALL_EVERY = 30.0  # seconds: every import is compared with the cluster again (drift repair) ...
# ... a share at each poll: at 5,000 imports the whole comparison takes about a second of CPU, and a poll
# that held it would hold every change arriving meanwhile.
STALE_CONDITION = "mcsdns.io/StaleClusters"  # a metav1.Condition type of mcsdns's own (prefixed)


def derived_name(namespace: str, name: str) -> str:
    """``imported-`` + 10 characters of base32hex(sha256("<ns>/<name>")): stable, a DNS label, unique."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return "imported-" + base64.b32hexencode(digest).decode().lower()[:10]


@dataclass(frozen=True, slots=True, order=True)
class ImportPort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True, order=True)
class ImportEndpoint:
    address: str
    ready: bool
    hostname: str
    nodename: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterEndpoints:
    ports: tuple[ImportPort, ...]  # endpoint (target) ports, named like the service ports
    endpoints: tuple[ImportEndpoint, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportModel:
    key: Key
    type: str
    ports: tuple[ImportPort, ...]
    clusters: Mapping[str, ClusterEndpoints]
    properties: attrs.ServiceProperties = field(default_factory=attrs.ServiceProperties)


def import_model(key: Key, instances: Iterable[Instance]) -> ImportModel | None:
    """What the clusterset exports for one service; None when no cluster has an instance."""
    exported: list[attrs.ExportedEndpoint] = []
    for instance in instances:
        try:
            exported.append(attrs.from_attributes(instance.attributes))
        except attrs.InvalidInstance as exc:
            logger.warning("import %s/%s: instance %s skipped: %s", key[0], key[1], instance.id, exc)
    if not exported:
        return None
    # KEP-1645 "Constraints and Conflict Resolution": the oldest export's properties win.
    exported.sort(key=lambda e: (e.export_created_ms, e.cluster_id))
    ports: dict[tuple[str, str], ImportPort] = {}
    for e in exported:
        ports.setdefault(
            (e.service_port_name, e.service_protocol),
            ImportPort(e.service_port_name, e.service_protocol, e.service_port),
        )
    clusters: dict[str, tuple[dict[ImportPort, None], dict[str, ImportEndpoint]]] = {}
    for e in exported:
        cluster_ports, endpoints = clusters.setdefault(e.cluster_id, ({}, {}))
        cluster_ports[ImportPort(e.endpoint_port_name, e.protocol, e.port)] = None
        known = endpoints.get(e.address)
        endpoints[e.address] = ImportEndpoint(
            e.address, e.ready or (known is not None and known.ready), e.hostname, e.nodename
        )
    winner = exported[0]
    # An instance without MCSDNS_IP_FAMILIES (the AWS controller's) says only its own address's family:
    # the winning cluster's addresses together say which families it exports.
    families = dict.fromkeys(winner.properties.ip_families)
    families.update(
        dict.fromkeys(attrs.family(e.address) for e in exported if e.cluster_id == winner.cluster_id)
    )
    return ImportModel(
        key=key,
        type=winner.service_type,
        properties=dataclasses.replace(winner.properties, ip_families=tuple(families)[:2]),
        ports=tuple(sorted(ports.values())),
        clusters={
            cluster: ClusterEndpoints(ports=tuple(sorted(p)), endpoints=tuple(sorted(eps.values())))
            for cluster, (p, eps) in sorted(clusters.items())
        },
    )


def _labels(model: ImportModel) -> dict[str, str]:
    return {MANAGED_LABEL: MANAGER, SERVICE_NAME_LABEL: model.key[1]}


def import_ips(model: ImportModel, service: Obj | None) -> tuple[list[str], list[str]]:
    """The import's VIPs and their families: the derived Service's ClusterIPs in the families the export
    has (mcs-api v1beta1: at most one per family). Empty for Headless, or when this cluster has none of the
    exported families (then the import is not Ready: IPFamilyNotSupported)."""
    if model.type != "ClusterSetIP" or service is None:
        return [], []
    spec = service.get("spec") or {}
    cluster_ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    pairs = [(ip, attrs.family(ip)) for ip in cluster_ips]
    kept = [(ip, family) for ip, family in pairs if family in model.properties.ip_families][:2]
    return [ip for ip, _ in kept], [family for _, family in kept]


def drift_share(left: list[Key], desired: Collection[Key], period: float) -> tuple[set[Key], list[Key]]:
    """One poll's share of drift repair, and what is left of the round (``left``; a new round when it is
    empty): every import is compared with the cluster once per ``ENSURE_ALL_EVERY``, evenly over the polls
    in between."""
    if not left:
        left = sorted(desired)
    share = math.ceil(len(desired) * min(period, ENSURE_ALL_EVERY) / ENSURE_ALL_EVERY)
    return set(left[:share]), left[share:]


def desired_import(
    model: ImportModel, *, service: Obj | None, api_version: str = f"{MCS_GROUP}/v1beta1"
) -> Obj:
    """The ServiceImport (in ``api_version``, the one the server serves): type, merged ports, the derived
    Service's ClusterIPs as its VIPs, and the oldest export's properties (mcs-api v1beta1), its exported
    labels and annotations on the import's metadata (ours win a clash with the managed-by label)."""
    props = model.properties
    spec: Obj = {
        "type": model.type,
        "ports": [
            {"name": p.name, "protocol": p.protocol, "port": p.port}
            if p.name
            else {"protocol": p.protocol, "port": p.port}
            for p in model.ports
        ],
    }
    ips, families = import_ips(model, service)
    if ips:
        spec["ips"], spec["ipFamilies"] = ips, families
    elif model.type == "Headless":
        spec["ipFamilies"] = list(props.ip_families)
    if props.session_affinity == "ClientIP" and model.type == "ClusterSetIP":  # ignored for Headless
        spec["sessionAffinity"] = "ClientIP"
        if props.session_affinity_timeout is not None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": props.session_affinity_timeout}}
    if props.internal_traffic_policy != "Cluster":
        spec["internalTrafficPolicy"] = props.internal_traffic_policy
    if props.traffic_distribution:
        spec["trafficDistribution"] = props.traffic_distribution
    metadata: Obj = {
        "name": model.key[1],
        "namespace": model.key[0],
        "labels": {**dict(props.labels), **_labels(model)},
    }
    if props.annotations:
        metadata["annotations"] = dict(props.annotations)
    return {"apiVersion": api_version, "kind": "ServiceImport", "metadata": metadata, "spec": spec}


def import_ready(model: ImportModel, service: Obj | None) -> Condition:
    """mcs-api v1beta1 ServiceImport ``Ready``: reasons ``Ready``, ``Pending``, ``IPFamilyNotSupported``."""
    if model.type == "Headless":
        return Condition("Ready", True, "Ready", "headless: the exporting clusters' endpoints are imported")
    if service is None or not (service.get("spec") or {}).get("clusterIP"):
        return Condition("Ready", False, "Pending", "the derived Service has no ClusterIP yet")
    ips, _ = import_ips(model, service)
    if not ips:
        have = ",".join((service.get("spec") or {}).get("ipFamilies") or ["IPv4"])
        return Condition(
            "Ready",
            False,
            "IPFamilyNotSupported",
            f"exported as {','.join(model.properties.ip_families)}; this cluster's Services get {have}",
        )
    return Condition("Ready", True, "Ready", f"VIP {', '.join(ips)}")


def desired_service(model: ImportModel) -> Obj:
    """The derived Service: no selector; its slices are ours. Ports are named like the slice ports.

    PreferDualStack, so a dual-stack cluster gives it a VIP per family and any cluster can create it; the
    import keeps the families the export has. ClientIP affinity is the derived Service's own (kube-proxy
    applies it to the VIP); the traffic policies stay on the ServiceImport, since the endpoints are in
    other clusters, where a node-local policy could only drop traffic."""
    props = model.properties
    spec: Obj = {
        "type": "ClusterIP",
        "ipFamilyPolicy": "PreferDualStack",
        "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port} for p in model.ports],
    }
    if model.type == "Headless":
        spec["clusterIP"] = "None"
    elif props.session_affinity == "ClientIP":
        spec["sessionAffinity"] = "ClientIP"
        if props.session_affinity_timeout is not None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": props.session_affinity_timeout}}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": derived_name(*model.key),
            "namespace": model.key[0],
            "labels": _labels(model),
            "annotations": {"multicluster.kubernetes.io/service-import": model.key[1]},
        },
        "spec": spec,
    }


def _service_shape(service: Obj) -> tuple[Any, ...]:
    """What of a derived Service we set and keep, with the API server's defaults filled in as it does."""
    spec = service.get("spec") or {}
    affinity = spec.get("sessionAffinity") or "None"
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
    return (
        tuple(_ports(service)),
        spec.get("ipFamilyPolicy") or "SingleStack",
        affinity,
        (timeout or 10800) if affinity == "ClientIP" else None,  # the API server's default: 3 hours
    )


def _cluster_tag(cluster: str) -> str:
    return hashlib.sha256(cluster.encode()).hexdigest()[:6]


def desired_slices(model: ImportModel) -> dict[str, Obj]:
    """EndpointSlices by name: per source cluster and address family, at most 100 endpoints each."""
    derived = derived_name(*model.key)
    out: dict[str, Obj] = {}
    for cluster, group in model.clusters.items():
        for family, address_type in (("4", "IPv4"), ("6", "IPv6")):
            endpoints = [e for e in group.endpoints if (":" in e.address) == (family == "6")]
            for index in range(0, len(endpoints), MAX_SLICE_ENDPOINTS):
                name = f"{derived}-{_cluster_tag(cluster)}-{family}-{index // MAX_SLICE_ENDPOINTS}"
                out[name] = {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name,
                        "namespace": model.key[0],
                        "labels": {
                            SLICE_SERVICE_LABEL: derived,
                            SERVICE_NAME_LABEL: model.key[1],
                            SOURCE_CLUSTER_LABEL: cluster,
                            SLICE_MANAGED_LABEL: MANAGER,
                        },
                    },
                    "addressType": address_type,
                    "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port} for p in group.ports],
                    "endpoints": [_slice_endpoint(e) for e in endpoints[index : index + MAX_SLICE_ENDPOINTS]],
                }
    return out


def _slice_endpoint(endpoint: ImportEndpoint) -> Obj:
    out: Obj = {"addresses": [endpoint.address], "conditions": {"ready": endpoint.ready}}
    if endpoint.hostname:
        out["hostname"] = endpoint.hostname
    if endpoint.nodename:
        out["nodeName"] = endpoint.nodename
    return out


def differs(existing: Obj, desired: Obj, fields: Iterable[str]) -> bool:
    """Whether any of ``fields`` (top-level, or ``metadata.labels``/``annotations``) differs; server
    defaults are ignored."""
    for name in fields:
        if name in ("labels", "annotations"):  # ours must be there; others' may be too
            have = (existing.get("metadata") or {}).get(name) or {}
            want = (desired.get("metadata") or {}).get(name) or {}
            if any(have.get(k) != v for k, v in want.items()):
                return True
        elif existing.get(name) != desired.get(name):
            return True
    return False


def _ports(service: Obj) -> list[tuple[str, str, int]]:
    """A Service's ports as we set them; the API server fills in targetPort and other defaults."""
    ports = (service.get("spec") or {}).get("ports") or []
    return sorted(
        (str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p.get("port") or 0)) for p in ports
    )


def _managed(obj: Obj, label: str = MANAGED_LABEL) -> bool:
    return labels_of(obj).get(label) == MANAGER


class ImportController:
    def __init__(
        self,
        *,
        api: KubeApi,
        informers: Informers,
        cloudmap: CloudMapClient,
        identity: ClusterIdentity,
        elector: LeaderElector | None,
        poll_interval: float,
        on_change: Callable[[Key], None] | None = None,
        stale_after: float = 0.0,
        stale_grace: float = 0.0,
        evict_stale: bool = False,
        max_staleness: float = 300.0,
    ) -> None:
        self._api = api
        # What changed (mcs/changes.py): the beacons' revision and what each cluster's beacon said last,
        # when each import's revision was last checked, and the sweep's pace.
        self._sweep = changes.Sweep(max_staleness)
        self._pending: FairQueue[Key] = FairQueue()  # services to read, by namespace turn
        self._beacons = changes.BeaconReader(cloudmap)
        self._verified: dict[Key, float] = {}
        self._last_cycle: float | None = None
        self._ensured_once = False
        self._ensured_stale: frozenset[str] = frozenset()
        self._drift: list[Key] = []  # the imports this round of drift repair has still to compare
        self._unsettled: set[Key] = set()  # imports whose cluster objects changed since they were ensured
        # The sweep's checks run behind the polls (``_check_later``): a poll waits for its change reads only,
        # so a change a beacon names is read at the next poll even while a backlog of checks waits for the
        # budget. What they find moved is made to match by the next poll.
        self._checking: set[Key] = set()
        self._checks: set[asyncio.Task[None]] = set()
        self._checked_moved: set[Key] = set()
        self._check_slots = asyncio.Semaphore(CONCURRENCY)
        self._check_failed: set[str] = set()  # namespaces a check failed in since the last poll (logged once)
        self.full_checks = 0  # polls that checked every revision (a beacon gap)
        # Clusters that are gone (mcs/heartbeat.py): judged from their heartbeats, read at a low rate.
        self.staleness = heartbeat.Staleness(stale_after, stale_grace)
        self._heartbeat_every = heartbeat.interval(stale_after)
        self._heartbeat_read_at = -float("inf")
        self._evict_stale = evict_stale
        self.evicted: frozenset[str] = frozenset()
        # Told each service whose Cloud Map instances changed (another cluster exported, changed or left),
        # so this cluster's export of it is checked for conflicts at once, not at its next resync.
        self._on_change = on_change
        self._cloudmap = cloudmap
        self._identity = identity
        self._clusterset_id: str | None = None
        self._elector = elector
        self._poll_interval = poll_interval
        self._seen: dict[Key, tuple[int, ImportModel | None]] = {}  # revision and model per service
        # Views of the process's shared informers: the zone source and the export controller read the same
        # watches (one list and watch per resource per replica).
        self.namespaces = informers.view(NAMESPACES)
        self.imports = informers.view(SERVICE_IMPORTS, on_change=self._unsettled.update)
        self.services = informers.view(
            SERVICES, selector=f"{MANAGED_LABEL}={MANAGER}", on_change=self._derived_changed
        )
        self.slices = informers.view(
            ENDPOINT_SLICES,
            selector=f"{SLICE_MANAGED_LABEL}={MANAGER}",
            on_change=self._derived_changed,
            indexed=(SLICE_SERVICE_LABEL,),
        )
        self.cycles = 0
        self.errors = 0
        self.reconciles = ReconcileStats("mcsdns-import")

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._cancel_checks()

    def _cancel_checks(self) -> None:
        for task in list(self._checks):
            task.cancel()
        self._checking.clear()

    async def _run(self) -> None:
        views = (self.namespaces, self.imports, self.services, self.slices)
        await asyncio.gather(*(view.synced.wait() for view in views))
        while True:
            if self._identity.clusterset_id != self._clusterset_id:
                self._clusterset_id = self._identity.clusterset_id
                self._seen.clear()  # another clusterset: every service must be read again
                self._cancel_checks()
                self._beacons = changes.BeaconReader(self._cloudmap)
            started = asyncio.get_running_loop().time()
            if self._clusterset_id and (self._elector is None or self._elector.may_write()):
                began = time.monotonic()
                try:
                    await self.sync_once()
                    self.reconciles.done(began, failed=False)
                except SourceError as exc:
                    self.errors += 1
                    self.reconciles.done(began, failed=True)
                    logger.warning("import: %s; keeping every import as it is", exc)
                except Exception:
                    # Unexpected data: log it, keep everything as it is, and try again next poll.
                    self.errors += 1
                    self.reconciles.done(began, failed=True)
                    logger.exception("import cycle failed unexpectedly; keeping every import as it is")
            # A fixed rate: a cycle that took part of the period shortens the wait, not the other way.
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(self._poll_interval - elapsed, 0.05))

    def _derived_changed(self, keys: set[Key]) -> None:
        """A derived Service or slice changed (someone edited or deleted ours): its import is ensured again
        at the next poll. A deleted one's labels are gone: its namespace's imports are."""
        for key in keys:
            obj = self.services.objects.get(key) or self.slices.objects.get(key)
            name = labels_of(obj).get(SERVICE_NAME_LABEL) if obj is not None else None
            if name:
                self._unsettled.add((key[0], str(name)))
            else:
                self._unsettled.update(k for k in self.imports.objects if k[0] == key[0])

    def oldest_unverified(self, now: float | None = None) -> float:
        """Seconds since the import checked longest ago was checked (0 when there is none)."""
        if not self._verified:
            return 0.0
        return max(0.0, (now if now is not None else time.monotonic()) - min(self._verified.values()))

    def metrics(self) -> Iterator[Metric]:
        managed = [obj for obj in self.imports.objects.values() if _managed(obj)]
        yield GaugeMetricFamily(
            "mcsdns_imported_services", "ServiceImports mcsdns manages here", value=len(managed)
        )
        yield GaugeMetricFamily(
            "mcsdns_imported_endpoint_slices",
            "EndpointSlices mcsdns manages here",
            value=len(self.slices.objects),
        )
        ages = GaugeMetricFamily(
            "mcsdns_cluster_heartbeat_age_seconds",
            "How long each heartbeating cluster's Cloud Map heartbeat has stood still (fresh reads only)",
            labels=["cluster"],
        )
        for cluster, age in sorted(self.staleness.ages().items()):
            ages.add_metric([cluster], age)
        yield ages
        yield GaugeMetricFamily(
            "mcsdns_stale_clusters", "Clusters past --cluster-stale-after", value=len(self.staleness.stale())
        )
        yield GaugeMetricFamily(
            "mcsdns_evicted_clusters",
            "Stale clusters whose endpoints no longer count",
            value=len(self.evicted),
        )
        yield GaugeMetricFamily(
            "mcsdns_cloudmap_oldest_unverified_import_seconds",
            "Age of the oldest check of an imported service's Cloud Map revision (bounded by"
            " --cloudmap-max-staleness)",
            value=self.oldest_unverified(),
        )
        yield CounterMetricFamily(
            "mcsdns_import_full_checks",
            "Import polls that checked every service's revision (a change beacon could not say what changed)",
            value=self.full_checks,
        )
        yield CounterMetricFamily("mcsdns_import_cycles", "Cloud Map import polls", value=self.cycles)
        yield CounterMetricFamily("mcsdns_import_errors", "Import polls that failed", value=self.errors)
        yield from self.reconciles.metrics()

    def _guard(self) -> None:
        if self._elector is not None and not self._elector.may_write():
            raise SourceError("leadership lost", source="import")

    async def _read_heartbeats(self) -> None:
        """Every heartbeat interval: the clusters' beats into ``staleness``; then, if the operator asked,
        which clusters no longer count. A failed read counts against nobody (a partition is not a death)."""
        now = time.monotonic()
        if now - self._heartbeat_read_at < self._heartbeat_every or not self._clusterset_id:
            return
        if now - self._heartbeat_read_at > 3 * self._heartbeat_every:
            self.staleness.failed()  # not read for a while (not leading, a long cycle): nobody's gap
        self._heartbeat_read_at = now
        try:
            _, found = await self._cloudmap.discover(
                heartbeat.NAMESPACE, heartbeat.SERVICE, self._clusterset_id
            )
        except SourceError as exc:
            nobody_beats = isinstance(exc, CloudMapError) and exc.code in (
                "NamespaceNotFound",
                "ServiceNotFound",
            )
            if not nobody_beats:
                self.staleness.failed()
                logger.warning("heartbeats: %s; no cluster is judged until they are read again", exc)
                return
            found = []  # nobody beats yet
        self.staleness.read(now, heartbeat.beats(found, self._clusterset_id))
        evicted = self.staleness.evictable() if self._evict_stale else frozenset()
        if evicted != self.evicted:
            for cluster in sorted(evicted - self.evicted):
                logger.warning(
                    "cluster %s: no heartbeat past the grace period; its endpoints stop counting", cluster
                )
            for cluster in sorted(self.evicted - evicted):
                logger.info("cluster %s: heartbeating again; its endpoints count again", cluster)
            self.evicted = evicted
            self._seen.clear()  # every model is made again without (or with) those clusters

    async def sync_once(self) -> None:
        """One poll: learn what changed in Cloud Map for the local namespaces, then make the cluster match."""
        self.cycles += 1
        try:
            await self._read_heartbeats()
        except Exception:
            # Unexpected heartbeat data: nobody is judged from it, and the imports go on.
            self.staleness.failed()
            logger.exception("heartbeats could not be read; the imports go on without them")
        now = time.monotonic()
        period = self._poll_interval if self._last_cycle is None else now - self._last_cycle
        self._last_cycle = now
        local = {key[1] for key in self.namespaces.objects}
        namespaces = await self._cloudmap.namespaces()
        assert self._clusterset_id is not None
        named = await self._beacons.changed(self._clusterset_id)
        if named is None:
            self.full_checks += 1
            logger.info("import: a change beacon has a gap; checking every service")
        known: set[Key] = set()
        unknown: set[str] = set()  # namespaces we could not read: nothing in them is deleted
        for name in sorted(local & namespaces.keys()):
            self._cloudmap.note_services(namespaces[name], (k[1] for k in named or () if k[0] == name))
            try:
                listed = await self._cloudmap.services(namespaces[name], Priority.SWEEP)
            except SourceError as exc:
                logger.warning("import: namespace %s: %s; its imports stay as they are", name, exc)
                unknown.add(name)
                continue
            known.update((name, service) for service in listed)
        # Reads wait in a queue fair across namespaces, and a poll takes only what the budget can serve in
        # about one period: a burst of 500 new services in one team's namespaces is imported over several
        # polls, while another namespace's new service is read at its next turn, not after all of them.
        for key in sorted(key for key in known if key not in self._seen or key in (named or ())):
            self._pending.put(key)
        if named is None:
            for key in known:
                self._verified.pop(key, None)  # every revision is due: checked oldest first, within the limit
        limit = max(CONCURRENCY, int(self._cloudmap.read_rate() * self._poll_interval))
        # Checks still running count against this poll's: the budget serves them first.
        direct, checks = self._sweep.plan(
            self._pending,
            known - self._checking,
            self._verified,
            now=now,
            period=period,
            limit=limit,
            in_flight=len(self._checking),
        )
        moved, self._checked_moved = self._checked_moved, set()
        self._check_failed.clear()
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def read(key: Key) -> None:
            first = key not in self._seen
            async with semaphore:
                try:
                    if await self._read(key, False, Priority.CHANGE):
                        moved.add(key)
                    if first and self._seen[key][1] is None:
                        self._sweep.moved(key, time.monotonic())  # made, its instances not yet registered
                    elif key in (named or ()):
                        self._sweep.forget(key)  # its writer bumps a beacon: no need to follow it
                except SourceError as exc:
                    if key[0] not in unknown:
                        logger.warning("import: %s/%s: %s; its namespace is kept", *key, exc)
                    unknown.add(key[0])
                    self._pending.put(key)  # read again at its next turn

        self._check_later(checks, now)
        await asyncio.gather(*(read(key) for key in direct))
        for key in list(self._verified):
            if key not in known and key[0] not in unknown:
                del self._verified[key]  # no longer listed: nothing to verify
                self._seen.pop(key, None)
                self._sweep.forget(key)
        desired = {key: model for key in known if (model := self._seen.get(key, (0, None))[1]) is not None}
        stale = frozenset(self.staleness.stale())
        if not self._ensured_once or stale != self._ensured_stale:
            ensure = set(desired)
            self._ensured_once, self._ensured_stale = True, stale
        else:
            missing = desired.keys() - self.imports.objects.keys()
            drift, self._drift = drift_share(self._drift, desired.keys(), period)
            ensure = (moved | self._unsettled | missing | drift) & desired.keys()
        self._unsettled.clear()
        for key in sorted(ensure):
            await self._ensure(desired[key])
        for key, existing in list(self.imports.objects.items()):
            if key in known and key not in self._seen:
                continue  # not read yet (waiting for its turn): nothing is known against it
            if _managed(existing) and key not in desired and key[0] not in unknown:
                await self._remove(key)

    def _check_later(self, keys: list[Key], now: float) -> None:
        """Start the sweep's revision checks of ``keys`` (``changes.Sweep.plan``) without waiting for them."""
        self._checking.update(keys)
        for key in keys:
            task = asyncio.get_running_loop().create_task(self._check(key, now))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _check(self, key: Key, now: float) -> None:
        # An overdue check takes a change read's turns at the budget: at a sweep's, writes and first reads
        # would hold it past the bound.
        paced = not self._sweep.overdue(self._verified, key, now)
        try:
            async with self._check_slots:
                changed = await self._read(key, True, Priority.SWEEP if paced else Priority.CHANGE)
        except SourceError as exc:
            if key[0] not in self._check_failed:  # once per namespace and poll: an outage fails them all
                logger.warning("import: %s/%s: %s; checked again at its next turn", *key, exc)
            self._check_failed.add(key[0])
            return
        except Exception:
            # Unexpected data: the import stays as it is, and is checked again at its next turn.
            logger.exception("import: checking %s/%s failed unexpectedly", *key)
            return
        finally:
            self._checking.discard(key)
        if changed:
            self._checked_moved.add(key)
        self._sweep.checked(key, time.monotonic(), changed=changed)

    async def _read(self, key: Key, check_first: bool, priority: Priority) -> bool:
        """Read one service's instances into its model (after a revision check, when ``check_first``);
        True when the model changed. A service Cloud Map no longer has has no instances."""
        try:
            if check_first:
                revision = await self._cloudmap.revision(*key, priority)
                seen = self._seen.get(key)
                if seen is not None and seen[0] == revision:
                    self._verified[key] = time.monotonic()
                    return False
            revision, found = await self._cloudmap.discover(key[0], key[1], self._clusterset_id, priority)
        except CloudMapError as exc:
            if exc.code != "ServiceNotFound":
                raise
            revision, found = 0, []
        self._verified[key] = time.monotonic()
        if self.evicted:
            found = [i for i in found if i.attributes.get(attrs.CLUSTER_ID) not in self.evicted]
        model = import_model(key, found)
        previous = self._seen.get(key)
        self._seen[key] = (revision, model)
        if previous is not None and previous[1] == model:
            return False
        if self._on_change is not None:
            self._on_change(key)
        return True

    async def _ensure(self, model: ImportModel) -> None:
        namespace, name = model.key
        existing = self.imports.objects.get(model.key)
        if existing is not None and not _managed(existing):
            logger.warning(
                "import %s/%s: a ServiceImport not managed by mcsdns exists; leaving it", namespace, name
            )
            return
        service = await self._ensure_service(model)
        resource = self.imports.resource
        want = desired_import(model, service=service, api_version=f"{resource.group}/{resource.version}")
        if existing is None:
            self._guard()
            existing = await self._api.create(self.imports.resource, namespace, want)
            self.imports.objects.wrote(model.key, existing, over=None)
            logger.info(
                "import %s/%s: created (%s, %s)", namespace, name, model.type, want["spec"].get("ips", [])
            )
        elif differs(existing, want, ("spec", "labels", "annotations")):
            self._guard()
            # Ours on top of what others put there (the same rule as ``differs``).
            metadata = dict(existing["metadata"])
            for kind in ("labels", "annotations"):
                if kind in want["metadata"]:
                    metadata[kind] = {**(metadata.get(kind) or {}), **want["metadata"][kind]}
            read = existing
            existing = await self._api.replace(
                self.imports.resource,
                namespace,
                name,
                {**existing, "metadata": metadata, "spec": want["spec"]},
            )
            self.imports.objects.wrote(model.key, existing, over=read)
        await self._ensure_slices(model)
        await self._set_status(existing, model, service)

    async def _set_status(self, existing: Obj, model: ImportModel, service: Obj | None) -> None:
        """``status.clusters`` (the exporters), ``endpointSliceObjects`` and the ``Ready`` condition."""
        status = existing.get("status") or {}
        conditions = merge_conditions(
            list(status.get("conditions") or []),
            [import_ready(model, service), *self._stale_condition(model)],
            now=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            generation=int((existing.get("metadata") or {}).get("generation") or 0),
        )
        want = {
            "clusters": [{"cluster": cluster} for cluster in model.clusters],
            # desired_slices makes a slice exactly for each cluster's endpoints: no need to render them again.
            "endpointSliceObjects": "Present"
            if any(c.endpoints for c in model.clusters.values())
            else "Absent",
        }
        if all(status.get(k) == v for k, v in want.items()) and comparable(conditions) == comparable(
            status.get("conditions") or []
        ):
            return
        self._guard()
        updated = await self._api.replace(
            self.imports.resource,
            model.key[0],
            model.key[1],
            {**existing, "status": {**status, **want, "conditions": conditions}},
            subresource="status",
        )
        self.imports.objects.wrote(model.key, updated, over=existing)

    def _stale_condition(self, model: ImportModel) -> list[Condition]:
        """``mcsdns.io/StaleClusters`` while heartbeats are judged: which exporting clusters stopped."""
        if not self.staleness.stale_after:
            return []
        stale = sorted(set(self.staleness.stale()) & set(model.clusters))
        if not stale:
            return [Condition(STALE_CONDITION, False, "Heartbeating", "every exporting cluster heartbeats")]
        return [
            Condition(
                STALE_CONDITION,
                True,
                "HeartbeatStopped",
                f"no heartbeat for more than {self.staleness.stale_after:g}s from {', '.join(stale)}"
                + ("; evicted after the grace period" if self._evict_stale else ""),
            )
        ]

    async def _ensure_service(self, model: ImportModel) -> Obj:
        want = desired_service(model)
        name = want["metadata"]["name"]
        namespace = model.key[0]
        existing = self.services.objects.get((namespace, name))
        headless = model.type == "Headless"
        if existing is not None and (((existing.get("spec") or {}).get("clusterIP") == "None") != headless):
            # ClusterIP is immutable: a type change (the oldest export changed) needs a new Service.
            self._guard()
            await self._api.delete(SERVICES, namespace, name)
            existing = None
        if existing is None:
            self._guard()
            created = await self._api.create(SERVICES, namespace, want)
            self.services.objects.wrote((namespace, name), created, over=None)
            return created
        if _service_shape(existing) != _service_shape(want) or differs(existing, want, ("labels",)):
            self._guard()
            spec = {
                k: v
                for k, v in existing["spec"].items()
                if k not in ("sessionAffinity", "sessionAffinityConfig")
            }
            spec.update((k, v) for k, v in want["spec"].items() if k != "clusterIP")
            body = {**existing, "spec": spec}
            body["metadata"] = {
                **existing["metadata"],
                "labels": {**labels_of(existing), **want["metadata"]["labels"]},
            }
            replaced = await self._api.replace(SERVICES, namespace, name, body)
            self.services.objects.wrote((namespace, name), replaced, over=existing)
            existing = replaced
        return existing

    async def _ensure_slices(self, model: ImportModel) -> None:
        namespace = model.key[0]
        derived = derived_name(*model.key)
        want = desired_slices(model)
        have = {
            key[1]: obj
            for key, obj in self.slices.objects.labelled(SLICE_SERVICE_LABEL, namespace, derived).items()
        }
        for name, body in want.items():
            existing = have.get(name)
            if existing is None:
                self._guard()
                created = await self._api.create(ENDPOINT_SLICES, namespace, body)
                self.slices.objects.wrote((namespace, name), created, over=None)
            elif differs(existing, body, ("addressType", "ports", "endpoints", "labels")):
                self._guard()
                replaced = {
                    **body,
                    "metadata": {**existing["metadata"], "labels": body["metadata"]["labels"]},
                }
                written = await self._api.replace(ENDPOINT_SLICES, namespace, name, replaced)
                self.slices.objects.wrote((namespace, name), written, over=existing)
        for name in have.keys() - want.keys():
            self._guard()
            await self._api.delete(ENDPOINT_SLICES, namespace, name)
            self.slices.objects.pop((namespace, name), None)

    async def _remove(self, key: Key) -> None:
        """Cloud Map answered that no cluster exports it any more: remove what we made, only that."""
        namespace, name = key
        derived = derived_name(namespace, name)
        self._guard()
        for slice_key in self.slices.objects.labelled(SLICE_SERVICE_LABEL, namespace, derived):
            await self._api.delete(ENDPOINT_SLICES, namespace, slice_key[1])
            self.slices.objects.pop(slice_key, None)
        if (namespace, derived) in self.services.objects:
            await self._api.delete(SERVICES, namespace, derived)
            self.services.objects.pop((namespace, derived), None)
        await self._api.delete(self.imports.resource, namespace, name)
        self.imports.objects.pop(key, None)
        logger.info("import %s/%s: removed (no cluster exports it)", namespace, name)

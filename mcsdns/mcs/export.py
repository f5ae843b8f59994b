"""Export: ServiceExport + Service + EndpointSlices of this cluster → Cloud Map instances (leader only).

The plan is pure (``desired_endpoints``, ``plan_instances``, ``validity``, ``conflict``): objects in,
instances to register and deregister out, as the AWS controller's ``CalculateChanges`` does, but comparing
only the attribute keys we own and scoping instance ids to the cluster. ``ExportController`` applies it:
a work queue per service, a finalizer so deleting a ServiceExport (or its Service) deregisters this
cluster's instances and only them, and the KEP's ``Valid``/``Ready``/``Conflict`` conditions. A Cloud Map
error leaves everything registered as it was and retries with backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcsdns.clients.backoff import Backoff
from mcsdns.clients.cloudmap import CloudMapClient, CloudMapError, Instance
from mcsdns.clients.kube import ENDPOINT_SLICES, SERVICE_EXPORTS, SERVICES, Informers, Key, KubeApi, key_of
from mcsdns.errors import SourceError
from mcsdns.mcs import changes, heartbeat
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.conditions import Condition, comparable, merge_conditions
from mcsdns.mcs.identity import ClusterIdentity
from mcsdns.mcs.labels import labels_of
from mcsdns.mcs.leader import LeaderElector
from mcsdns.mcs.reconcile import ReconcileStats
from mcsdns.mcs.workqueue import FairQueue

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
FINALIZER = "mcsdns.io/cloudmap-export"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
RESYNC = 300.0  # every export is reconciled again this often (--cloudmap-max-staleness): drift is repaired
RESYNC_TICK = 1.0  # resyncs are queued a few at a time, evenly over the period, never all at once
BEACON_EVERY = 0.5  # seconds between two beacons while exports change (mcs/changes.py)
BEACON_BATCH = 30  # services announced per beacon at most; the rest go in the next one
LATE_RENEWAL_RETRY = 0.5  # seconds before a change that arrived while the lease renewal was late is retried
RETRY_START, RETRY_CAP = 0.5, 60.0
REGISTER_CONCURRENCY = 16
WORKERS = 4


@dataclass(frozen=True, slots=True)
class InstancePlan:
    register: Mapping[str, Mapping[str, str]]  # instance id → the full attribute map to write
    deregister: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.register or self.deregister)


def service_type(service: Obj) -> str:
    return "Headless" if (service.get("spec") or {}).get("clusterIP") == "None" else "ClusterSetIP"


def validity(service: Obj | None, key: Key) -> Condition:
    if service is None:
        return Condition("Valid", False, "NoService", f"Service {key[0]}/{key[1]} not found")
    kind = (service.get("spec") or {}).get("type") or "ClusterIP"
    if kind == "ExternalName":
        return Condition(
            "Valid", False, "InvalidServiceType", "ExternalName services cannot be exported (KEP-1645)"
        )
    return Condition("Valid", True, "Valid", f"{kind} service is exportable")


def _timestamp_ms(text: str | None) -> int:
    if not text:
        return 0
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def desired_endpoints(
    *, export: Obj, service: Obj, slices: Iterable[Obj], cluster_id: str, clusterset_id: str
) -> dict[str, attrs.ExportedEndpoint]:
    """One instance per (endpoint address x port) of the service's EndpointSlices, ready or not (READY)."""
    ports = (service.get("spec") or {}).get("ports") or []
    by_name = {str(p.get("name") or ""): p for p in ports}
    created = _timestamp_ms((export.get("metadata") or {}).get("creationTimestamp"))
    kind = service_type(service)
    properties = attrs.ServiceProperties.of(service, export)
    out: dict[str, attrs.ExportedEndpoint] = {}
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for slice_port in endpoint_slice.get("ports") or []:
            name = str(slice_port.get("name") or "")
            service_port = by_name.get(
                name
            )  # the EndpointSlice controller names slice ports after service ports
            if service_port is None or slice_port.get("port") is None:
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                ready = (endpoint.get("conditions") or {}).get("ready") is not False  # nil means ready
                for address in endpoint.get("addresses") or []:
                    exported = attrs.ExportedEndpoint(
                        cluster_id=cluster_id,
                        clusterset_id=clusterset_id,
                        address=str(address),
                        port=int(slice_port["port"]),
                        endpoint_port_name=name,
                        protocol=str(slice_port.get("protocol") or "TCP"),
                        service_port_name=str(service_port.get("name") or ""),
                        service_port=int(service_port["port"]),
                        service_target_port=str(service_port.get("targetPort") or service_port["port"]),
                        service_protocol=str(service_port.get("protocol") or "TCP"),
                        service_type=kind,
                        ready=ready,
                        hostname=str(endpoint.get("hostname") or ""),
                        nodename=str(endpoint.get("nodeName") or ""),
                        export_created_ms=created,
                        properties=properties,
                    )
                    out[exported.instance_id()] = exported
    return out


def plan_instances(
    current: Mapping[str, Instance], desired: Mapping[str, attrs.ExportedEndpoint]
) -> InstancePlan:
    """``current``: this cluster's instances only. Re-register only when one of our keys differs."""
    register: dict[str, Mapping[str, str]] = {}
    for instance_id, endpoint in desired.items():
        wanted = endpoint.attributes()
        existing = current.get(instance_id)
        if attrs.needs_register(existing.attributes if existing else None, wanted):
            register[instance_id] = attrs.merged_attributes(existing.attributes if existing else None, wanted)
    deregister = tuple(sorted(current.keys() - desired.keys()))
    return InstancePlan(register, deregister)


@dataclass(frozen=True, slots=True)
class _Export:
    """One cluster's export of a service, as its instances describe it."""

    cluster_id: str
    created_ms: int
    type: str
    ports: Mapping[tuple[str, str], int]  # (service port name, protocol) → port
    properties: attrs.ServiceProperties

    @classmethod
    def of(cls, endpoints: list[attrs.ExportedEndpoint]) -> _Export:
        first = min(endpoints, key=lambda e: e.export_created_ms)
        return cls(
            cluster_id=first.cluster_id,
            created_ms=first.export_created_ms,
            type=first.service_type,
            ports={(e.service_port_name, e.service_protocol): e.service_port for e in endpoints},
            properties=first.properties,
        )

    def conflicts(self, winner: _Export) -> list[str]:
        """mcs-api's conflict reasons of this export against the clusterset's (the oldest export's)."""
        reasons = []
        if self.type != winner.type:
            reasons.append("TypeConflict")
        if any(winner.ports.get(key, port) != port for key, port in self.ports.items()):
            reasons.append("PortConflict")
        vips = self.type == winner.type == "ClusterSetIP"
        return reasons + self.properties.conflicts(winner.properties, vips=vips)


def conflict(ours: Iterable[attrs.ExportedEndpoint], others: Iterable[attrs.ExportedEndpoint]) -> Condition:
    """KEP-1645 "Constraints and Conflict Resolution": the oldest export's properties win; a conflict is
    reported on every export of the service (mcs-api: recommended on all constituents), each told who
    conflicts with whom. Ports are merged, so only the same port name and protocol on another number is a
    PortConflict. Several reasons are joined with commas, as mcs-api allows."""
    mine = list(ours)
    if not mine:
        return Condition("Conflict", False, "NoConflicts", "no endpoints exported")
    by_cluster: dict[str, list[attrs.ExportedEndpoint]] = {}
    for e in others:
        if e.cluster_id != mine[0].cluster_id:
            by_cluster.setdefault(e.cluster_id, []).append(e)
    me = _Export.of(mine)
    exports = sorted(
        [me, *(_Export.of(e) for e in by_cluster.values())], key=lambda x: (x.created_ms, x.cluster_id)
    )
    if len(exports) == 1:
        return Condition("Conflict", False, "NoConflicts", "no other cluster exports this service")
    winner = exports[0]
    found = {x.cluster_id: x.conflicts(winner) for x in exports[1:]}
    found = {cluster: reasons for cluster, reasons in found.items() if reasons}
    if not found:
        return Condition("Conflict", False, "NoConflicts", f"consistent with the {len(exports)} exports")
    reasons = sorted({r for rs in found.values() for r in rs}, key=_REASON_ORDER.index)
    if me.cluster_id in found:
        message = (
            f"{', '.join(found[me.cluster_id])}: this export differs from the oldest export, in cluster "
            f"{winner.cluster_id}, whose properties the clusterset uses"
        )
    else:
        whose = "this export's" if me is winner else f"cluster {winner.cluster_id}'s (the oldest export)"
        message = (
            f"the exports in {', '.join(f'cluster {c}' for c in sorted(found))} conflict "
            f"({', '.join(reasons)}); the clusterset uses {whose}"
        )
    return Condition("Conflict", True, ",".join(reasons), message)


_REASON_ORDER = [
    "TypeConflict",
    "PortConflict",
    "SessionAffinityConflict",
    "SessionAffinityConfigConflict",
    "InternalTrafficPolicyConflict",
    "TrafficDistributionConflict",
    "IPFamilyConflict",
    "LabelsConflict",
    "AnnotationsConflict",
]


def exported_message(count: int, export: Obj, service: Obj) -> str:
    left_out = attrs.ServiceProperties.of(service, export).too_long()
    if not left_out:
        return f"{count} endpoint instances in Cloud Map"
    return (
        f"{count} endpoint instances in Cloud Map; {' and '.join(left_out)} left out: longer than "
        f"Cloud Map's {attrs.MAX_ATTRIBUTE_VALUE}-character attribute value"
    )


class NotLeader(Exception):
    """Leadership was lost: stop writing at once."""


class ExportController:
    def __init__(
        self,
        *,
        api: KubeApi,
        informers: Informers,
        cloudmap: CloudMapClient,
        identity: ClusterIdentity,
        elector: LeaderElector | None,
        resync: float = RESYNC,
        heartbeat_every: float = heartbeat.MAX_INTERVAL,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._api = api
        self._heartbeat_every = heartbeat_every
        self._beats = 0  # heartbeats written, for metrics
        self._heartbeat_service: str | None = None
        self._cloudmap = cloudmap
        self._identity = identity
        self._elector = elector
        self._resync = resync
        self._clock = clock
        self._queue: FairQueue[Key] = FairQueue()
        self._reconciled: dict[Key, float] = {}  # when each export was last reconciled (for the resync)
        self._service_refs: dict[Key, str] = {}  # Cloud Map service id (or ARN) per exported service
        # The change beacon (mcs/changes.py); services whose instances changed here, not yet announced.
        self._beacon = changes.BeaconLog()
        self._beacon_service: str | None = None
        self._beacon_adopted = False
        self._unannounced: dict[Key, None] = {}
        self.beacons = 0
        self._retries: dict[Key, Backoff] = {}  # per export that failed, until it succeeds
        self._active: set[Key] = set()  # being reconciled by a worker
        self._dirty: set[Key] = set()  # changed while being reconciled
        self._exported: dict[Key, int] = {}  # instances per exported service, for metrics
        self.errors = 0
        self.reconciles = ReconcileStats("mcsdns-export")
        # Views of the process's shared informers (one list and watch per resource per replica).
        self.exports = informers.view(SERVICE_EXPORTS, on_change=self._enqueue)
        self.services = informers.view(SERVICES, on_change=self._enqueue)
        # Every EndpointSlice of a Service, but not the ones mcsdns writes for imports.
        selector = f"{SERVICE_NAME},{MANAGED_BY}!=mcsdns"
        self.slices = informers.view(
            ENDPOINT_SLICES, selector=selector, on_change=self._enqueue_slices, indexed=(SERVICE_NAME,)
        )
        if elector is not None:
            elector.subscribe(lambda leader: self._enqueue_all() if leader else None)

    async def run(self) -> None:
        await asyncio.gather(
            self.exports.synced.wait(), self.services.synced.wait(), self.slices.synced.wait()
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self._resync_loop())
            group.create_task(self._heartbeat_loop())
            group.create_task(self._beacon_loop())
            # A few workers, so one slow export (Cloud Map operations take seconds on AWS) does not hold up
            # the others; a service is never reconciled by two workers at once.
            for _ in range(WORKERS - 1):
                group.create_task(self._work())
            await self._work()

    def metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mcsdns_exported_instances",
            "Cloud Map instances this cluster exports",
            value=sum(self._exported.values()),
        )
        yield GaugeMetricFamily(
            "mcsdns_exported_services", "Services this cluster exports", value=len(self._exported)
        )
        yield CounterMetricFamily(
            "mcsdns_export_errors", "Export reconciles that failed and were retried", value=self.errors
        )
        yield GaugeMetricFamily(
            "mcsdns_export_queue_depth", "Exports waiting to be reconciled", value=len(self._queue)
        )
        yield CounterMetricFamily(
            "mcsdns_change_beacons",
            "Change beacons this cluster wrote to Cloud Map (mcs/changes.py)",
            value=self.beacons,
        )
        yield CounterMetricFamily(
            "mcsdns_heartbeats",
            "Heartbeats this cluster wrote to Cloud Map (mcs/heartbeat.py)",
            value=self._beats,
        )
        yield from self.reconciles.metrics()

    async def _heartbeat_loop(self) -> None:
        """While leading, refresh this cluster's heartbeat (mcs/heartbeat.py) every ``heartbeat_every``
        seconds, so other clusters can tell it from one that is gone. A failure waits for the next beat."""
        while True:
            cluster_id, clusterset_id = self._identity.cluster_id, self._identity.clusterset_id
            if cluster_id and clusterset_id and self._may_write():
                try:
                    await self._beat(cluster_id, clusterset_id)
                except SourceError as exc:
                    logger.warning("heartbeat: %s; trying again in %.0fs", exc, self._heartbeat_every)
                except NotLeader:
                    pass  # leadership lost between the check and the write: the new leader beats
                except Exception:
                    # Unexpected data from Cloud Map: a missed beat, never a stopped export controller.
                    logger.exception(
                        "heartbeat failed unexpectedly; trying again in %.0fs", self._heartbeat_every
                    )
            await asyncio.sleep(self._heartbeat_every)

    async def _beat(self, cluster_id: str, clusterset_id: str) -> None:
        if self._heartbeat_service is None:
            self._heartbeat_service = await self._own_service(heartbeat.SERVICE)
        self._guard()
        # The beat only has to move: the writer's clock in ms (importers never compare it with theirs).
        attributes = heartbeat.beat_attributes(cluster_id, clusterset_id, int(time.time() * 1000))
        try:
            await self._cloudmap.register(
                self._heartbeat_service, heartbeat.instance_id(cluster_id, clusterset_id), attributes
            )
        except SourceError:
            self._heartbeat_service = None  # deleted by hand? look it up again next time
            raise
        self._beats += 1

    async def _beacon_loop(self) -> None:
        """While leading, announce the services whose instances this cluster changed (mcs/changes.py), at
        most one beacon every ``BEACON_EVERY`` s. A failed write keeps them for the next one."""
        while True:
            await asyncio.sleep(BEACON_EVERY)
            cluster_id, clusterset_id = self._identity.cluster_id, self._identity.clusterset_id
            if not (self._unannounced and cluster_id and clusterset_id and self._may_write()):
                continue
            batch = list(self._unannounced)[:BEACON_BATCH]
            try:
                await self._announce(batch, cluster_id, clusterset_id)
            except (SourceError, NotLeader) as exc:
                logger.debug("change beacon: %s; announcing again in %.1fs", exc, BEACON_EVERY)
            except Exception:
                logger.exception("change beacon failed unexpectedly; announcing again")
            else:
                for key in batch:
                    self._unannounced.pop(key, None)

    async def _announce(self, batch: list[Key], cluster_id: str, clusterset_id: str) -> None:
        instance_id = heartbeat.instance_id(cluster_id, clusterset_id)
        if self._beacon_service is None:
            self._beacon_service = await self._own_service(changes.SERVICE)
        if not self._beacon_adopted:
            # Continue this cluster's log where the previous leader (or process) left it, so importers
            # that read it never see a gap and check everything (mcs/changes.py).
            _, found = await self._cloudmap.discover(heartbeat.NAMESPACE, changes.SERVICE, clusterset_id)
            for instance in found:
                beacon = changes.read_beacon(instance.attributes, clusterset_id)
                if instance.id == instance_id and beacon is not None:
                    self._beacon.adopt(beacon)
            self._beacon_adopted = True
        self._guard()
        self._beacon.announce(batch, int(time.time() * 1000))
        try:
            await self._cloudmap.register(
                self._beacon_service, instance_id, self._beacon.attributes(cluster_id, clusterset_id)
            )
        except SourceError:
            self._beacon_service = None  # deleted by hand? look it up again next time
            raise
        self.beacons += 1

    async def _own_service(self, name: str) -> str:
        """A service of mcsdns's own namespace (heartbeats, beacons), made if needed."""
        namespace = (await self._cloudmap.namespaces()).get(
            heartbeat.NAMESPACE
        ) or await self._cloudmap.create_namespace(heartbeat.NAMESPACE)
        return await self._cloudmap.create_service(namespace, name)

    def _may_write(self) -> bool:
        return self._elector is None or self._elector.may_write()

    def _enqueue(self, keys: set[Key], *, resync: bool = False) -> None:
        for key in keys:
            self._queue.put(key, resync=resync)

    def _enqueue_slices(self, keys: set[Key]) -> None:
        names = set()
        for key in keys:
            obj = self.slices.objects.get(key)
            service = labels_of(obj).get(SERVICE_NAME)
            if service:
                names.add((key[0], str(service)))
            else:
                names |= {k for k in self.exports.objects if k[0] == key[0]}  # deleted slice: recheck the ns
        self._enqueue(names)

    def clusterset_changed(self, key: Key) -> None:
        """Another cluster's export of ``key`` may have changed (the importer saw its instances move): if
        this cluster exports it too, reconcile it, so a conflict shows on every exporter (KEP-1645)."""
        if key in self.exports.objects:
            self._enqueue({key})

    def _enqueue_all(self) -> None:
        self._enqueue(set(self.exports.objects))

    async def _resync_loop(self) -> None:
        """Reconcile every export again once per ``resync`` period (drift repair: an instance deleted by
        hand, a lost write), a few each tick and oldest first, so the calls are spread evenly and a resync
        never delays a change (it queues behind them)."""
        while True:
            await asyncio.sleep(RESYNC_TICK)
            now = time.monotonic()
            due = {
                key for key in self.exports.objects if now - self._reconciled.get(key, now) >= self._resync
            }
            for key in due:
                self._reconciled[key] = now  # queued once per period, even while it waits
            self._enqueue(due, resync=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._queue.get()
            if key not in self.exports.objects:
                self._reconciled.pop(key, None)
                continue  # not exported: a Service or slice without export
            self._reconciled.setdefault(key, time.monotonic())
            if not self._may_write():
                if self._elector is not None and self._elector.leading:
                    # Still the leader, but its last renewal is late (a busy process): this change must
                    # not wait for the next resync, so it is tried again shortly.
                    loop.call_later(LATE_RENEWAL_RETRY, self._enqueue, {key})
                continue  # another replica writes; becoming the leader enqueues everything again
            if key in self._active:
                self._dirty.add(key)  # another worker is on it: it goes round once more when done
                continue
            self._active.add(key)
            started = time.monotonic()
            try:
                await self.reconcile(key)
                self._reconciled[key] = time.monotonic()
                self._retries.pop(key, None)
                self.reconciles.done(started, failed=False)
            except NotLeader:
                logger.info("export %s/%s: leadership lost, stopping", *key)
            except Exception as exc:
                # A Cloud Map or API error, or an object we did not expect: retry this export later and
                # keep serving and exporting everything else (one bad object never stops the process).
                self.errors += 1
                self.reconciles.done(started, failed=True)
                delay = self._retries.setdefault(key, Backoff(RETRY_START, RETRY_CAP)).next_delay()
                if isinstance(exc, SourceError):
                    logger.warning("export %s/%s: %s; retrying in %.1fs", key[0], key[1], exc, delay)
                else:
                    logger.exception(
                        "export %s/%s failed unexpectedly; retrying in %.1fs", key[0], key[1], delay
                    )
                loop.call_later(delay, self._enqueue, {key})
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._enqueue({key})

    def _guard(self) -> None:
        if not self._may_write():
            raise NotLeader

    async def reconcile(self, key: Key) -> None:
        export = self.exports.objects.get(key)
        if export is None:
            return
        metadata = export.get("metadata") or {}
        service = self.services.objects.get(key)
        deleting = bool(metadata.get("deletionTimestamp"))
        valid = validity(service, key)
        cluster_id, clusterset_id = self._identity.cluster_id, self._identity.clusterset_id
        if not cluster_id or not clusterset_id:
            await self._set_status(
                export,
                [valid, Condition("Ready", False, "Pending", "; ".join(self._identity.missing))],
            )
            return
        if deleting or not valid.status:
            removed = await self._unexport(key, cluster_id, clusterset_id)
            self._exported.pop(key, None)
            if deleting:
                await self._remove_finalizer(export)
                logger.info("export %s/%s: deleted, %d instances deregistered", key[0], key[1], removed)
                return
            await self._set_status(
                export,
                [
                    valid,
                    Condition("Ready", False, "Failed", f"not exported: {valid.message}"),
                    Condition("Conflict", False, "NoConflicts", "not exported"),
                ],
            )
            return
        assert service is not None
        if FINALIZER not in (metadata.get("finalizers") or []):
            self._guard()
            read = export
            export = await self._api.patch(
                self.exports.resource,
                key[0],
                key[1],
                {
                    "metadata": {
                        "finalizers": [*(metadata.get("finalizers") or []), FINALIZER],
                        "resourceVersion": metadata.get("resourceVersion"),
                    }
                },
            )
            self.exports.objects.wrote(key, export, over=read)
        slices = list(self.slices.objects.labelled(SERVICE_NAME, *key).values())
        desired = desired_endpoints(
            export=export, service=service, slices=slices, cluster_id=cluster_id, clusterset_id=clusterset_id
        )
        service_id = await self._ensure_service(key)
        _, found = await self._cloudmap.discover(key[0], key[1], clusterset_id)
        current = {i.id: i for i in found if i.attributes.get(attrs.CLUSTER_ID) == cluster_id}
        others = [_parse(i) for i in found if i.attributes.get(attrs.CLUSTER_ID) != cluster_id]
        plan = plan_instances(current, desired)
        try:
            await self._apply(service_id, plan)
        except CloudMapError as exc:
            if exc.code == "ServiceNotFound":
                self._service_refs.pop(key, None)  # deleted in Cloud Map: made again at the retry
            raise
        finally:
            if plan:
                self._unannounced[key] = None  # even half applied: importers should look
        self._exported[key] = len(desired)
        if plan:
            logger.info(
                "export %s/%s: %d registered, %d deregistered (%d instances)",
                key[0],
                key[1],
                len(plan.register),
                len(plan.deregister),
                len(desired),
            )
        await self._set_status(
            export,
            [
                valid,
                Condition("Ready", True, "Exported", exported_message(len(desired), export, service)),
                conflict(desired.values(), (e for e in others if e is not None)),
            ],
        )

    async def _ensure_service(self, key: Key) -> str:
        """The Cloud Map service of ``key``, made if needed: one CreateService the first time (it returns
        an existing service's id too), none after. Listing instead would page over every service of the
        account (ListServices filters after it pages), which a burst of new exports cannot afford."""
        known = self._service_refs.get(key)
        if known is not None:
            return known
        namespace = (await self._cloudmap.namespaces()).get(key[0])
        if namespace is None:
            self._guard()
            namespace = await self._cloudmap.create_namespace(key[0])
        # A list the importer read already has it (a new leader's first reconciles): no call at all.
        service_ref = self._cloudmap.known_service(namespace, key[1])
        if service_ref is None:
            self._guard()
            service_ref = await self._cloudmap.create_service(namespace, key[1])
            # Named at once, so importers account for the namespace's new ServiceCount without a list.
            self._unannounced[key] = None
        self._service_refs[key] = service_ref
        return service_ref

    async def _apply(self, service_id: str, plan: InstancePlan) -> None:
        semaphore = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(instance_id: str, attributes: Mapping[str, str]) -> None:
            async with semaphore:
                self._guard()
                await self._cloudmap.register(service_id, instance_id, attributes)

        async def deregister(instance_id: str) -> None:
            async with semaphore:
                self._guard()
                await self._cloudmap.deregister(service_id, instance_id)

        # Register first, then deregister, so a changing service never answers with nothing in between.
        await asyncio.gather(*(register(i, a) for i, a in plan.register.items()))
        await asyncio.gather(*(deregister(i) for i in plan.deregister))

    async def _unexport(self, key: Key, cluster_id: str, clusterset_id: str) -> int:
        """Deregister this cluster's instances of the service, and only them; return how many."""
        namespace = (await self._cloudmap.namespaces()).get(key[0])
        if namespace is None:
            return 0
        try:
            _, found = await self._cloudmap.discover(key[0], key[1], clusterset_id)
        except CloudMapError as exc:
            if exc.code == "ServiceNotFound":
                return 0
            raise
        mine = tuple(sorted(i.id for i in found if i.attributes.get(attrs.CLUSTER_ID) == cluster_id))
        if not mine:
            return 0
        service_id = self._service_refs.get(key) or self._cloudmap.known_service(namespace, key[1])
        if service_id is None:
            # Known only by name (a beacon named it since the list was read): read the list for its id.
            self._cloudmap.forget_services(namespace)
            service_id = (await self._cloudmap.services(namespace)).get(key[1])
        if not service_id:
            raise CloudMapError(
                f"service {key[0]}/{key[1]} has instances but is not listed", code="ServiceNotFound"
            )
        try:
            await self._apply(service_id, InstancePlan({}, mine))
        finally:
            self._unannounced[key] = None
        return len(mine)

    async def _remove_finalizer(self, export: Obj) -> None:
        metadata = export.get("metadata") or {}
        finalizers = [f for f in metadata.get("finalizers") or [] if f != FINALIZER]
        if finalizers == (metadata.get("finalizers") or []):
            return
        self._guard()
        await self._api.patch(
            self.exports.resource,
            metadata.get("namespace"),
            str(metadata.get("name")),
            {"metadata": {"finalizers": finalizers, "resourceVersion": metadata.get("resourceVersion")}},
        )

    async def _set_status(self, export: Obj, conditions: list[Condition]) -> None:
        metadata = export.get("metadata") or {}
        status = export.get("status") or {}
        existing = list(status.get("conditions") or [])
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        merged = merge_conditions(
            existing, conditions, now=now, generation=int(metadata.get("generation") or 0)
        )
        if comparable(merged) == comparable(existing):
            return
        self._guard()
        body = {**export, "status": {**status, "conditions": merged}}
        updated = await self._api.replace(
            self.exports.resource,
            metadata.get("namespace"),
            str(metadata.get("name")),
            body,
            subresource="status",
        )
        self.exports.objects.wrote(key_of(updated), updated, over=export)


def _parse(instance: Instance) -> attrs.ExportedEndpoint | None:
    try:
        return attrs.from_attributes(instance.attributes)
    except attrs.InvalidInstance:
        return None

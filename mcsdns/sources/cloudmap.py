"""Cloud Map as a zone source, for the standalone mode (``mcsdns serve --cloudmap``, no Kubernetes).

Every poll: ListNamespaces, the service lists (re-read only when a namespace's count moved), the change
beacons (mcs/changes.py), DiscoverInstances for the services they name and the new ones, and the sweep's
share of revision checks (every service within --cloudmap-max-staleness): an idle clusterset costs a few
calls a poll, not one per service. With no cluster to give a VIP, every service answers the ready
addresses of all clusters, as a headless service does; SRV records come from the port attributes. A
failed poll keeps the last good records; a service disappears only when a successful listing no longer has it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mcsdns.clients.budget import Priority
from mcsdns.clients.cloudmap import CloudMapClient, Instance
from mcsdns.errors import SourceError
from mcsdns.mcs import changes
from mcsdns.mcs import instances as attrs
from mcsdns.sources.events import Contact, Emit, Listed, SourceName
from mcsdns.sources.objects import ObjectRef, Record
from mcsdns.zone.model import ClusterId, Endpoint, EndpointGroup, Port, ServiceImport, ServiceKey, ServiceType
from mcsdns.zone.names import is_label

logger = logging.getLogger(__name__)

CONCURRENCY = 32  # revision checks in flight at once


def service_records(key: ServiceKey, instances: list[Instance]) -> dict[ObjectRef, Record]:
    """One service's instances → its import (headless, no VIP) and one endpoint group per cluster."""
    if not (is_label(key.namespace) and is_label(key.name)):
        # Cloud Map takes names no Kubernetes namespace or Service has (an HTTP namespace's may be 1024
        # characters), which cannot be the labels of <svc>.<ns>.svc.<zone> (fuzz/cloudmap.py).
        logger.warning("cloudmap %s skipped: its namespace and name must be DNS labels", key)
        return {}
    ports: dict[Port, None] = {}
    by_cluster: dict[str, tuple[dict[Port, None], dict[str, Endpoint]]] = {}
    for instance in instances:
        try:
            exported = attrs.from_attributes(instance.attributes)
        except attrs.InvalidInstance as exc:
            logger.warning("cloudmap %s instance %s skipped: %s", key, instance.id, exc)
            continue
        ports[Port(exported.service_port_name, exported.service_protocol, exported.service_port)] = None
        group_ports, endpoints = by_cluster.setdefault(exported.cluster_id, ({}, {}))
        group_ports[Port(exported.endpoint_port_name, exported.protocol, exported.port)] = None
        known = endpoints.get(exported.address)
        # One instance per address x port: the address is ready if any of its instances says so.
        endpoints[exported.address] = Endpoint(
            cluster=ClusterId(exported.cluster_id),
            addresses=(exported.address,),
            hostname=exported.hostname,
            ready=exported.ready or (known is not None and known.ready),
        )
    if not by_cluster:
        return {}
    records: dict[ObjectRef, Record] = {
        ("ServiceImport", key.namespace, key.name): ServiceImport(
            key=key, type=ServiceType.HEADLESS, ports=tuple(sorted(ports))
        )
    }
    for cluster, (group_ports, endpoints) in sorted(by_cluster.items()):
        records[("CloudMapEndpoints", key.namespace, f"{key.name}/{cluster}")] = EndpointGroup(
            service=key,
            cluster=ClusterId(cluster),
            ports=tuple(sorted(group_ports)),
            endpoints=tuple(endpoints[address] for address in sorted(endpoints)),
        )
    return records


class CloudMapZoneSource:
    def __init__(
        self,
        client: CloudMapClient,
        *,
        clusterset_id: str | None,
        poll_interval: float,
        max_staleness: float = 300.0,
    ) -> None:
        self._client = client
        self._clusterset_id = clusterset_id
        self._poll_interval = poll_interval
        self._sweep = changes.Sweep(max_staleness)
        self._beacons = changes.BeaconReader(client)
        self._revisions: dict[ServiceKey, int] = {}
        self._verified: dict[tuple[str, str], float] = {}
        self._last_poll: float | None = None
        self._records: dict[ServiceKey, dict[ObjectRef, Record]] = {}
        self._dirty = True  # records changed since the last Listed (survives a cycle that failed halfway)

    @property
    def name(self) -> SourceName:
        return SourceName("cloudmap")

    async def run(self, emit: Emit) -> None:
        while True:
            try:
                await self.poll()
            except SourceError as exc:
                emit(Contact(self.name, str(exc)))  # the engine logs it and keeps the last good zone
            else:
                if self._dirty:
                    emit(Listed(self.name, self.records()))
                    self._dirty = False
                else:
                    emit(Contact(self.name))
            await asyncio.sleep(self._poll_interval)

    def records(self) -> dict[ObjectRef, Record]:
        return {ref: record for records in self._records.values() for ref, record in records.items()}

    async def poll(self) -> None:
        """One cycle: read what changed in Cloud Map into the records."""
        now = time.monotonic()
        period = self._poll_interval if self._last_poll is None else now - self._last_poll
        self._last_poll = now
        semaphore = asyncio.Semaphore(CONCURRENCY)
        keys: set[ServiceKey] = set()
        named = await self._beacons.changed(self._clusterset_id) if self._clusterset_id else set()
        for namespace in (await self._client.namespaces()).values():
            if not is_label(namespace.name):
                continue  # no <svc>.<ns>.svc.<zone> name can hold it (mcsdns.heartbeats among them)
            # What a beacon named exists, though a list read before it was made lacks it.
            self._client.note_services(namespace, (k[1] for k in named or () if k[0] == namespace.name))
            listed = await self._client.services(namespace, Priority.SWEEP)
            keys.update(ServiceKey(namespace.name, name) for name in listed)
        by_pair = {(key.namespace, key.name): key for key in keys}
        direct = {key for key in keys if key not in self._revisions}
        direct |= {by_pair[pair] for pair in named or () if pair in by_pair}
        others = {(key.namespace, key.name) for key in keys - direct}
        if named is None:
            checks = sorted(others)
        else:
            checks = self._sweep.pick(self._verified, others, now=now, period=period)

        async def refresh(key: ServiceKey, check_first: bool) -> None:
            async with semaphore:
                if check_first:
                    revision = await self._client.revision(key.namespace, key.name, Priority.SWEEP)
                    if self._revisions.get(key) == revision:
                        self._verified[key.namespace, key.name] = time.monotonic()
                        return
                revision, found = await self._client.discover(key.namespace, key.name, self._clusterset_id)
            self._verified[key.namespace, key.name] = time.monotonic()
            records = service_records(key, found)
            if records != self._records.get(key):
                self._dirty = True
            self._records[key], self._revisions[key] = records, revision

        await asyncio.gather(
            *(refresh(key, False) for key in direct), *(refresh(by_pair[pair], True) for pair in checks)
        )
        for key in self._records.keys() - keys:
            # A successful listing no longer has it: the service was deleted in Cloud Map.
            del self._records[key]
            self._revisions.pop(key, None)
            self._verified.pop((key.namespace, key.name), None)
            self._dirty = True

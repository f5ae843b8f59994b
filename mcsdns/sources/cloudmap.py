"""Cloud Map as a zone source, for the standalone mode (``mcsdns serve --cloudmap``, no Kubernetes).

Every poll: ListNamespaces, ListServices per namespace, DiscoverInstancesRevision per service, and
DiscoverInstances only for services whose revision moved, so an idle clusterset costs one cheap call per
service. With no cluster to give a VIP, every service answers the ready addresses of all clusters, as a
headless service does; SRV records come from the port attributes. A failed poll keeps the last good
records; a service disappears only when a successful listing no longer has it.
"""

from __future__ import annotations

import asyncio
import logging

from mcsdns.clients.cloudmap import CloudMapClient, Instance
from mcsdns.errors import SourceError
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
    def __init__(self, client: CloudMapClient, *, clusterset_id: str | None, poll_interval: float) -> None:
        self._client = client
        self._clusterset_id = clusterset_id
        self._poll_interval = poll_interval
        self._revisions: dict[ServiceKey, int] = {}
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
        semaphore = asyncio.Semaphore(CONCURRENCY)
        keys: list[ServiceKey] = []
        for namespace in (await self._client.namespaces()).values():
            if not is_label(namespace.name):
                continue  # no <svc>.<ns>.svc.<zone> name can hold it (mcsdns.heartbeats among them)
            keys.extend(ServiceKey(namespace.name, name) for name in await self._client.services(namespace))

        async def refresh(key: ServiceKey) -> None:
            async with semaphore:
                revision = await self._client.revision(key.namespace, key.name)
                if self._revisions.get(key) == revision:
                    return
                revision, found = await self._client.discover(key.namespace, key.name, self._clusterset_id)
            records = service_records(key, found)
            if records != self._records.get(key):
                self._dirty = True
            self._records[key], self._revisions[key] = records, revision

        await asyncio.gather(*(refresh(key) for key in keys))
        for key in self._records.keys() - set(keys):
            # A successful listing no longer has it: the service was deleted in Cloud Map.
            del self._records[key]
            self._revisions.pop(key, None)
            self._dirty = True

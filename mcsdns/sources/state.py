"""What every source has reported, merged per service: change in, changed service keys out.

Pure (no I/O, no clock). ``apply`` returns the keys of the services whose records may differ, so the
engine re-renders only those; ``service`` assembles one service from all sources.
"""

from __future__ import annotations

import collections

from mcsdns.sources.events import Change, Deleted, Listed, SourceName, Upserted
from mcsdns.sources.objects import ObjectRef, Record
from mcsdns.zone.model import EndpointGroup, ImportedService, ServiceImport, ServiceKey

Owner = tuple[SourceName, ObjectRef]


def _service_of(record: Record) -> ServiceKey:
    return record.key if isinstance(record, ServiceImport) else record.service


class ClusterSetState:
    def __init__(self) -> None:
        self._records: dict[SourceName, dict[ObjectRef, Record]] = {}
        self._by_service: dict[ServiceKey, set[Owner]] = collections.defaultdict(set)
        self.listed: set[SourceName] = set()

    def apply(self, change: Change) -> set[ServiceKey]:
        """Record ``change``; return the services it may have changed."""
        records = self._records.setdefault(change.source, {})
        if isinstance(change, Listed):
            self.listed.add(change.source)
            dirty: set[ServiceKey] = set()
            for ref in records.keys() - change.records.keys():
                dirty.add(self._remove(change.source, records, ref))
            for ref, record in change.records.items():
                if records.get(ref) != record:
                    dirty |= self._put(change.source, records, ref, record)
            return dirty
        if isinstance(change, Upserted):
            if records.get(change.ref) == change.record:
                return set()
            return self._put(change.source, records, change.ref, change.record)
        if isinstance(change, Deleted) and change.ref in records:
            return {self._remove(change.source, records, change.ref)}
        return set()

    def _put(
        self, source: SourceName, records: dict[ObjectRef, Record], ref: ObjectRef, record: Record
    ) -> set[ServiceKey]:
        dirty = {self._remove(source, records, ref)} if ref in records else set()
        records[ref] = record
        key = _service_of(record)
        self._by_service[key].add((source, ref))
        dirty.add(key)
        return dirty

    def _remove(self, source: SourceName, records: dict[ObjectRef, Record], ref: ObjectRef) -> ServiceKey:
        key = _service_of(records.pop(ref))
        owners = self._by_service[key]
        owners.discard((source, ref))
        if not owners:
            del self._by_service[key]
        return key

    def service(self, key: ServiceKey) -> ImportedService | None:
        """The service as the zone should see it, or None when no source has its ServiceImport.

        EndpointSlices without a ServiceImport publish nothing (as in CoreDNS's multicluster plugin). If
        two sources hold an import of the same service, the first by (source, object) wins, so the answer
        does not depend on arrival order.
        """
        spec: ServiceImport | None = None
        groups: list[tuple[Owner, EndpointGroup]] = []
        for owner in sorted(self._by_service.get(key, ())):
            record = self._records[owner[0]][owner[1]]
            if isinstance(record, ServiceImport):
                spec = spec or record
            else:
                groups.append((owner, record))
        if spec is None:
            return None
        groups.sort(key=lambda item: (item[1].cluster, item[0]))
        return ImportedService(spec=spec, groups=tuple(group for _, group in groups))

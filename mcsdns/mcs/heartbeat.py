"""Clusters that are gone: a heartbeat per cluster in Cloud Map, and the importer's judgement of it.

Cloud Map keeps an exported instance until its writer deregisters it, so the instances of a cluster that
was deleted without unexporting (or lost for good) are imported for ever. Each exporting leader therefore
refreshes one small instance of its own at a low rate: namespace ``mcsdns.heartbeats`` (a dot, so no
Kubernetes namespace has its name and neither mcsdns nor the AWS controller ever imports it; the AWS
controller reads only namespaces that exist in its cluster), service ``clusters``, one instance per
cluster with CLUSTER_ID, CLUSTERSET_ID and a beat counter. Clusters that never beat (the AWS controller's)
are never judged.

``Staleness`` judges what the importer reads, by its own clock and only across its own successful reads:
a cluster's age grows only between two reads that both succeeded and both saw the same beat, so a
partition between this cluster and Cloud Map (no fresh reads) never makes another cluster stale, and clock
skew between clusters plays no part. Pure: the caller passes monotonic time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mcsdns.clients.cloudmap import Instance
from mcsdns.mcs import instances as attrs

NAMESPACE = "mcsdns.heartbeats"
SERVICE = "clusters"
BEAT = "MCSDNS_HEARTBEAT"
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0


def interval(stale_after: float) -> float:
    """How often a leader beats and an importer reads: five beats per staleness window, at most once a
    minute (Cloud Map calls are an account-wide quota: one RegisterInstance a minute per cluster, one read
    a minute per importer); once a minute when nobody judges here (0), for the clusters that do."""
    if not stale_after:
        return MAX_INTERVAL
    return min(max(stale_after / 5, MIN_INTERVAL), MAX_INTERVAL)


def instance_id(cluster_id: str, clusterset_id: str) -> str:
    """One instance per cluster of a clusterset, at most 64 characters (Cloud Map's limit)."""
    text = f"{clusterset_id}/{cluster_id}"
    return text if len(text) <= attrs.MAX_INSTANCE_ID else hashlib.sha256(text.encode()).hexdigest()


def beat_attributes(cluster_id: str, clusterset_id: str, beat: int) -> dict[str, str]:
    return {attrs.CLUSTER_ID: cluster_id, attrs.CLUSTERSET_ID: clusterset_id, BEAT: str(beat)}


def beats(instances: Iterable[Instance], clusterset_id: str) -> dict[str, str]:
    """Cluster id → its latest beat, from the heartbeat service's instances of this clusterset."""
    out = {}
    for instance in instances:
        found = instance.attributes
        cluster = found.get(attrs.CLUSTER_ID)
        if cluster and found.get(attrs.CLUSTERSET_ID) == clusterset_id and BEAT in found:
            out[cluster] = found[BEAT]
    return out


@dataclass
class Staleness:
    """How long each beating cluster has gone without a new beat, counted over fresh reads only."""

    stale_after: float
    grace: float
    _last: dict[str, str] = field(default_factory=dict)
    _age: dict[str, float] = field(default_factory=dict)
    _read_at: float | None = None

    def read(self, now: float, seen: Mapping[str, str]) -> None:
        """A successful read at ``now`` saw ``seen`` (cluster → beat)."""
        elapsed = 0.0 if self._read_at is None else now - self._read_at
        for cluster, beat in seen.items():
            if self._last.get(cluster) == beat:
                self._age[cluster] = self._age.get(cluster, 0.0) + elapsed
            else:
                self._age[cluster] = 0.0
        for cluster in self._last.keys() - seen.keys():
            self._age.pop(cluster, None)  # its heartbeat instance is gone: not judged any more
        self._last = dict(seen)
        self._read_at = now

    def failed(self) -> None:
        """A read failed: the time until the next successful one does not count against anybody."""
        self._read_at = None

    def ages(self) -> dict[str, float]:
        return dict(self._age)

    def stale(self) -> dict[str, float]:
        """Clusters without a new beat for longer than ``stale_after``, with their age."""
        return {c: age for c, age in self._age.items() if self.stale_after and age > self.stale_after}

    def evictable(self) -> frozenset[str]:
        """Clusters stale for ``grace`` more: their instances stop counting (only if the operator asked)."""
        limit = self.stale_after + self.grace
        return frozenset(c for c, age in self._age.items() if self.stale_after and age > limit)

"""Who this cluster is: the cluster id and clusterset id (KEP-2149), from flags or ClusterProperties.

Flags win; otherwise the ClusterProperties ``cluster.clusterset.k8s.io`` and ``clusterset.k8s.io`` are
followed live. A missing id is a readiness reason for the parts that need it (the Cloud Map controller),
never a crash: DNS serving does not depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

CLUSTER_ID_PROPERTY = "cluster.clusterset.k8s.io"
CLUSTERSET_ID_PROPERTY = "clusterset.k8s.io"


class ClusterIdentity:
    def __init__(self, *, cluster_id: str | None = None, clusterset_id: str | None = None) -> None:
        self._flags = {CLUSTER_ID_PROPERTY: cluster_id, CLUSTERSET_ID_PROPERTY: clusterset_id}
        self._properties: dict[str, str] = {}

    @property
    def cluster_id(self) -> str | None:
        return self._flags[CLUSTER_ID_PROPERTY] or self._properties.get(CLUSTER_ID_PROPERTY)

    @property
    def clusterset_id(self) -> str | None:
        return self._flags[CLUSTERSET_ID_PROPERTY] or self._properties.get(CLUSTERSET_ID_PROPERTY)

    @property
    def missing(self) -> list[str]:
        """Why the ids are not known yet, one reason per missing id."""
        reasons = []
        for what, value, prop in (
            ("cluster", self.cluster_id, CLUSTER_ID_PROPERTY),
            ("clusterset", self.clusterset_id, CLUSTERSET_ID_PROPERTY),
        ):
            if not value:
                reasons.append(f"{what} id unknown: set --{what}-id or create ClusterProperty {prop}")
        return reasons

    def update(self, properties: Mapping[str, str]) -> None:
        """Take the current ClusterProperty values (name → spec.value)."""
        before = (self.cluster_id, self.clusterset_id)
        wanted = (CLUSTER_ID_PROPERTY, CLUSTERSET_ID_PROPERTY)
        self._properties = {name: value for name, value in properties.items() if name in wanted}
        after = (self.cluster_id, self.clusterset_id)
        if after != before:
            logger.info("cluster id %s, clusterset id %s", after[0] or "<unknown>", after[1] or "<unknown>")
        for reason in self.missing:
            logger.warning("%s", reason)


def cluster_properties(objects: Mapping[Any, Mapping[str, Any]]) -> dict[str, str]:
    """name -> spec.value of ClusterProperty objects (cluster-scoped, about.k8s.io), skipping empty values."""
    values = {}
    for obj in objects.values():
        name = (obj.get("metadata") or {}).get("name")
        value = (obj.get("spec") or {}).get("value")
        if isinstance(name, str) and isinstance(value, str) and value:
            values[name] = value
    return values

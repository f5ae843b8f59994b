"""The MCS API's well-known names (KEP-1645, mcs-api): the labels that tie an EndpointSlice to an imported
service and its source cluster, and how to read an object's labels. Pure; read by the zone sources and the
controllers alike, so both agree on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVICE_NAME_LABEL = "multicluster.kubernetes.io/service-name"
SOURCE_CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"
MCS_GROUP = "multicluster.x-k8s.io"


def labels_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    """An object's labels; a missing or null ``metadata`` or ``labels`` is none."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return dict(labels) if isinstance(labels, Mapping) else {}

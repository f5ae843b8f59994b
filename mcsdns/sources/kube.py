"""The cluster as a zone source: ServiceImports and MCS EndpointSlices, each a view of the process's shared
informer for its resource (``clients.kube.Informers``), converted by ``sources.objects`` as they arrive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from mcsdns.clients.kube import ENDPOINT_SLICES, SERVICE_IMPORTS, Informers, Obj, Resource, View
from mcsdns.errors import ManifestError
from mcsdns.mcs.labels import SERVICE_NAME_LABEL
from mcsdns.sources.events import Contact, Deleted, Emit, Listed, SourceName, Upserted
from mcsdns.sources.objects import ObjectRef, Record, convert, describe

logger = logging.getLogger(__name__)

_KINDS = {"serviceimports": "ServiceImport", "endpointslices": "EndpointSlice"}


class KubeZoneSource:
    """ServiceImports or MCS EndpointSlices of one cluster as a zone source."""

    def __init__(
        self,
        informers: Informers,
        resources: Resource | tuple[Resource, ...],
        *,
        name: str,
        selector: str | None = None,
    ) -> None:
        self._name = SourceName(name)
        self._emit: Emit | None = None
        self._pending: list[Any] = []  # what the informer delivered before run() was given emit
        # The view is made now, while the process is put together; its events reach run()'s emit.
        self._view: View = informers.view(
            resources,
            selector=selector,
            keep=False,  # records are kept by the engine's state, not as JSON here
            on_list=lambda converted: self._send(Listed(self._name, dict(converted))),
            on_event=self._event,
            page=self._convert_page,
            on_contact=lambda failure: self._send(Contact(self._name, failure)),
        )

    @property
    def name(self) -> SourceName:
        return self._name

    async def run(self, emit: Emit) -> None:
        """Hand changes to ``emit`` until cancelled; the shared informers (run by the app) list and watch."""
        for change in self._pending:
            emit(change)
        self._pending.clear()
        self._emit = emit
        await asyncio.Future()  # a source lives as long as the engine

    def _send(self, change: Any) -> None:
        if self._emit is not None:
            self._emit(change)
        else:
            self._pending.append(change)

    def _convert_page(self, items: list[Obj]) -> list[tuple[ObjectRef, Record]]:
        resource = self._view.resource
        converted = (self._convert(_with_kind(obj, resource)) for obj in items)
        return [pair for pair in converted if pair is not None]

    def _event(self, kind: str, obj: Obj) -> None:
        obj = _with_kind(obj, self._view.resource)
        if kind == "DELETED":
            ref = _ref(obj)
            if ref is not None:
                self._send(Deleted(self._name, ref))
            return
        converted = self._convert(obj)
        if converted is not None:
            self._send(Upserted(self._name, *converted))

    def _convert(self, obj: Mapping[str, Any]) -> tuple[ObjectRef, Record] | None:
        try:
            return convert(obj)
        except ManifestError as exc:
            # An invalid object in the cluster: say so once per version, keep serving what it was before.
            logger.error("%s: %s; ignoring this version of the object", self._name, exc)
            return None


def _with_kind(obj: Obj, resource: Resource) -> Obj:
    # List items carry no kind/apiVersion on a real API server; conversion keys on them.
    if "kind" not in obj or "apiVersion" not in obj:
        obj = {**obj, "kind": _KINDS[resource.plural], "apiVersion": f"{resource.group}/{resource.version}"}
    return obj


def _ref(obj: Obj) -> ObjectRef | None:
    metadata = obj.get("metadata") or {}
    if not metadata.get("name"):
        logger.warning("deleted object without a name: %s", describe(obj))
        return None
    return (str(obj.get("kind")), str(metadata.get("namespace") or "default"), str(metadata["name"]))


def zone_sources(informers: Informers) -> list[KubeZoneSource]:
    """The two views whose first list gates serving: ServiceImports and MCS EndpointSlices."""
    return [
        KubeZoneSource(informers, SERVICE_IMPORTS, name="kubernetes/serviceimports"),
        KubeZoneSource(
            informers, ENDPOINT_SLICES, name="kubernetes/endpointslices", selector=SERVICE_NAME_LABEL
        ),
    ]

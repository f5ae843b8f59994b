"""In-process access to an emulator's objects, for seeding and inspecting state without HTTP.

A thin facade over ``Storage``: resources are named the way kubectl names them ("svc", "serviceimports",
"endpointslices.discovery.k8s.io") or inferred from an object's ``apiVersion``/``kind``; objects are
deep-copied in and out so callers can change what they get (objects read back by name carry the storage
version, v1beta1 for the MCS kinds). Writes follow exactly the same rules, versions
and watch events as writes over HTTP, and raise the same ``ApiError``.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import Obj
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .storage import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, Storage

_PATCH_TYPES = {
    "merge": MERGE_PATCH,
    "json": JSON_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    "apply": APPLY_PATCH,
}


class Store:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion (a global counter, as etcd's revision)."""
        return self._storage.resource_version

    def resource(self, name: str | ResourceType) -> ResourceType:
        if isinstance(name, ResourceType):
            return name
        rt = self._storage.registry.by_name(name)
        if rt is None:
            raise KeyError(f"the emulator serves no resource {name!r}")
        return rt

    def _for_object(self, obj: Obj) -> tuple[ResourceType, str]:
        found = self._storage.registry.by_api_version_kind(
            str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        )
        if found is None:
            raise KeyError(f"the emulator serves no {obj.get('apiVersion')}/{obj.get('kind')}")
        return found

    @staticmethod
    def _namespace(rt: ResourceType, obj: Obj | None, namespace: str | None) -> str | None:
        if not rt.namespaced:
            return None
        return namespace or ((obj or {}).get("metadata") or {}).get("namespace") or "default"

    def create(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Create ``obj`` (its apiVersion/kind pick the resource); namespaced objects default to "default"."""
        rt, version = self._for_object(obj)
        created = self._storage.create(
            rt, copy.deepcopy(obj), namespace=self._namespace(rt, obj, namespace), version=version
        )
        return _in_version(created, rt, version)

    def create_or_replace(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Create ``obj`` or replace the stored one of that name (latest wins), then write its ``status``
        too when the kind has a status subresource: what seeding a cluster's state needs."""
        rt, version = self._for_object(obj)
        ns = self._namespace(rt, obj, namespace)
        name = obj.get("metadata", {}).get("name", "")
        current = self._storage.find(rt, ns, name) if name else None
        body = copy.deepcopy(obj)
        if current is None:
            result = self._storage.create(rt, body, namespace=ns, version=version)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            result = self._storage.update(rt, body, namespace=ns, name=name, version=version)
        if rt.has_status and "status" in obj:
            meta = result["metadata"]
            status = {
                "metadata": {"name": meta["name"], "resourceVersion": meta["resourceVersion"]},
                "status": copy.deepcopy(obj["status"]),
            }
            result = self._storage.update(
                rt, status, namespace=ns, name=meta["name"], version=version, subresource="status"
            )
        return _in_version(result, rt, version)

    def get(self, resource: str | ResourceType, name: str, *, namespace: str | None = None) -> Obj:
        rt = self.resource(resource)
        return copy.deepcopy(self._storage.get(rt, self._namespace(rt, None, namespace), name))

    def find(self, resource: str | ResourceType, name: str, *, namespace: str | None = None) -> Obj | None:
        rt = self.resource(resource)
        found = self._storage.find(rt, self._namespace(rt, None, namespace), name)
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        resource: str | ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Obj]:
        """All matching objects; ``namespace=None`` lists every namespace."""
        rt = self.resource(resource)
        result = self._storage.list(
            rt,
            namespace=namespace,
            labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, rt.field_getters),
        )
        return copy.deepcopy(result.items)

    def update(self, obj: Obj) -> Obj:
        """PUT semantics: a stale ``metadata.resourceVersion`` raises 409; status is ignored when the kind has
        a status subresource (use ``update_status``)."""
        return self._put(obj, None)

    def update_status(self, obj: Obj) -> Obj:
        """PUT on the status subresource: only ``status`` changes."""
        return self._put(obj, "status")

    def _put(self, obj: Obj, subresource: str | None) -> Obj:
        rt, version = self._for_object(obj)
        meta = obj.get("metadata", {})
        updated = self._storage.update(
            rt,
            copy.deepcopy(obj),
            namespace=self._namespace(rt, obj, None),
            name=meta.get("name", ""),
            version=version,
            subresource=subresource,
        )
        return _in_version(updated, rt, version)

    def patch(
        self,
        resource: str | ResourceType,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        """``patch_type`` is "merge", "json", "strategic" or "apply" (apply needs ``field_manager``)."""
        rt = self.resource(resource)
        obj, _ = self._storage.patch(
            rt,
            namespace=self._namespace(rt, None, namespace),
            name=name,
            patch_type=_PATCH_TYPES[patch_type],
            body=copy.deepcopy(body),
            subresource=subresource,
            field_manager=field_manager,
        )
        return copy.deepcopy(obj)

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
    ) -> Obj:
        """Returns the deleted object, or the object with its deletionTimestamp if finalizers hold it."""
        rt = self.resource(resource)
        result = self._storage.delete(
            rt,
            namespace=self._namespace(rt, None, namespace),
            name=name,
            propagation_policy=propagation_policy,
        )
        return copy.deepcopy(result.obj)

    def load(self, documents: Iterable[Obj]) -> builtins.list[Obj]:
        """Create or replace each object (a ``List`` is unpacked)."""
        results: builtins.list[Obj] = []
        for doc in documents:
            if not doc:
                continue
            if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
                results += self.load(doc["items"])
            else:
                results.append(self.create_or_replace(doc))
        return results

    def load_yaml(self, source: str | Path) -> builtins.list[Obj]:
        """Load a multi-document YAML string, a file, or every ``*.yaml``/``*.yml``/``*.json`` in a folder."""
        if isinstance(source, Path):
            files = (
                sorted(p for p in source.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
                if source.is_dir()
                else [source]
            )
            return [obj for path in files for obj in self.load_yaml(path.read_text())]
        return self.load(doc for doc in yaml.safe_load_all(source) if isinstance(doc, dict))


def _in_version(obj: Obj, rt: ResourceType, version: str) -> Obj:
    """A private copy of a stored object, labelled with the version the caller used."""
    result = copy.deepcopy(obj)
    result["apiVersion"] = rt.api_version(version)
    return result

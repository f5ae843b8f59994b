"""Discovery and version documents: ``/api``, ``/apis``, ``/apis/<group>[/<version>]``, ``/version``, and a
minimal ``/openapi/v3``.

Both discovery forms are served: the legacy per-group documents and the aggregated ``APIGroupDiscoveryList``
(apidiscovery.k8s.io v2 and v2beta1) that kubectl >= 1.30 asks for first. The OpenAPI v3 documents hold only
what kubectl reads from them: each PATCH operation with its ``x-kubernetes-group-version-kind`` and the
``fieldValidation`` query parameter, so kubectl leaves validation to the server (no client-side schema and no
``/openapi/v2``, which would have to be protobuf). Strategic merge patch is not listed there, so kubectl
apply falls back to its compiled-in patch metadata for built-in kinds. Pure functions over a registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Final

from .errors import Obj
from .resources import ResourceRegistry, ResourceType

KUBERNETES_VERSION: Final = (1, 32, 0)
_STATUS_VERBS: Final = ["get", "patch", "update"]


def version_info() -> Obj:
    major, minor, patch = KUBERNETES_VERSION
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: tuple[str, ...]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: ResourceRegistry) -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in registry.groups() if name],
    }


def api_group(registry: ResourceRegistry, group: str) -> Obj | None:
    for name, versions in registry.groups():
        if name == group and name:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}
    return None


def _storage_version_hash(rt: ResourceType) -> str:
    # Clients only compare it for equality across discovery refreshes (apiserver storageversionhash).
    digest = hashlib.sha256(f"{rt.group}/{rt.preferred_version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def api_resource_list(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    entries: list[Obj] = []
    for rt in resources:
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "storageVersionHash": _storage_version_hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        entries.append(entry)
        for sub in rt.subresources:
            entries.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["update"] if sub == "finalize" else _STATUS_VERBS,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def aggregated_discovery(registry: ResourceRegistry, *, core: bool, api_version: str) -> Obj:
    """``/api`` (core) or ``/apis`` as an ``APIGroupDiscoveryList`` (KEP-3352)."""
    items: list[Obj] = []
    for name, versions in registry.groups():
        if (name == "") != core:
            continue
        version_entries: list[Obj] = []
        for version in versions:
            resources: list[Obj] = []
            for rt in registry.in_group_version(name, version):
                kind = {"group": rt.group, "version": version, "kind": rt.kind}
                entry: Obj = {
                    "resource": rt.plural,
                    "responseKind": kind,
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                if rt.subresources:
                    entry["subresources"] = [
                        {
                            "subresource": sub,
                            "responseKind": kind,
                            "verbs": ["update"] if sub == "finalize" else _STATUS_VERBS,
                        }
                        for sub in rt.subresources
                    ]
                resources.append(entry)
            version_entries.append({"version": version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": name, "creationTimestamp": None}, "versions": version_entries})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


# --- OpenAPI v3 --------------------------------------------------------------------------------------------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_document(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    paths: Obj = {}
    query = [
        {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for n in ("dryRun", "fieldManager", "fieldValidation")
    ]
    for rt in resources:
        base = f"/{_gv_path(group, version)}"
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        gvk = {"group": group, "version": version, "kind": rt.kind}
        for suffix in ("", *(f"/{s}" for s in rt.subresources if s == "status")):
            path = f"{base}{scope}/{rt.plural}/{{name}}{suffix}"
            paths[path] = {
                "patch": {
                    "operationId": f"patch{rt.kind}{suffix.replace('/', '_')}",
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [*query, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                    "requestBody": {
                        "content": {
                            ct: {"schema": {"type": "object"}}
                            for ct in (
                                "application/json-patch+json",
                                "application/merge-patch+json",
                                "application/apply-patch+yaml",
                            )
                        }
                    },
                    "responses": {"200": {"description": "OK"}},
                },
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": version_info()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_v3_index(registry: ResourceRegistry) -> Obj:
    paths: Obj = {}
    for name, versions in registry.groups():
        for version in versions:
            document = openapi_v3_document(registry, name, version)
            digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:64].upper()
            gv = _gv_path(name, version)
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}

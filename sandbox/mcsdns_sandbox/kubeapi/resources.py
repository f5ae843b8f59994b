"""The resource types the emulator serves and how a request names them.

A ``ResourceType`` is one REST collection (group, plural, served versions, scope, verbs, short names) plus its
``Strategy``; ``ResourceRegistry`` resolves URL parts, ``apiVersion``/``kind`` pairs and kubectl-style names
("svc", "serviceimports.multicluster.x-k8s.io") to it. Versions of one group share one storage, as a CRD
with ``conversion: None`` does. Imports only errors, strategies, selectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from .errors import Obj
from .selectors import FieldGetter
from .strategies import (
    ClusterPropertyStrategy,
    ConfigMapStrategy,
    CustomResourceDefinitionStrategy,
    EndpointSliceStrategy,
    LeaseStrategy,
    NamespaceStrategy,
    ReviewStrategy,
    ServiceAccountStrategy,
    ServiceExportStrategy,
    ServiceImportStrategy,
    ServiceStrategy,
    Strategy,
)

MCS_GROUP: Final = "multicluster.x-k8s.io"
ABOUT_GROUP: Final = "about.k8s.io"
DEFAULT_MCS_VERSIONS: Final = ("v1alpha1", "v1beta1")

_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
AUTHORIZATION_GROUP: Final = "authorization.k8s.io"
AUTHENTICATION_GROUP: Final = "authentication.k8s.io"


def _name(obj: Obj) -> str | None:
    value = obj.get("metadata", {}).get("name")
    return value if isinstance(value, str) else None


def _namespace(obj: Obj) -> str | None:
    value = obj.get("metadata", {}).get("namespace")
    return value if isinstance(value, str) else None


@dataclass(frozen=True, eq=False)
class ResourceType:
    group: str
    versions: tuple[str, ...]
    """Served versions; the first is the preferred one discovery advertises."""
    plural: str
    singular: str
    kind: str
    namespaced: bool
    strategy: Strategy
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = _VERBS
    field_getters: Mapping[str, FieldGetter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        getters: dict[str, FieldGetter] = {"metadata.name": _name}
        if self.namespaced:
            getters["metadata.namespace"] = _namespace
        getters.update(self.strategy.field_selectors)
        object.__setattr__(self, "field_getters", getters)

    @property
    def key(self) -> str:
        """``services`` or ``serviceimports.multicluster.x-k8s.io``: unique, stable, used in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        chosen = version or self.preferred_version
        return f"{self.group}/{chosen}" if self.group else chosen

    def path(self, version: str | None = None) -> str:
        """URL prefix of the group-version: ``/api/v1`` or ``/apis/<group>/<version>``."""
        chosen = version or self.preferred_version
        return f"/apis/{self.group}/{chosen}" if self.group else f"/api/{chosen}"

    def __repr__(self) -> str:
        return f"ResourceType({self.key})"


def builtin_resources(mcs_versions: tuple[str, ...] = DEFAULT_MCS_VERSIONS) -> list[ResourceType]:
    mcs = tuple(sorted(mcs_versions, key=_version_priority))
    return [
        ResourceType(
            "",
            ("v1",),
            "namespaces",
            "namespace",
            "Namespace",
            False,
            NamespaceStrategy(),
            short_names=("ns",),
            subresources=("status", "finalize"),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        ),
        ResourceType(
            "",
            ("v1",),
            "services",
            "service",
            "Service",
            True,
            ServiceStrategy(),
            short_names=("svc",),
            categories=("all",),
            subresources=("status",),
        ),
        ResourceType(
            "",
            ("v1",),
            "configmaps",
            "configmap",
            "ConfigMap",
            True,
            ConfigMapStrategy(),
            short_names=("cm",),
        ),
        ResourceType(
            "",
            ("v1",),
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            ServiceAccountStrategy(),
            short_names=("sa",),
        ),
        ResourceType(
            "discovery.k8s.io",
            ("v1",),
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            True,
            EndpointSliceStrategy(),
        ),
        ResourceType("coordination.k8s.io", ("v1",), "leases", "lease", "Lease", True, LeaseStrategy()),
        ResourceType(
            MCS_GROUP,
            mcs,
            "serviceexports",
            "serviceexport",
            "ServiceExport",
            True,
            ServiceExportStrategy(),
            short_names=("svcex",),
            categories=("multicluster",),
            subresources=("status",),
        ),
        ResourceType(
            MCS_GROUP,
            mcs,
            "serviceimports",
            "serviceimport",
            "ServiceImport",
            True,
            ServiceImportStrategy(),
            short_names=("svcim",),
            categories=("multicluster",),
            subresources=("status",),
        ),
        ResourceType(
            ABOUT_GROUP,
            ("v1beta1", "v1alpha1"),  # about-api v0.0.2 added v1beta1 (stored), v1alpha1 still served
            "clusterproperties",
            "clusterproperty",
            "ClusterProperty",
            False,
            ClusterPropertyStrategy(),
            subresources=("status",),
        ),
        ResourceType(
            "apiextensions.k8s.io",
            ("v1",),
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            CustomResourceDefinitionStrategy(),
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            subresources=("status",),
        ),
        # Reviews, which every API server serves: create-only, answered from the request, never stored.
        # The emulator has no authentication and no RBAC; handlers.ApiApp says so in the answers.
        *(
            ResourceType(
                group, ("v1",), plural, plural[:-1], kind, False, ReviewStrategy(), verbs=("create",)
            )
            for group, plural, kind in (
                (AUTHORIZATION_GROUP, "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
                (AUTHORIZATION_GROUP, "subjectaccessreviews", "SubjectAccessReview"),
                (AUTHENTICATION_GROUP, "selfsubjectreviews", "SelfSubjectReview"),
            )
        ),
    ]


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering (GA > beta > alpha, then higher numbers): the sort key puts the preferred
    version first, e.g. v1beta1 before v1alpha1 (apimachinery version.CompareKubeAwareVersionStrings)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = int(match[1]), match[2], int(match[3] or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, version)


class ResourceRegistry:
    """Lookup of resource types by URL, by apiVersion+kind, and by kubectl-style names."""

    def __init__(self, resources: list[ResourceType]) -> None:
        self._resources = list(resources)
        # Kinds whose CRD was deleted (``KubeApiEmulator(crds=True)``): stored, but neither served nor listed.
        self._unserved: set[ResourceType] = set()
        self._by_url = {(rt.group, v, rt.plural): rt for rt in resources for v in rt.versions}
        self._by_kind = {(rt.group, rt.kind): rt for rt in resources}
        self._by_name: dict[str, ResourceType] = {}
        for rt in resources:
            for alias in (rt.key, rt.plural, rt.singular, rt.kind.lower(), *rt.short_names):
                self._by_name.setdefault(alias, rt)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._resources)

    def serve(self, rt: ResourceType, served: bool) -> None:
        """Serve ``rt`` or stop: its CRD was created or deleted."""
        if served:
            self._unserved.discard(rt)
        else:
            self._unserved.add(rt)

    def _served(self, rt: ResourceType | None) -> ResourceType | None:
        return None if rt is None or rt in self._unserved else rt

    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """(group, versions) in the order discovery lists them, core group first."""
        seen: dict[str, tuple[str, ...]] = {}
        for rt in self._resources:
            if rt.group not in seen and rt not in self._unserved:
                seen[rt.group] = rt.versions
        return list(seen.items())

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [
            rt
            for rt in self._resources
            if rt.group == group and version in rt.versions and rt not in self._unserved
        ]

    def by_url(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._served(self._by_url.get((group, version, plural)))

    def by_api_version_kind(self, api_version: str, kind: str) -> tuple[ResourceType, str] | None:
        group, _, version = api_version.rpartition("/")
        rt = self._served(self._by_kind.get((group, kind)))
        if rt is None or version not in rt.versions:
            return None
        return rt, version

    def by_name(self, name: str) -> ResourceType | None:
        return self._served(self._by_name.get(name) or self._by_name.get(name.lower()))

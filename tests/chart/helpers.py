"""Helpers of the chart tests: render charts/mcsdns with Helm's own engine, validate objects, read RBAC rules,
and record the Kubernetes API calls a client makes against the emulator.

Rendering uses ``helm-python-sdk``, which binds Helm v4's Go SDK through ctypes: the real template engine,
``values.schema.json`` checks and ``helm lint``, with no helm binary. Objects are validated against the JSON
schemas of each Kubernetes release that ``kubernetes-validate`` ships (strict: unknown fields fail), and
custom resources against the CRDs' own OpenAPI v3 schemas, with ``jsonschema``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mcsdns"
EXAMPLES = ROOT / "examples"
RELEASE = "mcsdns"
NAMESPACE = "mcsdns-system"

# Kubernetes releases whose schemas every rendered object must satisfy: the oldest kubernetes-validate ships
# (the chart's kubeVersion floor, 1.22, is older than any it has) and the newest.
KUBERNETES_VERSIONS = (kv_utils.all_versions()[0], kv_utils.latest_version())


def full_version(version: str) -> str:
    """ "1.29" → the "1.29.0" kubernetes-validate ships."""
    return next(v for v in kv_utils.all_versions() if v == version or v.startswith(version + "."))


Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One `helm template`: the objects of every manifest, and NOTES.txt."""

    objects: list[Obj]
    notes: str

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = [obj for obj in self.of_kind(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
        return found[0]

    def find(self, kind: str) -> Obj | None:
        found = self.of_kind(kind)
        assert len(found) <= 1, f"expected at most one {kind}"
        return found[0] if found else None

    @property
    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    @property
    def container(self) -> Obj:
        (container,) = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return dict(container)

    @property
    def env(self) -> dict[str, str]:
        """The container's plain ``value`` variables (``valueFrom`` ones appear as ``<fieldPath>``)."""
        out: dict[str, str] = {}
        for entry in self.container["env"]:
            if "value" in entry:
                out[entry["name"]] = entry["value"]
            else:
                out[entry["name"]] = "<" + entry["valueFrom"]["fieldRef"]["fieldPath"] + ">"
        return out


def render(values: Obj | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Render the chart offline, as ``helm template --namespace NAMESPACE RELEASE charts/mcsdns`` does."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    objects: list[Obj] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects, notes)


def lint(values: Obj | None = None) -> dict[str, Any]:
    return helm.lint(CHART, values, strict=True, namespace=NAMESPACE)


def validate_schema(values: Obj) -> None:
    """Check values against values.schema.json; raises ``helm.HelmValuesError``."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)


@functools.cache
def _kubernetes_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    """kubernetes-validate's strict schema of one kind for one release, loaded once (its ``validate`` reads
    the multi-megabyte definitions file on every call); None when the release has no such kind."""
    schema_dir = f"kubernetes-json-schema/v{full_version(version)}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(f"{schema_dir}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = kv_utils.schema_contents(f"{schema_dir}/_definitions.json", version)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def has_kubernetes_schema(obj: Obj, version: str) -> bool:
    return _kubernetes_validator(version, obj["apiVersion"], obj["kind"]) is not None


def kubernetes_errors(obj: Obj, version: str) -> str | None:
    """Why ``obj`` is invalid for Kubernetes ``version`` (strict schemas: unknown fields fail), or None."""
    validator = _kubernetes_validator(version, obj["apiVersion"], obj["kind"])
    assert validator is not None, f"no schema of {obj['apiVersion']} {obj['kind']} in Kubernetes {version}"
    errors = [
        f"{obj['kind']}/{obj['metadata'].get('name')} at {'/'.join(map(str, e.absolute_path)) or '(root)'}: "
        f"{e.message}"
        for e in validator.iter_errors(obj)
    ]
    return "; ".join(errors) or None


# --- CRDs and the objects they describe ---------------------------------------------------------------------


def crd_schemas(rendered: Rendered) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) → the openAPIV3Schema of each served version of each rendered CRD."""
    out: dict[tuple[str, str], Obj] = {}
    for crd in rendered.of_kind("CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            if version["served"]:
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"][
                    "openAPIV3Schema"
                ]
    return out


def crd_errors(schema: Obj, obj: Obj) -> list[str]:
    """Every violation of a CRD's structural schema (OpenAPI v3, a subset of JSON Schema draft 4)."""
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(obj)
    )


def manifest_objects(paths: Iterable[Path]) -> Iterator[tuple[Path, Obj]]:
    """Every object in the YAML files, ``kind: List`` unpacked."""
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            items = doc["items"] if doc.get("kind") == "List" else [doc]
            for item in items:
                yield path, item


# --- RBAC -------------------------------------------------------------------------------------------------

Permission = tuple[str, str, str]
"""(apiGroup, resource or resource/subresource, verb), as RBAC rules and the authorizer see a request."""


@dataclass(frozen=True)
class Grant:
    permission: Permission
    resource_names: tuple[str, ...] = ()  # empty: any name


def grants(role: Obj | None) -> set[Grant]:
    """Every (group, resource, verb) a Role or ClusterRole allows, one per combination."""
    out: set[Grant] = set()
    for rule in (role or {}).get("rules") or []:
        assert "nonResourceURLs" not in rule, "mcsdns makes no non-resource requests"
        names = tuple(sorted(rule.get("resourceNames") or ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add(Grant((group, resource, verb), names))
    return out


def permissions(grants_: Iterable[Grant]) -> set[Permission]:
    return {grant.permission for grant in grants_}


@dataclass(frozen=True)
class Call:
    """One API request in the authorizer's terms (kube-apiserver's RequestInfo)."""

    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None

    @property
    def permission(self) -> Permission:
        return (self.group, self.resource, self.verb)


def pretty(permissions_: Iterable[Permission]) -> str:
    return json.dumps(
        sorted(f"{verb} {group or 'core'}/{resource}" for group, resource, verb in permissions_)
    )

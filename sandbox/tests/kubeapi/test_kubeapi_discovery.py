"""Discovery as the official client and kubectl read it: legacy and aggregated documents, /version,
OpenAPI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client, dynamic

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def get_json(api: KubeApiEmulator, path: str, accept: str = "application/json") -> tuple[str, Any]:
    request = urllib.request.Request(api.url + path, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], json.loads(response.read())


def test_version_reports_a_kubernetes_release(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert (info.major, info.minor) == ("1", "32")
    assert info.git_version.startswith("v1.32.")


def test_core_and_group_lists_name_every_served_group_version(api_client: client.ApiClient) -> None:
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert set(groups) >= {"discovery.k8s.io", "coordination.k8s.io", "multicluster.x-k8s.io", "about.k8s.io"}
    mcs = groups["multicluster.x-k8s.io"]
    assert [v.version for v in mcs.versions] == ["v1beta1", "v1alpha1"]
    assert mcs.preferred_version.version == "v1beta1"


@pytest.mark.parametrize(
    ("path", "plural", "kind", "namespaced", "short_names"),
    [
        pytest.param("/api/v1", "services", "Service", True, ["svc"], id="services"),
        pytest.param("/api/v1", "namespaces", "Namespace", False, ["ns"], id="namespaces"),
        pytest.param("/apis/discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True, None, id="slices"),
        pytest.param("/apis/coordination.k8s.io/v1", "leases", "Lease", True, None, id="leases"),
        pytest.param(
            "/apis/multicluster.x-k8s.io/v1alpha1",
            "serviceimports",
            "ServiceImport",
            True,
            ["svcim"],
            id="serviceimports",
        ),
        pytest.param(
            "/apis/multicluster.x-k8s.io/v1beta1",
            "serviceexports",
            "ServiceExport",
            True,
            ["svcex"],
            id="serviceexports",
        ),
        pytest.param(
            "/apis/about.k8s.io/v1alpha1",
            "clusterproperties",
            "ClusterProperty",
            False,
            None,
            id="clusterproperties",
        ),
    ],
)
def test_resource_lists_describe_each_resource(
    api: KubeApiEmulator, path: str, plural: str, kind: str, namespaced: bool, short_names: list[str] | None
) -> None:
    _, doc = get_json(api, path)
    assert doc["kind"] == "APIResourceList"
    by_name = {r["name"]: r for r in doc["resources"]}
    entry = by_name[plural]
    assert (entry["kind"], entry["namespaced"], entry.get("shortNames")) == (kind, namespaced, short_names)
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= set(entry["verbs"])


def test_status_subresources_are_listed_where_they_exist(api: KubeApiEmulator) -> None:
    _, doc = get_json(api, "/apis/multicluster.x-k8s.io/v1alpha1")
    names = {r["name"] for r in doc["resources"]}
    assert {"serviceimports/status", "serviceexports/status"} <= names
    _, doc = get_json(api, "/apis/discovery.k8s.io/v1")
    assert "endpointslices/status" not in {r["name"] for r in doc["resources"]}


def test_aggregated_discovery_is_served_when_asked_for(api: KubeApiEmulator) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    content_type, doc = get_json(api, "/apis", accept)
    assert content_type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    assert doc["kind"] == "APIGroupDiscoveryList"
    mcs = next(item for item in doc["items"] if item["metadata"]["name"] == "multicluster.x-k8s.io")
    imports = next(r for r in mcs["versions"][0]["resources"] if r["resource"] == "serviceimports")
    assert imports["scope"] == "Namespaced"
    assert imports["subresources"][0]["subresource"] == "status"


def test_dynamic_client_finds_the_mcs_kinds_in_both_versions(api_client: client.ApiClient) -> None:
    dyn = dynamic.DynamicClient(api_client)
    for version in ("v1alpha1", "v1beta1"):
        resource = dyn.resources.get(api_version=f"multicluster.x-k8s.io/{version}", kind="ServiceImport")
        assert resource.namespaced
        assert dyn.get(resource, namespace="default").items == []


def test_openapi_v3_lists_patch_operations_with_field_validation(api: KubeApiEmulator) -> None:
    _, index = get_json(api, "/openapi/v3")
    url = index["paths"]["apis/multicluster.x-k8s.io/v1alpha1"]["serverRelativeURL"]
    _, doc = get_json(api, url)
    path = doc["paths"]["/apis/multicluster.x-k8s.io/v1alpha1/namespaces/{namespace}/serviceimports/{name}"]
    patch = path["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "ServiceImport"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}


def test_unknown_paths_answer_404_status(api: KubeApiEmulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        get_json(api, "/apis/nope.example.com/v1/things")
    assert raised.value.code == 404
    assert json.loads(raised.value.read())["reason"] == "NotFound"


def test_health_endpoints_answer_ok(api: KubeApiEmulator) -> None:
    for path in ("/healthz", "/readyz", "/livez"):
        with urllib.request.urlopen(api.url + path, timeout=5) as response:
            assert response.read() == b"ok"

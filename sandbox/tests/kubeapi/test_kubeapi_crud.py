"""CRUD through the official client: every resource, generated names, conflicts, validation, selectors,
pagination and each patch type."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubeapi_helpers import MCS, endpoint_slice, http, service, service_import
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status"
    return body


def test_namespace_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespace({"metadata": {"name": "prod", "labels": {"team": "a"}}})
    assert created.status.phase == "Active"
    assert created.metadata.labels == {"team": "a", "kubernetes.io/metadata.name": "prod"}
    assert created.spec.finalizers == ["kubernetes"]
    created.metadata.labels["team"] = "b"
    updated = core.replace_namespace("prod", created)
    assert updated.metadata.labels["team"] == "b"
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    assert "prod" in {ns.metadata.name for ns in core.list_namespace().items}
    core.delete_namespace("prod")


def test_service_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", service("web", selector={"app": "web"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.spec.ports[0].protocol == "TCP" and created.spec.ports[0].target_port == 80
    patched = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"tier": "front"}
    fetched = core.read_namespaced_service("web", "default")
    assert fetched.metadata.resource_version == patched.metadata.resource_version
    deleted = core.delete_namespaced_service("web", "default")
    assert deleted.metadata.name == "web"
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_service("web", "default")
    assert raised.value.status == 404


def test_endpointslice_crud(slices: client.DiscoveryV1Api) -> None:
    created = slices.create_namespaced_endpoint_slice("default", endpoint_slice("web-1", "10.1.0.1"))
    assert created.metadata.generation == 1
    created.endpoints.append(client.V1Endpoint(addresses=["10.1.0.2"]))
    replaced = slices.replace_namespaced_endpoint_slice("web-1", "default", created)
    assert replaced.metadata.generation == 2
    assert [e.addresses for e in replaced.endpoints] == [["10.1.0.1"], ["10.1.0.2"]]
    with pytest.raises(ApiException) as raised:
        slices.patch_namespaced_endpoint_slice("web-1", "default", {"addressType": "IPv6"})
    assert raised.value.status == 422  # addressType is immutable
    slices.delete_namespaced_endpoint_slice("web-1", "default")

    assert slices.list_namespaced_endpoint_slice("default", label_selector="x").items == []


def test_lease_crud(leases: client.CoordinationV1Api) -> None:
    body = {
        "metadata": {"name": "mcsdns-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = leases.create_namespaced_lease("kube-system", body)
    created.spec.holder_identity = "b"
    replaced = leases.replace_namespaced_lease("mcsdns-leader", "kube-system", created)
    assert replaced.spec.holder_identity == "b"
    leases.delete_namespaced_lease("mcsdns-leader", "kube-system")


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_service_import_crud_in_each_version(custom: client.CustomObjectsApi, version: str) -> None:
    created = custom.create_namespaced_custom_object(
        MCS, version, "default", "serviceimports", service_import("web", version=version)
    )
    assert created["apiVersion"] == f"{MCS}/{version}"
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP"}]
    other = "v1beta1" if version == "v1alpha1" else "v1alpha1"
    # One storage for both versions (a CRD with conversion: None): readable in the other version.
    fetched = custom.get_namespaced_custom_object(MCS, other, "default", "serviceimports", "web")
    assert fetched["apiVersion"] == f"{MCS}/{other}"
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    patched = custom.patch_namespaced_custom_object(
        MCS, version, "default", "serviceimports", "web", {"spec": {"type": "Headless"}}
    )
    assert patched["spec"]["type"] == "Headless" and patched["metadata"]["generation"] == 2
    custom.delete_namespaced_custom_object(MCS, version, "default", "serviceimports", "web")


def test_service_export_and_cluster_property_crud(custom: client.CustomObjectsApi) -> None:
    export = {"apiVersion": f"{MCS}/v1alpha1", "kind": "ServiceExport", "metadata": {"name": "web"}}
    custom.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports", export)
    assert [
        o["metadata"]["name"]
        for o in custom.list_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports")["items"]
    ] == ["web"]
    custom.delete_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceexports", "web")

    prop = {
        "apiVersion": "about.k8s.io/v1alpha1",
        "kind": "ClusterProperty",
        "metadata": {"name": "cluster.clusterset.k8s.io"},
        "spec": {"value": "east"},
    }
    custom.create_cluster_custom_object("about.k8s.io", "v1alpha1", "clusterproperties", prop)
    got = custom.get_cluster_custom_object(
        "about.k8s.io", "v1alpha1", "clusterproperties", "cluster.clusterset.k8s.io"
    )
    assert got["spec"]["value"] == "east" and "namespace" not in got["metadata"]
    custom.delete_cluster_custom_object(
        "about.k8s.io", "v1alpha1", "clusterproperties", "cluster.clusterset.k8s.io"
    )


def test_crds_are_accepted_and_reported_established(api_client: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "metadata": {"name": "serviceimports.multicluster.x-k8s.io"},
        "spec": {
            "group": MCS,
            "scope": "Namespaced",
            "names": {"plural": "serviceimports", "singular": "serviceimport", "kind": "ServiceImport"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    created = ext.create_custom_resource_definition(crd)
    assert {c.type: c.status for c in created.status.conditions} == {
        "NamesAccepted": "True",
        "Established": "True",
    }


def test_a_crd_in_a_protected_group_needs_the_api_approval_annotation(api_client: client.ApiClient) -> None:
    """As the real apiextensions-apiserver does it (KEP-1111): the chart's ClusterProperty CRD lacked it."""
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "metadata": {"name": "clusterproperties.about.k8s.io"},
        "spec": {
            "group": "about.k8s.io",
            "scope": "Cluster",
            "names": {
                "plural": "clusterproperties",
                "singular": "clusterproperty",
                "kind": "ClusterProperty",
            },
            "versions": [
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    with pytest.raises(client.ApiException) as refused:
        ext.create_custom_resource_definition(crd)
    assert refused.value.status == 422
    assert "api-approved.kubernetes.io" in refused.value.body
    crd["metadata"]["annotations"] = {
        "api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/3084"
    }
    assert ext.create_custom_resource_definition(crd).metadata.name == "clusterproperties.about.k8s.io"


def test_generate_name_gets_a_random_suffix(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_service(
        "default", {"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]}}
    )
    second = core.create_namespaced_service(
        "default", {"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert first.metadata.name.startswith("web-") and len(first.metadata.name) == len("web-") + 5
    assert first.metadata.name != second.metadata.name
    assert first.metadata.generate_name == "web-"


def test_creating_an_existing_name_is_409_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", service("web"))
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_service("default", service("web"))
    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'services "web" already exists'
    assert status["details"] == {"name": "web", "kind": "services"}


def test_update_with_a_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", service("web"))
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"a": "1"}}})
    created.metadata.labels = {"a": "2"}
    with pytest.raises(ApiException) as raised:
        core.replace_namespaced_service("web", "default", created)
    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status["message"]


def test_custom_resources_require_a_resource_version_on_update(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(
        MCS, "v1alpha1", "default", "serviceimports", service_import("web")
    )
    with pytest.raises(ApiException) as raised:
        custom.replace_namespaced_custom_object(
            MCS, "v1alpha1", "default", "serviceimports", "web", service_import("web")
        )
    assert raised.value.status == 422
    assert status_of(raised.value)["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_unchanged_update_writes_nothing(core: client.CoreV1Api, api: KubeApiEmulator) -> None:
    created = core.create_namespaced_service("default", service("web"))
    before = api.store.resource_version
    again = core.replace_namespaced_service("web", "default", created)
    assert again.metadata.resource_version == created.metadata.resource_version
    assert api.store.resource_version == before


@pytest.mark.parametrize(
    ("create", "field", "reason"),
    [
        pytest.param(
            lambda c, cu, s: c.create_namespaced_service("default", service("Web_1")),
            "metadata.name",
            "FieldValueInvalid",
            id="service-name-not-dns1035",
        ),
        pytest.param(
            lambda c, cu, s: c.create_namespaced_service("default", service("1web")),
            "metadata.name",
            "FieldValueInvalid",
            id="service-name-starts-with-digit",
        ),
        pytest.param(
            lambda c, cu, s: c.create_namespace({"metadata": {"name": "a.b"}}),
            "metadata.name",
            "FieldValueInvalid",
            id="namespace-name-not-a-label",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_namespaced_custom_object(
                MCS, "v1alpha1", "default", "serviceimports", service_import("web", type_="LoadBalancer")
            ),
            "spec.type",
            "FieldValueNotSupported",
            id="serviceimport-type",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_namespaced_custom_object(
                MCS,
                "v1alpha1",
                "default",
                "serviceimports",
                {**service_import("web"), "spec": {"ports": [{"port": 80}]}},
            ),
            "spec.type",
            "FieldValueRequired",
            id="serviceimport-type-missing",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_namespaced_custom_object(
                MCS,
                "v1alpha1",
                "default",
                "serviceimports",
                {
                    **service_import("web"),
                    "spec": {"type": "ClusterSetIP", "ports": [], "ips": ["1.1.1.1", "::1"]},
                },
            ),
            "spec.ips",
            "FieldValueTooMany",
            id="serviceimport-v1alpha1-one-ip",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_cluster_custom_object(
                "about.k8s.io",
                "v1alpha1",
                "clusterproperties",
                {
                    "apiVersion": "about.k8s.io/v1alpha1",
                    "kind": "ClusterProperty",
                    "metadata": {"name": "x"},
                    "spec": {},
                },
            ),
            "spec.value",
            "FieldValueRequired",
            id="clusterproperty-value",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_namespaced_custom_object(
                "discovery.k8s.io",
                "v1",
                "default",
                "endpointslices",
                {k: v for k, v in endpoint_slice("web", "10.0.0.1").items() if k != "addressType"},
            ),
            "addressType",
            "FieldValueRequired",
            id="endpointslice-addresstype-missing",
        ),
        pytest.param(
            lambda c, cu, s: cu.create_namespaced_custom_object(
                "discovery.k8s.io",
                "v1",
                "default",
                "endpointslices",
                {k: v for k, v in endpoint_slice("web", "10.0.0.1").items() if k != "endpoints"},
            ),
            "endpoints",
            "FieldValueRequired",
            id="endpointslice-endpoints-missing",
        ),
        pytest.param(
            lambda c, cu, s: s.create_namespaced_endpoint_slice(
                "default", endpoint_slice("web", "not-an-ip")
            ),
            "endpoints[0].addresses[0]",
            "FieldValueInvalid",
            id="endpointslice-bad-ipv4",
        ),
        pytest.param(
            lambda c, cu, s: c.create_namespaced_service(
                "default",
                {"metadata": {"name": "web", "labels": {"bad key!": "x"}}, "spec": {"ports": [{"port": 1}]}},
            ),
            "metadata.labels",
            "FieldValueInvalid",
            id="label-key",
        ),
    ],
)
def test_invalid_objects_are_422_with_field_causes(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    slices: client.DiscoveryV1Api,
    create: Any,
    field: str,
    reason: str,
) -> None:
    with pytest.raises(ApiException) as raised:
        create(core, custom, slices)
    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (422, "Invalid")
    assert {"field": field, "reason": reason} in [
        {"field": c["field"], "reason": c["reason"]} for c in status["details"]["causes"]
    ]


def test_invalid_message_reads_like_the_real_server(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object(
            MCS, "v1alpha1", "default", "serviceimports", service_import("web", type_="Nope")
        )
    assert status_of(raised.value)["message"] == (
        'ServiceImport.multicluster.x-k8s.io "web" is invalid: spec.type: Unsupported value: "Nope": '
        'supported values: "ClusterSetIP", "Headless"'
    )


def test_missing_objects_and_namespaces_are_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_service("nope", "default")
    assert status_of(raised.value)["message"] == 'services "nope" not found'
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_service("no-such-namespace", service("web"))
    assert raised.value.status == 404
    assert status_of(raised.value)["details"]["kind"] == "namespaces"


def test_mismatched_body_is_400_bad_request(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        core.replace_namespaced_service("web", "default", service("other"))
    assert (raised.value.status, status_of(raised.value)["reason"]) == (400, "BadRequest")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("app=web", ["a", "b"], id="equals"),
        pytest.param("app==web,tier=front", ["a"], id="double-equals-and"),
        pytest.param("tier!=front", ["b", "c"], id="not-equals-includes-missing"),
        pytest.param("tier in (front,back)", ["a", "b"], id="in"),
        pytest.param("tier notin (front)", ["b", "c"], id="notin"),
        pytest.param("tier", ["a", "b"], id="exists"),
        pytest.param("!tier", ["c"], id="not-exists"),
        pytest.param("app=web,!tier", [], id="combined"),
    ],
)
def test_label_selectors(core: client.CoreV1Api, selector: str, expected: list[str]) -> None:
    core.create_namespace({"metadata": {"name": "labels"}})
    for name, labels in (
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web", "tier": "back"}),
        ("c", {"app": "db"}),
    ):
        body = service(name)
        body["metadata"]["labels"] = labels
        core.create_namespaced_service("labels", body)
    names = [s.metadata.name for s in core.list_namespaced_service("labels", label_selector=selector).items]

    assert names == expected


def test_bad_label_selector_is_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_service("default", label_selector="a in (b")
    assert raised.value.status == 400


def test_field_selectors_on_name_and_namespace(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_service("default", service("web"))
    core.create_namespaced_service("other", service("web"))
    in_other = core.list_service_for_all_namespaces(field_selector="metadata.namespace=other").items
    assert [(s.metadata.namespace, s.metadata.name) for s in in_other] == [("other", "web")]
    named = core.list_service_for_all_namespaces(field_selector="metadata.name=web").items
    assert sorted(s.metadata.namespace for s in named) == ["default", "other"]
    not_web = core.list_service_for_all_namespaces(field_selector="metadata.name!=web").items
    assert [s.metadata.name for s in not_web] == ["kubernetes"]
    with pytest.raises(ApiException) as raised:
        core.list_service_for_all_namespaces(field_selector="spec.nope=1")
    assert raised.value.status == 400


def test_pagination_with_limit_and_continue_is_consistent(core: client.CoreV1Api) -> None:
    for i in range(7):
        core.create_namespaced_service("default", service(f"svc-{i}"))
    first = core.list_namespaced_service("default", limit=3)
    assert len(first.items) == 3 and first.metadata.remaining_item_count == 5
    # Writes between pages do not show up: the continue token pins the first page's version.
    core.create_namespaced_service("default", service("svc-late"))
    core.delete_namespaced_service("svc-5", "default")
    names = [s.metadata.name for s in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_service("default", limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [s.metadata.name for s in page.items]
        token = page.metadata._continue
    assert names == ["kubernetes"] + [f"svc-{i}" for i in range(7)]


def test_pages_of_a_selected_list_follow_key_order_across_namespaces(core: client.CoreV1Api) -> None:
    # Namespaces whose names sort into each other ("a" < "a-b" < "ab" as keys "a-b/" < "a/" < "ab/"), and
    # an object deleted and created again: what a paging informer walks through, page by page.
    for namespace in ("a", "a-b", "ab"):
        core.create_namespace({"metadata": {"name": namespace}})
        for i in range(5):
            labels = {"tier": "x" if i % 2 == 0 else "y"}
            core.create_namespaced_service(
                namespace, {**service(f"s{i}"), "metadata": {"name": f"s{i}", "labels": labels}}
            )
    core.delete_namespaced_service("s2", "a")
    core.create_namespaced_service(
        "a", {**service("s2"), "metadata": {"name": "s2", "labels": {"tier": "x"}}}
    )

    def paged(**kwargs: Any) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        token = None
        while True:
            page = (
                core.list_namespaced_service(limit=2, _continue=token, **kwargs)
                if "namespace" in kwargs
                else core.list_service_for_all_namespaces(limit=2, _continue=token, **kwargs)
            )
            seen += [(s.metadata.namespace, s.metadata.name) for s in page.items]
            token = page.metadata._continue
            if not token:
                return seen

    expected = [(ns, f"s{i}") for ns in ("a-b", "a", "ab") for i in (0, 2, 4)]
    assert paged(label_selector="tier=x") == expected
    assert paged(namespace="a", label_selector="tier=x") == [("a", "s0"), ("a", "s2"), ("a", "s4")]
    assert paged(namespace="a") == [("a", f"s{i}") for i in range(5)]
    first = core.list_namespaced_service("a-b", limit=2)
    assert first.metadata.remaining_item_count == 3


def test_merge_json_and_strategic_patches(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> None:
    core.create_namespaced_service("default", service("web", ports=[{"port": 80, "name": "http"}]))
    # Strategic merge: ports merge by their "port" key instead of replacing the list.
    merged = core.patch_namespaced_service(
        "web", "default", {"spec": {"ports": [{"port": 443, "name": "https"}]}}
    )

    assert sorted(p.port for p in merged.spec.ports) == [80, 443]
    json_patched = core.patch_namespaced_service(
        "web", "default", [{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]
    )
    assert json_patched.metadata.labels == {"x": "y"}
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_service(
            "web", "default", [{"op": "test", "path": "/metadata/labels/x", "value": "z"}]
        )
    assert raised.value.status == 422
    custom.create_namespaced_custom_object(
        MCS, "v1alpha1", "default", "serviceimports", service_import("web")
    )
    patched = custom.patch_namespaced_custom_object(
        MCS,
        "v1alpha1",
        "default",
        "serviceimports",
        "web",
        {"metadata": {"labels": {"a": "b"}}, "spec": {"ips": None}},
    )
    assert patched["metadata"]["labels"] == {"a": "b"} and "ips" not in patched["spec"]


def test_strategic_merge_patch_on_a_custom_resource_is_415(api: KubeApiEmulator) -> None:
    api.store.create(service_import("web"))
    status, _, body = http(
        f"{api.url}/apis/{MCS}/v1alpha1/namespaces/default/serviceimports/web",
        "PATCH",
        {"metadata": {"labels": {}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_server_side_apply_creates_then_merges(api: KubeApiEmulator, custom: client.CustomObjectsApi) -> None:
    url = f"{api.url}/apis/{MCS}/v1alpha1/namespaces/default/serviceimports/web?fieldManager=test"
    applied = service_import("web")
    applied["metadata"]["labels"] = {"a": "1", "b": "2"}
    status, _, _ = http(url, "PATCH", applied, content_type="application/apply-patch+yaml")
    assert status == 201
    custom.patch_namespaced_custom_object(
        MCS,
        "v1alpha1",
        "default",
        "serviceimports",
        "web",
        {"metadata": {"annotations": {"other": "manager"}}},
    )
    applied["metadata"]["labels"] = {"a": "1"}
    status, _, body = http(url, "PATCH", applied, content_type="application/apply-patch+yaml")
    assert status == 200
    # The field this manager stopped applying is removed; another writer's change stays.
    assert body["metadata"]["labels"] == {"a": "1"}
    assert body["metadata"]["annotations"] == {"other": "manager"}
    status, _, body = http(
        url.replace("fieldManager=test", ""), "PATCH", applied, content_type="application/apply-patch+yaml"
    )
    assert (status, body["reason"]) == (422, "Invalid")


def test_store_api_seeds_objects_visible_over_http(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    api.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "seeded"}})
    api.store.load_yaml("""
apiVersion: v1
kind: Service
metadata: {name: db, namespace: seeded}
spec: {ports: [{port: 5432}]}
""")
    assert core.read_namespaced_service("db", "seeded").spec.cluster_ip.startswith("10.96.")
    assert [s["metadata"]["name"] for s in api.store.list("svc", namespace="seeded")] == ["db"]


def test_delete_collection_honours_selectors(core: client.CoreV1Api, slices: client.DiscoveryV1Api) -> None:
    for i in range(3):
        slices.create_namespaced_endpoint_slice(
            "default", endpoint_slice(f"s{i}", "10.0.0.1", labels={"group": "x" if i < 2 else "y"})
        )
    slices.delete_collection_namespaced_endpoint_slice("default", label_selector="group=x")
    assert [
        s.metadata.name
        for s in slices.list_namespaced_endpoint_slice("default", label_selector="group").items
    ] == ["s2"]


def test_unsupported_methods_are_405(api: KubeApiEmulator) -> None:
    api.store.create(service("web"))
    status, _, body = http(f"{api.url}/api/v1/namespaces/default/services/web", "POST", service("web"))
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    status, _, _ = http(f"{api.url}/api/v1/namespaces", "DELETE")  # namespaces have no deletecollection
    assert status == 405
    status, _, _ = http(f"{api.url}/api/v1/services", "POST", service("web"))  # no namespace to create in
    assert status == 405


def test_body_api_version_must_match_the_request(api: KubeApiEmulator) -> None:
    url = f"{api.url}/apis/{MCS}/v1alpha1/namespaces/default/serviceimports"
    status, _, body = http(url, "POST", service_import("web", version="v1beta1"))
    assert (status, body["reason"]) == (400, "BadRequest")
    assert http(url, "POST", service_import("web"))[0] == 201


def test_versions_share_storage_without_spurious_writes(
    api: KubeApiEmulator, custom: client.CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(
        MCS, "v1alpha1", "default", "serviceimports", service_import("web")
    )
    as_beta = custom.get_namespaced_custom_object(MCS, "v1beta1", "default", "serviceimports", "web")
    again = custom.replace_namespaced_custom_object(
        MCS, "v1beta1", "default", "serviceimports", "web", as_beta
    )
    assert again["metadata"]["resourceVersion"] == as_beta["metadata"]["resourceVersion"]
    # v1beta1 allows two ips (dual-stack), v1alpha1 one: validation follows the request's version.
    as_beta["spec"]["ips"] = ["10.42.0.1", "fd00::1"]
    custom.replace_namespaced_custom_object(MCS, "v1beta1", "default", "serviceimports", "web", as_beta)


def test_store_create_or_replace_seeds_status_too(api: KubeApiEmulator) -> None:
    seeded = api.store.create_or_replace(service_import("web", status={"clusters": [{"cluster": "east"}]}))
    assert seeded["status"] == {"clusters": [{"cluster": "east"}]}
    assert seeded["apiVersion"] == f"{MCS}/v1alpha1"
    replaced = api.store.create_or_replace(service_import("web", type_="Headless"))
    assert replaced["spec"]["type"] == "Headless" and replaced["status"]["clusters"][0]["cluster"] == "east"


def test_server_side_tables_and_metadata_only_lists(api: KubeApiEmulator) -> None:
    api.store.create(service_import("web", spec={"type": "ClusterSetIP", "ports": [], "ips": ["10.42.0.1"]}))
    url = f"{api.url}/apis/{MCS}/v1alpha1/namespaces/default/serviceimports"
    _, _, table = http(url, accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Type", "IP", "Age"]
    assert table["rows"][0]["cells"][:3] == ["web", "ClusterSetIP", '["10.42.0.1"]']
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    _, _, partial = http(url, accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
    assert partial["kind"] == "PartialObjectMetadataList"
    assert set(partial["items"][0]) == {"kind", "apiVersion", "metadata"}
    status, _, body = http(url, accept="application/vnd.kubernetes.protobuf")
    assert (status, body["reason"]) == (406, "NotAcceptable")

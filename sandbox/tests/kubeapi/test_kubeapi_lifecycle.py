"""Object lifecycle: finalizers and deletionTimestamp, ownerReference cascades, namespace termination,
status subresource isolation, and ClusterIP allocation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubeapi_helpers import MCS, endpoint_slice, eventually, http, service, service_import
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def owned_by(obj: dict[str, Any], owner: dict[str, Any], **extra: Any) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            **extra,
        }
    ]
    return obj


# --- finalizers -----------------------------------------------------------------------------------


def test_finalizers_hold_a_deleted_object_until_removed(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    body = service("web")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    core.create_namespaced_service("default", body)
    pending = core.delete_namespaced_service("web", "default")
    assert pending.metadata.deletion_timestamp is not None
    assert pending.metadata.finalizers == ["example.com/cleanup"]
    still_there = core.read_namespaced_service("web", "default")
    assert still_there.metadata.deletion_timestamp == pending.metadata.deletion_timestamp
    # Deleting again changes nothing; adding a finalizer while deleting is refused.
    assert (
        core.delete_namespaced_service("web", "default").metadata.resource_version
        == still_there.metadata.resource_version
    )
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_service("web", "default", {"metadata": {"finalizers": ["example.com/more"]}})
    assert raised.value.status == 422
    core.patch_namespaced_service("web", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_service("web", "default")
    assert raised.value.status == 404


def test_finalizer_removal_by_update_completes_deletion_with_one_deleted_event(
    api: KubeApiEmulator, custom: client.CustomObjectsApi
) -> None:
    obj = service_import("web")
    obj["metadata"]["finalizers"] = ["mcsdns.io/export"]
    custom.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", obj)
    start = api.store.resource_version
    custom.delete_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", "web")
    current = custom.get_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", "web")
    current["metadata"]["finalizers"] = []
    custom.replace_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", "web", current)
    url = f"{api.url}/apis/{MCS}/v1alpha1/serviceimports?watch=1&resourceVersion={start}"
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        events = [json.loads(next(response))["type"] for _ in range(2)]
    assert events == ["MODIFIED", "DELETED"]


# --- ownerReferences ------------------------------------------------------------------------------


def test_deleting_an_owner_deletes_its_dependents_in_the_background(api: KubeApiEmulator) -> None:
    owner = api.store.create(service_import("web"))
    svc = api.store.create(owned_by(service("imported-abc"), owner, controller=True))
    api.store.create(owned_by(endpoint_slice("imported-abc-1", "10.0.0.1"), svc))
    api.store.create(service("unrelated"))
    api.store.delete("serviceimports", "web")
    assert api.wait_for_gc()
    assert api.store.find("services", "imported-abc") is None
    assert api.store.find("endpointslices", "imported-abc-1") is None
    assert api.store.find("services", "unrelated") is not None


def test_dependent_with_another_live_owner_only_loses_the_dangling_reference(api: KubeApiEmulator) -> None:
    first = api.store.create(service_import("a"))
    second = api.store.create(service_import("b"))
    dependent = owned_by(service("shared"), first)
    dependent["metadata"]["ownerReferences"].append(
        owned_by(service("x"), second)["metadata"]["ownerReferences"][0]
    )
    api.store.create(dependent)
    api.store.delete("serviceimports", "a")
    assert api.wait_for_gc()
    refs = api.store.get("services", "shared")["metadata"]["ownerReferences"]
    assert [r["name"] for r in refs] == ["b"]


def test_foreground_deletion_waits_for_blocking_dependents(api: KubeApiEmulator) -> None:
    owner = api.store.create(service_import("web"))
    blocker = owned_by(service("blocker"), owner, blockOwnerDeletion=True)
    blocker["metadata"]["finalizers"] = ["example.com/hold"]
    api.store.create(blocker)
    pending = api.store.delete("serviceimports", "web", propagation_policy="Foreground")
    assert "foregroundDeletion" in pending["metadata"]["finalizers"]
    assert api.wait_for_gc()
    # The dependent is being deleted but holds on; so does the owner.
    assert api.store.get("services", "blocker")["metadata"]["deletionTimestamp"]
    assert api.store.find("serviceimports", "web") is not None
    api.store.patch("services", "blocker", {"metadata": {"finalizers": None}})
    assert api.wait_for_gc()
    assert api.store.find("serviceimports", "web") is None


def test_orphan_deletion_keeps_dependents_without_the_reference(api: KubeApiEmulator) -> None:
    owner = api.store.create(service_import("web"))
    api.store.create(owned_by(service("kept"), owner))
    api.store.delete("serviceimports", "web", propagation_policy="Orphan")
    assert api.wait_for_gc()
    assert api.store.find("serviceimports", "web") is None
    assert "ownerReferences" not in api.store.get("services", "kept")["metadata"]


def test_object_whose_owner_never_existed_is_collected(api: KubeApiEmulator) -> None:
    ghost = {
        "apiVersion": f"{MCS}/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": "ghost", "uid": "00000000-0000-4000-8000-000000000000"},
    }
    api.store.create(owned_by(service("orphaned"), ghost))
    assert api.wait_for_gc()
    assert api.store.find("services", "orphaned") is None


def test_cascade_over_http_with_propagation_policy_in_delete_options(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    owner = api.store.create(service("owner"))
    api.store.create(owned_by(endpoint_slice("owned", "10.0.0.9"), owner))
    core.delete_namespaced_service(
        "owner", "default", body=client.V1DeleteOptions(propagation_policy="Background")
    )
    eventually(lambda: api.store.find("endpointslices", "owned") is None)


# --- namespaces -----------------------------------------------------------------------------------


def test_deleting_a_namespace_terminates_then_removes_it_with_its_content(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    body = service("web")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_service("team", body)
    api.store.create(endpoint_slice("web-1", "10.0.0.1"), namespace="team")
    core.delete_namespace("team")
    terminating = core.read_namespace("team")
    assert terminating.status.phase == "Terminating" and terminating.metadata.deletion_timestamp

    assert api.wait_for_gc()
    assert api.store.list("endpointslices", namespace="team") == []
    assert core.read_namespace("team").status.phase == "Terminating"
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_service("team", service("late"))
    assert raised.value.status == 403
    api.store.patch("services", "web", {"metadata": {"finalizers": None}}, namespace="team")
    assert api.wait_for_gc()
    assert api.store.find("namespaces", "team") is None


# --- status subresource ---------------------------------------------------------------------------


def test_main_resource_writes_ignore_status(api: KubeApiEmulator, custom: client.CustomObjectsApi) -> None:
    obj = service_import("web", status={"clusters": [{"cluster": "east"}]})
    created = custom.create_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports", obj)
    assert "status" not in created  # create cannot set status
    created["status"] = {"clusters": [{"cluster": "west"}]}
    created["spec"]["ips"] = ["10.42.0.1"]
    updated = custom.replace_namespaced_custom_object(
        MCS, "v1alpha1", "default", "serviceimports", "web", created
    )
    assert "status" not in updated and updated["spec"]["ips"] == ["10.42.0.1"]


def test_status_writes_change_only_status(api: KubeApiEmulator, custom: client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(
        MCS, "v1alpha1", "default", "serviceimports", service_import("web")
    )
    created["status"] = {"clusters": [{"cluster": "east"}]}
    created["spec"]["type"] = "Headless"
    created["metadata"]["labels"] = {"ignored": "yes"}
    updated = custom.replace_namespaced_custom_object_status(
        MCS, "v1alpha1", "default", "serviceimports", "web", created
    )
    assert updated["status"] == {"clusters": [{"cluster": "east"}]}
    assert updated["spec"]["type"] == "ClusterSetIP" and "labels" not in updated["metadata"]
    assert updated["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object_status(
        MCS, "v1alpha1", "default", "serviceimports", "web", {"status": {"clusters": [{"cluster": "west"}]}}
    )
    assert patched["status"]["clusters"] == [{"cluster": "west"}]
    stale = dict(
        created, metadata={**created["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]}
    )
    with pytest.raises(ApiException) as raised:
        custom.replace_namespaced_custom_object_status(
            MCS, "v1alpha1", "default", "serviceimports", "web", stale
        )
    assert raised.value.status == 409


def test_service_status_subresource(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", service("lb", type="LoadBalancer"))
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
    updated = core.patch_namespaced_service_status("lb", "default", status)
    assert updated.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert 30000 <= updated.spec.ports[0].node_port <= 32767


# --- ClusterIP allocation -------------------------------------------------------------------------


def test_cluster_ips_are_unique_and_in_the_range(core: client.CoreV1Api) -> None:
    ips = {core.create_namespaced_service("default", service(f"s{i}")).spec.cluster_ip for i in range(20)}
    assert len(ips) == 20
    assert all(ip.startswith("10.96.") and ip not in ("10.96.0.0", "10.96.255.255") for ip in ips)


def test_allocated_service_has_the_ip_family_fields(core: client.CoreV1Api) -> None:
    svc = core.create_namespaced_service("default", service("web"))
    assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
    assert (svc.spec.ip_families, svc.spec.ip_family_policy) == (["IPv4"], "SingleStack")
    assert (svc.spec.type, svc.spec.session_affinity, svc.spec.internal_traffic_policy) == (
        "ClusterIP",
        "None",
        "Cluster",
    )


def test_headless_services_keep_none(core: client.CoreV1Api) -> None:
    selectorless = core.create_namespaced_service("default", service("headless", clusterIP="None"))
    assert (selectorless.spec.cluster_ip, selectorless.spec.cluster_ips) == ("None", ["None"])
    # As the real server: selector-less headless Services list both families.
    assert selectorless.spec.ip_family_policy == "RequireDualStack"
    assert selectorless.spec.ip_families == ["IPv4", "IPv6"]
    selected = core.create_namespaced_service(
        "default", service("headless2", clusterIP="None", selector={"a": "b"})
    )
    assert (selected.spec.ip_family_policy, selected.spec.ip_families) == ("SingleStack", ["IPv4"])


def test_requested_cluster_ip_is_honoured_then_taken(core: client.CoreV1Api) -> None:
    svc = core.create_namespaced_service("default", service("fixed", clusterIP="10.96.0.10"))
    assert svc.spec.cluster_ips == ["10.96.0.10"]
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_service("default", service("twin", clusterIP="10.96.0.10"))
    body = json.loads(raised.value.body)
    assert raised.value.status == 422 and "provided IP is already allocated" in body["message"]
    core.delete_namespaced_service("fixed", "default")
    assert core.create_namespaced_service("default", service("twin", clusterIP="10.96.0.10")).spec.cluster_ip


def test_cluster_ip_outside_the_range_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_service("default", service("out", clusterIP="10.0.0.1"))
    body = json.loads(raised.value.body)
    assert raised.value.status == 422
    assert "The range of valid IPs is 10.96.0.0/16" in body["message"]


def test_cluster_ip_is_immutable_but_kept_when_omitted(core: client.CoreV1Api) -> None:
    svc = core.create_namespaced_service("default", service("web"))
    original = svc.spec.cluster_ip
    body = service("web")  # no clusterIP: the update keeps the allocated one
    body["metadata"]["labels"] = {"x": "y"}
    kept = core.replace_namespaced_service("web", "default", body)
    assert kept.spec.cluster_ip == original and kept.spec.cluster_ips == [original]
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_service("web", "default", {"spec": {"clusterIP": "10.96.0.99"}})
    assert raised.value.status == 422
    assert json.loads(raised.value.body)["details"]["causes"][0]["field"] == "spec.clusterIP"


def test_dual_stack_cluster_allocates_both_families() -> None:
    with KubeApiEmulator(service_cidr="10.96.0.0/16,fd00:10:96::/112") as dual:
        svc = dual.store.create(service("web", ipFamilyPolicy="PreferDualStack"))
        assert svc["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
        assert svc["spec"]["clusterIPs"][1].startswith("fd00:10:96::")
        v6 = dual.store.create(service("v6", ipFamilies=["IPv6"]))
        assert v6["spec"]["clusterIP"].startswith("fd00:10:96::")
    with KubeApiEmulator() as single:
        status, _, body = http(
            f"{single.url}/api/v1/namespaces/default/services",
            "POST",
            service("web", ipFamilyPolicy="RequireDualStack"),
        )
        assert status == 422 and "not configured for dual-stack" in body["message"]

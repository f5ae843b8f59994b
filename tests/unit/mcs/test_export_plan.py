"""The export plan: objects of one cluster in, Cloud Map instances to register and deregister out."""

from __future__ import annotations

from typing import Any

from mcsdns.clients.cloudmap import Instance
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.export import (
    Condition,
    conflict,
    desired_endpoints,
    merge_conditions,
    plan_instances,
    validity,
)

EXPORT = {"metadata": {"name": "web", "namespace": "prod", "creationTimestamp": "2026-11-24T08:00:00Z"}}


def service(
    *, cluster_ip: str = "10.96.0.10", ports: list[dict[str, Any]] | None = None, kind: str = "ClusterIP"
):
    return {
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "type": kind,
            "clusterIP": cluster_ip,
            "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint_slice(*endpoints: dict[str, Any], address_type: str = "IPv4", port_name: str = "http"):
    return {
        "metadata": {"name": "web-abc", "namespace": "prod", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": address_type,
        "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def desired(*slices: dict[str, Any], svc: dict[str, Any] | None = None, cluster: str = "cls1"):
    return desired_endpoints(
        export=EXPORT, service=svc or service(), slices=slices, cluster_id=cluster, clusterset_id="set1"
    )


def test_one_instance_per_address_and_port_with_the_aws_attribute_set() -> None:
    out = desired(
        endpoint_slice(
            {"addresses": ["10.1.0.1"], "hostname": "web-0", "nodeName": "node-a"},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},
        )
    )
    assert sorted(out) == ["tcp-10_1_0_1-8080-cls1", "tcp-10_1_0_2-8080-cls1"]
    first = out["tcp-10_1_0_1-8080-cls1"].attributes()
    assert first == {
        "AWS_INSTANCE_IPV4": "10.1.0.1",
        "AWS_INSTANCE_PORT": "8080",
        "ENDPOINT_PORT_NAME": "http",
        "ENDPOINT_PROTOCOL": "TCP",
        "SERVICE_PORT_NAME": "http",
        "SERVICE_PORT": "80",
        "SERVICE_TARGET_PORT": "8080",
        "SERVICE_PROTOCOL": "TCP",
        "SERVICE_TYPE": "ClusterSetIP",
        "CLUSTER_ID": "cls1",
        "CLUSTERSET_ID": "set1",
        "SERVICE_EXPORT_CREATION_TIMESTAMP": "1795507200000",
        "READY": "true",
        "HOSTNAME": "web-0",
        "NODENAME": "node-a",
        "K8S_CONTROLLER": attrs.CONTROLLER_NAME,
    }
    assert out["tcp-10_1_0_2-8080-cls1"].attributes()["READY"] == "false", "not-ready endpoints are exported"


def test_ipv6_headless_and_unnamed_ports() -> None:
    svc = service(cluster_ip="None", ports=[{"port": 80, "protocol": "TCP"}])
    out = desired(endpoint_slice({"addresses": ["fd00::1"]}, address_type="IPv6", port_name=""), svc=svc)
    (only,) = out.values()
    assert (
        only.attributes()["AWS_INSTANCE_IPV6"] == "fd00::1" and "AWS_INSTANCE_IPV4" not in only.attributes()
    )
    assert only.attributes()["SERVICE_TYPE"] == "Headless"
    assert only.attributes()["SERVICE_TARGET_PORT"] == "80"


def test_slice_ports_without_a_service_port_are_not_exported() -> None:
    assert desired(endpoint_slice({"addresses": ["10.1.0.1"]}, port_name="metrics")) == {}


def test_instance_ids_are_cluster_scoped_and_fit_64_characters() -> None:
    a = desired(endpoint_slice({"addresses": ["10.1.0.1"]}), cluster="cls1")
    b = desired(endpoint_slice({"addresses": ["10.1.0.1"]}), cluster="cls2")
    assert set(a).isdisjoint(b), "the same IP in two clusters: two instances"
    long = desired(
        endpoint_slice({"addresses": ["fd00:1111:2222:3333:4444:5555:6666:7777"]}, address_type="IPv6"),
        cluster="a-very-long-cluster-name.eu-west-1",
    )
    assert all(len(instance_id) <= 64 for instance_id in long)


def registered(out: dict[str, attrs.ExportedEndpoint], **extra: str) -> dict[str, Instance]:
    return {i: Instance(i, {**e.attributes(), **extra}) for i, e in out.items()}


def test_only_our_keys_decide_a_registration_and_foreign_keys_survive() -> None:
    want = desired(endpoint_slice({"addresses": ["10.1.0.1"]}))
    assert not plan_instances(registered(want, TEAM="payments"), want), "a foreign attribute is not a change"
    older_controller = registered(want, K8S_CONTROLLER="mcsdns 0.0.1")
    assert not plan_instances(older_controller, want), "an upgrade does not re-register everything"
    flipped = desired(endpoint_slice({"addresses": ["10.1.0.1"], "conditions": {"ready": False}}))
    plan = plan_instances(registered(want, TEAM="payments"), flipped)
    (attributes,) = plan.register.values()
    assert attributes["READY"] == "false" and attributes["TEAM"] == "payments"


def test_gone_endpoints_are_deregistered() -> None:
    before = desired(endpoint_slice({"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"]}))
    after = desired(endpoint_slice({"addresses": ["10.1.0.1"]}))
    plan = plan_instances(registered(before), after)
    assert plan.deregister == ("tcp-10_1_0_2-8080-cls1",) and not plan.register


def test_validity() -> None:
    assert validity(None, ("prod", "web")) == Condition(
        "Valid", False, "NoService", "Service prod/web not found"
    )
    assert validity(service(kind="ExternalName"), ("prod", "web")).reason == "InvalidServiceType"
    assert validity(service(), ("prod", "web")).status


def _endpoint(
    cluster: str, created: int, *, kind: str = "ClusterSetIP", port: int = 80
) -> attrs.ExportedEndpoint:
    return attrs.ExportedEndpoint(
        cluster_id=cluster,
        clusterset_id="set1",
        address="10.0.0.1",
        port=8080,
        endpoint_port_name="http",
        protocol="TCP",
        service_port_name="http",
        service_port=port,
        service_target_port="8080",
        service_protocol="TCP",
        service_type=kind,
        ready=True,
        export_created_ms=created,
    )


def test_the_oldest_export_wins_conflicts() -> None:
    assert (
        conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000, kind="Headless")]).reason
        == "TypeConflict"
    )
    assert conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000, port=81)]).reason == "PortConflict"
    assert not conflict([_endpoint("cls1", 1000)], [_endpoint("cls2", 2000, kind="Headless")]).status, (
        "the oldest export never conflicts"
    )
    assert not conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000)]).status


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = merge_conditions([], [Condition("Ready", False, "Pending", "")], now="t1", generation=1)
    same = merge_conditions(first, [Condition("Ready", False, "Pending", "again")], now="t2", generation=1)
    flipped = merge_conditions(same, [Condition("Ready", True, "Exported", "")], now="t3", generation=1)
    assert [c["lastTransitionTime"] for c in (*first, *same, *flipped)] == ["t1", "t1", "t3"]

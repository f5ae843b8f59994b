"""The export plan: objects of one cluster in, Cloud Map instances to register and deregister out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mcsdns.clients.cloudmap import Instance
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.conditions import Condition, merge_conditions
from mcsdns.mcs.export import conflict, desired_endpoints, plan_instances, validity

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


def test_the_oldest_export_wins_and_every_exporter_is_told_of_a_conflict() -> None:
    # KEP-1645: the newer export conflicts; mcs-api recommends the condition on all constituent exports.
    newer = conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000, kind="Headless")])
    assert (newer.status, newer.reason) == (True, "TypeConflict")
    assert "cluster cls1" in newer.message
    oldest = conflict([_endpoint("cls1", 1000)], [_endpoint("cls2", 2000, kind="Headless")])
    assert (oldest.status, oldest.reason) == (True, "TypeConflict")
    assert "cluster cls2" in oldest.message and "this export's" in oldest.message
    assert conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000, port=81)]).reason == "PortConflict"
    agree = conflict([_endpoint("cls2", 2000)], [_endpoint("cls1", 1000)])
    assert (agree.status, agree.reason) == (False, "NoConflicts")


def test_a_third_exporter_is_told_of_a_conflict_between_the_other_two() -> None:
    found = conflict([_endpoint("cls3", 3000)], [_endpoint("cls1", 1000), _endpoint("cls2", 2000, port=81)])
    assert (found.status, found.reason) == (True, "PortConflict")
    assert "cluster cls2" in found.message and "cluster cls1's" in found.message


def _with(endpoint: attrs.ExportedEndpoint, **properties: Any) -> attrs.ExportedEndpoint:
    return replace(endpoint, properties=attrs.ServiceProperties(**properties))


def test_property_conflicts_are_named_as_mcs_api_names_them_and_joined() -> None:
    older = _endpoint("cls1", 1000)
    newer = _with(
        _endpoint("cls2", 2000, port=81),
        session_affinity="ClientIP",
        internal_traffic_policy="Local",
        labels=(("team", "a"),),
    )
    found = conflict([newer], [older])
    assert found.reason == "PortConflict,SessionAffinityConflict,InternalTrafficPolicyConflict,LabelsConflict"


def test_service_properties_travel_in_attributes_only_when_not_the_default() -> None:
    plain = desired(endpoint_slice({"addresses": ["10.1.0.1"]}))["tcp-10_1_0_1-8080-cls1"]
    assert not set(plain.attributes()) & set(attrs.PROPERTY_KEYS), "a plain Service's instances as before"
    svc = service()
    svc["spec"].update(
        ipFamilies=["IPv4", "IPv6"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
        internalTrafficPolicy="Local",
        trafficDistribution="PreferClose",
    )
    export = {**EXPORT, "spec": {"exportedLabels": {"team": "a"}, "exportedAnnotations": {"note": "x"}}}
    rich = desired_endpoints(
        export=export, service=svc, slices=[endpoint_slice({"addresses": ["10.1.0.1"]})],
        cluster_id="cls1", clusterset_id="set1",
    )["tcp-10_1_0_1-8080-cls1"]  # fmt: skip
    written = rich.attributes()
    assert {k: written[k] for k in attrs.PROPERTY_KEYS} == {
        "MCSDNS_IP_FAMILIES": "IPv4,IPv6",
        "MCSDNS_SESSION_AFFINITY": "ClientIP",
        "MCSDNS_SESSION_AFFINITY_TIMEOUT": "600",
        "MCSDNS_INTERNAL_TRAFFIC_POLICY": "Local",
        "MCSDNS_TRAFFIC_DISTRIBUTION": "PreferClose",
        "MCSDNS_EXPORTED_LABELS": '{"team":"a"}',
        "MCSDNS_EXPORTED_ANNOTATIONS": '{"note":"x"}',
    }
    assert attrs.from_attributes(written).properties == rich.properties, "read back as written"


def test_labels_longer_than_a_cloud_map_value_are_left_out_and_said_so() -> None:
    huge = attrs.ServiceProperties(labels=tuple((f"key{i}", "v" * 40) for i in range(40)))
    assert attrs.EXPORTED_LABELS not in huge.attributes("10.1.0.1")
    assert huge.too_long() == ["exportedLabels"]


def test_unreadable_properties_read_as_defaults_and_keep_the_endpoint() -> None:
    written = desired(endpoint_slice({"addresses": ["10.1.0.1"]}))["tcp-10_1_0_1-8080-cls1"].attributes()
    written.update(
        MCSDNS_IP_FAMILIES="IPv9",
        MCSDNS_SESSION_AFFINITY="Sticky",
        MCSDNS_SESSION_AFFINITY_TIMEOUT="-1",
        MCSDNS_EXPORTED_LABELS="{not json",
        MCSDNS_EXPORTED_ANNOTATIONS='["a list"]',
    )
    assert attrs.from_attributes(written).properties == attrs.ServiceProperties()


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = merge_conditions([], [Condition("Ready", False, "Pending", "")], now="t1", generation=1)
    same = merge_conditions(first, [Condition("Ready", False, "Pending", "again")], now="t2", generation=1)
    flipped = merge_conditions(same, [Condition("Ready", True, "Exported", "")], now="t3", generation=1)
    assert [c["lastTransitionTime"] for c in (*first, *same, *flipped)] == ["t1", "t1", "t3"]

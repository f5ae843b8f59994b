"""The import plan: Cloud Map instances in, the ServiceImport, derived Service and slices to write out."""

from __future__ import annotations

from mcsdns.clients.cloudmap import Instance
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.import_ import (
    derived_name,
    desired_import,
    desired_service,
    desired_slices,
    drift_share,
    import_model,
)
from tests.support import aws_controller_attributes


def instance(
    cluster: str,
    address: str,
    *,
    created: int = 1000,
    kind: str = "ClusterSetIP",
    port: int = 80,
    port_name: str = "http",
    ready: bool = True,
    hostname: str = "",
) -> Instance:
    e = attrs.ExportedEndpoint(
        cluster_id=cluster,
        clusterset_id="set1",
        address=address,
        port=8080,
        endpoint_port_name=port_name,
        protocol="TCP",
        service_port_name=port_name,
        service_port=port,
        service_target_port="8080",
        service_protocol="TCP",
        service_type=kind,
        ready=ready,
        hostname=hostname,
        export_created_ms=created,
    )
    return Instance(e.instance_id(), e.attributes())


def test_derived_name_is_stable_short_and_per_service() -> None:
    name = derived_name("demo", "nginx-hello")
    assert name == derived_name("demo", "nginx-hello") and len(name) == len("imported-") + 10
    assert name.startswith("imported-") and name[9:].isalnum() and name == name.lower()
    assert derived_name("demo", "other") != name and derived_name("other", "nginx-hello") != name


def test_type_and_ports_come_from_the_oldest_export() -> None:
    model = import_model(
        ("prod", "web"),
        [
            instance("cls2", "10.2.0.1", created=2000, kind="Headless", port=81),
            instance("cls1", "10.1.0.1", created=1000, port=80),
            instance("cls3", "10.3.0.1", created=3000, port_name="grpc", port=9000),
        ],
    )
    assert model is not None and model.type == "ClusterSetIP"
    assert [(p.name, p.port) for p in model.ports] == [("grpc", 9000), ("http", 80)], (
        "union; oldest wins http"
    )
    assert list(model.clusters) == ["cls1", "cls2", "cls3"]


def test_instances_of_the_aws_controller_are_imported() -> None:
    aws = aws_controller_attributes(address="10.9.0.1", cluster="eks-1", clusterset="set1")
    model = import_model(("demo", "nginx-hello"), [Instance("tcp-10_9_0_1-80", aws)])
    assert model is not None and model.clusters["eks-1"].endpoints[0].address == "10.9.0.1"


def test_invalid_instances_are_skipped_and_none_left_means_no_import() -> None:
    assert import_model(("prod", "web"), [Instance("x", {"AWS_INSTANCE_IPV4": "10.0.0.1"})]) is None


def test_readiness_and_hostnames_are_carried_into_slices() -> None:
    model = import_model(
        ("prod", "db"),
        [
            instance("cls1", "10.1.0.1", kind="Headless", hostname="db-0"),
            instance("cls1", "10.1.0.2", kind="Headless", ready=False),
        ],
    )
    assert model is not None
    (only,) = desired_slices(model).values()
    assert only["endpoints"] == [
        {"addresses": ["10.1.0.1"], "conditions": {"ready": True}, "hostname": "db-0"},
        {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},
    ]
    labels = only["metadata"]["labels"]
    assert labels["multicluster.kubernetes.io/source-cluster"] == "cls1"
    assert labels["kubernetes.io/service-name"] == derived_name("prod", "db")
    assert labels["endpointslice.kubernetes.io/managed-by"] == "mcsdns"
    assert desired_service(model)["spec"]["clusterIP"] == "None"
    assert "ips" not in desired_import(model, service=None)["spec"]


def test_slices_hold_at_most_100_endpoints_per_cluster_and_family() -> None:
    found = [instance("cls1", f"10.1.{i // 200}.{i % 200 + 1}") for i in range(250)]
    found += [instance("cls1", f"fd00::{i + 1:x}") for i in range(3)]
    found += [instance("cls2", "10.2.0.1")]
    model = import_model(("prod", "web"), found)
    assert model is not None
    slices = desired_slices(model)
    sizes = sorted(
        (
            s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"],
            s["addressType"],
            len(s["endpoints"]),
        )
        for s in slices.values()
    )
    assert sizes == [
        ("cls1", "IPv4", 50),
        ("cls1", "IPv4", 100),
        ("cls1", "IPv4", 100),
        ("cls1", "IPv6", 3),
        ("cls2", "IPv4", 1),
    ]
    derived = {"spec": {"clusterIP": "172.20.0.9", "clusterIPs": ["172.20.0.9", "fd00:20::9"]}}
    spec = desired_import(model, service=derived)["spec"]
    assert (spec["ips"], spec["ipFamilies"]) == (["172.20.0.9", "fd00:20::9"], ["IPv4", "IPv6"]), (
        "a VIP per family the export has"
    )


def test_an_exported_annotation_that_is_missing_on_the_import_is_a_difference() -> None:
    from mcsdns.mcs.import_ import differs

    have = {"metadata": {"labels": {"a": "1"}, "annotations": {"kept": "by someone else"}}}
    want = {"metadata": {"labels": {"a": "1"}, "annotations": {"owner": "pay@x"}}}
    assert differs(have, want, ("annotations",))
    assert not differs(
        want | {"metadata": {**want["metadata"], "annotations": {"owner": "pay@x", "x": "y"}}},
        want,
        ("annotations",),
    )
    assert not differs(have, want, ("labels",))


def test_drift_repair_compares_every_import_once_per_round_a_share_each_poll() -> None:
    # 5,000 imports, 1 s polls, a 30 s round: 167 a poll (about 30 ms), never all 5,000 in one poll.
    desired = {("ns", f"s{i:04d}") for i in range(5000)}
    left: list[tuple[str, str]] = []
    compared: list[tuple[str, str]] = []
    shares = []
    for _ in range(30):
        turn, left = drift_share(left, desired, 1.0)
        shares.append(len(turn))
        compared.extend(turn)
    assert max(shares) == 167
    assert sorted(compared) == sorted(desired), "each import once in the round"
    turn, left = drift_share(left, desired, 1.0)
    assert len(turn) == 167 and len(left) == 5000 - 167, "then a new round"

"""Export and import through Cloud Map, end to end: two real clusters (kube-apiserver + etcd, the chart's
CRDs, mcsdns under the chart's RBAC; tests/realkube.py), the embedded Cloud Map (moto over HTTP, through
boto3), two mcsdns engines, and real DNS queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import dns.exception
import dns.rcode
import pytest
import yaml

from mcsdns.health import make_registry
from mcsdns.mcs.import_ import derived_name
from mcsdns.settings import CloudMapSettings, IdentitySettings, KubernetesSettings, LeaseSettings, Settings
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.controlplane import ControlPlane, Objects
from tests.realkube import CLUSTERSET, NAMESPACE, chart_kubeconfig_of
from tests.support import ServerThread, aws_controller_attributes, kubectl, query, settings_for, wait_for

TUTORIAL = Path(__file__).resolve().parents[2] / "examples" / "tutorial"
NAME = "nginx-hello.demo.svc.clusterset.local."


@dataclass
class Cluster:
    name: str
    plane: ControlPlane
    kubeconfig: Path  # the chart's ServiceAccount's
    server: ServerThread | None = None

    @property
    def store(self) -> Objects:
        """The test's own hands on the cluster: the admin."""
        return self.plane.objects

    @property
    def dns(self) -> ServerThread:
        assert self.server is not None
        return self.server

    def answer(self, name: str = NAME, rdtype: str = "A") -> list[str]:
        reply = query(self.dns, name, rdtype)
        return sorted(r.to_text() for rrset in reply.answer for r in rrset)

    def vip(self, service: str = "nginx-hello") -> str | None:
        found = self.store.find("services", derived_name("demo", service), namespace="demo")
        return found["spec"]["clusterIP"] if found else None


def engine_settings(cluster: Cluster, cloudmap: EmbeddedCloudMap, **lease: Any) -> Settings:
    return replace(
        settings_for(),
        kubernetes=KubernetesSettings(kubeconfig=str(cluster.kubeconfig)),
        lease=LeaseSettings(duration=3.0, renew_deadline=2.0, namespace=NAMESPACE, **lease),
        cloudmap=CloudMapSettings(enabled=True, poll=0.3, region=cloudmap.region),
    )


@pytest.fixture
def cloudmap(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedCloudMap]:
    with EmbeddedCloudMap() as embedded:
        for key, value in embedded.env().items():
            monkeypatch.setenv(key, value)
        yield embedded


def tutorial_clusters(planes: dict[str, ControlPlane], tmp_path: Path) -> dict[str, Cluster]:
    """The tutorial's start: nginx-hello's Service and EndpointSlice in cls1, nothing exported yet; each
    cluster with a kubeconfig of the chart's ServiceAccount for its engine."""
    out = {
        name: Cluster(name, plane, chart_kubeconfig_of(plane, tmp_path / f"{name}.kubeconfig"))
        for name, plane in planes.items()
    }
    out["cls1"].store.load_yaml(TUTORIAL / "nginx-service.yaml")
    out["cls1"].store.load_yaml(TUTORIAL / "nginx-endpoints.yaml")
    return out


@pytest.fixture
def clusters(
    cloudmap: EmbeddedCloudMap, real_clusters: dict[str, ControlPlane], tmp_path: Path
) -> Iterator[dict[str, Cluster]]:
    out = tutorial_clusters(real_clusters, tmp_path)
    with (
        ServerThread(engine_settings(out["cls1"], cloudmap)) as s1,
        ServerThread(engine_settings(out["cls2"], cloudmap)) as s2,
    ):
        out["cls1"].server, out["cls2"].server = s1, s2
        s1.wait_serving()
        s2.wait_serving()
        yield out


def sd_client(cloudmap: EmbeddedCloudMap) -> Any:
    return boto3.client("servicediscovery", region_name=cloudmap.region, endpoint_url=cloudmap.endpoint_url)


def instances(cloudmap: EmbeddedCloudMap, service: str = "nginx-hello") -> dict[str, dict[str, str]]:
    client = sd_client(cloudmap)
    try:
        found = client.discover_instances(
            NamespaceName="demo", ServiceName=service, HealthStatus="ALL", MaxResults=1000
        )["Instances"]
    except client.exceptions.ClientError:
        return {}
    return {i["InstanceId"]: i["Attributes"] for i in found}


def export(cluster: Cluster) -> None:
    cluster.store.load_yaml(TUTORIAL / "nginx-serviceexport.yaml")


def local_slice(
    name: str, service: str, address: str, *, port_name: str = "", port: int = 80, hostname: str = ""
) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for a local Service (one endpoint)."""
    endpoint: dict[str, Any] = {"addresses": [address], "conditions": {"ready": True}}
    if hostname:
        endpoint["hostname"] = hostname
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [endpoint],
    }


def imported_clusters(cluster: Cluster, name: str = "nginx-hello") -> list[str]:
    """The clusters the ServiceImport's status lists."""
    obj = cluster.store.find("serviceimports", name, namespace="demo") or {}
    return [c["cluster"] for c in (obj.get("status") or {}).get("clusters", [])]


COMPARED_QUESTIONS = [
    (NAME, "A"),
    (NAME, "AAAA"),
    (NAME, "SRV"),
    (f"_http._tcp.{NAME}", "SRV"),
    ("absent.demo.svc.clusterset.local.", "A"),
    ("demo.svc.clusterset.local.", "A"),
    ("dns-version.clusterset.local.", "TXT"),
    ("clusterset.local.", "SOA"),
    ("clusterset.local.", "NS"),
]


# Where CoreDNS's multicluster and mcsdns answer the same objects differently, on purpose (README
# "Controller only, and where CoreDNS answers differently"); every other compared question agrees.
DIFFERENCES = {
    (NAME, "SRV"),  # an unnamed port: CoreDNS answers an SRV for it, mcsdns only for named ports (§2.3.2)
    ("dns-version.clusterset.local.", "TXT"),  # CoreDNS says 1.1.0; mcsdns 1.0.0 unless --dns-version
    ("clusterset.local.", "SOA"),  # the serial: CoreDNS 0 here, mcsdns the time of the zone's last change
    ("clusterset.local.", "NS"),  # CoreDNS has no NS at the apex (NODATA); mcsdns ns.dns.<zone>
}


def shape(reply: Any) -> tuple[str, list[str], list[str]]:
    """What a client reads of a reply: rcode, the answer records (no TTLs), the authority's types."""
    answer = sorted(f"{rrset.rdtype.name} {r.to_text()}" for rrset in reply.answer for r in rrset)
    return dns.rcode.to_text(reply.rcode()), answer, sorted(rrset.rdtype.name for rrset in reply.authority)


def conditions(cluster: Cluster, name: str = "nginx-hello") -> dict[str, tuple[str, str]]:
    obj = cluster.store.get("serviceexports", name, namespace="demo")
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions", [])}


def test_seed_tutorial_end_to_end(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    started = time.monotonic()
    export(cls1)
    wait_for(lambda: cls2.answer(), timeout=10, what="cls2 to answer")
    elapsed = time.monotonic() - started
    assert cls2.answer() == [cls2.vip()], "cls2 answers its own derived Service's ClusterIP"
    assert cls2.vip() is not None and cls2.vip().startswith("172.20.")  # type: ignore[union-attr]
    wait_for(lambda: cls1.answer() == [cls1.vip()], what="the exporting cluster to import too")
    assert elapsed < 5, f"export to answer took {elapsed:.1f}s"

    found = instances(cloudmap)
    assert sorted(a["AWS_INSTANCE_IPV4"] for a in found.values()) == [
        "10.10.16.120",
        "10.10.21.133",
        "10.10.28.116",
    ]
    assert all(
        set(a) == set(attrs_keys()) and a["CLUSTER_ID"] == "cls1" and a["READY"] == "true"
        for a in found.values()
    )
    wait_for(
        lambda: (
            conditions(cls1)
            == {
                "Valid": ("True", "Valid"),
                "Ready": ("True", "Exported"),
                "Conflict": ("False", "NoConflicts"),
            }
        ),
        what="the export's conditions",
    )

    imported = cls2.store.get("serviceimports", "nginx-hello", namespace="demo")
    assert imported["spec"]["type"] == "ClusterSetIP" and imported["spec"]["ips"] == [cls2.vip()]
    assert imported["status"]["clusters"] == [{"cluster": "cls1"}]
    slices = cls2.store.list("endpointslices", namespace="demo")
    (only,) = slices
    assert sorted(e["addresses"][0] for e in only["endpoints"]) == [
        "10.10.16.120",
        "10.10.21.133",
        "10.10.28.116",
    ]
    assert only["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == "cls1"
    # What a controller dashboard reads: controller-runtime's reconcile families, client-go's leader gauge,
    # and each Cloud Map call's latency.
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in make_registry(cls1.dns.app).collect()  # type: ignore[arg-type]
        for sample in family.samples
    }
    export_ok = (
        "controller_runtime_reconcile_total",
        (("controller", "mcsdns-export"), ("result", "success")),
    )
    assert metrics[export_ok] >= 1
    assert (
        metrics[("controller_runtime_reconcile_time_seconds_count", (("controller", "mcsdns-import"),))] >= 1
    )
    assert metrics[("leader_election_master_status", (("name", "mcsdns-leader"),))] == 1
    calls = [
        v for (name, labels), v in metrics.items() if name == "mcsdns_cloudmap_call_duration_seconds_count"
    ]
    assert calls and sum(calls) >= 3


def attrs_keys() -> list[str]:
    """The 16 keys the AWS controller writes for an IPv4 endpoint (reference §1.7)."""
    from mcsdns.mcs.instances import IPV6, OURS, PROPERTY_KEYS

    return [key for key in OURS if key != IPV6 and key not in PROPERTY_KEYS]


def test_scale_readiness_and_unexport(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    export(cls1)
    wait_for(lambda: len(instances(cloudmap)) == 3, what="3 instances")
    endpoint_slice = cls1.store.get("endpointslices", "nginx-hello-7xq2p", namespace="demo")
    endpoint_slice["endpoints"].append({"addresses": ["10.10.30.1"], "conditions": {"ready": True}})
    endpoint_slice["endpoints"][0]["conditions"] = {"ready": False}
    cls1.store.update(endpoint_slice)
    wait_for(lambda: len(instances(cloudmap)) == 4, what="scale up to 4")
    assert sorted(a["READY"] for a in instances(cloudmap).values()) == ["false", "true", "true", "true"]

    def imported_readiness() -> list[tuple[str, bool]]:
        items = cls2.store.list("endpointslices", namespace="demo")
        return sorted((e["addresses"][0], e["conditions"]["ready"]) for s in items for e in s["endpoints"])

    wait_for(
        lambda: (
            imported_readiness()
            == [("10.10.16.120", False), ("10.10.21.133", True), ("10.10.28.116", True), ("10.10.30.1", True)]
        ),
        what="readiness to reach cls2",
    )
    endpoint_slice = cls1.store.get("endpointslices", "nginx-hello-7xq2p", namespace="demo")
    endpoint_slice["endpoints"] = endpoint_slice["endpoints"][2:]
    cls1.store.update(endpoint_slice)
    wait_for(lambda: len(instances(cloudmap)) == 2, what="scale down to 2")

    cls1.store.delete("serviceexports", "nginx-hello", namespace="demo")
    wait_for(lambda: instances(cloudmap) == {}, what="deregistration")
    wait_for(
        lambda: cls1.store.find("serviceexports", "nginx-hello", namespace="demo") is None,
        what="the finalizer to be removed",
    )
    wait_for(lambda: query(cls2.dns, NAME).rcode() == dns.rcode.NXDOMAIN, what="the import to go")
    assert cls2.vip() is None and cls2.store.list("endpointslices", namespace="demo") == []


def test_two_clusters_export_one_service_union_and_one_vip(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    cls2.store.load_yaml(TUTORIAL / "nginx-service.yaml")
    cls2.store.create(local_slice("nginx-hello-cls2", "nginx-hello", "10.20.0.5"))
    export(cls1)
    export(cls2)
    wait_for(lambda: len(instances(cloudmap)) == 4, what="both clusters' instances")
    for cluster in (cls1, cls2):
        wait_for(
            lambda c=cluster: imported_clusters(c) == ["cls1", "cls2"], what=f"{cluster.name} to import both"
        )

        def imported(c: Cluster = cluster) -> list[str]:
            items = c.store.list(
                "endpointslices",
                namespace="demo",
                label_selector="endpointslice.kubernetes.io/managed-by=mcsdns",
            )
            return sorted(e["addresses"][0] for s in items for e in s["endpoints"])

        union = ["10.10.16.120", "10.10.21.133", "10.10.28.116", "10.20.0.5"]
        wait_for(lambda c=cluster, u=union: imported(c) == u, what=f"{cluster.name} to import the union")
        wait_for(lambda c=cluster: c.answer() == [c.vip()], what=f"{cluster.name} to answer its VIP")
        assert cluster.answer() == [cluster.vip()], "one VIP per importing cluster"


def test_type_conflict_oldest_export_wins(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    export(cls1)
    wait_for(lambda: len(instances(cloudmap)) == 3, what="cls1's export")
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nginx-hello", "namespace": "demo"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    cls2.store.create(headless)
    cls2.store.create(local_slice("nginx-hello-h", "nginx-hello", "10.20.0.9"))
    export(cls2)
    wait_for(lambda: conditions(cls2).get("Conflict") == ("True", "TypeConflict"), what="cls2's conflict")
    # KEP-1645 / mcs-api: every exporter is told, the oldest too (its export is the one in use).
    wait_for(lambda: conditions(cls1).get("Conflict") == ("True", "TypeConflict"), what="cls1 told too")
    wait_for(lambda: len(instances(cloudmap)) == 4, what="cls2 still exports")

    for cluster in (cls1, cls2):
        wait_for(
            lambda c=cluster: imported_clusters(c) == ["cls1", "cls2"], what=f"{cluster.name} to import both"
        )
        imported = cluster.store.get("serviceimports", "nginx-hello", namespace="demo")
        assert imported["spec"]["type"] == "ClusterSetIP", "the older export's type"
        wait_for(lambda c=cluster: c.answer() == [c.vip()], what=f"{cluster.name} to answer its VIP")


def test_headless_across_clusters(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    for cluster, address in ((cls1, "10.10.5.5"), (cls2, "10.20.5.5")):
        cluster.store.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "db", "namespace": "demo"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
            }
        )
        cluster.store.create(local_slice("db-x", "db", address, port_name="pg", port=5432, hostname="db-0"))
        cluster.store.create(
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": {"name": "db", "namespace": "demo"},
            }
        )
    db = "db.demo.svc.clusterset.local."
    wait_for(lambda: cls2.answer(db) == ["10.10.5.5", "10.20.5.5"], what="both clusters' endpoints")
    assert cls2.answer(f"db-0.cls1.{db}") == ["10.10.5.5"]
    assert sorted(r.split()[-1] for r in cls2.answer(f"_pg._tcp.{db}", "SRV")) == [
        f"db-0.cls1.{db}",
        f"db-0.cls2.{db}",
    ]


def test_outages_keep_serving_delete_nothing_and_converge(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    export(cls1)
    wait_for(lambda: cls2.answer() == [cls2.vip()], what="the import")
    # The exporting cluster imports too: both answer before the outage starts.
    wait_for(lambda: cls1.vip() is not None and cls1.answer() == [cls1.vip()], what="cls1's own import")
    vip = cls2.vip()
    cloudmap.stop()
    cls2.plane.freeze()  # cls2's API server hangs, as in a partition
    try:
        endpoint_slice = cls1.store.get("endpointslices", "nginx-hello-7xq2p", namespace="demo")
        endpoint_slice["endpoints"] = endpoint_slice["endpoints"][:1]
        cls1.store.update(endpoint_slice)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert cls2.answer() == [vip] and cls1.answer() == [cls1.vip()]
            time.sleep(0.2)
    finally:
        cls2.plane.thaw()
        cloudmap.start()
    assert cls2.store.find("serviceimports", "nginx-hello", namespace="demo") is not None, "nothing deleted"
    wait_for(lambda: len(instances(cloudmap)) == 1, timeout=60, what="the export to converge")

    def imported() -> list[str]:
        items = cls2.store.list("endpointslices", namespace="demo")
        return [e["addresses"][0] for s in items for e in s["endpoints"]]

    wait_for(lambda: imported() == ["10.10.16.120"], timeout=60, what="the import to converge")
    assert cls2.answer() == [vip], "the VIP never changed"


def test_throttling_is_retried(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cloudmap.throttle_next(8)
    export(clusters["cls1"])
    wait_for(lambda: clusters["cls2"].answer(), timeout=20, what="the import despite throttling")
    assert len(instances(cloudmap)) == 3


def test_unmanaged_service_imports_are_never_touched(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls2 = clusters["cls2"]
    handmade = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": "legacy", "namespace": "demo"},
        "spec": {"type": "ClusterSetIP", "ips": ["172.20.9.9"], "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    cls2.store.create(handmade)
    export(clusters["cls1"])
    wait_for(lambda: cls2.answer(), what="the managed import")
    time.sleep(1.0)  # several import cycles
    assert cls2.store.get("serviceimports", "legacy", namespace="demo")["spec"]["ips"] == ["172.20.9.9"]


@pytest.mark.parametrize("read_before_instances", [False, True], ids=["registered", "read-empty-first"])
def test_aws_controller_instances_are_imported(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap, read_before_instances: bool
) -> None:
    # A cluster running aws-cloud-map-mcs-controller-for-k8s registered this, in its format. It creates
    # the service in one call and registers the instances in later ones, and bumps no beacon: an importer
    # that read the service empty in between must look again soon (a follow-up, mcs/changes.py), not at
    # the sweep's pace (4 minutes at the default --cloudmap-max-staleness).
    client = sd_client(cloudmap)
    operation = client.create_http_namespace(Name="demo")["OperationId"]
    namespace_id = client.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"]
    service_id = client.create_service(Name="legacy-app", NamespaceId=namespace_id)["Service"]["Id"]
    cls2 = clusters["cls2"]
    if read_before_instances:
        time.sleep(3.0)  # the namespace list (1 s cache) is read again, then the service, empty
        assert cls2.answer("legacy-app.demo.svc.clusterset.local.") == []
    client.register_instance(
        ServiceId=service_id,
        InstanceId="tcp-10_9_0_1-80",
        Attributes=aws_controller_attributes(address="10.9.0.1", cluster="eks-legacy", clusterset=CLUSTERSET),
    )
    wait_for(
        lambda: cls2.answer("legacy-app.demo.svc.clusterset.local.") == [cls2.vip("legacy-app")],
        what="the AWS controller's export to be imported",
    )


def test_standalone_cloudmap_mode_answers_endpoints(
    cloudmap: EmbeddedCloudMap, clusters: dict[str, Cluster]
) -> None:
    export(clusters["cls1"])
    wait_for(lambda: len(instances(cloudmap)) == 3, what="the export")
    settings = replace(
        settings_for(),
        identity=IdentitySettings(clusterset_id=CLUSTERSET),
        cloudmap=CloudMapSettings(enabled=True, poll=0.3, region=cloudmap.region),
    )
    with ServerThread(settings) as standalone:
        standalone.wait_serving()
        reply = query(standalone, NAME)
        assert sorted(r.to_text() for rrset in reply.answer for r in rrset) == [
            "10.10.16.120",
            "10.10.21.133",
            "10.10.28.116",
        ]


def test_leader_failover_in_the_middle_of_an_export(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1 = clusters["cls1"]
    endpoint_slice = cls1.store.get("endpointslices", "nginx-hello-7xq2p", namespace="demo")
    endpoint_slice["endpoints"] = [
        {"addresses": [f"10.10.40.{i}"], "conditions": {"ready": True}} for i in range(1, 61)
    ]
    cls1.store.update(endpoint_slice)
    settings = engine_settings(cls1, cloudmap, leader_id="replica-b")
    first = cls1.dns.app.elector if cls1.dns.app else None
    assert first is not None
    # Before the replica starts: on a loaded machine the first engine's first acquire can take a moment.
    wait_for(first.may_write, timeout=10, what="the first engine to lead")
    with ServerThread(settings) as replica:
        replica.wait_serving()
        assert first.may_write(), "the first engine still leads"
        cloudmap.throttle_next(40, operations=["RegisterInstance"])  # slow the export down ...
        export(cls1)
        wait_for(lambda: 0 < len(instances(cloudmap)) < 60, timeout=10, what="the export to be half done")
        cls1.dns.stall(4.0)  # ... and the leader hangs in the middle of it
        assert replica.app is not None and replica.app.elector is not None
        wait_for(replica.app.elector.may_write, timeout=8, what="the other replica to take over")
        wait_for(lambda: len(instances(cloudmap)) == 60, timeout=30, what="the new leader to finish")
        time.sleep(5.0)  # the old leader wakes up: it must not write any more
        found = instances(cloudmap)
        assert sorted(found) == sorted(f"tcp-10_10_40_{i}-80-cls1" for i in range(1, 61)), (
            "none lost, none twice"
        )
        assert not first.may_write()


def test_idle_cycles_cost_one_beacon_check_and_write_nothing(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    export(cls1)
    wait_for(lambda: cls2.answer() == [cls2.vip()], what="the import")
    assert cls2.dns.app is not None
    importer = cls2.dns.app.controllers[1]
    # Two cycles to settle: a service list read right after the service was created is read once more.
    start = importer.cycles + 2
    wait_for(lambda: importer.cycles >= start, timeout=10, what="the cycles to settle")
    mark = cls2.plane.audit_mark()
    cloudmap.reset_calls()
    wait_for(lambda: importer.cycles >= start + 3, timeout=10, what="three idle cycles")
    calls = cloudmap.calls()
    writes = [
        f"{c.verb} {c.uri}"
        for c in cls2.plane.audited(since=mark)
        if c.verb not in ("get", "list", "watch") and not c.resource.startswith("leases")
    ]
    # Both engines import (exporting clusters import too): per engine and cycle one revision check of the
    # change beacons (mcs/changes.py), whatever the number of services (the sweep checks each service once
    # per --cloudmap-max-staleness, 5 minutes here), and at most one ListNamespaces; the service list is
    # reused while ServiceCount stays put.
    assert calls.get("DiscoverInstances", 0) == 0
    # Not one per namespace per cycle (that would be 6 here); a list read right after a change may remain.
    assert calls.get("ListServices", 0) <= 1
    assert 3 <= calls.get("DiscoverInstancesRevision", 0) <= 2 * 4
    assert writes == [], "an idle cycle writes nothing to the cluster (lease renewals aside)"


def test_port_conflict_oldest_export_wins(clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap) -> None:
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    export(cls1)
    wait_for(lambda: len(instances(cloudmap)) == 3, what="cls1's export")
    cls2.store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "nginx-hello", "namespace": "demo"},
            "spec": {"ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]},
        }
    )
    cls2.store.create(local_slice("nginx-hello-p", "nginx-hello", "10.20.0.7"))
    export(cls2)
    wait_for(
        lambda: conditions(cls2).get("Conflict") == ("True", "PortConflict"), what="cls2's port conflict"
    )
    wait_for(lambda: conditions(cls1).get("Conflict") == ("True", "PortConflict"), what="cls1 told too")
    # What a user sees: kubectl against the real API server, the three conditions with mcs-api's reasons.
    admin = cls2.plane.write_kubeconfig(cls2.kubeconfig.with_name("cls2-admin.kubeconfig"))
    shown = yaml.safe_load(kubectl(admin, "get", "serviceexport", "nginx-hello", "-n", "demo", "-o", "yaml"))
    assert {c["type"]: (c["status"], c["reason"]) for c in shown["status"]["conditions"]} == {
        "Valid": ("True", "Valid"),
        "Ready": ("True", "Exported"),
        "Conflict": ("True", "PortConflict"),
    }
    assert shown["apiVersion"] == "multicluster.x-k8s.io/v1beta1"
    wait_for(lambda: imported_clusters(cls1) == ["cls1", "cls2"], what="both clusters imported")
    ports = cls1.store.get("serviceimports", "nginx-hello", namespace="demo")["spec"]["ports"]
    assert [p["port"] for p in ports] == [80], "the older export's port"


def test_controller_only_writes_the_imports_and_coredns_multicluster_answers_them(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap, real_cluster_cls3: ControlPlane, tmp_path: Path
) -> None:
    """--dns=false: a third cluster's mcsdns is the MCS controller alone, and CoreDNS (the real one, built
    from its Go module) answers with its kubernetes plugin's ``multicluster`` from the ServiceImport and
    EndpointSlices mcsdns wrote into the real kube-apiserver (README "Ways to run it": controller only)."""
    from tests.integration.test_coredns import CoreDns

    cls3 = Cluster(
        "cls3", real_cluster_cls3, chart_kubeconfig_of(real_cluster_cls3, tmp_path / "cls3.kubeconfig")
    )
    settings = engine_settings(cls3, cloudmap)
    settings = replace(settings, server=replace(settings.server, dns=False))
    with ServerThread(settings) as controller:
        assert controller.app is not None and controller.app.listeners == (), "no DNS port bound"
        export(clusters["cls1"])
        wait_for(lambda: imported_clusters(cls3) == ["cls1"], timeout=15, what="the import in cls3")

        def addresses() -> list[str]:
            slices = cls3.store.list("endpointslices", namespace="demo")
            return sorted(e["addresses"][0] for s in slices for e in s["endpoints"])

        wait_for(
            lambda: addresses() == ["10.10.16.120", "10.10.21.133", "10.10.28.116"],
            what="the EndpointSlices in cls3",
        )
        (vip,) = cls3.store.get("serviceimports", "nginx-hello", namespace="demo")["spec"]["ips"]
        # CoreDNS >= 1.12.2 reads ServiceImports as v1alpha1, which the chart's CRDs still serve.
        admin = real_cluster_cls3.write_kubeconfig(tmp_path / "cls3-admin.kubeconfig")
        coredns = CoreDns(
            tmp_path / "coredns",
            "    kubernetes cluster.local clusterset.local {\n"
            f"        kubeconfig {admin}\n"
            "        multicluster clusterset.local\n"
            "    }\n",
            zones=("cluster.local", "clusterset.local"),
        )
        try:

            def answer() -> list[str]:
                try:
                    reply = coredns.query(NAME, "A")
                except (dns.exception.Timeout, OSError):
                    return []
                return sorted(r.to_text() for rrset in reply.answer for r in rrset)

            wait_for(lambda: answer() == [vip], timeout=20, what="CoreDNS to answer the import's VIP")
            missing = coredns.query("absent.demo.svc.clusterset.local.", "A")
            assert missing.rcode() == dns.rcode.NXDOMAIN
            # The same objects through mcsdns (DNS only, as the chart's DNS-only mode runs): the answers
            # agree but where README "Controller only" says they differ on purpose.
            dns_only = replace(
                settings, server=replace(settings.server, dns=True), cloudmap=CloudMapSettings()
            )
            dns_only = replace(dns_only, lease=replace(dns_only.lease, elect=False))
            with ServerThread(dns_only) as mcsdns:
                mcsdns.wait_serving()
                differ = {}
                for qname, qtype in COMPARED_QUESTIONS:
                    theirs, ours = shape(coredns.query(qname, qtype)), shape(query(mcsdns, qname, qtype))
                    if theirs != ours:
                        differ[(qname, qtype)] = (theirs, ours)
                assert sorted(differ) == sorted(DIFFERENCES), differ
        finally:
            coredns.close()


def test_dual_stack_affinity_and_exported_labels_reach_every_import(
    clusters: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    """mcs-api v1beta1's whole ServiceImport: cls2 (dual-stack) exports a dual-stack Service with ClientIP
    affinity, a traffic distribution and exported labels and annotations. cls2 imports it with a VIP per
    family (A and AAAA in DNS); cls1 (IPv4 only) with its IPv4 VIP; both with the properties, and Ready."""
    cls1, cls2 = clusters["cls1"], clusters["cls2"]
    cls2.store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "namespace": "demo"},
            "spec": {
                "ipFamilyPolicy": "RequireDualStack",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "trafficDistribution": "PreferClose",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        }
    )
    cls2.store.create(local_slice("api-v4", "api", "10.20.1.1", port_name="http"))
    v6 = local_slice("api-v6", "api", "fd00:10:20::1", port_name="http")
    cls2.store.create({**v6, "addressType": "IPv6"})
    cls2.store.create(
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": "api", "namespace": "demo"},
            "spec": {"exportedLabels": {"team": "payments"}, "exportedAnnotations": {"owner": "pay@x"}},
        }
    )

    def imported(cluster: Cluster) -> dict[str, Any]:
        found = cluster.store.find("serviceimports", "api", namespace="demo") or {}
        ready = {c["type"]: c["reason"] for c in (found.get("status") or {}).get("conditions", [])}
        return found if ready.get("Ready") == "Ready" else {}

    for cluster in (cls1, cls2):
        wait_for(lambda c=cluster: imported(c), timeout=20, what=f"{cluster.name}'s import to be Ready")
    both = imported(cls2)
    assert both["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    v4_vip, v6_vip = both["spec"]["ips"]
    name = "api.demo.svc.clusterset.local."
    wait_for(lambda: cls2.answer(name, "AAAA") == [v6_vip], what="AAAA for the IPv6 VIP")
    assert cls2.answer(name) == [v4_vip]
    one = imported(cls1)
    assert one["spec"]["ipFamilies"] == ["IPv4"] and len(one["spec"]["ips"]) == 1
    for found in (one, both):
        assert found["spec"]["sessionAffinity"] == "ClientIP"
        assert found["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}
        assert found["spec"]["trafficDistribution"] == "PreferClose"
        assert found["metadata"]["labels"]["team"] == "payments"
        assert found["metadata"]["annotations"]["owner"] == "pay@x"
        assert found["status"]["endpointSliceObjects"] == "Present"
    derived = cls1.store.get("services", derived_name("demo", "api"), namespace="demo")
    assert derived["spec"]["sessionAffinity"] == "ClientIP", "kube-proxy keeps the affinity on the VIP"


def test_a_cluster_that_is_gone_is_reported_then_evicted_but_a_partition_evicts_nothing(
    cloudmap: EmbeddedCloudMap, real_clusters: dict[str, ControlPlane], tmp_path: Path
) -> None:
    """Heartbeats (mcs/heartbeat.py) with short test periods: stale after 1.5 s without a beat, evicted
    1 s later. Cloud Map unreachable for 4 s makes nobody stale (the importer had no fresh reads); cls1's
    engine gone for good makes cls1 stale in cls2 (metric and import condition), then evicted: the import,
    whose only exporter it was, goes."""
    out = tutorial_clusters(real_clusters, tmp_path)
    cls1, cls2 = out["cls1"], out["cls2"]

    def judging(cluster: Cluster) -> Settings:
        settings = engine_settings(cluster, cloudmap)
        return replace(
            settings,
            cloudmap=replace(settings.cloudmap, stale_after=1.5, stale_grace=1.0, evict_stale=True),
        )

    with ServerThread(judging(cls2)) as s2:
        cls2.server = s2
        s2.wait_serving()
        assert s2.app is not None
        importer = s2.app.controllers[1]
        with ServerThread(judging(cls1)) as s1:
            cls1.server = s1
            s1.wait_serving()
            export(cls1)
            wait_for(lambda: cls2.answer() == [cls2.vip()], timeout=15, what="the import in cls2")
            wait_for(lambda: "cls1" in importer.staleness.ages(), what="cls1's heartbeat to be read")

            cloudmap.stop()  # a partition: neither the beats nor the reads get through
            try:
                deadline = time.monotonic() + 4
                while time.monotonic() < deadline:
                    assert importer.staleness.stale() == {} and importer.evicted == frozenset()
                    time.sleep(0.2)
            finally:
                cloudmap.start()
            start = importer.cycles
            wait_for(lambda: importer.cycles >= start + 5, what="five cycles after the partition")
            assert importer.staleness.stale() == {} and cls2.answer() == [cls2.vip()], "nothing evicted"
        # cls1's engine is gone (its instances stay in Cloud Map: nobody unexported them).
        wait_for(lambda: "cls1" in importer.staleness.stale(), timeout=10, what="cls1 reported stale")

        def stale_condition() -> tuple[str, str] | None:
            found = cls2.store.find("serviceimports", "nginx-hello", namespace="demo") or {}
            for c in (found.get("status") or {}).get("conditions", []):
                if c["type"] == "mcsdns.io/StaleClusters":
                    return c["status"], c["reason"]
            return None

        wait_for(lambda: stale_condition() == ("True", "HeartbeatStopped"), what="the import's condition")
        registry = make_registry(s2.app)  # type: ignore[arg-type]
        stale = [s.value for f in registry.collect() for s in f.samples if s.name == "mcsdns_stale_clusters"]
        assert stale == [1.0]
        wait_for(lambda: importer.evicted == {"cls1"}, timeout=10, what="cls1 evicted after the grace period")
        wait_for(lambda: query(s2, NAME).rcode() == dns.rcode.NXDOMAIN, what="the import of cls1 alone to go")
        assert len(instances(cloudmap)) == 3, "cls1's instances stay in Cloud Map: not ours to delete"

"""The zone from a cluster's ServiceImports and EndpointSlices, through the official client, against a real
kube-apiserver and etcd (tests/controlplane.py), with mcsdns holding only the chart's RBAC (a 403 fails the
test): changes show in DNS, a relist after a real 410 converges exactly, restarts and outages keep serving,
and replicas elect one leader on a real Lease.

The faults a real server cannot be made to show on cue are in test_kubernetes_faults.py, on the emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from mcsdns.mcs.leader import LeaderElector
from mcsdns.settings import IdentitySettings, KubernetesSettings, LeaseSettings, Settings
from tests.controlplane import ControlPlane, Objects
from tests.realkube import NAMESPACE
from tests.support import (
    Repeating,
    ServerThread,
    endpoint,
    endpoint_slice,
    kubectl,
    query,
    service_import,
    settings_for,
    wait_for,
)

Z = "clusterset.local."
WEB = f"web.prod.svc.{Z}"
DB = f"db.prod.svc.{Z}"
MCS_V1BETA1 = "/apis/multicluster.x-k8s.io/v1beta1/"


def addresses(server: ServerThread, name: str, rdtype: str = "A") -> list[str]:
    reply = query(server, name, rdtype)
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def kube_settings(kubeconfig: Path, *, cluster_id: str | None = None, **lease: Any) -> Settings:
    """mcsdns as the chart runs it: the Lease in the release's namespace, the chart's lease name."""
    return replace(
        settings_for(),
        kubernetes=KubernetesSettings(kubeconfig=str(kubeconfig)),
        identity=IdentitySettings(cluster_id=cluster_id),
        lease=LeaseSettings(**{"duration": 3.0, "renew_deadline": 2.0, "namespace": NAMESPACE, **lease}),
    )


@pytest.fixture
def objects(real_cluster: ControlPlane) -> Objects:
    """The test's own hands on the cluster: the admin."""
    return real_cluster.objects


@pytest.fixture
def server(objects: Objects, chart_kubeconfig: Path) -> Iterator[ServerThread]:
    objects.create(service_import("web", "prod", ips=["10.0.0.1"]))
    with ServerThread(kube_settings(chart_kubeconfig)) as running:
        running.wait_serving()
        yield running


def write_import(path: Path, name: str, ip: str) -> Path:
    path.write_text(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n"
        f"metadata: {{name: {name}, namespace: prod}}\n"
        f"spec: {{type: ClusterSetIP, ips: [{ip}], ports: [{{name: http, port: 80, protocol: TCP}}]}}\n"
    )
    return path


def test_headless_endpoints_of_two_clusters_and_readiness(server: ServerThread, objects: Objects) -> None:
    objects.create(service_import("db", "prod", type="Headless"))
    objects.create(
        endpoint_slice(
            "db-cls1", "prod", service="db", cluster="cls1", endpoints=[endpoint("10.1.0.1", hostname="db-0")]
        )
    )
    objects.create(
        endpoint_slice(
            "db-cls2",
            "prod",
            service="db",
            cluster="cls2",
            endpoints=[endpoint("10.2.0.1", hostname="db-0"), endpoint("10.2.0.2")],
        )
    )
    wait_for(lambda: addresses(server, DB) == ["10.1.0.1", "10.2.0.1", "10.2.0.2"], what="both clusters")
    assert addresses(server, f"db-0.cls2.db.prod.svc.{Z}") == ["10.2.0.1"]

    slice_cls2 = objects.get("endpointslices", "db-cls2", namespace="prod")
    slice_cls2["endpoints"][1]["conditions"] = {"ready": False}
    objects.update(slice_cls2)
    wait_for(
        lambda: addresses(server, DB) == ["10.1.0.1", "10.2.0.1"], what="the not-ready endpoint to leave"
    )
    assert query(server, f"10-2-0-2.cls2.db.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN

    objects.delete("endpointslices", "db-cls1", namespace="prod")
    wait_for(lambda: addresses(server, DB) == ["10.2.0.1"], what="cls1's slice to go")


def test_the_mcs_api_is_read_as_v1beta1_when_the_server_serves_it(
    server: ServerThread, real_cluster: ControlPlane
) -> None:
    """The chart's CRDs serve v1beta1 and v1alpha1: every MCS request mcsdns makes names v1beta1."""
    mcs = [c for c in real_cluster.audited() if c.group == "multicluster.x-k8s.io"]
    assert mcs, "mcsdns read the MCS API"
    assert [c.uri for c in mcs if not c.uri.startswith(MCS_V1BETA1)] == []


def _change_while_disconnected(objects: Objects) -> None:
    objects.delete("serviceimports", "web", namespace="prod")  # a deletion the watch never sees
    objects.create(service_import("api", "prod", ips=["10.0.0.7"]))


def _converged(server: ServerThread) -> bool:
    return query(server, WEB).rcode() == dns.rcode.NXDOMAIN and addresses(server, f"api.prod.svc.{Z}") == [
        "10.0.0.7"
    ]


def _lists(cluster: ControlPlane, since: int, resource: str) -> int:
    return sum(c.verb == "list" and c.resource == resource for c in cluster.audited(since=since))


def test_relist_after_410_converges_including_deletions(
    server: ServerThread, real_cluster: ControlPlane, tmp_path: Path
) -> None:
    """mcsdns's API server goes down; its HA peer (same etcd) takes a deletion and a creation; etcd is
    compacted past what mcsdns saw, and the restarted server's watch cache begins at the current revision.
    mcsdns's resumed watch is answered 410 Gone, and only a full list can converge (deletion included)."""
    peer = real_cluster.peer(tmp_path / "peer").start()
    try:
        real_cluster.stop()
        _change_while_disconnected(peer.objects)
        real_cluster.compact()
        mark = real_cluster.audit_mark()
        real_cluster.start()
    finally:
        peer.stop()
    wait_for(lambda: _converged(server), timeout=30, what="convergence after 410")
    assert _lists(real_cluster, mark, "serviceimports") >= 1, "the 410 made mcsdns list again"


def test_an_api_server_restart_resumes_the_watches_without_losing_events(
    server: ServerThread, real_cluster: ControlPlane, objects: Objects
) -> None:
    real_cluster.restart()  # every watch ends; mcsdns resumes from the resourceVersion it holds
    _change_while_disconnected(objects)
    wait_for(lambda: _converged(server), timeout=30, what="convergence after the restart")


@pytest.mark.parametrize("outage", ["hang", "refuse"])
def test_api_outage_keeps_serving_the_last_good_zone(
    server: ServerThread, real_cluster: ControlPlane, objects: Objects, outage: str
) -> None:
    """``hang``: kube-apiserver stopped (SIGSTOP), connections open and silent, as in a partition.
    ``refuse``: kube-apiserver down, connections refused. 500s on cue: test_kubernetes_faults.py."""
    assert server.app is not None
    app = server.app
    (real_cluster.freeze if outage == "hang" else real_cluster.stop)()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert addresses(server, WEB) == ["10.0.0.1"]
            time.sleep(0.1)
        # A sustained outage shows; a hung API answers nothing and fails nothing (no client can tell it from a
        # quiet one).
        if outage == "refuse":
            # Still ready (the last good zone serves), but the outage shows: /readyz's body and the metrics.
            wait_for(app.stale, timeout=5, what="the outage to show")
            assert app.not_ready() == []
            assert app.stale()[0].startswith("stale: kubernetes/")
            assert not all(stats.up for stats in app.engine.stats.values())
    finally:
        (real_cluster.thaw if outage == "hang" else real_cluster.start)()
    objects.create(service_import("after", "prod", ips=["10.0.0.8"]))
    wait_for(lambda: addresses(server, f"after.prod.svc.{Z}") == ["10.0.0.8"], timeout=30, what="recovery")
    wait_for(lambda: not app.stale(), timeout=30, what="every source up again")


def test_servfail_until_both_watches_have_listed(real_cluster: ControlPlane, chart_kubeconfig: Path) -> None:
    real_cluster.stop()
    try:
        with ServerThread(kube_settings(chart_kubeconfig)) as server:
            assert query(server, WEB).rcode() == dns.rcode.SERVFAIL
            real_cluster.start()
            server.wait_serving()
            assert query(server, WEB).rcode() == dns.rcode.NXDOMAIN
    finally:
        if not real_cluster.running():
            real_cluster.start()


def test_cluster_identity_from_cluster_properties_and_flags(objects: Objects, chart_kubeconfig: Path) -> None:
    with ServerThread(kube_settings(chart_kubeconfig)) as server:
        assert server.app is not None and server.app.identity is not None
        identity = server.app.identity
        wait_for(lambda: identity.cluster_id == "cls2", what="the ClusterProperty id")
        assert identity.clusterset_id == "clusterset1" and identity.missing == []
        objects.delete("clusterproperties", "cluster.clusterset.k8s.io", namespace=None)
        wait_for(lambda: identity.cluster_id is None, what="the deletion to be seen")
        assert identity.missing == [
            "cluster id unknown: set --cluster-id or create ClusterProperty cluster.clusterset.k8s.io"
        ]
    with ServerThread(kube_settings(chart_kubeconfig, cluster_id="flagged")) as server:
        assert server.app is not None and server.app.identity is not None
        assert server.app.identity.cluster_id == "flagged", "a flag wins"


@pytest.fixture
def replicas(real_cluster: ControlPlane, chart_kubeconfig: Path) -> Iterator[list[ServerThread]]:
    settings = kube_settings(chart_kubeconfig)
    with (
        ServerThread(replace(settings, lease=replace(settings.lease, leader_id="a"))) as a,
        ServerThread(replace(settings, lease=replace(settings.lease, leader_id="b"))) as b,
    ):
        yield [a, b]


def _elector(server: ServerThread) -> LeaderElector:
    assert server.app is not None and server.app.elector is not None
    return server.app.elector


class OneWriter(Repeating):
    """Samples every 10 ms that at most one replica may write."""

    def __init__(self, electors: list[LeaderElector]) -> None:
        self.violations = 0
        super().__init__(lambda: self._sample(electors), 0.01)

    def _sample(self, electors: list[LeaderElector]) -> None:
        self.violations += sum(e.may_write() for e in electors) > 1


def test_two_replicas_elect_one_leader_and_a_stuck_leader_fails_over(
    objects: Objects, replicas: list[ServerThread]
) -> None:
    electors = [_elector(server) for server in replicas]
    with OneWriter(electors) as sampler:
        wait_for(lambda: sum(e.may_write() for e in electors) == 1, what="one leader")
        index = next(i for i, e in enumerate(electors) if e.may_write())
        leader, follower = electors[index], electors[1 - index]
        stalled_at = time.monotonic()
        replicas[index].stall(6.0)  # the leader's process hangs: it cannot renew
        wait_for(lambda: not leader.may_write(), timeout=2.5, what="the stuck leader to stop writing")
        wait_for(follower.may_write, timeout=6, what="the follower to take over")
        assert time.monotonic() - stalled_at >= 3.0, "not before the lease (3 s) expired"
        lease = objects.get("leases", "mcsdns-leader", namespace=NAMESPACE)
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] == 1
        time.sleep(6.5 - (time.monotonic() - stalled_at))  # the old leader wakes up: it must stay a follower
        wait_for(lambda: leader.holder == follower.identity, what="the old leader to see the new holder")
        assert follower.may_write() and not leader.may_write()
    assert sampler.violations == 0, "two writers at once"


def test_a_leader_that_stops_releases_the_lease(real_cluster: ControlPlane, chart_kubeconfig: Path) -> None:
    settings = kube_settings(chart_kubeconfig, duration=30.0, renew_deadline=20.0)
    with ServerThread(replace(settings, lease=replace(settings.lease, leader_id="a"))) as a:
        wait_for(_elector(a).may_write, what="a to lead")
        with ServerThread(replace(settings, lease=replace(settings.lease, leader_id="b"))) as b:
            a.stop()  # graceful shutdown of the leader
            started = time.monotonic()
            wait_for(_elector(b).may_write, timeout=10, what="b to take the released lease")
            assert time.monotonic() - started < 30, "long before the 30 s lease would have expired"


def test_mcsdns_serve_kubeconfig_as_a_user_runs_it(
    real_cluster: ControlPlane, admin_kubeconfig: Path, chart_kubeconfig: Path, tmp_path: Path
) -> None:
    """The command, kubectl apply (as the admin), updates, deletion, and a frozen API server."""
    from tests.integration.test_cli import ask, serving

    manifest = tmp_path / "web.yaml"

    def answer(port: int) -> list[str]:
        reply = ask(port, WEB)
        return sorted(r.to_text() for rrset in reply.answer for r in rrset)

    args = ["--kubeconfig", str(chart_kubeconfig), "--leader-elect", "false"]
    with serving(args) as (port, _):
        kubectl(admin_kubeconfig, "apply", "-f", str(write_import(manifest, "web", "10.0.0.5")))
        wait_for(lambda: answer(port) == ["10.0.0.5"], what="the applied import")
        kubectl(admin_kubeconfig, "apply", "-f", str(write_import(manifest, "web", "10.0.0.6")))
        wait_for(lambda: answer(port) == ["10.0.0.6"], what="the update")
        real_cluster.freeze()
        try:
            for _ in range(10):
                assert answer(port) == ["10.0.0.6"], "keeps answering while the API is frozen"
                time.sleep(0.1)
        finally:
            real_cluster.thaw()
        kubectl(admin_kubeconfig, "delete", "-f", str(manifest))
        wait_for(lambda: ask(port, WEB).rcode() == dns.rcode.NXDOMAIN, what="the deletion")

"""The zone from a cluster's ServiceImports and EndpointSlices, through the official client, against the
project's Kubernetes API emulator: changes show in DNS, relists converge exactly, outages keep serving,
and replicas elect one leader."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from mcsdns.mcs.leader import LeaderElector
from mcsdns.settings import IdentitySettings, KubernetesSettings, LeaseSettings, Settings
from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.support import (
    ServerThread,
    endpoint,
    endpoint_slice,
    query,
    service_import,
    settings_for,
    wait_for,
)

Z = "clusterset.local."
WEB = f"web.prod.svc.{Z}"
DB = f"db.prod.svc.{Z}"


def addresses(server: ServerThread, name: str, rdtype: str = "A") -> list[str]:
    reply = query(server, name, rdtype)
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def kube_settings(kubeconfig: Path, *, cluster_id: str | None = None, **lease: Any) -> Settings:
    return replace(
        settings_for(),
        kubernetes=KubernetesSettings(kubeconfig=str(kubeconfig)),
        identity=IdentitySettings(cluster_id=cluster_id),
        lease=LeaseSettings(**{"duration": 3.0, "renew_deadline": 2.0, **lease}),
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(cluster_id="cls2", clusterset_id="clusterset1") as emulator:
        emulator.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
        emulator.write_kubeconfig(tmp_path / "kubeconfig")
        yield emulator


@pytest.fixture
def kubeconfig(api: KubeApiEmulator, tmp_path: Path) -> Path:
    return tmp_path / "kubeconfig"


@pytest.fixture
def server(api: KubeApiEmulator, kubeconfig: Path) -> Iterator[ServerThread]:
    api.store.create(service_import("web", "prod", ips=["10.0.0.1"]))
    with ServerThread(kube_settings(kubeconfig)) as running:
        running.wait_serving()
        yield running


def kubectl(kubeconfig: Path, *args: str) -> None:
    path = shutil.which("kubectl")
    assert path, "kubectl is required (the test extra installs it into the virtualenv)"
    subprocess.run(
        [path, "--kubeconfig", str(kubeconfig), *args], check=True, capture_output=True, timeout=30
    )


def write_import(path: Path, name: str, ip: str) -> Path:
    path.write_text(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n"
        f"metadata: {{name: {name}, namespace: prod}}\n"
        f"spec: {{type: ClusterSetIP, ips: [{ip}], ports: [{{name: http, port: 80, protocol: TCP}}]}}\n"
    )
    return path


def test_headless_endpoints_of_two_clusters_and_readiness(server: ServerThread, api: KubeApiEmulator) -> None:
    api.store.create(service_import("db", "prod", type="Headless"))
    api.store.create(
        endpoint_slice(
            "db-cls1", "prod", service="db", cluster="cls1", endpoints=[endpoint("10.1.0.1", hostname="db-0")]
        )
    )
    api.store.create(
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

    slice_cls2 = api.store.get("endpointslices", "db-cls2", namespace="prod")
    slice_cls2["endpoints"][1]["conditions"] = {"ready": False}
    api.store.update(slice_cls2)
    wait_for(
        lambda: addresses(server, DB) == ["10.1.0.1", "10.2.0.1"], what="the not-ready endpoint to leave"
    )
    assert query(server, f"10-2-0-2.cls2.db.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN

    api.store.delete("endpointslices", "db-cls1", namespace="prod")
    wait_for(lambda: addresses(server, DB) == ["10.2.0.1"], what="cls1's slice to go")


def _change_while_disconnected(api: KubeApiEmulator) -> None:
    api.store.delete("serviceimports", "web", namespace="prod")  # a deletion the watch never sees
    api.store.create(service_import("api", "prod", ips=["10.0.0.7"]))


def _converged(server: ServerThread) -> bool:
    return query(server, WEB).rcode() == dns.rcode.NXDOMAIN and addresses(server, f"api.prod.svc.{Z}") == [
        "10.0.0.7"
    ]


def test_relist_after_410_converges_including_deletions(server: ServerThread, api: KubeApiEmulator) -> None:
    api.pause("refuse")
    try:
        _change_while_disconnected(api)
        api.compact()  # the version mcsdns resumes from is gone: it must list again
    finally:
        api.resume()
    wait_for(lambda: _converged(server), timeout=15, what="convergence after 410")


def test_dropped_watches_resume_without_losing_events(server: ServerThread, api: KubeApiEmulator) -> None:
    api.close_watches()
    _change_while_disconnected(api)
    wait_for(lambda: _converged(server), timeout=15, what="convergence after dropped watches")


@pytest.mark.parametrize("outage", ["hang", "refuse", "errors"])
def test_api_outage_keeps_serving_the_last_good_zone(
    server: ServerThread, api: KubeApiEmulator, outage: str
) -> None:
    if outage == "errors":
        api.fail_next(20, code=500)
        api.close_watches()
    else:
        api.pause(outage)
    assert server.app is not None
    app = server.app
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert addresses(server, WEB) == ["10.0.0.1"]
            time.sleep(0.1)
        # A sustained outage shows; a hung API answers nothing and fails nothing (no client can tell it from a
        # quiet one), and 20 failed requests are over before they could be seen.
        if outage == "refuse":
            # Still ready (the last good zone serves), but the outage shows: /readyz's body and the metrics.
            wait_for(app.stale, timeout=5, what="the outage to show")
            assert app.not_ready() == []
            assert app.stale()[0].startswith("stale: kubernetes/")
            assert not all(stats.up for stats in app.engine.stats.values())
    finally:
        api.resume()
    api.store.create(service_import("after", "prod", ips=["10.0.0.8"]))
    wait_for(lambda: addresses(server, f"after.prod.svc.{Z}") == ["10.0.0.8"], timeout=20, what="recovery")
    wait_for(lambda: not app.stale(), timeout=20, what="every source up again")


def test_a_list_that_fails_midway_is_listed_again_whole(api: KubeApiEmulator, kubeconfig: Path) -> None:
    # 1,100 imports are three pages of 500; the second page fails once. Nothing may be served from the
    # first page alone, and after the retry every page's services answer.
    for i in range(1100):
        api.store.create(service_import(f"s{i}", "prod", ips=[f"10.1.{i // 250}.{i % 250 + 1}"]))
    failed: list[str] = []

    def fail_second_page(request: Any) -> None:
        if "serviceimports" in request.path and request.query.get("continue") and not failed:
            failed.append(request.query["continue"])
            api.fail_next(1, path_contains="serviceimports")

    stop_observing = api.observe_requests(fail_second_page)
    try:
        with ServerThread(kube_settings(kubeconfig)) as server:
            server.wait_serving()
            assert failed, "the second page was asked for and failed"
            for i in (0, 499, 500, 999, 1000, 1099):
                assert addresses(server, f"s{i}.prod.svc.{Z}") == [f"10.1.{i // 250}.{i % 250 + 1}"]
    finally:
        stop_observing()


def test_servfail_until_both_watches_have_listed(api: KubeApiEmulator, kubeconfig: Path) -> None:
    api.pause("refuse")
    with ServerThread(kube_settings(kubeconfig)) as server:
        assert query(server, WEB).rcode() == dns.rcode.SERVFAIL
        api.resume()
        server.wait_serving()
        assert query(server, WEB).rcode() == dns.rcode.NXDOMAIN


def test_service_imports_served_only_as_v1beta1(tmp_path: Path) -> None:
    with KubeApiEmulator(mcs_versions=("v1beta1",)) as api:
        api.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
        obj = service_import("web", "prod", ips=["10.0.0.1"])
        obj["apiVersion"] = "multicluster.x-k8s.io/v1beta1"
        api.store.create(obj)
        with ServerThread(kube_settings(api.write_kubeconfig(tmp_path / "kc"))) as server:
            server.wait_serving()
            assert addresses(server, WEB) == ["10.0.0.1"]


def test_cluster_identity_from_cluster_properties_and_flags(api: KubeApiEmulator, kubeconfig: Path) -> None:
    with ServerThread(kube_settings(kubeconfig)) as server:
        assert server.app is not None and server.app.identity is not None
        identity = server.app.identity
        wait_for(lambda: identity.cluster_id == "cls2", what="the ClusterProperty id")
        assert identity.clusterset_id == "clusterset1" and identity.missing == []
        api.store.delete("clusterproperties", "cluster.clusterset.k8s.io")
        wait_for(lambda: identity.cluster_id is None, what="the deletion to be seen")
        assert identity.missing == [
            "cluster id unknown: set --cluster-id or create ClusterProperty cluster.clusterset.k8s.io"
        ]
    with ServerThread(kube_settings(kubeconfig, cluster_id="flagged")) as server:
        assert server.app is not None and server.app.identity is not None
        assert server.app.identity.cluster_id == "flagged", "a flag wins"


@pytest.fixture
def replicas(api: KubeApiEmulator, kubeconfig: Path) -> Iterator[list[ServerThread]]:
    settings = kube_settings(kubeconfig)
    with (
        ServerThread(replace(settings, lease=replace(settings.lease, leader_id="a"))) as a,
        ServerThread(replace(settings, lease=replace(settings.lease, leader_id="b"))) as b,
    ):
        yield [a, b]


def _elector(server: ServerThread) -> LeaderElector:
    assert server.app is not None and server.app.elector is not None
    return server.app.elector


class OneWriter:
    """Samples every 10 ms that at most one replica may write."""

    def __init__(self, electors: list[LeaderElector]) -> None:
        self.violations = 0
        self._electors = electors
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.violations += sum(e.may_write() for e in self._electors) > 1
            time.sleep(0.01)

    def __enter__(self) -> OneWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_two_replicas_elect_one_leader_and_a_stuck_leader_fails_over(
    api: KubeApiEmulator, replicas: list[ServerThread]
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
        lease = api.store.get("leases", "mcsdns-leader", namespace="default")
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] == 1
        time.sleep(6.5 - (time.monotonic() - stalled_at))  # the old leader wakes up: it must stay a follower
        wait_for(lambda: leader.holder == follower.identity, what="the old leader to see the new holder")
        assert follower.may_write() and not leader.may_write()
    assert sampler.violations == 0, "two writers at once"


def test_a_leader_that_stops_releases_the_lease(api: KubeApiEmulator, kubeconfig: Path) -> None:
    settings = kube_settings(kubeconfig, duration=30.0, renew_deadline=20.0)
    with ServerThread(replace(settings, lease=replace(settings.lease, leader_id="a"))) as a:
        wait_for(_elector(a).may_write, what="a to lead")
        with ServerThread(replace(settings, lease=replace(settings.lease, leader_id="b"))) as b:
            a.stop()  # graceful shutdown of the leader
            started = time.monotonic()
            wait_for(_elector(b).may_write, timeout=10, what="b to take the released lease")
            assert time.monotonic() - started < 30, "long before the 30 s lease would have expired"


def test_mcsdns_serve_kubeconfig_as_a_user_runs_it(
    api: KubeApiEmulator, kubeconfig: Path, tmp_path: Path
) -> None:
    """The issue's 'done when': the command, kubectl apply, updates, deletion, and a paused API."""
    from tests.integration.test_cli import ask, serving

    manifest = tmp_path / "web.yaml"

    def answer(port: int) -> list[str]:
        reply = ask(port, WEB)
        return sorted(r.to_text() for rrset in reply.answer for r in rrset)

    with serving(["--kubeconfig", str(kubeconfig), "--leader-elect", "false"]) as (port, _):
        kubectl(kubeconfig, "apply", "-f", str(write_import(manifest, "web", "10.0.0.5")))
        wait_for(lambda: answer(port) == ["10.0.0.5"], what="the applied import")
        kubectl(kubeconfig, "apply", "-f", str(write_import(manifest, "web", "10.0.0.6")))
        wait_for(lambda: answer(port) == ["10.0.0.6"], what="the update")
        api.pause("hang")
        try:
            for _ in range(10):
                assert answer(port) == ["10.0.0.6"], "keeps answering while the API is paused"
                time.sleep(0.1)
        finally:
            api.resume()
        kubectl(kubeconfig, "delete", "-f", str(manifest))
        wait_for(lambda: ask(port, WEB).rcode() == dns.rcode.NXDOMAIN, what="the deletion")

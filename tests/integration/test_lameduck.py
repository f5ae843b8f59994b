"""SIGTERM starts a lame-duck period (CoreDNS's ``health { lameduck }``): /readyz fails at once, DNS keeps
answering, the leader releases its Lease (on a real API server, under the chart's RBAC), then the process
exits 0. SIGINT stops at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane import ControlPlane
from tests.integration.test_workers import address_of
from tests.realkube import NAMESPACE, chart_kubeconfig_of
from tests.support import Repeating, free_port, service_import, wait_for

WEB = "web.prod.svc.clusterset.local."
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusterset"
NGINX = "nginx-hello.demo.svc.clusterset.local."
NGINX_VIP = ["172.20.179.134"]  # examples/clusterset/nginx-hello.yaml


def readyz(port: int) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def holder(api: ControlPlane) -> str | None:
    lease = api.objects.find("leases", "mcsdns-leader", namespace=NAMESPACE)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


@pytest.fixture
def api(real_cluster: ControlPlane) -> Iterator[ControlPlane]:
    real_cluster.objects.create(service_import("web", "prod", ips=["10.0.0.5"]))
    yield real_cluster


def start(api: ControlPlane, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, int]:
    dns_port, http_port = free_port(), free_port()
    kubeconfig = chart_kubeconfig_of(api, tmp_path / "kc")
    argv = [
        sys.executable, "-m", "mcsdns", "serve", "--kubeconfig", str(kubeconfig),
        "--lease-namespace", NAMESPACE,
        "--listen", f"127.0.0.1:{dns_port}", "--http", f"127.0.0.1:{http_port}", "--workers", "1",
        "--leader-id", "replica-a", "--lease-duration", "15s", "--renew-deadline", "10s", *extra,
    ]  # fmt: skip
    with (tmp_path / "mcsdns.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(lambda: address_of(dns_port, WEB) == ["10.0.0.5"], what="an answer")
    wait_for(lambda: readyz(http_port)[0] == 200, what="ready")
    return proc, dns_port, http_port


def test_sigterm_answers_through_a_lame_duck_period_unready_and_without_the_lease(
    api: ControlPlane, tmp_path: Path
) -> None:
    proc, dns_port, http_port = start(api, tmp_path, "--lameduck", "3s")
    try:
        wait_for(lambda: holder(api) == "replica-a", what="the Lease")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, body = wait_for(lambda: (r := readyz(http_port))[0] == 503 and r, timeout=1, what="unready")
        assert "shutting down" in body
        wait_for(lambda: holder(api) is None, timeout=2.5, what="the Lease released")
        answered = 0
        while time.monotonic() - sent < 2.5:
            assert address_of(dns_port, WEB) == ["10.0.0.5"], "DNS answers through the lame-duck period"
            answered += 1
        assert proc.wait(10) == 0
        assert time.monotonic() - sent >= 3.0 - 0.2 and answered > 10
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigint_stops_at_once(api: ControlPlane, tmp_path: Path) -> None:
    proc, _, _ = start(api, tmp_path, "--lameduck", "30s")
    try:
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) in (0, 130)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()


class Replica:
    """One mcsdns pod of a Deployment: its own DNS and HTTP ports, serving the example manifests."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.dns_port, self.http_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "mcsdns", "serve", "--manifests", str(EXAMPLES),
            "--listen", f"127.0.0.1:{self.dns_port}", "--http", f"127.0.0.1:{self.http_port}",
            "--workers", "1", "--lameduck", "2s",
        ]  # fmt: skip
        with (tmp_path / f"{name}.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)

    def ready(self) -> bool:
        return readyz(self.http_port)[0] == 200


class KubeProxy(Repeating):
    """Queries in flight all the time, each to the next ready endpoint of the Service, as kube-proxy sends
    them. Endpoints come and go the way Kubernetes moves them in a rolling update: a new pod once its
    readiness probe passes; a deleted pod is marked terminating as soon as it is deleted, and kube-proxy
    stops sending it new queries after the change propagates (``PROPAGATION``), while its process got
    SIGTERM at the moment of deletion."""

    PROPAGATION = 1.0  # seconds from a pod's deletion until kube-proxy stops using it (typical: under 1 s)

    def __init__(self) -> None:
        self.endpoints: list[Replica] = []
        self.sent = 0
        self.failures: list[str] = []
        super().__init__(self._send, 0.005)

    def _send(self) -> None:
        endpoints = list(self.endpoints)
        if not endpoints:
            return
        replica = endpoints[self.sent % len(endpoints)]
        self.sent += 1
        got = address_of(replica.dns_port, NGINX)
        if got != NGINX_VIP:
            self.failures.append(f"query {self.sent} to {replica.name}: {got or 'no answer'}")


def test_a_rolling_update_of_two_replicas_loses_no_query(tmp_path: Path) -> None:
    """README "Operating it": each replica replaced in turn (maxSurge 1, maxUnavailable 0) while queries
    flow; SIGTERM's lame-duck period keeps the old pod answering until kube-proxy has moved on."""
    old = [Replica("old-0", tmp_path), Replica("old-1", tmp_path)]
    started: list[Replica] = list(old)
    try:
        for replica in old:
            wait_for(replica.ready, what=f"{replica.name} ready")
        with KubeProxy() as proxy:
            proxy.endpoints = list(old)
            time.sleep(0.5)
            for i, replica in enumerate(old):
                new = Replica(f"new-{i}", tmp_path)  # the surge pod first
                started.append(new)
                wait_for(new.ready, what=f"{new.name} ready")
                proxy.endpoints = [*proxy.endpoints, new]
                replica.proc.send_signal(signal.SIGTERM)  # the old pod is deleted ...
                time.sleep(KubeProxy.PROPAGATION)  # ... and leaves the endpoints a moment later
                proxy.endpoints = [e for e in proxy.endpoints if e is not replica]
                assert replica.proc.wait(10) == 0, "exits by itself once the lame-duck period is over"
            time.sleep(0.5)
        assert proxy.sent > 200, "queries were in flight all along"
        assert proxy.failures == [], f"{len(proxy.failures)} of {proxy.sent} queries lost"
    finally:
        for replica in started:
            if replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait()

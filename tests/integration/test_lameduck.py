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
from tests.integration.test_workers import address_of, unused_port
from tests.realkube import NAMESPACE, chart_kubeconfig_of
from tests.support import service_import, wait_for

WEB = "web.prod.svc.clusterset.local."


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
    dns_port, http_port = unused_port(), unused_port()
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

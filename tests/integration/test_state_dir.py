"""--state-dir: a replica restarted while the Kubernetes API is down serves the zone it last published
(stale, TTLs capped, /readyz says so) and then the live zone once the API lists again. The API server is a
real one (tests/realkube.py), stopped for the outage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dns.rcode

from mcsdns.settings import SourceSettings
from mcsdns.statefile import FILE_NAME, STALE_TTL
from tests.controlplane import ControlPlane
from tests.integration.test_kubernetes import DB, WEB, addresses, kube_settings
from tests.support import ServerThread, query, service_import, wait_for


def test_a_restart_with_the_api_down_serves_the_saved_zone_then_the_live_one(
    real_cluster: ControlPlane,
    chart_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    settings = replace(
        kube_settings(chart_kubeconfig), sources=SourceSettings(state_dir=str(state_dir), max_stale=3600)
    )
    real_cluster.objects.create(service_import("web", "prod", ips=["10.0.0.1"]))
    with ServerThread(settings) as first:
        first.wait_serving()
        assert addresses(first, WEB) == ["10.0.0.1"]
        wait_for((state_dir / FILE_NAME).exists, what="the zone to be saved")
    real_cluster.objects.create(service_import("db", "prod", ips=["10.0.0.2"]))  # while no replica runs
    real_cluster.stop()
    with ServerThread(settings) as second:
        assert second.app is not None
        reply = query(second, WEB)
        assert reply.rcode() == dns.rcode.NOERROR, "the saved zone answers, not SERVFAIL"
        assert [r.to_text() for r in reply.answer[0]] == ["10.0.0.1"] and reply.answer[0].ttl <= STALE_TTL
        assert query(second, DB).rcode() == dns.rcode.NXDOMAIN, "the saved zone knows nothing newer"
        assert second.app.not_ready() == [], "ready: serving the saved zone beats answering nothing"
        assert any(line.startswith("stale: serving the zone saved") for line in second.app.stale())
        real_cluster.start()
        wait_for(lambda: second.app.store.current.saved_at == 0, timeout=30, what="the live zone")
        assert addresses(second, DB) == ["10.0.0.2"] and addresses(second, WEB) == ["10.0.0.1"]
        assert not any("zone saved" in line for line in second.app.stale())


def test_a_corrupt_state_file_starts_without_it(
    real_cluster: ControlPlane,
    chart_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"mcsdns zone\n" + b"\xff" * 100)
    settings = replace(kube_settings(chart_kubeconfig), sources=SourceSettings(state_dir=str(tmp_path)))
    real_cluster.stop()
    with ServerThread(settings) as server:
        assert query(server, WEB).rcode() == dns.rcode.SERVFAIL, "nothing to serve yet, and no crash"
        real_cluster.start()
        server.wait_serving()
        assert query(server, WEB).rcode() == dns.rcode.NXDOMAIN

"""``--http``: /healthz, /readyz transitions, and /metrics counting a known query mix."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import dns.message

from mcsdns.settings import ListenAddress
from mcsdns.sources.events import Contact, Emit, Listed, SourceName
from tests.integration.test_server import NeverListed
from tests.support import (
    ServerThread,
    free_port,
    query,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_readiness_waits_for_the_first_list_and_liveness_holds() -> None:
    port = free_port()
    settings = replace(settings_for(), http=ListenAddress("127.0.0.1", port))
    with ServerThread(settings, sources=[NeverListed()]):
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "waiting for the first list of stuck\n")
        assert get(port, "/nope")[0] == 404


def test_ready_once_served(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    port = free_port()
    with ServerThread(replace(settings_for(tmp_path), http=ListenAddress("127.0.0.1", port))) as server:
        server.wait_serving()
        assert get(port, "/readyz") == (200, "ready\n")


def test_metrics_count_a_known_query_mix(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    port = free_port()
    with ServerThread(replace(settings_for(tmp_path), http=ListenAddress("127.0.0.1", port))) as server:
        server.wait_serving()
        for _ in range(3):
            query(server, "web.prod.svc.clusterset.local.")
        query(server, "web.prod.svc.clusterset.local.", tcp=True)
        query(server, "nope.prod.svc.clusterset.local.")
        query(server, "web.prod.svc.clusterset.local.", "TXT")
        query(server, "example.com.")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\x00\x01", (server.host, server.port))  # too short: dropped
            garbage = dns.message.make_query("x.", "A").to_wire()[:12]  # QDCOUNT 1, no question: FORMERR
            sock.sendto(garbage, (server.host, server.port))
            sock.settimeout(2)
            sock.recvfrom(512)
        status, text = get(port, "/metrics")
    assert status == 200
    expect = {
        'mcsdns_dns_responses_total{qtype="A",rcode="NOERROR",transport="udp"}': 3,
        'mcsdns_dns_responses_total{qtype="A",rcode="NOERROR",transport="tcp"}': 1,
        'mcsdns_dns_responses_total{qtype="A",rcode="NXDOMAIN",transport="udp"}': 1,
        'mcsdns_dns_responses_total{qtype="TXT",rcode="NOERROR",transport="udp"}': 1,
        'mcsdns_dns_responses_total{qtype="A",rcode="REFUSED",transport="udp"}': 1,
        'mcsdns_dns_responses_total{qtype="0",rcode="FORMERR",transport="udp"}': 1,
        'mcsdns_dns_dropped_total{transport="udp"}': 1,
        "mcsdns_zone_services": 1,
        'mcsdns_source_listed{source="manifests"}': 1,
    }
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    for name, value in expect.items():
        assert lines.get(name) == value, (name, lines.get(name))
    assert lines["mcsdns_zone_serial"] == server.serial()


class FailsAfterListing:
    """A source that lists, then loses its backend: a 403, as a revoked RBAC binding gives."""

    def __init__(self) -> None:
        self.fail = asyncio.Event()

    @property
    def name(self) -> SourceName:
        return SourceName("flaky")

    async def run(self, emit: Emit) -> None:
        emit(Listed(self.name, {}))
        await self.fail.wait()
        emit(Contact(self.name, "list serviceimports: 403 Forbidden"))
        await asyncio.Event().wait()


def test_a_source_that_goes_down_stays_ready_but_shows_stale() -> None:
    port = free_port()
    source = FailsAfterListing()
    with ServerThread(
        replace(settings_for(), http=ListenAddress("127.0.0.1", port)), sources=[source]
    ) as server:
        server.wait_serving()
        assert get(port, "/readyz") == (200, "ready\n")
        assert server._loop is not None
        server._loop.call_soon_threadsafe(source.fail.set)
        wait_for(lambda: "stale" in get(port, "/readyz")[1], what="the stale line")
        status, body = get(port, "/readyz")
        assert status == 200, "still ready: the last good zone serves"
        assert re.fullmatch(
            r"ready\nstale: flaky \d+s \(forbidden: list serviceimports: 403 Forbidden\)\n", body
        )
        metrics = get(port, "/metrics")[1]
    assert 'mcsdns_source_up{source="flaky"} 0.0' in metrics
    assert 'mcsdns_source_failure_info{reason="forbidden",source="flaky"} 1.0' in metrics
    assert re.search(r'mcsdns_source_staleness_seconds\{source="flaky"\} \d', metrics)


def test_metrics_serve_the_default_collectors_and_build_info(tmp_path: Path) -> None:
    """The process_* and python_* families every Prometheus client serves, which node and process
    dashboards read, and build info in both namings."""
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    port = free_port()
    settings = replace(settings_for(tmp_path), http=ListenAddress("127.0.0.1", port), metrics_names="coredns")
    with ServerThread(settings) as server:
        server.wait_serving()
        _, text = get(port, "/metrics")
    for family in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_gc_objects_collected_total",
        "python_info",
    ):
        assert re.search(rf"^{family}(\{{.*\}})? ", text, re.MULTILINE), family
    assert re.search(r'^mcsdns_build_info\{python="3\.\d+\.\d+",version="\d+\.\d+\.\d+"\} 1\.0$', text, re.M)
    assert re.search(
        r'^coredns_build_info\{goversion="python3[^"]*",revision="",version="mcsdns-', text, re.M
    )

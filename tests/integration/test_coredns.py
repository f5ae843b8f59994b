"""The main deployment, for real: CoreDNS (built from its Go module by .ci/test-binaries, the release
pinned there) with a ``forward`` stub for the clusterset zone in front of mcsdns, as a cluster's CoreDNS
is configured (README "In a cluster"). Every row of README's "What it answers" table comes back through
CoreDNS as mcsdns answers it directly, over UDP with EDNS and over TCP, and an answer too large for UDP
arrives truncated, then whole over TCP."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.test_dns_records import CASES, FIXTURE, Case, _check
from tests.support import (
    ServerThread,
    endpoint,
    endpoint_slice,
    free_port,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)

COREDNS_VERSION = "v1.12.2"  # as .ci/test-binaries pins it
Z = "clusterset.local."


def coredns_binary() -> Path:
    base = os.environ.get("MCSDNS_TEST_BIN") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mcsdns", "bin"
    )
    path = Path(base) / f"coredns-{COREDNS_VERSION}"
    assert path.exists(), f"{path} is missing: run .ci/test-binaries (it builds CoreDNS from its Go module)"
    return path


class CoreDns:
    """CoreDNS on a free loopback port, serving ``zones`` with the ``plugins`` lines of one server block."""

    def __init__(self, workdir: Path, plugins: str, zones: tuple[str, ...] = ("clusterset.local",)) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        corefile = workdir / "Corefile"
        blocks = " ".join(f"{zone}:{self.port}" for zone in zones)
        corefile.write_text(f"{blocks} {{\n    bind 127.0.0.1\n{plugins}}}\n")
        self.log = (workdir / "coredns.log").open("wb")
        self.proc = subprocess.Popen(
            [str(coredns_binary()), "-conf", str(corefile)], stdout=self.log, stderr=self.log, cwd=workdir
        )

    def query(self, qname: str, qtype: str, *, tcp: bool = False, payload: int = 1232) -> dns.message.Message:
        message = dns.message.make_query(qname, qtype, use_edns=0, payload=payload)
        message.flags &= ~dns.flags.RD
        if tcp:
            return dns.query.tcp(message, "127.0.0.1", port=self.port, timeout=2)
        return dns.query.udp(message, "127.0.0.1", port=self.port, timeout=2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def coredns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreDns]:
    directory: Path = tmp_path_factory.mktemp("manifests")
    many = [endpoint(f"10.7.0.{i}") for i in range(1, 61)]  # 60 A records: more than 1232 bytes
    write_manifests(
        directory,
        "fixture.yaml",
        [
            *FIXTURE,
            service_import("big", "prod", type="Headless"),
            endpoint_slice("big-cls1", "prod", service="big", cluster="cls1", endpoints=many),
        ],
    )
    with ServerThread(settings_for(directory)) as mcsdns:
        mcsdns.wait_serving()
        # What the chart's NOTES print for a cluster's CoreDNS: a stub for the zone, forwarded to mcsdns.
        server = CoreDns(tmp_path_factory.mktemp("coredns"), f"    forward . 127.0.0.1:{mcsdns.port}\n")
        try:
            wait_for(lambda: _answers(server), timeout=20, what="CoreDNS to answer")
            yield server
        finally:
            server.close()


def _answers(server: CoreDns, name: str = f"dns-version.{Z}", rdtype: str = "TXT") -> bool:
    try:
        return server.query(name, rdtype).rcode() == dns.rcode.NOERROR
    except (dns.exception.Timeout, OSError):
        time.sleep(0.1)
        return False


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_every_row_through_coredns(coredns: CoreDns, case: Case, transport: str) -> None:
    _check(case, coredns.query(case.qname, case.qtype, tcp=transport == "tcp"))


def test_truncated_over_udp_then_whole_over_tcp_through_coredns(coredns: CoreDns) -> None:
    udp = coredns.query(f"big.prod.svc.{Z}", "A", payload=512)
    assert udp.flags & dns.flags.TC, "too large for the client's 512 bytes: TC, as mcsdns sent it"
    whole = coredns.query(f"big.prod.svc.{Z}", "A", tcp=True)
    assert not whole.flags & dns.flags.TC
    assert sorted(r.address for rrset in whole.answer for r in rrset) == sorted(
        f"10.7.0.{i}" for i in range(1, 61)
    )

"""DESIGN.md §3, row by row, against a real server over UDP and TCP (dnspython) and with ``dig``."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from mcsdns.settings import IdentitySettings, ListenAddress, ZoneSettings
from tests.support import (
    ServerThread,
    dig,
    endpoint,
    endpoint_slice,
    free_port,
    query,
    rrset_texts,
    service_import,
    settings_for,
    write_manifests,
)

Z = "clusterset.local."
SOA = f"{Z} 5 in soa ns.dns.{Z} hostmaster.{Z}"

FIXTURE = [
    # ClusterSetIP, dual stack, two named ports and one unnamed (no SRV for it, spec §2.3.2).
    service_import(
        "web",
        "prod",
        ips=["10.0.0.1", "fd00::1"],
        ports=[
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 9090, "protocol": "TCP"},
        ],
    ),
    endpoint_slice(
        "web-cls1",
        "prod",
        service="web",
        cluster="cls1",
        endpoints=[endpoint("10.9.0.1")],
        ports=[{"name": "http", "port": 8080, "protocol": "TCP"}],
    ),
    # ClusterSetIP without any endpoint: still answers its VIP.
    service_import(
        "lonely", "prod", ips=["10.0.0.2"], ports=[{"name": "grpc", "port": 8443, "protocol": "TCP"}]
    ),
    # Headless over a one-label and a two-label cluster id; one endpoint not ready, one without hostname.
    service_import("db", "prod", type="Headless", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    endpoint_slice(
        "db-cls1",
        "prod",
        service="db",
        cluster="cls1",
        ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        endpoints=[
            endpoint("10.1.0.10", hostname="db-0"),
            endpoint("10.1.0.11"),
            endpoint("10.1.0.12", hostname="db-2", ready=False),
        ],
    ),
    endpoint_slice(
        "db-east",
        "prod",
        service="db",
        cluster="east.aws",
        ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        endpoints=[endpoint("10.2.0.10", hostname="db-0")],
    ),
    endpoint_slice(
        "db-east-v6",
        "prod",
        service="db",
        cluster="east.aws",
        address_type="IPv6",
        ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        endpoints=[endpoint("fd00::10", hostname="db-1")],
    ),
    # Headless with no ready endpoint: NXDOMAIN (spec §2.4.1 "should").
    service_import("empty", "prod", type="Headless"),
    endpoint_slice(
        "empty-cls1", "prod", service="empty", cluster="cls1", endpoints=[endpoint("10.3.0.1", ready=False)]
    ),
]


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)
    authority_soa: bool = False


def _ip(name: str, ttl: int = 5) -> str:
    return f"{name}.prod.svc.{Z} {ttl} in"


CASES = [
    pytest.param(Case(f"web.prod.svc.{Z}", "A", answer=[f"{_ip('web')} a 10.0.0.1"]), id="clustersetip-a"),
    pytest.param(
        Case(f"web.prod.svc.{Z}", "AAAA", answer=[f"{_ip('web')} aaaa fd00::1"]), id="clustersetip-aaaa"
    ),
    pytest.param(
        Case(f"lonely.prod.svc.{Z}", "A", answer=[f"{_ip('lonely')} a 10.0.0.2"]),
        id="clustersetip-a-without-endpoints",
    ),
    pytest.param(
        Case(
            f"db.prod.svc.{Z}",
            "A",
            answer=[f"{_ip('db')} a 10.1.0.10", f"{_ip('db')} a 10.1.0.11", f"{_ip('db')} a 10.2.0.10"],
        ),
        id="headless-a-every-ready-endpoint",
    ),
    pytest.param(Case(f"db.prod.svc.{Z}", "AAAA", answer=[f"{_ip('db')} aaaa fd00::10"]), id="headless-aaaa"),
    pytest.param(
        Case(f"empty.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True),
        id="headless-none-ready-nxdomain",
    ),
    pytest.param(
        Case(
            f"_http._tcp.web.prod.svc.{Z}",
            "SRV",
            answer=[f"_http._tcp.{_ip('web')} srv 0 100 80 web.prod.svc.{Z}"],
            additional=[f"{_ip('web')} a 10.0.0.1", f"{_ip('web')} aaaa fd00::1"],
        ),
        id="clustersetip-srv",
    ),
    pytest.param(
        Case(
            f"_dns._udp.web.prod.svc.{Z}",
            "SRV",
            answer=[f"_dns._udp.{_ip('web')} srv 0 100 53 web.prod.svc.{Z}"],
            additional=[f"{_ip('web')} a 10.0.0.1", f"{_ip('web')} aaaa fd00::1"],
        ),
        id="clustersetip-srv-udp",
    ),
    pytest.param(
        Case(
            f"web.prod.svc.{Z}",
            "SRV",
            answer=[
                f"{_ip('web')} srv 0 50 53 web.prod.svc.{Z}",
                f"{_ip('web')} srv 0 50 80 web.prod.svc.{Z}",
            ],
            additional=[f"{_ip('web')} a 10.0.0.1", f"{_ip('web')} aaaa fd00::1"],
        ),
        id="clustersetip-srv-bare-name-named-ports-only",
    ),
    pytest.param(
        Case(
            f"_pg._tcp.db.prod.svc.{Z}",
            "SRV",
            answer=[
                f"_pg._tcp.{_ip('db')} srv 0 25 5432 10-1-0-11.cls1.db.prod.svc.{Z}",
                f"_pg._tcp.{_ip('db')} srv 0 25 5432 db-0.cls1.db.prod.svc.{Z}",
                f"_pg._tcp.{_ip('db')} srv 0 25 5432 db-0.east.aws.db.prod.svc.{Z}",
                f"_pg._tcp.{_ip('db')} srv 0 25 5432 db-1.east.aws.db.prod.svc.{Z}",
            ],
            additional=[
                f"10-1-0-11.cls1.{_ip('db')} a 10.1.0.11",
                f"db-0.cls1.{_ip('db')} a 10.1.0.10",
                f"db-0.east.aws.{_ip('db')} a 10.2.0.10",
                f"db-1.east.aws.{_ip('db')} aaaa fd00::10",
            ],
        ),
        id="headless-srv-per-endpoint",
    ),
    pytest.param(
        Case(
            f"db.prod.svc.{Z}",
            "SRV",
            answer=[
                f"{_ip('db')} srv 0 25 5432 10-1-0-11.cls1.db.prod.svc.{Z}",
                f"{_ip('db')} srv 0 25 5432 db-0.cls1.db.prod.svc.{Z}",
                f"{_ip('db')} srv 0 25 5432 db-0.east.aws.db.prod.svc.{Z}",
                f"{_ip('db')} srv 0 25 5432 db-1.east.aws.db.prod.svc.{Z}",
            ],
            additional=[
                f"10-1-0-11.cls1.{_ip('db')} a 10.1.0.11",
                f"db-0.cls1.{_ip('db')} a 10.1.0.10",
                f"db-0.east.aws.{_ip('db')} a 10.2.0.10",
                f"db-1.east.aws.{_ip('db')} aaaa fd00::10",
            ],
        ),
        id="headless-srv-bare-name",
    ),
    pytest.param(
        Case(f"db-0.cls1.db.prod.svc.{Z}", "A", answer=[f"db-0.cls1.{_ip('db')} a 10.1.0.10"]),
        id="endpoint-hostname-a",
    ),
    pytest.param(
        Case(f"10-1-0-11.cls1.db.prod.svc.{Z}", "A", answer=[f"10-1-0-11.cls1.{_ip('db')} a 10.1.0.11"]),
        id="endpoint-ip-derived-hostname",
    ),
    pytest.param(
        Case(f"db-0.east.aws.db.prod.svc.{Z}", "A", answer=[f"db-0.east.aws.{_ip('db')} a 10.2.0.10"]),
        id="endpoint-two-label-cluster-id",
    ),
    pytest.param(
        Case(f"db-1.east.aws.db.prod.svc.{Z}", "AAAA", answer=[f"db-1.east.aws.{_ip('db')} aaaa fd00::10"]),
        id="endpoint-aaaa",
    ),
    pytest.param(
        Case(f"db-2.cls1.db.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True),
        id="endpoint-not-ready-is-gone",
    ),
    pytest.param(
        Case(f"dns-version.{Z}", "TXT", answer=[f'dns-version.{Z} 28800 in txt "1.0.0"']),
        id="dns-version-txt",
    ),
    pytest.param(Case(Z, "NS", answer=[f"{Z} 5 in ns ns.dns.{Z}"]), id="apex-ns"),
    pytest.param(Case(f"web.prod.svc.{Z}", "TXT", authority_soa=True), id="existing-name-other-type-nodata"),
    pytest.param(Case(f"web.prod.svc.{Z}", "MX", authority_soa=True), id="existing-name-mx-nodata"),
    pytest.param(
        Case(f"db-0.cls1.db.prod.svc.{Z}", "AAAA", authority_soa=True), id="endpoint-other-family-nodata"
    ),
    pytest.param(Case(f"svc.{Z}", "A", authority_soa=True), id="ent-svc"),
    pytest.param(Case(f"prod.svc.{Z}", "A", authority_soa=True), id="ent-namespace"),
    pytest.param(Case(f"_tcp.web.prod.svc.{Z}", "SRV", authority_soa=True), id="ent-proto"),
    pytest.param(Case(f"cls1.db.prod.svc.{Z}", "A", authority_soa=True), id="ent-cluster-of-headless"),
    pytest.param(Case(f"aws.db.prod.svc.{Z}", "A", authority_soa=True), id="ent-two-label-cluster-part"),
    pytest.param(Case(f"nope.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True), id="unknown-service"),
    pytest.param(
        Case(f"web.nope.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True), id="unknown-namespace"
    ),
    pytest.param(
        Case(f"cls1.web.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True),
        id="no-per-cluster-name-under-clustersetip",
    ),
    pytest.param(
        Case(f"x.web.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True),
        id="nothing-under-clustersetip",
    ),
    pytest.param(
        Case(f"*.prod.svc.{Z}", "A", rcode="NXDOMAIN", authority_soa=True), id="star-is-a-literal-label"
    ),
    pytest.param(Case(f"pod.{Z}", "A", rcode="NXDOMAIN", authority_soa=True), id="pod-names-do-not-exist"),
    pytest.param(
        Case(f"_http._udp.web.prod.svc.{Z}", "SRV", rcode="NXDOMAIN", authority_soa=True),
        id="srv-wrong-protocol",
    ),
    pytest.param(Case("example.com.", "A", rcode="REFUSED"), id="outside-zone-refused"),
    pytest.param(Case("1.0.0.10.in-addr.arpa.", "PTR", rcode="REFUSED"), id="ptr-refused"),
    pytest.param(Case("local.", "SOA", rcode="REFUSED"), id="parent-of-zone-refused"),
    pytest.param(
        Case(f"web.prod.svc.{Z}", "ANY", answer=[f"{_ip('web')} a 10.0.0.1"]), id="any-rfc8482-one-rrset"
    ),
    pytest.param(Case(f"prod.svc.{Z}", "ANY", authority_soa=True), id="any-at-empty-non-terminal"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    directory: Path = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, "fixture.yaml", FIXTURE)
    with ServerThread(settings_for(directory)) as running:
        running.wait_serving()
        yield running


def cases() -> list[Case]:
    """The table's cases themselves, for tests that run it other ways (workers, the uvloop fallback)."""
    table: list[Case] = []
    for param in CASES:
        (case,) = param.values
        assert isinstance(case, Case)
        table.append(case)
    return table


def _check(case: Case, reply: dns.message.Message) -> None:
    assert dns.rcode.to_text(reply.rcode()) == case.rcode
    assert rrset_texts(reply.answer) == sorted(case.answer)
    if case.rcode == "REFUSED":
        assert not reply.authority
        return
    assert reply.flags & dns.flags.AA, "authoritative for every in-zone answer"
    assert rrset_texts(reply.additional) == sorted(case.additional)
    authority = rrset_texts(reply.authority)
    if case.authority_soa:
        assert len(authority) == 1 and authority[0].startswith(SOA), authority
        assert authority[0].endswith(" 7200 1800 86400 5")
    else:
        assert authority == []


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_record_table(server: ServerThread, case: Case, transport: str) -> None:
    _check(case, query(server, case.qname, case.qtype, tcp=transport == "tcp", payload=1232))


@pytest.mark.parametrize("case", CASES)
def test_record_table_with_dig(server: ServerThread, case: Case) -> None:
    """dig, as users run it: the same rcode and the same answer lines."""
    output = dig(server, case.qname, case.qtype, "+norecurse")
    assert f"status: {case.rcode}," in output
    answer = dig(server, case.qname, case.qtype, "+noall", "+answer")
    lines = sorted(" ".join(line.split()).lower() for line in answer.splitlines() if line.strip())
    assert lines == sorted(case.answer)


def test_soa_at_apex(server: ServerThread) -> None:
    reply = query(server, Z, "SOA")
    (line,) = rrset_texts(reply.answer)
    assert line.startswith(SOA) and line.endswith(" 7200 1800 86400 5")
    serial = int(line.split()[6])
    assert serial == server.serial()


def test_question_is_echoed_byte_for_byte_with_0x20_case(server: ServerThread) -> None:
    name = "wEb.PrOd.SvC.ClUsTeRsEt.LoCaL."
    request = dns.message.make_query(name, "A")
    wire = request.to_wire()
    reply = query_raw(server, wire)
    assert reply[12 : 12 + len(wire) - 12] == wire[12:], "question section copied exactly"
    parsed = dns.message.from_wire(reply)
    assert parsed.answer[0].name.to_text() == name, "owner points at the question, so it keeps the case"
    assert [r.to_text() for r in parsed.answer[0]] == ["10.0.0.1"]


def test_flags_rd_copied_aa_set_ra_clear(server: ServerThread) -> None:
    request = dns.message.make_query(f"web.prod.svc.{Z}", "A")
    request.flags |= dns.flags.RD | dns.flags.CD
    reply = dns.message.from_wire(query_raw(server, request.to_wire()))
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD and reply.flags & dns.flags.CD
    assert not reply.flags & dns.flags.RA
    request.flags &= ~(dns.flags.RD | dns.flags.CD)
    reply = dns.message.from_wire(query_raw(server, request.to_wire()))
    assert not reply.flags & dns.flags.RD and not reply.flags & dns.flags.CD
    assert reply.id == request.id


def test_edns_is_echoed_with_our_payload_and_do_bit(server: ServerThread) -> None:
    reply = query(server, f"web.prod.svc.{Z}", "A", payload=4096, want_dnssec=True)
    assert reply.edns == 0 and reply.payload == 1232
    assert reply.ednsflags & dns.flags.DO
    plain = query(server, f"web.prod.svc.{Z}", "A")
    assert plain.edns == -1, "no OPT in the reply to a query without one"


def query_raw(server: ServerThread, wire: bytes, *, timeout: float = 2.0) -> bytes:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, (server.host, server.port))
        data, _ = sock.recvfrom(65535)
        return data


def test_prefer_local_cluster_over_the_wire(tmp_path: Path) -> None:
    """--prefer-local-cluster with --cluster-id cls1: the headless name answers cls1's endpoint while it is
    ready, every cluster's once it is not; the ClusterSetIP name is unchanged."""
    objects = [
        service_import("db", "prod", type="Headless"),
        endpoint_slice("db-cls1", "prod", service="db", cluster="cls1", endpoints=[endpoint("10.1.0.1")]),
        endpoint_slice("db-cls2", "prod", service="db", cluster="cls2", endpoints=[endpoint("10.2.0.1")]),
        service_import("web", "prod", ips=["10.0.0.1"]),
    ]
    write_manifests(tmp_path, "db.yaml", objects)
    settings = replace(
        settings_for(tmp_path),
        zone=ZoneSettings(prefer_local_cluster=True),
        identity=IdentitySettings(cluster_id="cls1"),
    )
    with ServerThread(settings) as server:
        server.wait_serving()
        assert rrset_texts(query(server, f"db.prod.svc.{Z}").answer) == [f"db.prod.svc.{Z} 5 in a 10.1.0.1"]
        assert rrset_texts(query(server, f"web.prod.svc.{Z}").answer) == [f"web.prod.svc.{Z} 5 in a 10.0.0.1"]
        before = server.serial()
        objects[1] = endpoint_slice(
            "db-cls1", "prod", service="db", cluster="cls1", endpoints=[endpoint("10.1.0.1", ready=False)]
        )
        write_manifests(tmp_path, "db.yaml", objects)
        server.wait_new_serial(before)
        assert rrset_texts(query(server, f"db.prod.svc.{Z}").answer) == [f"db.prod.svc.{Z} 5 in a 10.2.0.1"]


def test_ptr_answers_dig_x_for_the_zones_addresses_and_lets_others_fall_through(tmp_path: Path) -> None:
    """--ptr, as a user checks it: ``dig -x`` of a ClusterSetIP (IPv4 and IPv6) names the service; a
    reverse name the zone does not hold is not ours (REFUSED here, without forwarding); /readyz says so."""
    write_manifests(tmp_path, "fixture.yaml", FIXTURE)
    settings = replace(
        settings_for(tmp_path, zone=ZoneSettings(ptr=True)),
        http=ListenAddress("127.0.0.1", free_port()),
    )
    with ServerThread(settings) as server:
        server.wait_serving()
        assert dig(server, "-x", "10.0.0.1", "+short").split() == [f"web.prod.svc.{Z}"]
        assert dig(server, "-x", "fd00::1", "+short").split() == [f"web.prod.svc.{Z}"]
        assert "status: REFUSED" in dig(server, "-x", "192.0.2.7")
        assert settings.http is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.http.port}/readyz", timeout=5) as response:
            body = response.read().decode()
        assert "ptr: in-addr.arpa and ip6.arpa for" in body and "other reverse names fall through" in body

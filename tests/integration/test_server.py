"""The server as a network peer: malformed packets, truncation and TCP retry, pipelining, idle timeout,
the connection cap, SERVFAIL before the first sync, and surviving garbage."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from mcsdns.settings import ServerSettings
from mcsdns.sources.events import Emit, SourceName
from tests.support import (
    ServerThread,
    dig,
    endpoint,
    endpoint_slice,
    query,
    read_exactly,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)

Z = "clusterset.local."
BIG = f"big.prod.svc.{Z}"
QUESTION_WEB = b"\x03web\x04prod\x03svc\x0aclusterset\x05local\x00\x00\x01\x00\x01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    directory: Path = tmp_path_factory.mktemp("manifests")
    big = [endpoint(f"10.4.{i // 250}.{i % 250 + 1}", hostname=f"big-{i}") for i in range(120)]
    write_manifests(
        directory,
        "fixture.yaml",
        [
            service_import(
                "web", "prod", ips=["10.0.0.1"], ports=[{"name": "http", "port": 80, "protocol": "TCP"}]
            ),
            service_import(
                "big", "prod", type="Headless", ports=[{"name": "http", "port": 80, "protocol": "TCP"}]
            ),
            endpoint_slice(
                "big-cls1",
                "prod",
                service="big",
                cluster="cls1",
                endpoints=big,
                ports=[{"name": "http", "port": 80, "protocol": "TCP"}],
            ),
        ],
    )
    settings = settings_for(directory, server=ServerSettings(tcp_idle_timeout=0.5, tcp_max_connections=4))
    with ServerThread(settings) as running:
        running.wait_serving()
        yield running


def udp_exchange(server: ServerThread, wire: bytes, *, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, (server.host, server.port))
        try:
            return sock.recvfrom(65535)[0]
        except TimeoutError:
            return None


def header(
    *, qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


MALFORMED = [
    pytest.param(header(qd=0), dns.rcode.FORMERR, 0, id="qdcount-0"),
    pytest.param(header(qd=2) + QUESTION_WEB * 2, dns.rcode.FORMERR, 0, id="qdcount-2"),
    pytest.param(header() + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR, 0, id="pointer-in-question"),
    pytest.param(
        header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR, 0, id="label-64"
    ),
    pytest.param(header() + b"\x03web\x04pr", dns.rcode.FORMERR, 0, id="question-cut-short"),
    pytest.param(header() + b"\x03web\x00\x00", dns.rcode.FORMERR, 0, id="no-qclass"),
    pytest.param(
        header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
        dns.rcode.FORMERR,
        0,
        id="name-over-255",
    ),
    pytest.param(header(ar=1) + QUESTION_WEB + b"\x00\x00\x29\x04", dns.rcode.FORMERR, 0, id="opt-cut-short"),
    pytest.param(
        header(ar=2) + QUESTION_WEB + (b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00") * 2,
        dns.rcode.FORMERR,
        0,
        id="two-opt-records",
    ),
    pytest.param(header(flags=0x2800) + QUESTION_WEB, dns.rcode.NOTIMP, 1, id="opcode-update-notimp"),
    pytest.param(header(flags=0x2000) + QUESTION_WEB, dns.rcode.NOTIMP, 1, id="opcode-notify-notimp"),
    pytest.param(header(flags=0x1000) + QUESTION_WEB, dns.rcode.NOTIMP, 1, id="opcode-status-notimp"),
]


@pytest.mark.parametrize(("wire", "rcode", "qdcount"), MALFORMED)
def test_malformed_queries_get_the_right_rcode(
    server: ServerThread, wire: bytes, rcode: int, qdcount: int
) -> None:
    reply = udp_exchange(server, wire)
    assert reply is not None
    assert reply[:2] == wire[:2], "same id"
    assert reply[2] & 0x80, "QR set"
    assert rcode_of(reply) == rcode
    assert struct.unpack("!H", reply[4:6])[0] == qdcount


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x12\x34\x01", id="shorter-than-a-header"),
        pytest.param(header(flags=0x8100) + QUESTION_WEB, id="qr-set-response"),
    ],
)
def test_packets_that_are_dropped(server: ServerThread, wire: bytes) -> None:
    assert udp_exchange(server, wire, timeout=0.3) is None
    assert query(server, f"web.prod.svc.{Z}").answer, "and the server still answers"


def test_edns_version_1_gets_badvers(server: ServerThread) -> None:
    request = dns.message.make_query(f"web.prod.svc.{Z}", "A", use_edns=1)
    reply = dns.message.from_wire(udp_exchange(server, request.to_wire()) or b"")
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0, "RFC 6891 §6.1.3: answered with the version we speak"


def test_axfr_and_ixfr_are_refused(server: ServerThread) -> None:
    for rdtype in ("AXFR", "IXFR"):
        request = dns.message.make_query(Z, rdtype)
        reply = dns.query.tcp(request, server.host, port=server.port, timeout=2)
        assert reply.rcode() == dns.rcode.REFUSED


def test_class_chaos_refused_and_class_any_answers(server: ServerThread) -> None:
    chaos = dns.message.make_query("version.bind.", "TXT", "CH")
    assert dns.message.from_wire(udp_exchange(server, chaos.to_wire()) or b"").rcode() == dns.rcode.REFUSED
    wire = header() + QUESTION_WEB[:-2] + b"\x00\xff"
    reply = dns.message.from_wire(udp_exchange(server, wire) or b"")
    assert [r.to_text() for r in reply.answer[0]] == ["10.0.0.1"]


def test_big_answer_truncates_over_udp_and_is_whole_over_tcp(server: ServerThread) -> None:
    plain = query(server, BIG, "A")
    assert plain.flags & dns.flags.TC and not plain.answer, "over 512 bytes without EDNS"
    edns = query(server, BIG, "A", payload=1232)
    assert edns.flags & dns.flags.TC, "120 A records do not fit 1232 bytes either"
    whole = query(server, BIG, "A", tcp=True)
    assert not whole.flags & dns.flags.TC
    assert len(whole.answer[0]) == 120


def test_dig_retries_truncated_answers_over_tcp(server: ServerThread) -> None:
    output = dig(server, BIG, "A", "+noall", "+answer")
    assert len(output.strip().splitlines()) == 120


def test_srv_additional_section_is_dropped_before_truncating(server: ServerThread) -> None:
    # Bare-name SRV of 120 targets: no TC over TCP; over UDP the answer alone is too big, so TC.
    whole = query(server, BIG, "SRV", tcp=True)
    assert len(whole.answer[0]) == 120 and len(whole.additional) == 120
    edns = query(server, f"_http._tcp.{BIG}", "SRV", payload=1232)
    assert edns.flags & dns.flags.TC


def test_small_srv_keeps_additional_over_udp(server: ServerThread) -> None:
    reply = query(server, f"_http._tcp.web.prod.svc.{Z}", "SRV")
    assert reply.answer and reply.additional and not reply.flags & dns.flags.TC


def tcp_connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=2)
    return sock


def read_message(sock: socket.socket) -> bytes:
    (length,) = struct.unpack("!H", read_exactly(sock, 2))
    return read_exactly(sock, length)


def test_tcp_pipelined_queries_are_all_answered_in_order(server: ServerThread) -> None:
    names = [f"web.prod.svc.{Z}", BIG, f"nope.prod.svc.{Z}", f"dns-version.{Z}"] * 5
    requests = [
        dns.message.make_query(name, "TXT" if name.startswith("dns-version") else "A") for name in names
    ]
    for index, request in enumerate(requests):
        request.id = index
    stream = b"".join(struct.pack("!H", len(w)) + w for w in (r.to_wire() for r in requests))
    with tcp_connect(server) as sock:
        # One byte at a time for the first message, the rest at once: framing must not care.
        for byte in stream[:20]:
            sock.sendall(bytes((byte,)))
        sock.sendall(stream[20:])
        replies = [dns.message.from_wire(read_message(sock)) for _ in requests]
    assert [reply.id for reply in replies] == list(range(len(requests)))
    assert [dns.rcode.to_text(r.rcode()) for r in replies[:4]] == [
        "NOERROR",
        "NOERROR",
        "NXDOMAIN",
        "NOERROR",
    ]


def test_idle_tcp_connection_is_closed(server: ServerThread) -> None:
    with tcp_connect(server) as sock:
        sock.settimeout(3)
        assert sock.recv(1) == b"", "the server closes after the 0.5 s idle timeout"


def tcp_query() -> bytes:
    message = header() + QUESTION_WEB
    return struct.pack("!H", len(message)) + message


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_at_the_cap_the_longest_idle_connection_makes_room(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    settings = settings_for(tmp_path, server=ServerSettings(tcp_idle_timeout=10, tcp_max_connections=4))
    with ServerThread(settings) as server:
        server.wait_serving()
        held = []
        for _ in range(4):
            held.append(tcp_connect(server))
            time.sleep(0.02)  # distinct times: the loop's clock moves in steps
        try:
            for active in (0, 2, 3):  # all but held[1] send a query, so held[1] has been idle longest
                held[active].sendall(tcp_query())
                read_message(held[active])
                time.sleep(0.02)
            with tcp_connect(server) as extra:
                extra.sendall(tcp_query())
                assert dns.message.from_wire(read_message(extra)).answer, "the new connection is served"
            assert closed_by_server(held[1]), "the connection idle longest was closed to admit it"
            held[0].sendall(tcp_query())
            assert dns.message.from_wire(read_message(held[0])).answer, "the recently active one stays"
        finally:
            for sock in held:
                sock.close()
        assert server.app is not None and server.app.listeners[0].connections.evicted == 1


def test_a_full_table_of_unfinished_messages_turns_new_connections_away(server: ServerThread) -> None:
    held = [tcp_connect(server) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"\x00\x40\x12")  # the start of a 64-byte message that never comes
        time.sleep(0.1)
        extra = tcp_connect(server)
        extra.settimeout(2)
        with pytest.raises((ConnectionError, OSError)):
            extra.sendall(tcp_query())
            if extra.recv(2) == b"":
                raise ConnectionError("closed at once")
        extra.close()
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: query(server, f"web.prod.svc.{Z}", tcp=True).answer, what="TCP service after the cap")


def test_a_slow_client_cannot_hold_a_connection(server: ServerThread) -> None:
    """Slowloris: one byte every 0.3 s keeps a per-byte idle timer (0.5 s) alive forever; the deadline is
    per whole message, so the connection is closed 0.5 s after the message began."""
    message = tcp_query()
    with tcp_connect(server) as sock:
        started = time.monotonic()
        closed = False
        for byte in message:
            try:
                sock.sendall(bytes((byte,)))
            except OSError:
                closed = True
                break
            time.sleep(0.3)
            if time.monotonic() - started > 3:
                break
        closed = closed or closed_by_server(sock)
        assert closed and time.monotonic() - started < 3


def test_connections_end_after_their_lifetime(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    settings = settings_for(tmp_path, server=ServerSettings(tcp_idle_timeout=0.5, tcp_max_lifetime=1.0))
    with ServerThread(settings) as running, tcp_connect(running) as sock:
        running.wait_serving()
        started = time.monotonic()
        while time.monotonic() - started < 3:  # busy, never idle: only the lifetime can end it
            try:
                sock.sendall(tcp_query())
                read_message(sock)
            except (OSError, ValueError, AssertionError):
                break
            time.sleep(0.1)
        assert 0.9 < time.monotonic() - started < 2.0


def test_random_garbage_never_stops_the_server(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(1645)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(2000):
            size = rng.choice((rng.randrange(0, 40), rng.randrange(12, 600)))
            packet = bytearray(rng.randbytes(size))
            if size >= 6 and rng.random() < 0.7:
                packet[2] &= 0x7F  # mostly queries, to get past the QR check
                packet[4:6] = b"\x00\x01"
            sock.sendto(bytes(packet), (server.host, server.port))
    with tcp_connect(server) as sock:
        sock.sendall(rng.randbytes(3000))
    assert query(server, f"web.prod.svc.{Z}").answer
    assert query(server, f"web.prod.svc.{Z}", tcp=True).answer
    assert not [r for r in caplog.records if r.levelname == "ERROR"], "garbage is answered, not an exception"


class NeverListed:
    """A source still waiting on its first list: the server must not deny anything yet."""

    @property
    def name(self) -> SourceName:
        return SourceName("stuck")

    async def run(self, emit: Emit) -> None:
        await asyncio.Event().wait()


def test_servfail_until_every_source_has_listed() -> None:
    with ServerThread(settings_for(), sources=[NeverListed()]) as server:
        assert query(server, f"web.prod.svc.{Z}").rcode() == dns.rcode.SERVFAIL
        assert query(server, f"nope.prod.svc.{Z}", tcp=True).rcode() == dns.rcode.SERVFAIL
        assert query(server, "example.com.").rcode() == dns.rcode.REFUSED, "not ours either way"


def test_listens_on_ipv6_loopback_too(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    with ServerThread(settings_for(tmp_path, listen=("127.0.0.1", "::1"))) as server:
        server.wait_serving()
        assert server.app is not None
        v6 = server.app.addresses[1]
        request = dns.message.make_query(f"web.prod.svc.{Z}", "A")
        for reply in (
            dns.query.udp(request, "::1", port=v6.port, timeout=2),
            dns.query.tcp(request, "::1", port=v6.port, timeout=2),
        ):
            assert [r.to_text() for r in reply.answer[0]] == ["10.0.0.1"]

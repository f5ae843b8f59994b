"""UDP read and answered in batches (recvmmsg/sendmmsg, ``dns/batch.py``), and the uvloop transport kept
where those calls are not available: bursts larger than a batch, a query too large for a batch's slot, the
sender's address read back, and the same answers from both paths."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from mcsdns.dns import batch
from mcsdns.dns.server import BatchedUdp
from tests.integration.test_dns_records import FIXTURE, _check, cases
from tests.support import ServerThread, query, settings_for, write_manifests

pytestmark = pytest.mark.skipif(not batch.available(), reason="recvmmsg/sendmmsg need Linux")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, "fixture.yaml", FIXTURE)
    return directory


@pytest.fixture(scope="module")
def server(manifests: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(manifests)) as running:
        running.wait_serving()
        assert running.app is not None
        assert all(isinstance(listener.udp, BatchedUdp) for listener in running.app.listeners)
        yield running


def test_a_burst_of_several_batches_from_one_socket_is_answered_whole(server: ServerThread) -> None:
    count = 5 * batch.BATCH + 7
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(5)
        for qid in range(count):  # sent without waiting: the server finds them queued, batch after batch
            message = dns.message.make_query("web.prod.svc.clusterset.local.", "A")
            message.id = qid
            sock.sendto(message.to_wire(), ("127.0.0.1", server.port))
        ids = set()
        for _ in range(count):
            reply = dns.message.from_wire(sock.recv(4096))
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer
            ids.add(reply.id)
    assert ids == set(range(count))


def test_a_query_larger_than_a_slot_gets_formerr(server: ServerThread) -> None:
    wire = bytearray(dns.message.make_query("web.prod.svc.clusterset.local.", "A").to_wire())
    wire += b"\x00" * (batch.SLOT + 100)  # trailing bytes past any question: cut by the kernel at SLOT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(bytes(wire), ("127.0.0.1", server.port))
        reply = sock.recv(4096)
    assert reply[:2] == wire[:2] and reply[3] & 0xF == dns.rcode.FORMERR
    assert query(server, "web.prod.svc.clusterset.local.").rcode() == dns.rcode.NOERROR  # still serving


def test_without_recvmmsg_the_transport_gives_the_same_answers(
    manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "available", lambda: False)
    with ServerThread(settings_for(manifests)) as running:
        running.wait_serving()
        assert running.app is not None
        assert not any(isinstance(listener.udp, BatchedUdp) for listener in running.app.listeners)
        for case in cases():
            _check(case, query(running, case.qname, case.qtype, payload=1232))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            struct.pack("=H", socket.AF_INET)
            + struct.pack("!H", 5353)
            + socket.inet_aton("127.0.0.9")
            + bytes(8),
            ("127.0.0.9", 5353),
        ),
        (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI", 53, 0)
            + socket.inet_pton(socket.AF_INET6, "::1")
            + struct.pack("=I", 0),
            ("::1", 53, 0, 0),
        ),
    ],
    ids=["ipv4", "ipv6"],
)
def test_a_senders_sockaddr_reads_back_as_the_tuple_sockets_take(
    name: bytes, expected: tuple[object, ...]
) -> None:
    assert batch.address(name) == expected


def test_a_datagram_the_kernel_refuses_is_reported_and_the_rest_still_leave() -> None:
    # A connected UDP socket whose peer is gone: the ICMP port-unreachable for the first datagram makes
    # the kernel refuse the next send (ECONNREFUSED, udp(7)); the forwarder must learn which query failed
    # (to try another upstream at once) while the queries queued after it still go out.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener,
    ):
        gone.bind(("127.0.0.1", 0))
        sock.connect(gone.getsockname())
        gone.close()
        out = batch.Batch(sock.fileno(), slots=0, sends=4, send_slot=64)
        assert out.queue_to(None, b"first") and out.flush() == 0
        time.sleep(0.05)  # the ICMP error is now pending on the socket
        for payload in (b"refused", b"second", b"third"):
            assert out.queue_to(None, payload)
        failed: list[int] = []
        assert out.flush(failed) == 1 and failed == [0]
        # The same arrays address other senders too: a copy of the address travels with each datagram.
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(2)
        name = struct.pack("=H", socket.AF_INET) + struct.pack("!H", listener.getsockname()[1])
        name += socket.inet_aton("127.0.0.1") + bytes(8)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unconnected:
            out = batch.Batch(unconnected.fileno(), slots=0, sends=2, send_slot=64)
            assert out.queue_to(name, b"one") and out.queue_to(name, b"two")
            assert not out.queue_to(name, b"three"), "every send slot is taken"
            assert not batch.Batch(unconnected.fileno(), sends=1, send_slot=4).queue_to(name, b"too long")
            assert out.flush() == 0
            assert [listener.recv(64), listener.recv(64)] == [b"one", b"two"]

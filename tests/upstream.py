"""A scripted upstream resolver on 127.0.0.1 for the forwarding tests: real UDP and TCP sockets, answers
from a table, a log of every query it got, and switches for what a test needs an upstream to do (answer
slowly, go silent, send forged replies before the real one)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.support import read_exactly

ZONE = dns.name.from_text("up.test.")
SOA = "ns.up.test. admin.up.test. 1 60 60 600 {minimum}"


@dataclass
class Upstream:
    """``records``: (name, type) → rdata texts. Other names under ``up.test.`` are NXDOMAIN, other types
    of a known name NODATA, both with the SOA (RFC 2308)."""

    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    ttl: int = 300
    negative_ttl: int = 60
    delay: float = 0.0  # seconds before each answer
    silent: bool = False  # receive, never answer
    referral_data: bool = False  # positive answers carry the zone's NS RRset and its glue, as NSD sends
    forge: bool = False  # before the real reply: a forged one from another port, one with a wrong id, and
    # one with the right id but another question, each pointing at 6.6.6.6
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, udp|tcp), lower-cased

    def __post_init__(self) -> None:
        for _ in range(20):  # the kernel's UDP port may have a TCP twin in use: then take another
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind(("127.0.0.1", 0))
            self.port: int = self._udp.getsockname()[1]
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self._tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self._udp.close()
                self._tcp.close()
        else:
            raise OSError("no UDP port whose TCP twin is free on 127.0.0.1")
        self._tcp.listen(16)
        self._forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._forger.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="test-upstream", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in (self._udp, self._tcp, self._forger):
            sock.close()

    def asked(self, name: str, rdtype: str = "A") -> int:
        """How many times ``name``/``rdtype`` was asked, over either transport."""
        with self._lock:
            return sum(1 for q in self.queries if q[:2] == (name.lower(), rdtype))

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._udp, self._tcp], [], [], 0.05)
            if self._udp in readable:
                with contextlib.suppress(OSError):
                    data, peer = self._udp.recvfrom(65535)
                    threading.Thread(target=self._udp_query, args=(data, peer), daemon=True).start()
            if self._tcp in readable:
                with contextlib.suppress(OSError):
                    conn, _ = self._tcp.accept()
                    threading.Thread(target=self._tcp_query, args=(conn,), daemon=True).start()

    def _udp_query(self, data: bytes, peer: tuple[str, int]) -> None:
        query = self._parse(data, "udp")
        if query is None or self.silent:
            return
        if self.delay:
            time.sleep(self.delay)
        reply = self.answer(query)
        if self.forge:
            self._send_forged(query, peer)
        payload = max(query.payload, 512) if query.edns >= 0 else 512
        try:
            wire = reply.to_wire(max_size=payload)
        except dns.exception.TooBig:
            reply.flags |= dns.flags.TC
            reply.answer.clear()
            wire = reply.to_wire()
        with contextlib.suppress(OSError):
            self._udp.sendto(wire, peer)

    def _send_forged(self, query: dns.message.Message, peer: tuple[str, int]) -> None:
        forged = self._forged(query)
        self._forger.sendto(forged.to_wire(), peer)  # right id and question, wrong source port
        forged.id = (query.id + 1) % 65536
        self._udp.sendto(forged.to_wire(), peer)  # right port, wrong id
        other = dns.message.make_query("other.up.test.", "A")
        other.id = query.id
        wrong_question = self._forged(other)
        self._udp.sendto(wrong_question.to_wire(), peer)  # right port and id, another question
        time.sleep(0.05)

    def _forged(self, query: dns.message.Message) -> dns.message.Message:
        forged = dns.message.make_response(query)
        question = query.question[0]
        forged.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", "A", "6.6.6.6"))
        return forged

    def _tcp_query(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            with contextlib.suppress(OSError, ValueError):
                length = int.from_bytes(read_exactly(conn, 2), "big")
                query = self._parse(read_exactly(conn, length), "tcp")
                if query is None or self.silent:
                    return
                wire = self.answer(query).to_wire(max_size=65535)
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

    def _parse(self, data: bytes, transport: str) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        question = query.question[0]
        with self._lock:
            self.queries.append(
                (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype), transport)
            )
        return query

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        name = question.name.to_text().lower()
        rdatas = self.records.get((name, dns.rdatatype.to_text(question.rdtype)))
        if rdatas:
            reply.answer.append(
                dns.rrset.from_text_list(question.name, self.ttl, "IN", question.rdtype, rdatas)
            )
            if self.referral_data:
                reply.authority.append(dns.rrset.from_text(ZONE, self.ttl, "IN", "NS", f"ns.{ZONE}"))
                reply.additional.append(dns.rrset.from_text(f"ns.{ZONE}", self.ttl, "IN", "A", "192.0.2.53"))
            return reply
        if not any(known == name for known, _ in self.records):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        soa = SOA.format(minimum=self.negative_ttl)
        reply.authority.append(dns.rrset.from_text(ZONE, self.negative_ttl, "IN", "SOA", soa))
        return reply

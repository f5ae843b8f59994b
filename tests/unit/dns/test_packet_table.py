"""The packet path as a table, without sockets: query bytes in, reply bytes out (like CoreDNS's test.Case).

Every case is one query (made by dnspython, or by hand for the packets dnspython will not make) given to
``Responder.respond`` with the UDP or TCP limit; the reply bytes are parsed by dnspython and compared as a
whole: RCODE, OPCODE, header flags, QDCOUNT, the three sections as zone-file lines and our OPT record. The
table follows README's "What it answers" row by row, then the rules below it; where a behaviour comes from:

- the header, question echo, RD copy, opcodes, FORMERR and the 512-octet UDP limit: RFC 1035 §4.1.1,
  §4.1.2, §4.2.1; compression pointers: §4.1.4; QCLASS ``*``: §3.2.5;
- negative answers carry the zone's SOA in authority, NXDOMAIN for names that do not exist and NODATA
  (NOERROR, no answer) for names that do: RFC 2308 §2.1-§3; empty non-terminals exist: RFC 8020;
- ANY gets one RRset: RFC 8482 §4.1;
- EDNS0: our OPT advertises 1232 octets, copies DO, BADVERS for a version other than 0: RFC 6891 §6.1.3,
  §6.2.5 (sizes under 512 count as 512); RFC 3225 §3 (DO);
- truncation: TC=1 with the question only and the full answer over TCP, RFC 1035 §4.2.1 and RFC 7766 §5;
  the Additional section is left out before anything is truncated, RFC 2181 §9;
- the records themselves: the MCS DNS specification (KEP-1645 specification.md §2.2-§2.4).

The zone is built in memory with ``ZoneBuilder`` and published on a ``ZoneStore`` (tests/unit/dns/helpers.py),
as the engine does. Each case is checked for the invariants too: the reply's id is the query's, a
question it carries is the query's byte for byte (0x20 case randomisation), and a UDP reply fits the
client's limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from mcsdns.dns import responder as responder_module
from mcsdns.dns.cache import ForwardCache, entry_from_reply
from mcsdns.dns.responder import TCP, UDP, Forward, Responder
from mcsdns.settings import ZoneSettings
from mcsdns.wire import MIN_UDP_PAYLOAD, SERVER_UDP_PAYLOAD, scan_reply
from mcsdns.zone.store import ZoneStore
from tests.unit.dns.helpers import Svc, header, lines, publish, question, question_end
from tests.unit.dns.test_cache import Clock

Z = "clusterset.local."
SERIAL = 1_700_000_000
SOA = f"{Z} 5 IN SOA ns.dns.{Z} hostmaster.{Z} {SERIAL} 7200 1800 86400 5"

BIG = 100  # endpoints of big.prod: 100 A records do not fit 1232 octets
MID = 7  # endpoints of mid.prod: its SRV answer fits 512 octets only without the Additional section

MAIN = [
    # ClusterSetIP, dual stack; two named ports and one unnamed (no SRV for it, spec §2.3.2). The slice's
    # port 8080 is not used: a ClusterSetIP service's records come from its import alone.
    Svc(
        "web.prod",
        "ClusterSetIP",
        ips=["10.0.0.1", "fd00::1"],
        ports=["http:80/TCP", "dns:53/UDP", "9090/TCP"],
        endpoint_ports=["http:8080/TCP"],
        clusters={"cls1": ["10.9.0.1"]},
    ),
    Svc("lonely.prod", "ClusterSetIP", ips=["10.0.0.2"], ports=["grpc:8443/TCP"]),  # no endpoint at all
    Svc("metrics.prod", "ClusterSetIP", ips=["10.0.0.3"], ports=["9090/TCP"]),  # unnamed ports only
    # Headless over a one-label and a two-label cluster id; one endpoint not ready, one without hostname.
    Svc(
        "db.prod",
        "Headless",
        ports=["pg:5432/TCP"],
        clusters={
            "cls1": ["10.1.0.10 host=db-0", "10.1.0.11", "10.1.0.12 host=db-2 not-ready"],
            "east.aws": ["10.2.0.10 host=db-0", "fd00::10 host=db-1"],
        },
    ),
    # Headless: SRV ports from the slices; IPv6 hostname fallbacks; a cluster id of three labels has no
    # <clusterid> name, but its endpoint still answers at the service name.
    Svc(
        "cache.prod",
        "Headless",
        ports=["redis:6379/TCP"],
        endpoint_ports=["redis:16379/TCP"],
        clusters={"cls1": ["fd00::20", "fd00:: host=-bad"], "a.b.c": ["10.5.0.1 host=c-9"]},
    ),
    # Headless, nothing ready, alone in its namespace: no names at all (spec §2.4.1).
    Svc("empty.quiet", "Headless", ports=["http:80/TCP"], clusters={"cls1": ["10.3.0.1 not-ready"]}),
    Svc(
        "mid.prod",
        "Headless",
        ports=["http:80/TCP"],
        clusters={"cls1": [f"10.6.0.{i} host=m{i}" for i in range(1, MID + 1)]},
    ),
    Svc(
        "big.prod",
        "Headless",
        ports=["http:80/TCP"],
        clusters={"cls1": [f"10.4.0.{i} host=big-{i}" for i in range(1, BIG + 1)]},
    ),
]

# --zone mcs.example --ttl 30 --dns-version 1.1.0
CUSTOM = ZoneSettings(zone="mcs.example", ttl=30, dns_version="1.1.0")

SETTINGS = {"main": ZoneSettings(), "unloaded": ZoneSettings(), "custom": CUSTOM}
STORES: dict[str, ZoneStore] = {
    "main": publish(MAIN, ZoneSettings(), serial=SERIAL),
    "unloaded": ZoneStore(),  # no source has listed yet: nothing published
    "custom": publish(
        [Svc("web.prod", "ClusterSetIP", ips=["10.0.0.1"], ports=["http:80/TCP"])], CUSTOM, serial=7
    ),
}


@dataclass(frozen=True)
class Case:
    id: str
    # The query: a name and type for dnspython, or hand-made bytes.
    qname: str = ""
    qtype: str = "A"
    qclass: str = "IN"
    raw: bytes | None = None
    edns: int = -1  # EDNS version of the query's OPT; -1: no OPT
    payload: int = 1232  # the query's EDNS UDP size, when it has an OPT
    do: bool = False
    rd: bool = True
    cd: bool = False
    tcp: bool = False
    zone: Literal["main", "unloaded", "custom"] = "main"
    forwarding: bool = False
    # The reply.
    outcome: Literal["reply", "drop", "forward"] = "reply"
    rcode: str = "NOERROR"
    opcode: str = "QUERY"
    flags: str = "QR AA RD"
    qdcount: int = 1
    answer: Sequence[str] = ()
    authority: Sequence[str] = ()
    additional: Sequence[str] = ()
    opt: str = ""  # our OPT record as "EDNS<version> <payload>[ DO]"; "" when the reply has none

    def query(self) -> bytes:
        if self.raw is not None:
            return self.raw
        message = dns.message.make_query(
            self.qname,
            self.qtype,
            self.qclass,
            use_edns=self.edns if self.edns >= 0 else False,
            payload=self.payload if self.edns >= 0 else None,
            want_dnssec=self.do,
            id=0x2B67,
        )
        if not self.rd:
            message.flags &= ~dns.flags.RD
        if self.cd:
            message.flags |= dns.flags.CD
        return message.to_wire()

    def udp_limit(self) -> int:
        if self.edns < 0:
            return MIN_UDP_PAYLOAD
        return min(max(self.payload, MIN_UDP_PAYLOAD), SERVER_UDP_PAYLOAD)


def rr(owner: str, rtype: str, rdata: str, ttl: int = 5) -> str:
    return f"{owner} {ttl} IN {rtype} {rdata}"


def svc(name: str) -> str:
    """``"web.prod"`` → ``"web.prod.svc.clusterset.local."``."""
    return f"{name}.svc.{Z}"


def nodata(id: str, qname: str, qtype: str = "A", **kw: Any) -> Case:
    """RFC 2308 §2.2 / RFC 8020: the name exists, nothing of this type: NOERROR, no answer, SOA."""
    return Case(id, qname, qtype, **{"authority": (SOA,), **kw})


def nxdomain(id: str, qname: str, qtype: str = "A", **kw: Any) -> Case:
    """RFC 2308 §2.1: no such name: NXDOMAIN with the SOA in authority."""
    return Case(id, qname, qtype, **{"rcode": "NXDOMAIN", "authority": (SOA,), **kw})


def refused(id: str, qname: str, qtype: str = "A", **kw: Any) -> Case:
    """Not ours: REFUSED, not authoritative, nothing but the question."""
    return Case(id, qname, qtype, **{"rcode": "REFUSED", "flags": "QR RD", **kw})


def formerr(id: str, raw: bytes) -> Case:
    """RFC 1035 §4.1.1: an unreadable query gets FORMERR, with no question section (as NSD and BIND)."""
    return Case(id, raw=raw, rcode="FORMERR", flags="QR RD", qdcount=0)


WEB_A = rr(svc("web.prod"), "A", "10.0.0.1")
WEB_AAAA = rr(svc("web.prod"), "AAAA", "fd00::1")
DB_TARGETS = [
    (f"10-1-0-11.cls1.{svc('db.prod')}", "A", "10.1.0.11"),
    (f"db-0.cls1.{svc('db.prod')}", "A", "10.1.0.10"),
    (f"db-0.east.aws.{svc('db.prod')}", "A", "10.2.0.10"),
    (f"db-1.east.aws.{svc('db.prod')}", "AAAA", "fd00::10"),
]
DB_ADDITIONAL = tuple(rr(target, rtype, address) for target, rtype, address in DB_TARGETS)
CACHE_TARGETS = [
    (f"fd00--0.cls1.{svc('cache.prod')}", "fd00::"),
    (f"fd00--20.cls1.{svc('cache.prod')}", "fd00::20"),
]
MID_TARGETS = [(f"m{i}.cls1.{svc('mid.prod')}", f"10.6.0.{i}") for i in range(1, MID + 1)]
MID_SRV = tuple(rr(f"_http._tcp.{svc('mid.prod')}", "SRV", f"0 14 80 {t}") for t, _ in MID_TARGETS)
MID_ADDITIONAL = tuple(rr(t, "A", address) for t, address in MID_TARGETS)
BIG_A = tuple(rr(svc("big.prod"), "A", f"10.4.0.{i}") for i in range(1, BIG + 1))
QUESTION_WEB = question(svc("web.prod"))
OPT_RECORD = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, rcode/version/flags 0


def ixfr_query() -> bytes:
    """An IXFR as clients send it, with their SOA in the authority section (RFC 1995 §3)."""
    message = dns.message.make_query(Z, "IXFR", id=0x2B67)
    soa = f"ns.dns.{Z} hostmaster.{Z} 1 7200 1800 86400 5"
    message.authority.append(dns.rrset.from_text(Z, 0, "IN", "SOA", soa))
    return message.to_wire()


def cookie_query() -> bytes:
    """A query with an EDNS cookie option (RFC 7873), as dig sends by default."""
    return option_query((dns.edns.OptionType.COOKIE, b"12345678"))


def option_query(*options: tuple[int, bytes], overrun: bool = False) -> bytes:
    """A query for web.prod whose OPT carries ``options`` (code, data); ``overrun``: the last option claims
    one byte more than the OPT record holds."""
    message = dns.message.make_query(
        svc("web.prod"),
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(code, data) for code, data in options],
        id=0x2B67,
    )
    wire = message.to_wire()
    if overrun:
        length_at = len(wire) - len(options[-1][1]) - 2
        wire = wire[:length_at] + (len(options[-1][1]) + 1).to_bytes(2, "big") + wire[length_at + 2 :]
    return wire


def edns_formerr(id: str, raw: bytes) -> Case:
    """A readable question with an option that breaks its RFC: FORMERR with the question and our OPT."""
    return Case(id, raw=raw, rcode="FORMERR", flags="QR RD", opt="EDNS0 1232")


CASES = [
    # --- <svc>.<ns>.svc.Z A/AAAA, ClusterSetIP: the import's VIPs of that family (spec §2.3.1) ---
    Case("clustersetip-a", svc("web.prod"), "A", answer=(WEB_A,)),
    Case("clustersetip-aaaa", svc("web.prod"), "AAAA", answer=(WEB_AAAA,)),
    Case(
        "clustersetip-a-no-endpoint",
        svc("lonely.prod"),
        "A",
        answer=(rr(svc("lonely.prod"), "A", "10.0.0.2"),),
    ),
    nodata("clustersetip-aaaa-no-v6-vip-nodata", svc("lonely.prod"), "AAAA"),
    # --- <svc>.<ns>.svc.Z A/AAAA, Headless: every ready endpoint of every cluster (spec §2.4.1) ---
    Case(
        "headless-a-every-ready-endpoint",
        svc("db.prod"),
        "A",
        answer=tuple(rr(svc("db.prod"), "A", ip) for ip in ("10.1.0.10", "10.1.0.11", "10.2.0.10")),
    ),
    Case("headless-aaaa", svc("db.prod"), "AAAA", answer=(rr(svc("db.prod"), "AAAA", "fd00::10"),)),
    Case(
        "headless-a-cluster-id-of-three-labels-still-counts",
        svc("cache.prod"),
        "A",
        answer=(rr(svc("cache.prod"), "A", "10.5.0.1"),),
    ),
    nxdomain("headless-none-ready-nxdomain", svc("empty.quiet"), "A"),
    nxdomain("headless-none-ready-aaaa-nxdomain", svc("empty.quiet"), "AAAA"),
    nxdomain("headless-none-ready-srv-nxdomain", f"_http._tcp.{svc('empty.quiet')}", "SRV"),
    nxdomain("headless-none-ready-its-namespace-is-gone", f"quiet.svc.{Z}", "A"),
    # --- _<port>._<proto>.<svc>.<ns>.svc.Z SRV (spec §2.3.2, §2.4.2), addresses in Additional ---
    Case(
        "clustersetip-srv-tcp",
        f"_http._tcp.{svc('web.prod')}",
        "SRV",
        answer=(rr(f"_http._tcp.{svc('web.prod')}", "SRV", f"0 100 80 {svc('web.prod')}"),),
        additional=(WEB_A, WEB_AAAA),
    ),
    Case(
        "clustersetip-srv-udp",
        f"_dns._udp.{svc('web.prod')}",
        "SRV",
        answer=(rr(f"_dns._udp.{svc('web.prod')}", "SRV", f"0 100 53 {svc('web.prod')}"),),
        additional=(WEB_A, WEB_AAAA),
    ),
    Case(
        "clustersetip-srv-no-endpoint",
        f"_grpc._tcp.{svc('lonely.prod')}",
        "SRV",
        answer=(rr(f"_grpc._tcp.{svc('lonely.prod')}", "SRV", f"0 100 8443 {svc('lonely.prod')}"),),
        additional=(rr(svc("lonely.prod"), "A", "10.0.0.2"),),
    ),
    nxdomain("srv-wrong-protocol-nxdomain", f"_http._udp.{svc('web.prod')}", "SRV"),
    nxdomain("srv-unknown-port-nxdomain", f"_nope._tcp.{svc('web.prod')}", "SRV"),
    Case(
        "headless-srv-one-per-ready-endpoint",
        f"_pg._tcp.{svc('db.prod')}",
        "SRV",
        answer=tuple(rr(f"_pg._tcp.{svc('db.prod')}", "SRV", f"0 25 5432 {t}") for t, _, _ in DB_TARGETS),
        additional=DB_ADDITIONAL,
    ),
    Case(
        # DESIGN.md: headless SRV ports come from the EndpointSlice (16379), not the import (6379).
        "headless-srv-port-from-the-endpointslice",
        f"_redis._tcp.{svc('cache.prod')}",
        "SRV",
        answer=tuple(
            rr(f"_redis._tcp.{svc('cache.prod')}", "SRV", f"0 50 16379 {t}") for t, _ in CACHE_TARGETS
        ),
        additional=tuple(rr(t, "AAAA", address) for t, address in CACHE_TARGETS),
    ),
    # --- <svc>.<ns>.svc.Z SRV: the union over named ports; weights ⌊100/N⌋ ---
    Case(
        "clustersetip-srv-bare-name-union-of-named-ports",
        svc("web.prod"),
        "SRV",
        answer=(
            rr(svc("web.prod"), "SRV", f"0 50 53 {svc('web.prod')}"),
            rr(svc("web.prod"), "SRV", f"0 50 80 {svc('web.prod')}"),
        ),
        additional=(WEB_A, WEB_AAAA),
    ),
    Case(
        "headless-srv-bare-name-union",
        svc("db.prod"),
        "SRV",
        answer=tuple(rr(svc("db.prod"), "SRV", f"0 25 5432 {t}") for t, _, _ in DB_TARGETS),
        additional=DB_ADDITIONAL,
    ),
    nodata("unnamed-ports-have-no-srv-nodata", svc("metrics.prod"), "SRV"),
    # --- <hostname>.<clusterid>.<svc>.<ns>.svc.Z A/AAAA (spec §2.4.1) ---
    Case(
        "endpoint-hostname-a",
        f"db-0.cls1.{svc('db.prod')}",
        answer=(rr(f"db-0.cls1.{svc('db.prod')}", "A", "10.1.0.10"),),
    ),
    Case(
        "endpoint-hostname-falls-back-to-dashed-ip",
        f"10-1-0-11.cls1.{svc('db.prod')}",
        answer=(rr(f"10-1-0-11.cls1.{svc('db.prod')}", "A", "10.1.0.11"),),
    ),
    Case(
        "endpoint-two-label-cluster-id",
        f"db-0.east.aws.{svc('db.prod')}",
        answer=(rr(f"db-0.east.aws.{svc('db.prod')}", "A", "10.2.0.10"),),
    ),
    Case(
        "endpoint-aaaa",
        f"db-1.east.aws.{svc('db.prod')}",
        "AAAA",
        answer=(rr(f"db-1.east.aws.{svc('db.prod')}", "AAAA", "fd00::10"),),
    ),
    Case(
        "endpoint-ipv6-dashed-fallback",
        f"fd00--20.cls1.{svc('cache.prod')}",
        "AAAA",
        answer=(rr(f"fd00--20.cls1.{svc('cache.prod')}", "AAAA", "fd00::20"),),
    ),
    Case(
        # An invalid hostname falls back too; a trailing "-" (from "::") gets a "0", as CoreDNS does.
        "endpoint-invalid-hostname-falls-back-trailing-zero",
        f"fd00--0.cls1.{svc('cache.prod')}",
        "AAAA",
        answer=(rr(f"fd00--0.cls1.{svc('cache.prod')}", "AAAA", "fd00::"),),
    ),
    Case(
        "endpoint-case-insensitive",
        f"DB-0.CLS1.{svc('db.prod')}",
        answer=(rr(f"DB-0.CLS1.{svc('db.prod')}", "A", "10.1.0.10"),),
    ),
    nodata("endpoint-other-family-nodata", f"db-0.cls1.{svc('db.prod')}", "AAAA"),
    nxdomain("endpoint-not-ready-nxdomain", f"db-2.cls1.{svc('db.prod')}"),
    nxdomain("endpoint-of-three-label-cluster-id-has-no-name", f"c-9.a.b.c.{svc('cache.prod')}"),
    nxdomain("no-per-endpoint-names-under-clustersetip", f"10-9-0-1.cls1.{svc('web.prod')}"),
    # --- dns-version.Z TXT (spec §2.2) ---
    Case(
        "dns-version-txt",
        f"dns-version.{Z}",
        "TXT",
        answer=(rr(f"dns-version.{Z}", "TXT", '"1.0.0"', 28800),),
    ),
    Case(
        "dns-version-txt-as-coredns",
        "dns-version.mcs.example.",
        "TXT",
        zone="custom",
        answer=(rr("dns-version.mcs.example.", "TXT", '"1.1.0"', 28800),),
    ),
    nodata("dns-version-a-nodata", f"dns-version.{Z}", "A"),
    # --- Z SOA / NS ---
    Case("apex-soa", Z, "SOA", answer=(SOA,)),
    Case("apex-ns", Z, "NS", answer=(rr(Z, "NS", f"ns.dns.{Z}"),)),
    nodata("apex-a-nodata", Z, "A"),
    nodata("ns-target-exists-without-address-nodata", f"ns.dns.{Z}", "A"),
    Case(
        "custom-zone-and-ttl",
        "web.prod.svc.mcs.example.",
        zone="custom",
        answer=(rr("web.prod.svc.mcs.example.", "A", "10.0.0.1", 30),),
    ),
    Case(
        "custom-zone-apex-soa",
        "mcs.example.",
        "SOA",
        zone="custom",
        answer=(
            rr("mcs.example.", "SOA", "ns.dns.mcs.example. hostmaster.mcs.example. 7 7200 1800 86400 30", 30),
        ),
    ),
    refused("custom-zone-refuses-clusterset-local", svc("web.prod"), zone="custom"),
    # --- an existing name with another type, or an empty non-terminal: NODATA + SOA (RFC 2308, 8020) ---
    nodata("existing-name-txt-nodata", svc("web.prod"), "TXT"),
    nodata("existing-name-mx-nodata", svc("web.prod"), "MX"),
    nodata("srv-name-a-nodata", f"_http._tcp.{svc('web.prod')}", "A"),
    nodata("ent-svc", f"svc.{Z}"),
    nodata("ent-namespace", f"prod.svc.{Z}"),
    nodata("ent-proto", f"_tcp.{svc('web.prod')}", "SRV"),
    nodata("ent-cluster-id", f"cls1.{svc('db.prod')}"),
    nodata("ent-two-label-cluster-id", f"east.aws.{svc('db.prod')}"),
    nodata("ent-second-label-of-cluster-id", f"aws.{svc('db.prod')}"),
    nodata("ent-parent-of-ns-target", f"dns.{Z}"),
    # --- any other name in Z: NXDOMAIN + SOA (RFC 2308 §2.1) ---
    nxdomain("unknown-service", svc("nope.prod")),
    nxdomain("unknown-namespace", svc("web.nope")),
    nxdomain("nothing-under-clustersetip", f"x.{svc('web.prod')}"),
    nxdomain("no-cluster-name-under-clustersetip", f"cls1.{svc('web.prod')}"),
    nxdomain("star-is-a-literal-label", svc("*.prod")),
    nxdomain("no-pod-names", f"pod.{Z}"),
    nxdomain("unknown-name-srv", svc("nope.prod"), "SRV"),
    # --- outside Z (and PTR): REFUSED, or forwarded when that is on ---
    refused("outside-zone-refused", "example.com."),
    refused("parent-of-zone-refused", "local.", "SOA"),
    refused("label-boundary-refused", "notclusterset.local."),
    refused("ptr-reverse-name-refused", "1.0.0.10.in-addr.arpa.", "PTR"),
    # README's table lists PTR with "outside Z: REFUSED" and Troubleshooting says "a PTR query" is refused;
    # the product refuses PTR only because reverse names are outside the zone: a PTR for an in-zone name is
    # answered like any other type (NODATA here). Written as the product behaves.
    nodata("ptr-for-an-in-zone-name-is-nodata-not-refused", svc("web.prod"), "PTR"),
    refused("class-chaos-refused", "version.bind.", "TXT", qclass="CH"),
    refused("class-chaos-in-zone-refused", svc("web.prod"), qclass="CH"),
    Case("class-any-answers-class-in", svc("web.prod"), qclass="ANY", answer=(WEB_A,)),  # RFC 1035 §3.2.5
    Case("outside-zone-forwarded", "example.com.", forwarding=True, outcome="forward"),
    Case("ptr-forwarded", "1.0.0.10.in-addr.arpa.", "PTR", forwarding=True, outcome="forward"),
    Case("in-zone-not-forwarded", svc("web.prod"), forwarding=True, answer=(WEB_A,)),
    # --- ANY: one RRset (RFC 8482 §4.1), the preferred type's answer without Additional ---
    Case("any-clustersetip-a-only", svc("web.prod"), "ANY", answer=(WEB_A,)),
    Case(
        "any-headless-a-only",
        svc("db.prod"),
        "ANY",
        answer=tuple(rr(svc("db.prod"), "A", ip) for ip in ("10.1.0.10", "10.1.0.11", "10.2.0.10")),
    ),
    Case(
        "any-srv-name-without-additional",
        f"_http._tcp.{svc('web.prod')}",
        "ANY",
        answer=(rr(f"_http._tcp.{svc('web.prod')}", "SRV", f"0 100 80 {svc('web.prod')}"),),
    ),
    Case("any-apex-soa", Z, "ANY", answer=(SOA,)),
    Case(
        "any-dns-version-txt",
        f"dns-version.{Z}",
        "ANY",
        answer=(rr(f"dns-version.{Z}", "TXT", '"1.0.0"', 28800),),
    ),
    nodata("any-empty-non-terminal-nodata", f"prod.svc.{Z}", "ANY"),
    nxdomain("any-unknown-nxdomain", svc("nope.prod"), "ANY"),
    refused("any-outside-refused", "example.com.", "ANY"),
    # --- zone transfers are refused ---
    refused("axfr-refused", Z, "AXFR", tcp=True),
    refused("axfr-over-udp-refused", Z, "AXFR"),
    refused("axfr-of-a-service-refused", svc("web.prod"), "AXFR", tcp=True),
    refused("axfr-of-an-unknown-name-refused", svc("nope.prod"), "AXFR", tcp=True),
    refused("ixfr-refused", Z, "IXFR", tcp=True),
    Case("ixfr-with-soa-in-authority-refused", raw=ixfr_query(), tcp=True, rcode="REFUSED", flags="QR RD"),
    # --- opcode other than QUERY: NOTIMP, the opcode and question echoed, no OPT ---
    Case(
        "opcode-iquery-notimp",
        raw=header(flags=0x0900) + QUESTION_WEB,
        rcode="NOTIMP",
        opcode="IQUERY",
        flags="QR RD",
    ),
    Case(
        "opcode-status-notimp",
        raw=header(flags=0x1100) + QUESTION_WEB,
        rcode="NOTIMP",
        opcode="STATUS",
        flags="QR RD",
    ),
    Case(
        "opcode-notify-notimp",
        raw=header(flags=0x2000) + QUESTION_WEB,
        rcode="NOTIMP",
        opcode="NOTIFY",
        flags="QR",
    ),
    Case(
        "opcode-update-notimp",
        raw=header(flags=0x2800) + question(Z, 6),
        rcode="NOTIMP",
        opcode="UPDATE",
        flags="QR",
    ),
    Case(
        # RFC 6891 §7: a query with an OPT gets an OPT in the reply, NOTIMP included.
        "opcode-notimp-with-edns-has-opt",
        raw=header(flags=0x2000, ar=1) + QUESTION_WEB + OPT_RECORD,
        rcode="NOTIMP",
        opcode="NOTIFY",
        flags="QR",
        opt="EDNS0 1232",
    ),
    Case(
        "opcode-notimp-with-qdcount-0",
        raw=header(flags=0x2000, qd=0),
        rcode="NOTIMP",
        opcode="NOTIFY",
        flags="QR",
        qdcount=0,
    ),
    # --- malformed: FORMERR without a question; too short or a response: dropped ---
    formerr("qdcount-0", header(qd=0)),
    formerr("qdcount-2", header(qd=2) + QUESTION_WEB * 2),
    formerr("compression-pointer-loop-in-question", header() + b"\xc0\x0c\x00\x01\x00\x01"),
    formerr("compression-pointer-in-question", header() + b"\x03web\xc0\x0c\x00\x01\x00\x01"),
    formerr("label-type-0x40", header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),
    formerr("label-type-0x80", header() + b"\x83web\x00\x00\x01\x00\x01"),
    formerr("question-cut-short", header() + b"\x03web\x04pr"),
    formerr("no-qclass", header() + b"\x03web\x00\x00"),
    formerr("name-over-255-octets", header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01"),
    formerr("opt-cut-short", header(ar=1) + QUESTION_WEB + b"\x00\x00\x29\x04"),
    formerr("two-opt-records", header(ar=2) + QUESTION_WEB + OPT_RECORD * 2),
    formerr("opt-owner-not-root", header(ar=1) + QUESTION_WEB + b"\x01x" + OPT_RECORD[1:]),
    formerr("answer-record-cut-short", header(an=1) + QUESTION_WEB + b"\xc0\x0c\x00\x01"),
    Case("empty-packet-dropped", raw=b"", outcome="drop"),
    Case("shorter-than-a-header-dropped", raw=header()[:11], outcome="drop"),
    Case("qr-set-dropped", raw=header(flags=0x8100) + QUESTION_WEB, outcome="drop"),
    Case("qr-set-over-tcp-dropped", raw=header(flags=0x8100) + QUESTION_WEB, tcp=True, outcome="drop"),
    # --- before the zone has loaded once: SERVFAIL in the zone, outside still REFUSED ---
    Case("unloaded-servfail", svc("web.prod"), zone="unloaded", rcode="SERVFAIL", flags="QR RD"),
    Case(
        "unloaded-unknown-name-servfail", svc("nope.prod"), zone="unloaded", rcode="SERVFAIL", flags="QR RD"
    ),
    Case("unloaded-apex-soa-servfail", Z, "SOA", zone="unloaded", rcode="SERVFAIL", flags="QR RD"),
    # The ladder checks "loaded" before "zone transfer", so AXFR is SERVFAIL, not REFUSED, until then.
    Case("unloaded-axfr-servfail", Z, "AXFR", tcp=True, zone="unloaded", rcode="SERVFAIL", flags="QR RD"),
    Case(
        "unloaded-servfail-with-edns",
        svc("web.prod"),
        edns=0,
        zone="unloaded",
        rcode="SERVFAIL",
        flags="QR RD",
        opt="EDNS0 1232",
    ),
    refused("unloaded-outside-refused", "example.com.", zone="unloaded"),
    Case("unloaded-outside-forwarded", "example.com.", zone="unloaded", forwarding=True, outcome="forward"),
    # --- 0x20: the question is copied byte for byte; owners point at it, so they keep its case ---
    Case(
        "0x20-a", "wEb.PrOd.SvC.ClUsTeRsEt.LoCaL.", answer=("wEb.PrOd.SvC.ClUsTeRsEt.LoCaL. 5 IN A 10.0.0.1",)
    ),
    Case(
        "0x20-srv-additional-owners-point-into-the-question",
        "_HtTp._TcP.wEb.PrOd.SvC.ClUsTeRsEt.LoCaL.",
        "SRV",
        answer=(f"_HtTp._TcP.wEb.PrOd.SvC.ClUsTeRsEt.LoCaL. 5 IN SRV 0 100 80 {svc('web.prod')}",),
        # The target is written whole in the zone's case (RFC 2782: not compressed), but it is also a suffix
        # of the question, and the Additional owners point at that earlier copy: the client's case.
        additional=(
            "wEb.PrOd.SvC.ClUsTeRsEt.LoCaL. 5 IN A 10.0.0.1",
            "wEb.PrOd.SvC.ClUsTeRsEt.LoCaL. 5 IN AAAA fd00::1",
        ),
    ),
    Case(
        # RFC 2308 §3: the SOA owner (and the apex in MNAME/RNAME) point into the question.
        "0x20-nxdomain-soa-points-into-the-question",
        "NoPe.PrOd.SvC.ClUsTeRsEt.LoCaL.",
        rcode="NXDOMAIN",
        authority=(
            "ClUsTeRsEt.LoCaL. 5 IN SOA ns.dns.ClUsTeRsEt.LoCaL. hostmaster.ClUsTeRsEt.LoCaL."
            f" {SERIAL} 7200 1800 86400 5",
        ),
    ),
    Case(
        "0x20-apex-ns",
        "ClUsTeRsEt.LoCaL.",
        "NS",
        answer=("ClUsTeRsEt.LoCaL. 5 IN NS ns.dns.ClUsTeRsEt.LoCaL.",),
    ),
    refused("0x20-refused", "ExAmPlE.CoM."),
    # --- RD and CD are copied (RFC 1035 §4.1.1, RFC 6840 §5.9); RA is never set ---
    Case("rd-clear-stays-clear", svc("web.prod"), rd=False, flags="QR AA", answer=(WEB_A,)),
    Case("cd-copied", svc("web.prod"), cd=True, flags="QR AA RD CD", answer=(WEB_A,)),
    nxdomain("rd-clear-on-nxdomain", svc("nope.prod"), rd=False, flags="QR AA"),
    refused("rd-clear-on-refused", "example.com.", rd=False, flags="QR"),
    # --- EDNS0 (RFC 6891): our OPT with 1232, DO copied (RFC 3225), BADVERS for version ≠ 0 ---
    Case(
        "edns-payload-4096-answered-with-1232",
        svc("web.prod"),
        edns=0,
        payload=4096,
        answer=(WEB_A,),
        opt="EDNS0 1232",
    ),
    Case("edns-do-copied", svc("web.prod"), edns=0, do=True, answer=(WEB_A,), opt="EDNS0 1232 DO"),
    Case("edns-cookie-option-not-echoed", raw=cookie_query(), answer=(WEB_A,), opt="EDNS0 1232"),
    # Options are checked against their RFCs (RFC 6891 §6.1.2); unknown ones are ignored.
    Case(
        "edns-cookie-with-server-cookie", raw=option_query((10, b"c" * 24)), answer=(WEB_A,), opt="EDNS0 1232"
    ),
    edns_formerr("edns-cookie-3-bytes-formerr", option_query((10, b"abc"))),  # RFC 7873 §5.2.2
    edns_formerr("edns-cookie-12-bytes-formerr", option_query((10, b"c" * 12))),
    edns_formerr("edns-cookie-41-bytes-formerr", option_query((10, b"c" * 41))),
    Case(
        "edns-ecs-ok",
        raw=option_query((8, b"\x00\x01\x18\x00\xc0\x00\x02")),
        answer=(WEB_A,),
        opt="EDNS0 1232",
    ),
    edns_formerr("edns-ecs-scope-set-formerr", option_query((8, b"\x00\x01\x18\x08\xc0\x00\x02"))),
    edns_formerr("edns-ecs-address-too-long-formerr", option_query((8, b"\x00\x01\x08\x00\xc0\x00"))),
    edns_formerr("edns-ecs-family-3-formerr", option_query((8, b"\x00\x03\x00\x00"))),
    edns_formerr("edns-keepalive-with-timeout-formerr", option_query((11, b"\x00\x10"))),
    edns_formerr("edns-nsid-with-data-formerr", option_query((3, b"x"))),
    edns_formerr("edns-key-tag-odd-formerr", option_query((14, b"\x01\x02\x03"))),
    edns_formerr("edns-option-overruns-opt-formerr", option_query((10, b"12345678"), overrun=True)),
    Case(
        "edns-unknown-option-ignored",
        raw=option_query((65001, b"anything")),
        answer=(WEB_A,),
        opt="EDNS0 1232",
    ),
    Case("edns-padding-ignored", raw=option_query((12, b"\x00" * 40)), answer=(WEB_A,), opt="EDNS0 1232"),
    nxdomain("edns-on-nxdomain", svc("nope.prod"), edns=0, opt="EDNS0 1232"),
    nodata("edns-on-nodata", svc("web.prod"), "TXT", edns=0, opt="EDNS0 1232"),
    refused("edns-on-refused", "example.com.", edns=0, opt="EDNS0 1232"),
    Case(
        "edns-on-srv-additional",
        f"_http._tcp.{svc('web.prod')}",
        "SRV",
        edns=0,
        answer=(rr(f"_http._tcp.{svc('web.prod')}", "SRV", f"0 100 80 {svc('web.prod')}"),),
        additional=(WEB_A, WEB_AAAA),
        opt="EDNS0 1232",
    ),
    Case("edns-version-1-badvers", svc("web.prod"), edns=1, rcode="BADVERS", flags="QR RD", opt="EDNS0 1232"),
    Case(
        "edns-version-1-badvers-before-refused",
        "example.com.",
        edns=1,
        rcode="BADVERS",
        flags="QR RD",
        opt="EDNS0 1232",
    ),
    Case(
        "edns-version-1-badvers-before-servfail",
        svc("web.prod"),
        edns=1,
        zone="unloaded",
        rcode="BADVERS",
        flags="QR RD",
        opt="EDNS0 1232",
    ),
    # A malformed query's OPT is not read: FORMERR carries none.
    formerr("formerr-with-edns-has-no-opt", header(ar=1) + b"\xc0\x0c\x00\x01\x00\x01" + OPT_RECORD),
    # --- truncation: over the client's UDP size, TC=1 and the question only; whole over TCP ---
    Case("big-a-udp-512-truncated", svc("big.prod"), flags="QR AA TC RD"),
    Case(
        "big-a-udp-edns-4096-capped-at-1232-truncated",
        svc("big.prod"),
        edns=0,
        payload=4096,
        flags="QR AA TC RD",
        opt="EDNS0 1232",
    ),
    Case("big-a-tcp-whole", svc("big.prod"), tcp=True, answer=BIG_A),
    Case("big-a-tcp-whole-with-edns", svc("big.prod"), tcp=True, edns=0, answer=BIG_A, opt="EDNS0 1232"),
    Case(
        "big-srv-tcp-whole-with-additional",
        f"_http._tcp.{svc('big.prod')}",
        "SRV",
        tcp=True,
        answer=tuple(
            rr(f"_http._tcp.{svc('big.prod')}", "SRV", f"0 1 80 big-{i}.cls1.{svc('big.prod')}")
            for i in range(1, BIG + 1)
        ),
        additional=tuple(
            rr(f"big-{i}.cls1.{svc('big.prod')}", "A", f"10.4.0.{i}") for i in range(1, BIG + 1)
        ),
    ),
    Case("big-any-udp-truncated", svc("big.prod"), "ANY", flags="QR AA TC RD"),
    # RFC 2181 §9: the answer fits 512 octets only without Additional: that is left out, without TC.
    Case("mid-srv-udp-512-additional-left-out", f"_http._tcp.{svc('mid.prod')}", "SRV", answer=MID_SRV),
    Case(
        "mid-srv-udp-edns-1232-whole",
        f"_http._tcp.{svc('mid.prod')}",
        "SRV",
        edns=0,
        answer=MID_SRV,
        additional=MID_ADDITIONAL,
        opt="EDNS0 1232",
    ),
    Case(
        # The client's own EDNS size between 512 and 1232 is the limit: 569 octets + our OPT do not fit 560.
        "mid-srv-udp-edns-560-additional-left-out",
        f"_http._tcp.{svc('mid.prod')}",
        "SRV",
        edns=0,
        payload=560,
        answer=MID_SRV,
        opt="EDNS0 1232",
    ),
    Case(
        "mid-srv-udp-edns-600-whole",
        f"_http._tcp.{svc('mid.prod')}",
        "SRV",
        edns=0,
        payload=600,
        answer=MID_SRV,
        additional=MID_ADDITIONAL,
        opt="EDNS0 1232",
    ),
    Case(
        # RFC 6891 §6.2.5: an EDNS size under 512 counts as 512.
        "mid-srv-udp-edns-100-counts-as-512",
        f"_http._tcp.{svc('mid.prod')}",
        "SRV",
        edns=0,
        payload=100,
        answer=MID_SRV,
        opt="EDNS0 1232",
    ),
    Case(
        "mid-srv-tcp-whole",
        f"_http._tcp.{svc('mid.prod')}",
        "SRV",
        tcp=True,
        answer=MID_SRV,
        additional=MID_ADDITIONAL,
    ),
]


def opt_text(reply: dns.message.Message) -> str:
    if reply.edns < 0:
        return ""
    assert not reply.options, "our OPT carries no options"
    do = " DO" if reply.ednsflags & dns.flags.DO else ""
    return f"EDNS{reply.edns} {reply.payload}{do}"


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_packet(case: Case) -> None:
    cache = ForwardCache(max_entries=10, max_bytes=1 << 20) if case.forwarding else None
    responder = Responder(STORES[case.zone], SETTINGS[case.zone], cache=cache)
    wire = case.query()
    out = responder.respond(wire, TCP if case.tcp else UDP, case.forwarding)
    # The same question again, with another id: the reply to repeated queries (Responder's memo) is the
    # first one's with the new id.
    again = bytes((wire[0] ^ 0x5A, wire[1])) + wire[2:] if len(wire) >= 2 else wire
    out_again = responder.respond(again, TCP if case.tcp else UDP, case.forwarding)
    if case.outcome == "drop":
        assert out is None and out_again is None
        return
    if case.outcome == "forward":
        # Handed to the forwarder with its own bytes, each time (the memo never answers a miss).
        assert isinstance(out, Forward) and out.data == wire
        assert isinstance(out_again, Forward) and out_again.data == again
        assert (out_again.qend, out_again.edns, out_again.key) == (out.qend, out.edns, out.key)
        return
    assert isinstance(out, bytes), out
    assert out[:2] == wire[:2], "the query's id"
    assert isinstance(out_again, bytes) and out_again[:2] == again[:2] and out_again[2:] == out[2:]
    if not case.tcp:
        assert len(out) <= case.udp_limit(), "a UDP reply fits the client's size"
    reply = dns.message.from_wire(out)
    got = {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "opcode": dns.opcode.to_text(reply.opcode()),
        "flags": sorted(dns.flags.to_text(reply.flags).split()),
        "qdcount": len(reply.question),
        "answer": lines(reply.answer),
        "authority": lines(reply.authority),
        "additional": lines(reply.additional),
        "opt": opt_text(reply),
    }
    expected = {
        "rcode": case.rcode,
        "opcode": case.opcode,
        "flags": sorted(case.flags.split()),
        "qdcount": case.qdcount,
        "answer": sorted(case.answer),
        "authority": sorted(case.authority),
        "additional": sorted(case.additional),
        "opt": case.opt,
    }
    assert got == expected
    if case.qdcount:
        end = question_end(wire)
        assert out[12:end] == wire[12:end], "the question is copied byte for byte"


def test_clients_not_allowed_to_forward_are_refused() -> None:
    responder = Responder(
        STORES["main"], SETTINGS["main"], cache=ForwardCache(max_entries=1, max_bytes=1 << 20)
    )
    wire = dns.message.make_query("example.com.", "A").to_wire()
    out = responder.respond(wire, UDP, False)
    assert isinstance(out, bytes) and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED
    assert responder.forward_refused == 1, "counted as a refused forward"
    assert isinstance(responder.respond(wire, UDP, True), Forward)


def test_repeated_queries_are_answered_from_the_current_snapshot_and_counted_each_time() -> None:
    store = publish([Svc("web.prod", "ClusterSetIP", ips=["10.0.0.1"])], ZoneSettings(), serial=1)
    responder = Responder(store, ZoneSettings())
    wire = dns.message.make_query("Web.Prod.svc.clusterset.local.", "A").to_wire()
    first = responder.respond(wire, UDP)
    assert isinstance(first, bytes) and lines(dns.message.from_wire(first).answer) == [
        "Web.Prod.svc.clusterset.local. 5 IN A 10.0.0.1"
    ]
    for _ in range(3):
        assert responder.respond(wire, UDP) == first
    assert sum(responder.udp.values()) == 4, "a repeated query is counted like any other"
    moved = publish([Svc("web.prod", "ClusterSetIP", ips=["10.0.0.2"])], ZoneSettings(), serial=2)
    assert moved.current is not None
    store.publish(moved.current)
    after = responder.respond(wire, UDP)
    assert isinstance(after, bytes) and lines(dns.message.from_wire(after).answer) == [
        "Web.Prod.svc.clusterset.local. 5 IN A 10.0.0.2"
    ], "a publish replaces what was answered before it"
    other_case = dns.message.make_query("WEB.prod.svc.clusterset.local.", "A").to_wire()
    reply = responder.respond(other_case, UDP)
    assert isinstance(reply, bytes) and reply[12:46] == other_case[12:46], "0x20: each query's own case"


def test_queries_that_never_repeat_are_answered_right_and_the_memo_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that randomises the case of every query (0x20, as Unbound's use-caps-for-id) never asks in
    # the same bytes twice: the memo fills, earns nothing, pauses, and must neither grow nor answer wrong.
    monkeypatch.setattr(responder_module, "MEMO_ENTRIES", 8)
    monkeypatch.setattr(responder_module, "MEMO_PAUSE", 20)
    store = publish([Svc("web.prod", "ClusterSetIP", ips=["10.0.0.1"])], ZoneSettings(), serial=1)
    responder = Responder(store, ZoneSettings())
    name = "web.prod.svc.clusterset.local."
    sizes = []
    for i in range(200):
        mixed = "".join(c.upper() if i >> (n % 8) & 1 else c for n, c in enumerate(name))  # 256 cases
        wire = dns.message.make_query(mixed, "A").to_wire()
        reply = responder.respond(wire, UDP)
        assert isinstance(reply, bytes) and reply[12 : len(wire)] == wire[12:], "0x20: the query's own case"
        assert lines(dns.message.from_wire(reply).answer) == [f"{mixed} 5 IN A 10.0.0.1"]
        sizes.append(len(responder._memo))
    assert max(sizes) <= 8
    assert sizes.count(0) >= 20, "a fill with no hits pauses the memo"
    repeated = dns.message.make_query(name, "A").to_wire()
    for _ in range(40):  # after the pause a query asked again is memoised again
        assert responder.respond(repeated, UDP) == responder.respond(repeated, UDP)
    assert repeated[2:] in responder._memo


def test_a_repeated_forwarded_hit_ages_is_refreshed_and_is_only_for_clients_that_may_forward() -> None:
    clock = Clock()
    cache = ForwardCache(max_entries=10, max_bytes=1 << 20, clock=clock)
    responder = Responder(STORES["main"], SETTINGS["main"], cache=cache)
    wire = dns.message.make_query("www.example.com.", "A").to_wire()
    forwarded = responder.respond(wire, UDP, True)
    assert isinstance(forwarded, Forward)

    def upstream_says(address: str, ttl: int) -> None:
        message = dns.message.make_response(dns.message.from_wire(wire))
        message.answer.append(dns.rrset.from_text("www.example.com.", ttl, "IN", "A", address))
        upstream = message.to_wire()
        cache.store(entry_from_reply(forwarded.key, upstream, scan_reply(upstream), clock.now))

    def answered() -> list[str]:
        reply = responder.respond(wire, UDP, True)
        assert isinstance(reply, bytes) and reply[:2] == wire[:2]
        return lines(dns.message.from_wire(reply).answer)

    upstream_says("192.0.2.1", 300)
    for _ in range(3):  # the same bytes again and again: each a hit, counted by the cache
        assert answered() == ["www.example.com. 300 IN A 192.0.2.1"]
    assert cache.hits == 3
    clock.now += 1.5
    assert answered() == ["www.example.com. 299 IN A 192.0.2.1"], "RFC 1035 §6.1.3: aged while cached"
    assert answered() == ["www.example.com. 299 IN A 192.0.2.1"]
    upstream_says("192.0.2.2", 300)  # a refresh (prefetch) replaces the entry
    assert answered() == ["www.example.com. 300 IN A 192.0.2.2"]
    refused = responder.respond(wire, UDP, False)
    assert isinstance(refused, bytes) and dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    clock.now += 300
    assert isinstance(responder.respond(wire, UDP, True), Forward), "expired: a miss again"
    assert cache.hits == 6

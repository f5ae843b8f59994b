"""Fuzz target: the DNS packet path, from the bytes a client or an upstream sends to the bytes we answer.

One control byte, then a DNS message. Bit 4 of the control byte picks what the message is:

- a query (bit 4 clear): ``wire.parse_question`` and ``wire.parse_edns`` on it directly (they may raise
  ``wire.Malformed`` and nothing else), then ``Responder.respond(message, UDP or TCP, forward)`` over a
  built zone, which must never raise. Bit 0 picks TCP, bit 1 lets the client forward, bits 2-3 the
  responder: the zone alone, the zone with a forwarding cache (example.com A cached), a zone that has not
  loaded yet, that with a cache. A reply must be read by dnspython, carry the query's id and question and
  fit the client's UDP size; a ``Forward`` must carry
  what the forwarder reads from the packet.
- an upstream reply (bit 4 set), as the forwarding cache takes one: ``wire.scan_reply`` (``Malformed``
  only), then the checks ``Forwarder._accept`` makes, ``cache.entry_from_reply``, and the entry answered to
  a client asking the same question (bit 5: with EDNS, bit 6: DO, bit 7: the name in other case; bit 0:
  TCP) fresh, aged, stale and through ``respond``. Those replies must carry the client's id and question;
  when dnspython reads the upstream reply, it must read ours too, with the same answer and authority.

    .venv/bin/python fuzz/packet.py -max_total_time=600 fuzz/work/packet fuzz/corpus/packet
"""

from __future__ import annotations

import contextlib
import struct
import sys

import atheris
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

# Coverage comes from mcsdns only (dnspython is the oracle), and only when run as the fuzzer.
with atheris.instrument_imports(include=["mcsdns"]) if __name__ == "__main__" else contextlib.nullcontext():
    from mcsdns.dns.cache import ForwardCache, cache_key, entry_from_reply
    from mcsdns.dns.responder import TCP, UDP, Forward, Responder
    from mcsdns.settings import ZoneSettings
    from mcsdns.wire import (
        HEADER_SIZE,
        HEADER_TAIL,
        MIN_UDP_PAYLOAD,
        NO_EDNS,
        SERVER_UDP_PAYLOAD,
        Malformed,
        Rcode,
        parse_edns,
        parse_question,
        scan_reply,
    )
    from mcsdns.zone.build import ZoneBuilder
    from mcsdns.zone.model import (
        ClusterId,
        Endpoint,
        EndpointGroup,
        ImportedService,
        Port,
        ServiceImport,
        ServiceKey,
        ServiceType,
    )
    from mcsdns.zone.store import ZoneStore

Z = "clusterset.local."
NOW = 1000.0
TCP_BIT, FORWARD_BIT, REPLY_BIT, EDNS_BIT, DO_BIT, CASE_BIT = 0x01, 0x02, 0x10, 0x20, 0x40, 0x80


def _zone() -> ZoneStore:
    """A ClusterSetIP service (dual stack, named and unnamed ports), a headless one over a one- and a
    two-label cluster id, one whose SRV answer fits 512 octets only without its Additional section, and one
    with 100 endpoints (too big for UDP)."""
    http, dns_port = Port("http", "TCP", 80), Port("dns", "UDP", 53)
    web = ServiceKey("prod", "web")
    db = ServiceKey("prod", "db")
    big = ServiceKey("prod", "big")
    mid = ServiceKey("prod", "mid")

    def group(key: ServiceKey, cluster: str, *endpoints: tuple[str, str, bool]) -> EndpointGroup:
        return EndpointGroup(
            service=key,
            cluster=ClusterId(cluster),
            ports=(),
            endpoints=tuple(
                Endpoint(cluster=ClusterId(cluster), addresses=(a,), hostname=h, ready=r)
                for a, h, r in endpoints
            ),
        )

    services = {
        web: ImportedService(
            spec=ServiceImport(
                key=web,
                type=ServiceType.CLUSTERSET_IP,
                ips=("10.0.0.1", "fd00::1"),
                ports=(http, dns_port, Port("", "TCP", 9090)),
            )
        ),
        db: ImportedService(
            spec=ServiceImport(key=db, type=ServiceType.HEADLESS, ports=(Port("pg", "TCP", 5432),)),
            groups=(
                group(
                    db, "cls1", ("10.1.0.10", "db-0", True), ("10.1.0.11", "", True), ("10.1.0.12", "", False)
                ),
                group(db, "east.aws", ("fd00::10", "db-1", True)),
            ),
        ),
        mid: ImportedService(
            spec=ServiceImport(key=mid, type=ServiceType.HEADLESS, ports=(http,)),
            groups=(group(mid, "cls1", *((f"10.3.0.{i}", f"mid-{i}", True) for i in range(7))),),
        ),
        big: ImportedService(
            spec=ServiceImport(key=big, type=ServiceType.HEADLESS, ports=(http,)),
            groups=(group(big, "cls1", *((f"10.2.0.{i}", f"h{i}", True) for i in range(100))),),
        ),
    }
    store = ZoneStore()
    store.publish(ZoneBuilder(ZoneSettings()).build(services, serial=1_700_000_000))
    return store


def _upstream_reply(qid: int = 0x4242) -> bytes:
    """What an upstream answers for example.com A: one record, with EDNS."""
    query = dns.message.make_query("example.com.", "A", id=qid, use_edns=0)
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text("example.com.", 300, "IN", "A", "192.0.2.1"))
    return reply.to_wire()


SETTINGS = ZoneSettings()
STORE = _zone()
CACHE = ForwardCache(max_entries=16, max_bytes=1 << 20, stale_for=60, clock=lambda: NOW)
_cached = _upstream_reply()
_scan = scan_reply(_cached)
_question = _cached[HEADER_SIZE : _scan.qend]
CACHE.store(entry_from_reply(cache_key(_question, _question, 0x0100, NO_EDNS), _cached, _scan, NOW))
RESPONDERS = (
    Responder(STORE, SETTINGS),
    Responder(STORE, SETTINGS, cache=CACHE),
    Responder(ZoneStore(), SETTINGS),
    Responder(ZoneStore(), SETTINGS, cache=CACHE),
)


def one_input(data: bytes) -> None:
    if not data:
        return
    control, message = data[0], data[1:]
    if control & REPLY_BIT:
        _upstream(control, message)
    else:
        _query(control, message)


def _query(control: int, message: bytes) -> None:
    try:
        qend = parse_question(message)
    except Malformed:
        pass
    else:
        assert HEADER_SIZE + 5 <= qend <= len(message), qend
        try:
            edns = parse_edns(message, qend)
        except Malformed:
            pass
        else:
            assert edns == NO_EDNS or edns >> 32 >= MIN_UDP_PAYLOAD, edns

    responder = RESPONDERS[control >> 2 & 3]
    limit = TCP if control & TCP_BIT else UDP
    forward = bool(control & FORWARD_BIT)
    reply = responder.respond(message, limit, forward)
    if reply is None:
        assert len(message) < HEADER_SIZE or message[2] & 0x80, "dropped a query"
    elif isinstance(reply, Forward):
        assert forward and responder._cache is not None, "forwarded without forwarding"
        _forwarded(message, reply)
    else:
        assert isinstance(reply, bytes)
        _check_reply(message, reply, limit)
    servfail = responder.servfail(message)
    if servfail is not None:
        _check_reply(message, servfail, TCP)


def _forwarded(query: bytes, forward: Forward) -> None:
    """A query handed to the forwarder: what it would read from the packet (``Malformed`` only), and what
    the responder says it read."""
    qend = parse_question(query)  # the responder read it: it cannot be malformed now
    edns = parse_edns(query, qend) if query[6:12] != b"\x00\x00\x00\x00\x00\x00" else NO_EDNS
    question = query[HEADER_SIZE:qend]
    key = cache_key(question.lower(), question, query[2] << 8 | query[3], edns)
    read = {"qend": qend, "edns": edns, "key": key}
    for field, value in read.items():  # the fields a Forward carries
        if hasattr(forward, field):
            assert getattr(forward, field) == value, (field, getattr(forward, field), value)


def _check_reply(query: bytes, reply: bytes, limit: int) -> dns.message.Message:
    """Our reply: readable by dnspython, the query's id, its question byte for byte, within the UDP size."""
    # dnspython reads an UPDATE (opcode 5) by RFC 2136's rules (the zone section's type must be SOA), but
    # a NOTIMP reply echoes whatever was asked: read every reply as a QUERY, the opcode checked apart.
    assert reply[2] & 0x78 == query[2] & 0x78, "opcode"
    message = dns.message.from_wire(reply[:2] + bytes((reply[2] & 0x87,)) + reply[3:])
    assert reply[:2] == query[:2], "id"
    assert reply[2] & 0x80, "QR"
    if reply[4:6] == b"\x00\x01":
        qend = parse_question(reply)
        assert reply[HEADER_SIZE:qend] == query[HEADER_SIZE:qend], "question not echoed byte for byte"
    else:
        assert reply[4:6] == b"\x00\x00", "QDCOUNT"
    if limit == UDP:
        most = SERVER_UDP_PAYLOAD if message.opt is not None else MIN_UDP_PAYLOAD
        assert len(reply) <= most, f"{len(reply)} octets over UDP"
    return message


def _upstream(control: int, reply: bytes) -> None:
    minimal = not control & DO_BIT  # as the forwarder scans: minimal unless the client asked for DNSSEC
    try:
        scan = scan_reply(reply, minimal=minimal)
    except Malformed:
        return
    assert HEADER_SIZE < scan.qend <= scan.additional_at <= scan.end <= len(reply), scan
    for offset, ttl in scan.ttls:  # offsets into the records, after the question
        at = scan.qend + offset
        assert scan.qend + 5 <= at and at + 4 <= scan.end and 0 <= ttl < 2**31, (offset, ttl)
    if scan.rcode in (Rcode.SERVFAIL, Rcode.REFUSED) or scan.rcode > 0xF:
        return  # Forwarder._accept: the upstream failed, nothing is cached or answered from it

    question = reply[HEADER_SIZE : scan.qend]
    if control & CASE_BIT:
        question = question[:-4].swapcase() + question[-4:]
    flags = 0x0100  # RD
    edns = NO_EDNS
    opt = b""
    if control & EDNS_BIT:
        do = 0x8000 if control & DO_BIT else 0
        edns = SERVER_UDP_PAYLOAD << 32 | do
        opt = b"\x00" + struct.pack("!HHIH", 41, SERVER_UDP_PAYLOAD, do, 0)
    query = reply[:2] + HEADER_TAIL.pack(flags, 1, 0, 0, 1 if opt else 0) + question + opt
    qend = scan.qend
    key = cache_key(question.lower(), question, flags, edns)

    clock = [NOW]
    cache = ForwardCache(max_entries=4, max_bytes=1 << 20, stale_for=60, clock=lambda: clock[0])
    responder = Responder(STORE, SETTINGS, cache=cache)
    entry = entry_from_reply(key, reply, scan, NOW)
    assert entry.ttl >= 0
    cache.store(entry)
    limit = TCP if control & TCP_BIT else UDP
    upstream = _readable(reply)
    if upstream is not None and minimal and scan.rcode == 0 and scan.counts[0]:
        upstream.authority = []  # a minimal positive answer leaves the authority section out
    _check_relay(query, qend, responder.render_cached(query, qend, entry, edns, limit), limit, upstream)
    clock[0] = NOW + 7
    answered = responder.respond(query, limit, True)
    if isinstance(answered, bytes):  # from the cache, or from the zone when the question is in it
        _check_relay(query, qend, answered, limit, upstream, same_records=False)
    else:
        assert isinstance(answered, Forward), answered
    entry.age_to(7)
    aged = responder.render_cached(query, qend, entry, edns, limit)
    _check_relay(query, qend, aged, limit, upstream)
    stale = responder.render_cached(query, qend, entry.stale(), edns, limit)
    _check_relay(query, qend, stale, limit, upstream)


def _readable(wire: bytes) -> dns.message.Message | None:
    """dnspython's reading of an upstream reply, or None when it refuses it (then only ours is checked)."""
    try:
        return dns.message.from_wire(wire)
    except Exception:
        return None


def _check_relay(
    query: bytes,
    qend: int,
    reply: bytes,
    limit: int,
    upstream: dns.message.Message | None,
    *,
    same_records: bool = True,
) -> None:
    """A cached answer: the client's id and question; when dnspython read the upstream reply, ours is read
    too, with the upstream's answer and authority (TTLs aside) unless it was truncated."""
    assert reply[:2] == query[:2], "id"
    assert reply[4:6] == b"\x00\x01", "QDCOUNT"
    assert reply[HEADER_SIZE:qend] == query[HEADER_SIZE:qend], "question not echoed byte for byte"
    if limit == UDP:
        assert len(reply) <= (SERVER_UDP_PAYLOAD if len(query) > qend else MIN_UDP_PAYLOAD), len(reply)
    if upstream is None:
        return
    ours = _check_reply(query, reply, limit)
    if same_records and not ours.flags & dns.flags.TC:
        assert ours.answer == upstream.answer, (ours.answer, upstream.answer)
        assert ours.authority == upstream.authority, (ours.authority, upstream.authority)


# --- seeds --------------------------------------------------------------------------------------------------


def _wire(
    name: str,
    rdtype: str = "A",
    *,
    edns: int = -1,
    payload: int = 1232,
    do: bool = False,
    options: tuple[dns.edns.Option, ...] = (),
    qid: int = 0x1234,
) -> bytes:
    query = dns.message.make_query(
        name, rdtype, id=qid, use_edns=edns, payload=payload, want_dnssec=do, options=list(options)
    )
    return query.to_wire()


def seeds() -> dict[str, bytes]:
    """The seed corpus (fuzz/corpus/packet/seed-*): queries for every kind of answer, and upstream replies."""
    cookie = dns.edns.GenericOption(10, bytes(range(8)))
    server_cookie = dns.edns.GenericOption(10, bytes(range(24)))
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    ecs6 = dns.edns.ECSOption("2001:db8::", 56)
    nsid = dns.edns.GenericOption(3, b"")
    padding = dns.edns.GenericOption(12, bytes(16))
    web = f"web.prod.svc.{Z}"
    queries = {
        "a": (0x00, _wire(web)),
        "a-0x20": (0x00, _wire(f"wEb.PrOd.SvC.{Z.upper()}")),
        "aaaa-edns": (0x00, _wire(web, "AAAA", edns=0)),
        "srv-do-tcp": (0x01, _wire(f"_http._tcp.{web}", "SRV", edns=0, do=True)),
        "srv-bare": (0x00, _wire(web, "SRV", edns=0)),
        "any": (0x00, _wire(web, "ANY")),
        "headless-srv": (0x00, _wire(f"db.prod.svc.{Z}", "SRV", edns=0, payload=4096)),
        "hostname": (0x00, _wire(f"db-0.cls1.db.prod.svc.{Z}")),
        "two-label-cluster": (0x00, _wire(f"db-1.east.aws.db.prod.svc.{Z}", "AAAA")),
        "srv-without-additional": (0x00, _wire(f"_http._tcp.mid.prod.svc.{Z}", "SRV")),
        "truncated": (0x00, _wire(f"big.prod.svc.{Z}", edns=0, payload=4096)),
        "big-tcp": (0x01, _wire(f"big.prod.svc.{Z}")),
        "soa": (0x00, _wire(Z, "SOA")),
        "ns": (0x00, _wire(Z, "NS")),
        "txt": (0x00, _wire(f"dns-version.{Z}", "TXT")),
        "nxdomain": (0x00, _wire(f"nope.prod.svc.{Z}", edns=0)),
        "nodata": (0x00, _wire(f"prod.svc.{Z}", "A")),
        "axfr": (0x01, _wire(Z, "AXFR")),
        "cookie": (0x00, _wire(web, edns=0, options=(cookie,))),
        "server-cookie": (0x00, _wire(web, edns=0, options=(server_cookie,))),
        "ecs": (0x00, _wire(web, edns=0, options=(ecs, nsid))),
        "ecs6-padding": (0x00, _wire(web, "AAAA", edns=0, options=(ecs6, padding))),
        "badvers": (0x00, _wire(web, edns=1)),
        "refused": (0x00, _wire("example.org.")),
        "forward-miss": (0x06, _wire("example.org.", edns=0, options=(cookie,))),
        "forward-hit": (0x06, _wire("EXAMPLE.com.")),
        "forward-hit-do": (0x07, _wire("example.com.", edns=0, do=True)),
        "ptr": (0x06, _wire("1.0.0.10.in-addr.arpa.", "PTR")),
        "not-loaded": (0x08, _wire(web, edns=0)),
        "not-loaded-outside": (0x0E, _wire("example.com.")),
    }
    out = {name: bytes((control,)) + wire for name, (control, wire) in queries.items()}
    # Packets dnspython will not make: other opcodes, QCLASS *, two questions, an OPT in the answer section.
    plain = _wire(web)
    out["notify"] = b"\x00" + plain[:2] + b"\x20\x00" + plain[4:]
    out["qclass-any"] = b"\x00" + plain[:-2] + b"\x00\xff"
    out["two-questions"] = b"\x00" + plain[:4] + b"\x00\x02" + plain[6:] + plain[HEADER_SIZE:]
    with_opt = _wire(web, edns=0)
    out["opt-in-answer"] = b"\x00" + with_opt[:6] + b"\x00\x01\x00\x00\x00\x00" + with_opt[12:]

    # Upstream replies: an answer, a CNAME chain with compression, NXDOMAIN with its SOA, NODATA, a
    # referral with glue, truncated, and a SERVFAIL (not cached).
    def reply(
        name: str, rdtype: str, *records: tuple[str, int, str, str], section: str = "answer", rcode: int = 0
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, id=0x5151, use_edns=0)
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        for owner, ttl, kind, text in records:
            getattr(response, section).append(dns.rrset.from_text(owner, ttl, "IN", kind, text))
        return response

    soa = ("example.com.", 900, "SOA", "ns1.example.com. admin.example.com. 1 7200 900 1209600 300")
    replies = {
        "reply-a": reply("example.com.", "A", ("example.com.", 300, "A", "192.0.2.1")),
        "reply-cname": reply(
            "www.example.com.",
            "A",
            ("www.example.com.", 60, "CNAME", "cdn.example.net."),
            ("cdn.example.net.", 20, "A", "198.51.100.7"),
        ),
        "reply-nxdomain": reply("nope.example.com.", "A", soa, section="authority", rcode=3),
        "reply-nodata": reply("example.com.", "AAAA", soa, section="authority"),
        "reply-mx-glue": reply("example.com.", "MX", ("example.com.", 3600, "MX", "10 mail.example.com.")),
        "reply-servfail": reply("example.com.", "A", rcode=2),
    }
    glue = replies["reply-mx-glue"]
    glue.additional.append(dns.rrset.from_text("mail.example.com.", 3600, "IN", "A", "192.0.2.25"))
    for name, message in replies.items():
        out[name] = bytes((REPLY_BIT | EDNS_BIT,)) + message.to_wire()
    truncated = replies["reply-a"]
    truncated.flags |= dns.flags.TC
    out["reply-tc-case-do"] = bytes((REPLY_BIT | EDNS_BIT | DO_BIT | CASE_BIT,)) + truncated.to_wire()
    out["reply-a-tcp-no-edns"] = bytes((REPLY_BIT | TCP_BIT,)) + _upstream_reply()
    return out


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

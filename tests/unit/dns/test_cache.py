"""The forwarding cache on its own: reading upstream replies (``wire.scan_reply``), TTLs per RFC 2308, and
staying inside its entry and byte limits while keeping what is hit (CLOCK)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from mcsdns.dns.cache import STALE_TTL, ForwardCache, cache_key, entry_from_reply, split_key
from mcsdns.wire import CD, HEADER_SIZE, NO_EDNS, Malformed, parse_question, scan_reply


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reply(
    name: str = "a.example.",
    *,
    ttl: int = 300,
    rcode: int = 0,
    soa: tuple[int, int] | None = None,
    extra: bool = False,
    ns: bool = False,
    edns: bool = True,
) -> bytes:
    query = dns.message.make_query(name, "A", use_edns=0 if edns else False)
    message = dns.message.make_response(query)
    message.set_rcode(rcode)
    if rcode == 0 and soa is None:
        message.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1", "192.0.2.2"))
    if soa is not None:
        soa_ttl, minimum = soa
        message.authority.append(
            dns.rrset.from_text("example.", soa_ttl, "IN", "SOA", f"ns.example. h.example. 1 2 3 4 {minimum}")
        )
    if ns:  # what an authoritative server adds to a positive answer: its NS RRset
        message.authority.append(dns.rrset.from_text("example.", 600, "IN", "NS", "ns.example."))
    if extra:
        message.additional.append(dns.rrset.from_text("ns.example.", 60, "IN", "A", "192.0.2.53"))
    return message.to_wire()


def key_of(wire: bytes) -> bytes:
    return wire[HEADER_SIZE : parse_question(wire)].lower()


def test_scan_finds_ttls_sections_and_leaves_opt_out() -> None:
    wire = reply(ttl=120, extra=True)
    scan = scan_reply(wire)
    assert scan.counts == (1 * 2, 0, 1), "two answer records, one additional; OPT not counted"
    assert scan.answer_ttl == 120 and scan.negative_ttl == -1
    assert [ttl for _, ttl in scan.ttls] == [120, 120, 60]
    records = wire[scan.qend :]
    assert all(int.from_bytes(records[o : o + 4], "big") == ttl for o, ttl in scan.ttls)
    assert scan.end < len(wire), "the OPT record at the end is cut off"
    assert scan.additional_at < scan.end


def test_negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() -> None:
    scan = scan_reply(reply(rcode=dns.rcode.NXDOMAIN, soa=(900, 60)))
    assert scan.negative_ttl == 60 and scan.answer_ttl == -1
    entry = entry_from_reply(b"k", reply(rcode=3, soa=(900, 60)), scan, 0.0)
    assert entry.ttl == 60 and entry.negative


@pytest.mark.parametrize(
    ("wire", "ttl"),
    [
        (reply(rcode=dns.rcode.NXDOMAIN), 0),  # RFC 2308 §5: no SOA, no negative caching
        (reply(rcode=dns.rcode.SERVFAIL, soa=(60, 60)), 0),
        (reply(ttl=10**6), 86400),  # capped at a day
        (reply(ttl=0x80000001), 0),  # RFC 2181 §8: top bit set counts as 0
    ],
)
def test_what_is_not_cached_or_capped(wire: bytes, ttl: int) -> None:
    assert entry_from_reply(b"k", wire, scan_reply(wire), 0.0).ttl == ttl


def test_a_minimal_scan_keeps_a_positive_answer_only() -> None:
    wire = reply(ttl=120, ns=True, extra=True)
    full, minimal = scan_reply(wire), scan_reply(wire, minimal=True)
    assert full.counts == (2, 1, 1) and [ttl for _, ttl in full.ttls] == [120, 120, 600, 60]
    assert minimal.counts == (2, 0, 0) and [ttl for _, ttl in minimal.ttls] == [120, 120]
    assert minimal.additional_at == minimal.end < full.end, "the records end with the answer section"
    entry = entry_from_reply(b"k", wire, minimal, 0.0)
    assert (entry.nscount, entry.arcount, entry.body) == (0, 0, wire[minimal.qend : minimal.end])


def test_a_minimal_scan_still_reads_the_extended_rcode_and_keeps_negative_answers_whole() -> None:
    query = dns.message.make_query("a.example.", "A", use_edns=0)
    message = dns.message.make_response(query)
    message.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1"))
    message.authority.append(dns.rrset.from_text("example.", 600, "IN", "NS", "ns.example."))
    message.set_rcode(dns.rcode.BADVERS)  # 16: 0 in the header, 1 in the OPT (RFC 6891 §6.1.3)
    assert scan_reply(message.to_wire(), minimal=True).rcode == dns.rcode.BADVERS
    negative = scan_reply(reply(rcode=dns.rcode.NXDOMAIN, soa=(900, 60)), minimal=True)
    assert negative.counts == (0, 1, 0) and negative.negative_ttl == 60, "RFC 2308 §3: the SOA stays"


@pytest.mark.parametrize("minimal", [False, True])
def test_an_opt_whose_data_runs_past_the_end_is_malformed(minimal: bool) -> None:
    wire = reply(ns=True, extra=True)
    assert wire[-11:-8] == b"\x00\x00\x29", "the OPT is last, with no options"
    with pytest.raises(Malformed, match="record data runs past"):
        scan_reply(wire[:-2] + b"\x00\x3f", minimal=minimal)


@pytest.mark.parametrize("minimal", [False, True])
@pytest.mark.parametrize("cut", [13, 30, 45, -12, -30])
def test_truncated_replies_are_malformed(cut: int, minimal: bool) -> None:
    with pytest.raises(Malformed):
        scan_reply(reply(ns=True, extra=True)[:cut], minimal=minimal)


def test_keys_carry_do_and_cd_and_split_back() -> None:
    question = b"\x01a\x07example\x00\x00\x01\x00\x01"
    assert cache_key(question.lower(), question, 0, NO_EDNS) == question
    https = b"\x01A\x07eXample\x00\x00\x41\x00\x01"  # QTYPE 65: its low byte is an ASCII "A"
    assert cache_key(https.lower(), https, 0, NO_EDNS) == b"\x01a\x07example\x00\x00\x41\x00\x01", (
        "only the name is lowered"
    )
    keyed = cache_key(question, question, CD, 1232 << 32 | 0x8000)
    assert keyed != question and split_key(keyed) == (question, CD | 0x01)
    assert split_key(question) == (question, 0)


def test_hits_age_and_stale_answers_use_30_seconds() -> None:
    clock = Clock()
    cache = ForwardCache(max_entries=10, max_bytes=1 << 20, stale_for=60, clock=clock)
    wire = reply(ttl=100)
    cache.store(entry_from_reply(key_of(wire), wire, scan_reply(wire), clock.now))
    clock.now += 40.5
    entry = cache.fresh(key_of(wire))
    assert entry is not None
    assert [int.from_bytes(entry.body[o : o + 4], "big") for o, _ in entry.ttls] == [60, 60]
    clock.now += 60
    assert cache.fresh(key_of(wire)) is None
    stale = cache.stale(key_of(wire))
    assert stale is not None and stale.body.count(STALE_TTL.to_bytes(4, "big")) == 2
    clock.now += 61
    assert cache.stale(key_of(wire)) is None, "past the serve-stale window"


def test_limits_evict_and_keep_what_is_hit() -> None:
    clock = Clock()
    cache = ForwardCache(max_entries=3, max_bytes=1 << 20, clock=clock)
    wires = [reply(f"n{i}.example.") for i in range(5)]
    for wire in wires[:3]:
        cache.store(entry_from_reply(key_of(wire), wire, scan_reply(wire), clock.now))
    assert cache.fresh(key_of(wires[0])) is not None  # n0 is in use
    for wire in wires[3:]:
        cache.store(entry_from_reply(key_of(wire), wire, scan_reply(wire), clock.now))
    assert len(cache.entries) == 3 and cache.evictions == 2
    assert key_of(wires[0]) in cache.entries, "second chance for the entry that was hit"
    assert key_of(wires[4]) in cache.entries
    size = next(iter(cache.entries.values())).size
    small = ForwardCache(max_entries=100, max_bytes=2 * size, clock=clock)
    for wire in wires:
        small.store(entry_from_reply(key_of(wire), wire, scan_reply(wire), clock.now))
    assert len(small.entries) == 2 and small.bytes <= 2 * size

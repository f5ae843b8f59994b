"""Compare what the servers answer: a sample of the benchmark's queries plus edge cases from DESIGN.md §3.

A throughput figure only means something if the servers give the same answers, so the benchmark records
each server's replies while it is up and diffs them against NSD's (the reference: a mature authoritative
server serving the zone file generated from the same data). Differences are grouped by section with one
example each, because a single systematic difference shows up in hundreds of queries.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from gen import Service
from servers import ask

Query = tuple[str, str]  # (name, type)


@dataclass(frozen=True)
class Reply:
    """The parts of a reply that should match between servers, as sorted text (TTLs included)."""

    rcode: str
    flags: str
    question: str  # as sent back, case preserved: DESIGN.md wants the question echoed byte for byte
    answer: tuple[str, ...]
    authority: tuple[str, ...]
    additional: tuple[str, ...]
    edns: str

    @classmethod
    def of(cls, msg: dns.message.Message) -> Reply:
        # QR is in every reply and RA is meaningless for an authoritative server; the rest must agree.
        flags = dns.flags.to_text(msg.flags & ~(dns.flags.QR | dns.flags.RA))
        authority = msg.authority
        if msg.answer:
            # NSD adds the zone's NS RRset to the authority section of positive answers; that is optional
            # (RFC 2181 §6.1 allows either) and mcsdns leaves it out, so it is not a difference.
            authority = [r for r in authority if r.rdtype != dns.rdatatype.NS]
        return cls(
            rcode=dns.rcode.to_text(msg.rcode()),
            flags=flags,
            question=" ".join(str(q) for q in msg.question),
            answer=_section(msg.answer),
            authority=_section(authority),
            additional=_section(msg.additional),
            edns=f"edns{msg.edns} payload {msg.payload}" if msg.edns >= 0 else "no OPT",
        )


def _section(rrsets: Iterable[dns.rrset.RRset]) -> tuple[str, ...]:
    lines = []
    for rrset in rrsets:
        for line in str(rrset).lower().splitlines():
            if rrset.rdtype == dns.rdatatype.SOA:
                # SOA serials legitimately differ (mcsdns derives its own); compare everything else.
                fields = line.split()
                fields[6] = "<serial>"
                line = " ".join(fields)
            lines.append(line)
    return tuple(sorted(lines))


TIMEOUT = Reply("TIMEOUT", "", "", (), (), (), "")


def sample(query_file: Path, count: int, seed: int = 7) -> list[Query]:
    """Distinct queries drawn from the dnsperf file, so the comparison covers the measured mix."""
    lines = sorted(set(query_file.read_text().splitlines()))
    picked = random.Random(seed).sample(lines, min(count, len(lines)))
    return [(name, qtype) for name, qtype in (line.split() for line in picked)]


def edge_cases(services: Sequence[Service], zone: str) -> list[Query]:
    """Names whose answers DESIGN.md §3 spells out but a random sample rarely hits."""
    vip = next(s for s in services if not s.headless and any(p.protocol == "TCP" for p in s.ports))
    # Prefer a headless service with a not-ready endpoint (its name must not exist); small sets may lack one.
    headless = [s for s in services if s.headless and s.ready]
    hl = next((s for s in headless if len(s.ready) < len(s.endpoints)), headless[0])
    tcp = next(p for p in vip.ports if p.protocol == "TCP")
    e, not_ready = hl.ready[0], next((e for e in hl.endpoints if not e.ready), None)
    z, v, h = f"{zone}.", vip.fqdn(zone), hl.fqdn(zone)
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(v))
    return [
        (z, "SOA"), (z, "NS"), (z, "A"), (z, "TXT"), (f"dns-version.{z}", "TXT"), (f"dns-version.{z}", "A"),
        (f"ns.dns.{z}", "A"), (f"svc.{z}", "A"), (f"{vip.namespace}.svc.{z}", "A"), (f"pod.{z}", "A"),
        (v, "A"), (v, "AAAA"), (v, "TXT"), (v, "SRV"), (v, "ANY"), (mixed, "A"), (mixed, "SRV"),
        (f"_{tcp.name}._tcp.{v}", "SRV"), (f"_{tcp.name}._tcp.{v}", "A"), (f"_tcp.{v}", "SRV"),
        (f"_{tcp.name}._udp.{v}", "SRV"), (f"_nope._tcp.{v}", "SRV"), (f"x.{v}", "A"),
        (f"*.{vip.namespace}.svc.{z}", "A"), (f"{e.cluster}.{v}", "A"),
        (h, "A"), (h, "SRV"), (h, "AAAA"), (f"{e.label}.{e.cluster}.{h}", "A"),
        (f"{e.label}.{e.cluster}.{h}", "AAAA"), (f"{e.cluster}.{h}", "A"), (f"{e.cluster}.{h}", "SRV"),
        ("example.com.", "A"), ("1.0.0.127.in-addr.arpa.", "PTR"), (f"{v[:-1]}.example.", "A"),
        *([(f"{not_ready.label}.{not_ready.cluster}.{h}", "A")] if not_ready else []),
    ]


def collect(port: int, queries: Sequence[Query]) -> dict[Query, Reply]:
    replies = {}
    for q in queries:
        try:
            replies[q] = Reply.of(ask(port, q[0], q[1], timeout=1.0))
        except dns.exception.Timeout:
            replies[q] = TIMEOUT
    return replies


@dataclass(frozen=True)
class Difference:
    query: Query
    part: str
    reference: str
    other: str


def diff(reference: dict[Query, Reply], other: dict[Query, Reply]) -> list[Difference]:
    out = []
    for q, ref in reference.items():
        mine = other[q]
        for part in ("rcode", "flags", "question", "answer", "authority", "additional", "edns"):
            a, b = getattr(ref, part), getattr(mine, part)
            if a != b:
                out.append(Difference(q, part, _show(a), _show(b)))
    return out


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return " | ".join(value) if value else "(empty)"
    return str(value)


def report(name: str, ref_name: str, diffs: Sequence[Difference], total: int, examples: int = 2) -> list[str]:
    """Human-readable summary: per section, how many queries differ, and a few examples."""
    if not diffs:
        return [f"{name} vs {ref_name}: all {total} replies agree (rcode, flags, question, sections, EDNS)"]
    by_part: dict[str, list[Difference]] = defaultdict(list)
    for d in diffs:
        by_part[d.part].append(d)
    lines = [f"{name} vs {ref_name}: {len({d.query for d in diffs})} of {total} replies differ"]
    for part, items in by_part.items():
        lines.append(f"  {part}: {len(items)} queries")
        for d in _varied(items, examples):
            lines.append(f"    {d.query[0]} {d.query[1]}")
            lines.append(f"      {ref_name:>7}: {d.reference}")
            lines.append(f"      {name:>7}: {d.other}")
    return lines


def _varied(items: Sequence[Difference], count: int) -> list[Difference]:
    """Examples of different query types first, so one systematic difference does not hide another."""
    seen: dict[tuple[str, str], Difference] = {}
    for d in items:
        seen.setdefault((d.query[1], d.reference[:20]), d)
    return list(seen.values())[:count]

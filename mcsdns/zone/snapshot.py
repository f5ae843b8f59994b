"""What the query path reads: an immutable zone snapshot of precomputed answers.

An ``Answer`` holds a reply's header flags, section counts and body bytes for one (qname, qtype); the body
starts right after the question and points at it for owner names (offset 12, RFC 1035 §4.1.4), so a reply
is header + the question copied from the query (keeping the client's 0x20 case) + body (+ OPT).
Published snapshots are never mutated: the builder keeps them in persistent maps (zone/build.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Answer:
    flags: int  # QR | AA | RCODE, OR-ed with the query's copied flags
    ancount: int
    nscount: int
    arcount: int
    body: bytes  # answer, authority and additional records
    additional_at: int  # length of ``body`` without the additional section (RFC 2181 §9: drop that first)
    metric: int = 0  # QTYPE << 8 | RCODE: the key the responder counts this answer under


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSnapshot:
    serial: int
    zone_wire: bytes  # the zone apex, lower-cased wire form
    answers: Mapping[bytes, Answer]  # key: lower-cased question (qname wire + QTYPE + QCLASS IN)
    names: Collection[bytes]  # every existing name, empty non-terminals included (RFC 8020)
    nodata: Mapping[int, Answer | None]  # by qname wire length: NOERROR + SOA (RFC 2308 §2.2)
    nxdomain: Mapping[int, Answer | None]  # by qname wire length: NXDOMAIN + SOA (RFC 2308 §2.1)
    services: int

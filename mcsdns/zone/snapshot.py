"""What the query path reads: an immutable zone snapshot of precomputed answers.

An ``Answer`` holds a reply's header flags, section counts and body bytes for one (qname, qtype); the body
starts right after the question and points at it for owner names (offset 12, RFC 1035 §4.1.4), so a reply
is header + the question copied from the query (keeping the client's 0x20 case) + body (+ OPT).
Published snapshots are never mutated: the builder keeps them in persistent maps (zone/build.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Answer(NamedTuple):
    """A tuple, not a frozen dataclass: the same attribute reads on the query path (C field getters), but
    made from a decoded tuple at C speed (``Answer._make``). A worker or a restart decodes 120,000 of them
    (zone/codec.py), which took 0.3 s through a frozen dataclass's ``__init__``."""

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
    ttl: int = 0  # of the records (not dns-version's): what a restart rebuilds the negative answers with
    soa: tuple[object, ...] = ()  # the SOA's (mname, rname, serial, refresh, retry, expire, minimum)
    # What this snapshot changed: (the serial before it, answer keys, names), so a worker is sent only that
    # (zone/codec.py); None when unknown (a first snapshot, one read back from a file).
    touched: tuple[int, frozenset[bytes], frozenset[bytes]] | None = None
    # Unix time the zone was saved, when it is the last known zone read back at start (RFC 8767: served
    # stale until every source has listed); 0 for a live zone.
    saved_at: float = 0.0

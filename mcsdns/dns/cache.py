"""The forwarding cache: upstream replies kept as wire bytes and answered the way the zone is.

A reply is scanned once when it arrives (``wire.scan_reply``): where its records start and end, where the
additional section starts, and where every TTL field is. An entry then holds those records as bytes, so a
hit is a dict probe on the lower-cased question, plus, once per second of age, a copy of the records with
their TTLs lowered by that age (RFC 1035 §6.1.3, RFC 2308 §5 for the SOA of a negative answer). The
responder splices the client's id and question (its 0x20 case kept) in front and adds its own OPT, exactly
as for zone answers: compression pointers inside the records stay valid because the question has the same
length and offset as in the upstream reply.

Pure logic: no sockets, no asyncio. ``forward`` fills the cache; the responder reads it.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcsdns.wire import CD, EDNS_DO, NO_EDNS, QR, RA, TC, ReplyScan

MAX_POSITIVE_TTL = 86400  # a day, as Unbound's cache-max-ttl
MAX_NEGATIVE_TTL = 10800  # RFC 2308 §5: three hours is a sensible upper bound
STALE_TTL = 30  # RFC 8767 §4: the TTL of a stale answer
PREFETCH_SHARE = 0.1  # Unbound's prefetch: refresh a popular entry in the last 10 % of its TTL
PREFETCH_MIN_TTL = 10  # below this, prefetching would refresh more often than it saves
# Bytes an entry costs besides its records: the Entry object, its bytes objects and tuples, the dict slot.
# tracemalloc over 100,000 entries of one A record each: about 500 bytes an entry, 55 of them records + key.
ENTRY_OVERHEAD = 450
AD = 0x0020  # kept from upstream (RFC 4035 §3.2.3); AA is not: a cache is not the authority (RFC 1035 §4.1.1)


def cache_key(lowered: bytes, question: bytes, flags: int, edns: int) -> bytes:
    """The cache key of a query: its question with the name lower-cased, plus one byte when DO or CD is set.

    ``lowered`` is ``question.lower()``, which the responder has made for the zone already; only the name
    may be lowered (RFC 4343), and lowering QTYPE's bytes would turn HTTPS (65, 0x41) into type 97, so
    those come from ``question`` when lowering changed them. DO and CD change what the upstream sends
    (signatures, unvalidated data), so they are part of the key (RFC 4035 §3.2.2, RFC 6840 §5.9).
    """
    key = (
        lowered
        if lowered[-3] == question[-3] and lowered[-4] == question[-4]
        else lowered[:-4] + question[-4:]
    )
    if flags & CD or (edns != NO_EDNS and edns & EDNS_DO):
        key += bytes((flags & CD | (DO_BIT if edns != NO_EDNS and edns & EDNS_DO else 0),))
    return key


def split_key(key: bytes) -> tuple[bytes, int]:
    """A cache key's question (lower-cased qname + QTYPE + QCLASS) and its DO/CD byte (0 when absent)."""
    pos = 0
    while key[pos]:
        pos += key[pos] + 1
    end = pos + 5
    return key[:end], key[end] if len(key) > end else 0


DO_BIT = 0x01  # in the key's extra byte; CD keeps its header value (0x10)


@dataclass(slots=True, eq=False)
class Entry:
    """One cached reply: the records after the question, ready to follow any client's question.

    ``flags``, ``ancount``, ``nscount``, ``arcount``, ``body`` and ``additional_at`` are what the responder
    renders a zone ``Answer`` from, so both are answered by the same code; ``body`` is kept aged to the
    current second of ``age``.
    """

    key: bytes
    flags: int
    ancount: int
    nscount: int
    arcount: int
    body: bytes
    additional_at: int
    ttls: tuple[tuple[int, int], ...]  # (offset into ``original``, TTL as received)
    original: bytes
    stored: float
    ttl: int  # seconds it may be answered from the cache; 0: answer once, never store
    negative: bool
    size: int  # bytes it costs the cache: its records and key, and ENTRY_OVERHEAD
    age: int = 0
    gone: bool = False  # replaced or evicted: a reply rendered from it must not be served again
    used: bool = False  # CLOCK's reference bit: hit since the eviction hand last passed
    prefetch_at: float = field(default=float("inf"))

    @property
    def expires(self) -> float:
        return self.stored + self.ttl

    def age_to(self, age: int) -> None:
        """Lower the TTLs by ``age`` seconds in the cache (the caller asks once per second of age)."""
        self.age = age
        self.body = _with_ttls(self, lambda ttl: max(ttl - age, 0))

    def stale(self) -> Entry:
        """A copy to answer after expiry (RFC 8767 §4): every TTL is ``STALE_TTL``."""
        body = _with_ttls(self, lambda _ttl: STALE_TTL)
        return dataclasses.replace(self, body=body)


def _with_ttls(entry: Entry, ttl_for: Callable[[int], int]) -> bytes:
    body = bytearray(entry.original)
    for offset, ttl in entry.ttls:
        body[offset : offset + 4] = ttl_for(ttl).to_bytes(4, "big")
    return bytes(body)


def entry_from_reply(key: bytes, reply: bytes, scan: ReplyScan, now: float) -> Entry:
    """An entry for ``reply`` (already checked to answer ``key``), with how long it may be cached.

    Positive answers live for their smallest answer TTL, negative ones (NXDOMAIN, NODATA) for the SOA's
    min(TTL, MINIMUM) (RFC 2308 §5); a negative answer without SOA and any other RCODE are answered once
    and not cached (RFC 2308 §5, §7).
    """
    rcode = scan.rcode
    ancount, nscount, arcount = scan.counts
    if rcode == 0 and ancount:
        ttl = min(scan.answer_ttl, MAX_POSITIVE_TTL)
        negative = False
    elif rcode in (0, 3):
        ttl = min(scan.negative_ttl, MAX_NEGATIVE_TTL) if scan.negative_ttl >= 0 else 0
        negative = True
    else:
        ttl, negative = 0, True
    if scan.flags & TC:  # TC: the whole reply did not fit; never keep a partial one
        ttl = 0
    original = reply[scan.qend : scan.end]
    return Entry(
        key=key,
        flags=QR | RA | scan.flags & AD | rcode & 0xF,
        ancount=ancount,
        nscount=nscount,
        arcount=arcount,
        body=original,
        additional_at=scan.additional_at - scan.qend,
        ttls=scan.ttls,
        original=original,
        stored=now,
        ttl=ttl,
        negative=negative,
        size=len(original) + len(key) + ENTRY_OVERHEAD,
    )


class ForwardCache:
    """Entries by cache key, bounded in entries and bytes, evicted with CLOCK (second chance).

    CLOCK keeps what is hit and costs a hit one attribute store, where LRU would reorder on every hit.
    Expired entries stay for ``stale_for`` seconds to be served when every upstream is down (RFC 8767).
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        stale_for: float = 0.0,
        prefetch_min_ttl: int = PREFETCH_MIN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Ordered for the clock hand: a plain dict popped from the front leaves holes that every next
        # ``iter`` walks again, which made a full cache slower with every insertion.
        self.entries: collections.OrderedDict[bytes, Entry] = collections.OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stale_for = stale_for
        self.prefetch_min_ttl = prefetch_min_ttl
        self.clock = clock
        self.bytes = 0
        # Called with the entry whose TTL is nearly over when it is hit (``forward`` refreshes it).
        self.on_prefetch: Callable[[Entry], None] | None = None
        # Metrics, split as CoreDNS's cache splits them: answers (success) and NXDOMAIN/NODATA (denial).
        self.hits = 0
        self.denial_hits = 0
        self.evictions = 0
        self.denial_evictions = 0
        self.prefetches = 0

    def fresh(self, key: bytes) -> Entry | None:
        """The entry to answer ``key`` with now, aged; None when absent or expired."""
        entry = self.entries.get(key)
        if entry is not None:
            now = self.clock()
            if now < entry.stored + entry.ttl:
                self._hit(entry, now)
                age = int(now - entry.stored)
                if age != entry.age:
                    entry.age_to(age)
                return entry
        return None

    def again(self, entry: Entry, age: int) -> bool:
        """Whether a reply rendered from ``entry`` when it was ``age`` seconds old answers now what ``fresh``
        would (the entry still cached and fresh, its TTLs aged to the same second); counted as a hit."""
        if entry.gone:
            return False
        now = self.clock()
        if now >= entry.stored + entry.ttl or int(now - entry.stored) != age:
            return False
        self._hit(entry, now)
        return True

    def _hit(self, entry: Entry, now: float) -> None:
        if entry.negative:
            self.denial_hits += 1
        else:
            self.hits += 1
        entry.used = True
        if now >= entry.prefetch_at and self.on_prefetch is not None:
            entry.prefetch_at = float("inf")  # once: the refreshed entry replaces this one
            self.prefetches += 1
            self.on_prefetch(entry)

    def stale(self, key: bytes) -> Entry | None:
        """An expired entry still inside the serve-stale window, as a stale answer (RFC 8767 §4)."""
        entry = self.entries.get(key)
        if entry is None or self.clock() > entry.expires + self.stale_for:
            return None
        return entry.stale()

    def store(self, entry: Entry) -> None:
        if entry.ttl <= 0 or self.max_entries == 0 or entry.size > self.max_bytes:
            return
        if entry.ttl >= self.prefetch_min_ttl:
            entry.prefetch_at = entry.stored + entry.ttl * (1 - PREFETCH_SHARE)
        old = self.entries.pop(entry.key, None)
        if old is not None:
            old.gone = True
            self.bytes -= old.size
        self.entries[entry.key] = entry
        self.bytes += entry.size
        self._evict(keep=entry)

    def _evict(self, keep: Entry) -> None:
        entries = self.entries
        if len(entries) <= self.max_entries and self.bytes <= self.max_bytes:
            return
        now = self.clock()
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            key, entry = entries.popitem(last=False)
            if entry is keep or (entry.used and now <= entry.expires + self.stale_for):
                entry.used = False
                entries[key] = entry  # second chance: to the back of the clock
                continue
            entry.gone = True
            self.bytes -= entry.size
            if entry.negative:
                self.denial_evictions += 1
            else:
                self.evictions += 1

    def counts(self) -> tuple[int, int]:
        """Entries holding positive answers and entries holding negative ones (CoreDNS's success/denial)."""
        negative = sum(1 for entry in self.entries.values() if entry.negative)
        return len(self.entries) - negative, negative

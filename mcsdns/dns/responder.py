"""One DNS message in, one reply out: the query ladder on top of the current zone snapshot.

Cheapest checks first, as NSD's ``query_process`` does: too short or a response (QR) → dropped; opcode
other than QUERY → NOTIMP; QDCOUNT ≠ 1 or an unreadable question → FORMERR; EDNS version > 0 → BADVERS;
then one dict probe on the lower-cased question. Misses go to ``zone.lookup`` (NODATA / NXDOMAIN with SOA,
or REFUSED outside the zone). No socket code here and nothing per packet but ints and bytes: the server
calls ``respond`` synchronously from its protocol callbacks.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcsdns.dns.cache import Entry, ForwardCache, cache_key
from mcsdns.settings import ZoneSettings
from mcsdns.wire import (
    CLASS_ANY,
    COPIED_FLAGS,
    EDNS_DO,
    HEADER_SIZE,
    HEADER_TAIL,
    MAX_MESSAGE,
    MIN_UDP_PAYLOAD,
    NO_EDNS,
    OPCODE_MASK,
    OPT_DO,
    OPT_PLAIN,
    QR,
    SERVER_UDP_PAYLOAD,
    TC,
    BadOption,
    Malformed,
    QType,
    Rcode,
    error_response,
    parse_edns,
    parse_question,
)
from mcsdns.zone.lookup import find_answer, in_zone
from mcsdns.zone.snapshot import Answer
from mcsdns.zone.store import ZoneStore

# Replies to recent UDP queries, keyed by the query's bytes after its id: a client asks the same question in
# the same bytes again and again (a stub resolver, CoreDNS's forward, dnsperf), and the reply's bytes after
# the id are then the same too: while the snapshot is, for a zone answer; while the entry is cached and aged
# to the same second, for a forwarding cache hit. Such a query's only work is then one dict probe and the id
# spliced in (PowerDNS's packet cache is the same idea). Emptied on every publish and when full (about 350
# bytes an entry: 6 MiB at most); a fill that earned fewer hits than entries pauses it.
MEMO_ENTRIES = 16384
MEMO_PAUSE = 16 * MEMO_ENTRIES  # replies not memoised after a fill that saw too few hits
MEMO_QUERY_BYTES = 300  # longer queries carry options that make each one unique (padding, cookies)

TCP = MAX_MESSAGE  # pass as ``limit`` for TCP: the whole answer always fits (render keeps it under)
UDP = MIN_UDP_PAYLOAD  # pass as ``limit`` for UDP: 512 unless the query's EDNS allows more
_QCLASS_IN = b"\x00\x01"
_QCLASS_ANY = CLASS_ANY.to_bytes(2, "big")
_ZONE_TRANSFERS = (QType.AXFR, QType.IXFR)


# How the server answers a forwarded query's client: called with the client (``Forward.to``, the server's
# own token) and the reply. A bound method and a token, not a closure per miss: a miss makes no function.
Send = Callable[[Any, bytes], None]


@dataclass(slots=True)  # not frozen: a frozen dataclass costs three times as much to make, once per miss
class Forward:
    """``respond``'s answer for a name outside the zone that the forwarding cache does not hold: the server
    forwards it. It carries what the responder read, so the forwarder does not read the packet again, and
    waits in the forwarder, as it is, for the answer (the server's ``send`` and ``to`` are set there): a
    miss makes no other object for its client."""

    data: bytes  # the query
    qend: int  # offset past the question
    edns: int  # the query's OPT (``wire.parse_edns``)
    limit: int  # ``UDP`` or ``TCP``, as ``respond`` was given
    key: bytes  # the forwarding cache's key (``cache.cache_key``)
    send: Send | None = None  # called with ``to`` and the reply
    to: Any = None  # the client, as the server's ``send`` knows it


class Responder:
    """Answers queries; counts every reply by transport, QTYPE and RCODE for the metrics endpoint.

    Counting costs one dict increment per packet: the key (``QTYPE << 8 | RCODE``) of a precomputed
    answer is precomputed with it.
    """

    def __init__(
        self, store: ZoneStore, settings: ZoneSettings, *, cache: ForwardCache | None = None
    ) -> None:
        self._store = store
        self._zone_wire = settings.wire
        self.zone = settings.zone.rstrip(".") + "."  # as metrics label it (CoreDNS's zone label)
        self._cache = cache
        self.forward_refused = 0  # names outside the zone from clients not allowed to use forwarding
        self.udp: collections.defaultdict[int, int] = collections.defaultdict(int)
        self.tcp: collections.defaultdict[int, int] = collections.defaultdict(int)
        self.dropped = {"udp": 0, "tcp": 0}
        self.truncated = 0
        # query[2:] -> (reply[2:], metric, forwarding cache entry or None, its age), MEMO_ENTRIES at most
        self._memo: dict[bytes, tuple[bytes, int, Entry | None, int]] = {}
        self._memo_of: object = None  # the snapshot the memo's replies come from
        self._metric = -1  # the last reply's metric key when it was a zone answer, else -1
        self._entry: Entry | None = None  # the last reply's forwarding cache entry when it was a hit
        self._memo_from = 0  # ``_answered()`` when the memo was last emptied
        self._memo_paused = 0  # memoisable replies still to go unmemoised

    def respond(self, data: bytes, limit: int, forward: bool = False) -> bytes | Forward | None:
        """The reply to ``data``, None to drop it, or a ``Forward``. ``limit`` is ``UDP`` or ``TCP``.

        ``forward``: the client may use forwarding, so a name outside the zone is answered from the
        forwarding cache, or handed back as a ``Forward`` on a miss.
        """
        if limit == UDP:
            snapshot, tail = self._store.current, data[2:]
            if snapshot is self._memo_of:
                hit = self._memo.get(tail)
                if hit is not None:
                    entry = hit[2]
                    if entry is None:
                        self.udp[hit[1]] += 1
                        return data[:2] + hit[0]
                    # A forwarding cache hit: only for a client that may forward, and only while the entry
                    # is the cache's, fresh, and aged to the same second as the memoised reply.
                    if forward and self._cache is not None and self._cache.again(entry, hit[3]):
                        return data[:2] + hit[0]
            else:
                self._memo.clear()
                self._memo_of = snapshot
                self._memo_from = self._answered()
            reply = self._respond(data, limit, forward)
            # Zone answers (their metric is set) and forwarding cache hits (their entry is), whole: an
            # error's reply depends on more than the snapshot, a truncated one on the client's size.
            if (
                (self._metric >= 0 or self._entry is not None)
                and len(data) <= MEMO_QUERY_BYTES
                and type(reply) is bytes
                and not reply[2] & TC >> 8
            ):
                self._remember(tail, reply)
            return reply
        return self._respond(data, limit, forward)

    def _answered(self) -> int:
        """UDP replies so far that the memo could have given: zone answers and forwarding cache hits."""
        return sum(self.udp.values()) + (self._cache.hits + self._cache.denial_hits if self._cache else 0)

    def _remember(self, tail: bytes, reply: bytes) -> None:
        """Memoise ``reply`` for the query whose bytes after the id are ``tail``."""
        if self._memo_paused:
            self._memo_paused -= 1
            return
        memo = self._memo
        if len(memo) >= MEMO_ENTRIES:
            answered = self._answered()
            if answered - self._memo_from < 2 * MEMO_ENTRIES:
                # Fewer hits than entries since it was last emptied: these clients rarely ask in the same
                # bytes twice (0x20 random case, as Unbound's use-caps-for-id sends), and each entry cost
                # more than a hit saves. Stop filling it for a while, then try again.
                self._memo_paused = MEMO_PAUSE
            memo.clear()
            self._memo_from = answered
            if self._memo_paused:
                return
        entry = self._entry
        memo[tail] = (reply[2:], self._metric, entry, entry.age if entry is not None else 0)

    def _respond(self, data: bytes, limit: int, forward: bool) -> bytes | Forward | None:
        self._metric, self._entry = -1, None
        counts = self.udp if limit == UDP else self.tcp
        if len(data) < HEADER_SIZE:
            self.dropped["udp" if limit == UDP else "tcp"] += 1
            return None  # RFC 1035 §4.1.1: no header, no id to answer to
        flags = data[2] << 8 | data[3]
        if flags & (QR | OPCODE_MASK) or data[4:6] != b"\x00\x01":
            return self._unusual_header(data, flags, limit)
        try:
            qend = parse_question(data)
            edns = NO_EDNS
            if data[6:12] != b"\x00\x00\x00\x00\x00\x00":
                edns = parse_edns(data, qend)
        except BadOption as exc:
            return self._error(counts, data, Rcode.FORMERR, qend, exc.edns)  # RFC 7873 §5.2.2: with OPT
        except Malformed:
            counts[Rcode.FORMERR] += 1
            return error_response(data, Rcode.FORMERR)
        question = data[HEADER_SIZE:qend]
        key = question.lower()
        if edns != NO_EDNS and edns & 0x00FF0000:
            # RFC 6891 §6.1.3: we speak EDNS version 0 only.
            return self._error(counts, data, Rcode.BADVERS, qend, edns)

        snapshot = self._store.current
        if snapshot is None:
            # Not every source has listed yet: the zone is not complete enough to deny anything.
            if in_zone(key[:-4], self._zone_wire):
                return self._error(counts, data, Rcode.SERVFAIL, qend, edns)
            return self._outside(counts, data, qend, edns, limit, forward)
        answer = snapshot.answers.get(key)
        if answer is not None:
            counts[answer.metric] += 1
            self._metric = answer.metric
        else:
            ckey = b""
            if forward and self._cache is not None:
                # Only names outside the zone are ever forwarded, so a cached one cannot shadow the zone.
                ckey = cache_key(key, question, flags, edns)
                entry = self._cache.fresh(ckey)
                if entry is not None:
                    self._entry = entry
                    return self._render(data, flags, question, entry, edns, limit)
            if key[-2:] != _QCLASS_IN:
                if key[-2:] != _QCLASS_ANY:
                    return self._outside(counts, data, qend, edns, limit, forward, ckey)
                key = key[:-2] + _QCLASS_IN  # RFC 1035 §3.2.5: QCLASS * matches our class IN data
            answer = find_answer(snapshot, key)
            if answer is None:
                return self._outside(counts, data, qend, edns, limit, forward, ckey)
            if int.from_bytes(key[-4:-2], "big") in _ZONE_TRANSFERS:
                return self._error(counts, data, Rcode.REFUSED, qend, edns)
            metric = int.from_bytes(question[-4:-2], "big") << 8 | answer.flags & 0xF
            counts[metric] += 1
            self._metric = metric
        return self._render(data, flags, question, answer, edns, limit)

    def render_cached(self, data: bytes, qend: int, entry: Entry, edns: int, limit: int) -> bytes:
        """A forwarded answer for the query ``data``, rendered as a zone answer is."""
        return self._render(data, data[2] << 8 | data[3], data[HEADER_SIZE:qend], entry, edns, limit)

    def _render(
        self, data: bytes, flags: int, question: bytes, answer: Answer | Entry, edns: int, limit: int
    ) -> bytes:
        """The client's id and question, then ``answer``'s records, as many as ``limit`` allows."""
        if edns == NO_EDNS:
            opt = b""
        else:
            opt = OPT_DO if edns & EDNS_DO else OPT_PLAIN
            if limit == UDP:
                limit = min(max(edns >> 32, MIN_UDP_PAYLOAD), SERVER_UDP_PAYLOAD)
        extra = 1 if opt else 0
        copied = flags & COPIED_FLAGS
        fixed = HEADER_SIZE + len(question) + len(opt)
        body = answer.body
        if fixed + len(body) <= limit:
            tail = HEADER_TAIL.pack(
                answer.flags | copied, 1, answer.ancount, answer.nscount, answer.arcount + extra
            )
            return b"".join((data[:2], tail, question, body, opt))
        if fixed + answer.additional_at <= limit:
            # RFC 2181 §9: leave out the additional section before truncating anything that matters.
            tail = HEADER_TAIL.pack(answer.flags | copied, 1, answer.ancount, answer.nscount, extra)
            return b"".join((data[:2], tail, question, body[: answer.additional_at], opt))
        # RFC 1035 §4.2.1 / RFC 7766 §5: too big for UDP, the client retries over TCP.
        self.truncated += 1
        tail = HEADER_TAIL.pack(answer.flags | copied | TC, 1, 0, 0, extra)
        return b"".join((data[:2], tail, question, opt))

    def _error(self, counts: dict[int, int], data: bytes, rcode: int, qend: int, edns: int) -> bytes:
        # QTYPE from the packet: ``key`` is lower-cased, which turns e.g. HTTPS (65, 0x41) into 97.
        counts[int.from_bytes(data[qend - 4 : qend - 2], "big") << 8 | rcode & 0xF] += 1
        return error_response(data, rcode, question_end=qend, edns=edns)

    def _outside(
        self,
        counts: dict[int, int],
        data: bytes,
        qend: int,
        edns: int,
        limit: int,
        forward: bool,
        ckey: bytes = b"",
    ) -> bytes | Forward:
        """A name outside the zone (or a class we do not serve): from the forwarding cache, forwarded on a
        miss when the client may use forwarding, else REFUSED. ``ckey``: the cache was probed with it."""
        if forward and self._cache is not None:
            if not ckey:
                flags = data[2] << 8 | data[3]
                question = data[HEADER_SIZE:qend]
                ckey = cache_key(question.lower(), question, flags, edns)
                entry = self._cache.fresh(ckey)
                if entry is not None:
                    self._entry = entry
                    return self._render(data, flags, question, entry, edns, limit)
            return Forward(data, qend, edns, limit, ckey)  # the forwarder counts what it answers
        if self._cache is not None:
            self.forward_refused += 1
        return self._error(counts, data, Rcode.REFUSED, qend, edns)

    def _unusual_header(self, data: bytes, flags: int, limit: int) -> bytes | None:
        counts = self.udp if limit == UDP else self.tcp
        if flags & QR:
            self.dropped["udp" if limit == UDP else "tcp"] += 1
            return None  # a response sent to us: answering could start a loop between two servers
        question_end = 0
        edns = NO_EDNS
        if data[4:6] == b"\x00\x01":
            try:
                question_end = parse_question(data)
                edns = parse_edns(data, question_end)  # RFC 6891 §7: an OPT in the query, one in the reply
            except BadOption as exc:
                edns = exc.edns
            except Malformed:
                pass
        if flags & OPCODE_MASK:
            counts[Rcode.NOTIMP] += 1
            return error_response(data, Rcode.NOTIMP, question_end=question_end, edns=edns)
        counts[Rcode.FORMERR] += 1
        return error_response(data, Rcode.FORMERR)

    def servfail(self, data: bytes) -> bytes | None:
        """The reply when answering raised: SERVFAIL, so one bad packet never silences the server."""
        if len(data) < HEADER_SIZE or data[2] & 0x80:
            return None
        return error_response(data, Rcode.SERVFAIL)

"""Forwarding with a cache, for names outside the zone when mcsdns is a pod's sidecar resolver.

Off the authoritative path: the responder answers the zone from bytes; only queries it hands over
(``responder.FORWARD``) come here. Only clients in ``--forward-allow`` (default loopback) are served, so
mcsdns is never an open resolver; others get REFUSED. Each query goes to the upstreams in turn, over UDP
and again over TCP when truncated (RFC 7766 §5), and a dead upstream costs at most its timeout before the
next is tried; when all fail the client gets SERVFAIL. Answers are cached for their smallest TTL, negative
answers for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), in a bounded cache; hits are served with TTLs aged by
the time spent in the cache (RFC 1035 §6.1.3).
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cachetools
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from mcsdns.wire import HEADER_SIZE, Malformed, Rcode, error_response, parse_question

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 1.0  # per upstream attempt; the client's own retry usually comes after 1-5 s
MAX_POSITIVE_TTL = 86400
MAX_NEGATIVE_TTL = 10800  # RFC 2308 §5: three hours is a sensible upper bound
NEGATIVE_RCODES = (dns.rcode.NXDOMAIN, dns.rcode.NOERROR)

Upstream = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class _Entry:
    message: dns.message.Message
    stored: float
    ttl: float


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        allow: Sequence[Network],
        cache_size: int = 10_000,
        timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        if not upstreams:
            raise ValueError("forwarding needs at least one upstream")
        self._upstreams = tuple(upstreams)
        self._allow = tuple(allow)
        self._timeout = timeout
        self._cache: cachetools.TLRUCache[tuple[object, ...], _Entry] = cachetools.TLRUCache(
            maxsize=cache_size, ttu=lambda _key, entry, now: now + entry.ttl, timer=time.monotonic
        )
        # Metrics: what happened to forwarded queries.
        self.hits = 0
        self.misses = 0
        self.refused = 0
        self.failures = 0
        self.upstream_errors = 0

    def allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self._allow)

    def refuse(self, data: bytes) -> bytes:
        self.refused += 1
        return error_response(data, Rcode.REFUSED, question_end=_question_end(data))

    async def answer(self, data: bytes, *, limit: int) -> bytes | None:
        """The reply to a forwarded query (from the cache, an upstream, or SERVFAIL); None to drop it."""
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            return error_response(data, Rcode.FORMERR) if len(data) >= HEADER_SIZE else None
        if len(query.question) != 1:
            return error_response(data, Rcode.FORMERR)
        key = self._key(query)
        entry = self._cache.get(key)
        if entry is not None:
            self.hits += 1
            reply = self._aged(entry, query)
        else:
            self.misses += 1
            fetched = await self._ask_upstreams(query)
            if fetched is None:
                self.failures += 1
                return error_response(data, Rcode.SERVFAIL, question_end=_question_end(data))
            ttl = cache_ttl(fetched)
            if ttl > 0:
                self._cache[key] = _Entry(fetched, time.monotonic(), ttl)
            reply = _for_client(fetched, query)
        try:
            return reply.to_wire(max_size=limit if limit >= 512 else 512)
        except dns.exception.TooBig:
            reply.flags |= dns.flags.TC
            reply.answer.clear()
            reply.authority.clear()
            reply.additional.clear()
            return reply.to_wire()

    @staticmethod
    def _key(query: dns.message.Message) -> tuple[object, ...]:
        question = query.question[0]
        return (
            question.name.canonicalize(),
            question.rdtype,
            question.rdclass,
            bool(query.ednsflags & dns.flags.DO),
            bool(query.flags & dns.flags.CD),
        )

    def _aged(self, entry: _Entry, query: dns.message.Message) -> dns.message.Message:
        elapsed = int(time.monotonic() - entry.stored)
        reply = _for_client(entry.message, query)
        for section in (reply.answer, reply.authority, reply.additional):
            for rrset in section:
                rrset.ttl = max(0, rrset.ttl - elapsed)
        return reply

    async def _ask_upstreams(self, query: dns.message.Message) -> dns.message.Message | None:
        outgoing = dns.message.make_query(
            query.question[0].name,
            query.question[0].rdtype,
            query.question[0].rdclass,
            use_edns=0,
            payload=1232,
            want_dnssec=bool(query.ednsflags & dns.flags.DO),
        )
        outgoing.flags = dns.flags.RD | (query.flags & dns.flags.CD)
        for host, port in self._upstreams:
            try:
                reply = await dns.asyncquery.udp(outgoing, host, port=port, timeout=self._timeout)
                if reply.flags & dns.flags.TC:
                    reply = await dns.asyncquery.tcp(outgoing, host, port=port, timeout=self._timeout)
            except (dns.exception.DNSException, OSError, TimeoutError, EOFError) as exc:
                self.upstream_errors += 1
                logger.debug("upstream %s:%d failed: %s", host, port, exc)
                continue
            if reply.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                self.upstream_errors += 1
                continue  # this upstream cannot answer: another may
            return reply
        return None


def _question_end(data: bytes) -> int:
    try:
        return parse_question(data)
    except Malformed:
        return 0


def cache_ttl(reply: dns.message.Message) -> float:
    """How long ``reply`` may be cached: the smallest answer TTL, or the negative TTL from the SOA."""
    rcode = reply.rcode()
    if rcode not in NEGATIVE_RCODES or reply.flags & dns.flags.TC:
        return 0
    if reply.answer:
        return min(min(rrset.ttl for rrset in reply.answer), MAX_POSITIVE_TTL)
    for rrset in reply.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum, MAX_NEGATIVE_TTL))  # RFC 2308 §5
    return 0  # a negative answer without SOA is not cached (RFC 2308 §5)


def _for_client(reply: dns.message.Message, query: dns.message.Message) -> dns.message.Message:
    """A copy of ``reply`` for this client: its id, its question as asked (0x20 case), its EDNS."""
    out = dns.message.make_response(query, recursion_available=True)
    out.set_rcode(reply.rcode())
    # Not AA: a resolver answering from upstream or its cache is not the zone's authority (RFC 1035 §4.1.1).
    out.flags |= reply.flags & dns.flags.AD
    # Copies, so aging the TTLs of one client's reply never touches the cached message.
    out.answer = [copy.copy(rrset) for rrset in reply.answer]
    out.authority = [copy.copy(rrset) for rrset in reply.authority]
    out.additional = [copy.copy(rrset) for rrset in reply.additional]
    return out

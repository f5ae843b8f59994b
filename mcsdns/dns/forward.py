"""Forwarding: the cache misses of a sidecar resolver, sent upstream and answered when the reply comes.

Off the authoritative path. The responder answers names outside the zone from the forwarding cache
(``cache.py``) and hands a miss back as ``responder.FORWARD``; the server then calls ``Forwarder.forward``
with a way to send the reply. Only clients in ``--forward-allow`` (default loopback) reach this, so mcsdns
is never an open resolver; the server answers the others REFUSED.

A miss costs no task: identical misses in flight wait on one upstream query (coalescing), which goes out on
one of a small pool of UDP sockets with kernel-chosen ports and a random id, and its reply is accepted only
from the upstream's address and port, with that id and that question (RFC 5452 §9). A reply with TC is asked
again over TCP (RFC 7766 §5). Upstreams are tried healthy first, in configured order within a latency band;
one that failed twice in a row is down for a growing while and tried last (as CoreDNS's ``forward`` marks
upstreams down). When every upstream fails, an expired answer still inside ``--forward-serve-stale`` is
served with TTL 30 s (RFC 8767), else SERVFAIL. A popular entry is refreshed shortly before it expires
(Unbound's ``prefetch``), so hot names never go through a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcsdns.dns.cache import DO_BIT, Entry, ForwardCache, cache_key, entry_from_reply, split_key
from mcsdns.wire import (
    CD,
    EDNS_DO,
    HEADER_SIZE,
    NO_EDNS,
    RD,
    RR_FIXED,
    SERVER_UDP_PAYLOAD,
    TC,
    Malformed,
    QType,
    Rcode,
    error_response,
    parse_edns,
    parse_question,
    scan_reply,
)

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 1.0  # per upstream attempt; the client's own retry usually comes after 1-5 s
POOL_SIZE = 8  # UDP sockets per address family
RECYCLE_AFTER = 4096  # queries a pooled socket carries before it is replaced, so source ports keep moving
LATENCY_BAND = 0.05  # upstreams within 50 ms of each other count as equally fast
DOWN_AFTER = 2  # consecutive failures that mark an upstream down (CoreDNS's max_fails)
DOWN_MAX = 30.0
MAX_TCP_REPLY = 65535
_ALLOWED_MEMO = 4096

Upstream = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Send = Callable[[bytes], None]
# Renders an entry for one waiting client: (entry) -> reply bytes. Bound to that client's query.
Render = Callable[[bytes, int, Entry, int, int], bytes]


@dataclass(slots=True)
class UpstreamHealth:
    address: Upstream
    index: int
    family: int
    srtt: float = 0.0  # smoothed round-trip time, seconds (EWMA, 1/8 as TCP's RFC 6298)
    fails: int = 0  # consecutive
    down_until: float = 0.0
    queries: int = 0
    replies: int = 0
    failures: int = 0

    def succeeded(self, rtt: float) -> None:
        self.replies += 1
        self.srtt = rtt if self.srtt == 0 else self.srtt + (rtt - self.srtt) / 8
        self.fails = 0
        self.down_until = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        self.fails += 1
        if self.fails >= DOWN_AFTER:
            self.down_until = now + min(DOWN_MAX, 2.0 ** (self.fails - DOWN_AFTER))


@dataclass(slots=True, eq=False)
class _Waiter:
    data: bytes
    qend: int
    edns: int
    limit: int
    send: Send


@dataclass(slots=True, eq=False)
class _Lookup:
    """One upstream question in flight, and every client waiting for its answer."""

    key: bytes
    question: bytes  # lower-cased qname + QTYPE + QCLASS, as sent upstream
    flags: int  # RD, and CD when the client set it
    do: bool
    order: list[UpstreamHealth]
    waiters: list[_Waiter] = field(default_factory=list)
    tried: int = 0
    qid: int = 0
    sent_at: float = 0.0
    upstream: UpstreamHealth | None = None
    socket: _PooledSocket | None = None
    timer: asyncio.TimerHandle | None = None

    def wire(self) -> bytes:
        """The upstream query: our id, RD (and CD), the question, and an OPT with our payload and DO."""
        opt = b"\x00" + RR_FIXED.pack(QType.OPT, SERVER_UDP_PAYLOAD, EDNS_DO if self.do else 0, 0)
        header = (
            self.qid.to_bytes(2, "big") + self.flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x01"
        )
        return header + self.question + opt


class _PooledSocket(asyncio.DatagramProtocol):
    """One upstream UDP socket; replies are matched to lookups by id, then checked by the forwarder."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Lookup] = {}
        self.used = 0
        self.retired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport implements it

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < HEADER_SIZE:
            return
        lookup = self.pending.get(data[0] << 8 | data[1])
        if lookup is None:
            self.forwarder.ignored += 1
            return
        self.forwarder.reply_received(lookup, data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("upstream socket error: %s", exc)

    def close_if_idle(self) -> None:
        if self.retired and not self.pending and self.transport is not None:
            self.transport.close()


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        allow: Sequence[Network],
        cache: ForwardCache,
        render: Render,
        timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        if not upstreams:
            raise ValueError("forwarding needs at least one upstream")
        self.upstreams = tuple(
            UpstreamHealth((_normal(host), port), index, _family(host))
            for index, (host, port) in enumerate(upstreams)
        )
        self._allow = tuple(allow)
        self._allowed: dict[str, bool] = {}
        self.cache = cache
        self._render = render
        self._timeout = timeout
        self._inflight: dict[bytes, _Lookup] = {}
        self._pools: dict[int, list[_PooledSocket]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        cache.on_prefetch = self._prefetch
        # Metrics: what happened to forwarded queries.
        self.misses = 0  # queries that were not in the cache
        self.coalesced = 0  # misses that joined a lookup already in flight
        self.failures = 0  # clients answered SERVFAIL
        self.upstream_errors = 0  # failed upstream attempts (timeout, SERVFAIL/REFUSED, bad reply)
        self.ignored = 0  # replies that matched no query in flight (late, or spoofed: RFC 5452)
        self.stale_answers = 0  # clients answered from an expired entry (RFC 8767)

    async def start(self) -> None:
        """Open the upstream socket pools (one per address family the upstreams use)."""
        self._loop = asyncio.get_running_loop()
        for family in {u.family for u in self.upstreams}:
            self._pools[family] = [await self._open(family) for _ in range(POOL_SIZE)]

    def close(self) -> None:
        for pool in self._pools.values():
            for pooled in pool:
                if pooled.transport is not None:
                    pooled.transport.close()
        for lookup in list(self._inflight.values()):
            if lookup.timer is not None:
                lookup.timer.cancel()
        for task in self._tasks:
            task.cancel()

    async def _open(self, family: int) -> _PooledSocket:
        assert self._loop is not None
        # Port 0: the kernel picks a random ephemeral port (Linux randomises them, RFC 6056).
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        _, protocol = await self._loop.create_datagram_endpoint(
            lambda: _PooledSocket(self), local_addr=(wildcard, 0), family=family
        )
        return protocol

    # -- who may use it ---------------------------------------------------------------------------------

    def allowed(self, client: str) -> bool:
        """Whether ``client`` may use forwarding; remembered per address so a packet costs one dict probe."""
        known = self._allowed.get(client)
        if known is None:
            try:
                address = ipaddress.ip_address(client.split("%", 1)[0])
                known = any(address in network for network in self._allow)
            except ValueError:
                known = False
            if len(self._allowed) >= _ALLOWED_MEMO:
                self._allowed.clear()
            self._allowed[client] = known
        return known

    # -- a miss -------------------------------------------------------------------------------------------

    def forward(self, data: bytes, limit: int, send: Send) -> None:
        """Answer ``data`` (a query the responder found outside the zone and not cached) through ``send``."""
        try:
            qend = parse_question(data)
            edns = parse_edns(data, qend) if data[6:12] != b"\x00\x00\x00\x00\x00\x00" else NO_EDNS
        except Malformed:
            send(error_response(data, Rcode.FORMERR))
            return
        flags = data[2] << 8 | data[3]
        key = cache_key(data[HEADER_SIZE:qend], flags, edns)
        waiter = _Waiter(data, qend, edns, limit, send)
        entry = self.cache.fresh(key)  # it may have arrived since the responder looked
        if entry is not None:
            send(self._render(data, qend, entry, edns, limit))
            return
        self.misses += 1
        lookup = self._inflight.get(key)
        if lookup is not None:
            self.coalesced += 1
            lookup.waiters.append(waiter)
            return
        lookup = self._lookup(key)
        stale = self.cache.stale(key) if lookup.order[0].down_until > self._now() else None
        if stale is not None:
            # RFC 8767 §5: every upstream is known to be down; answer stale now and refresh behind it.
            self.stale_answers += 1
            send(self._render(data, qend, stale, edns, limit))
        else:
            lookup.waiters.append(waiter)
        self._attempt(lookup)

    def _prefetch(self, entry: Entry) -> None:
        """Refresh ``entry`` before it expires (Unbound's ``prefetch``): a lookup nobody waits for."""
        if entry.key not in self._inflight and self._loop is not None:
            self._attempt(self._lookup(entry.key))

    def _lookup(self, key: bytes) -> _Lookup:
        question, bits = split_key(key)
        lookup = _Lookup(key, question, RD | (bits & CD), bool(bits & DO_BIT), self._order())
        self._inflight[key] = lookup
        return lookup

    def _order(self) -> list[UpstreamHealth]:
        now = self._now()
        return sorted(
            self.upstreams,
            key=lambda u: (u.down_until > now, int(u.srtt / LATENCY_BAND), u.index),
        )

    def _now(self) -> float:
        return time.monotonic()

    def _attempt(self, lookup: _Lookup) -> None:
        """Send ``lookup`` to its next upstream, or finish it when none is left."""
        if lookup.tried >= len(lookup.order):
            self._finish(lookup, None)
            return
        upstream = lookup.order[lookup.tried]
        lookup.tried += 1
        pooled = self._socket(upstream.family)
        qid = secrets.randbits(16)
        while qid in pooled.pending:
            qid = secrets.randbits(16)
        lookup.qid, lookup.upstream, lookup.socket = qid, upstream, pooled
        lookup.sent_at = self._now()
        pooled.pending[qid] = lookup
        pooled.used += 1
        upstream.queries += 1
        assert self._loop is not None and pooled.transport is not None
        lookup.timer = self._loop.call_later(self._timeout, self._timed_out, lookup)
        pooled.transport.sendto(lookup.wire(), upstream.address)

    def _socket(self, family: int) -> _PooledSocket:
        pool = self._pools[family]
        slot = secrets.randbelow(len(pool))
        pooled = pool[slot]
        if pooled.used >= RECYCLE_AFTER and not pooled.retired:
            # Replace it in the background; it serves this query, then closes when its last reply is in.
            pooled.retired = True
            self._spawn(self._replace(family, slot, pooled))
        return pooled

    async def _replace(self, family: int, slot: int, old: _PooledSocket) -> None:
        fresh = await self._open(family)
        self._pools[family][slot] = fresh
        old.close_if_idle()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, lookup: _Lookup) -> None:
        if lookup.timer is not None:
            lookup.timer.cancel()
            lookup.timer = None
        pooled = lookup.socket
        if pooled is not None:
            pooled.pending.pop(lookup.qid, None)
            pooled.close_if_idle()
            lookup.socket = None

    def _timed_out(self, lookup: _Lookup) -> None:
        lookup.timer = None
        self._release(lookup)
        self._upstream_failed(lookup, "timed out")

    def _upstream_failed(self, lookup: _Lookup, why: str, *, unhealthy: bool = True) -> None:
        """Try the next upstream. ``unhealthy``: count it against this one's health (not for an answer
        such as SERVFAIL, which says more about the name than the upstream, as CoreDNS's health checks)."""
        assert lookup.upstream is not None
        self.upstream_errors += 1
        if unhealthy:
            lookup.upstream.failed(self._now())
        logger.debug("upstream %s:%d %s", *lookup.upstream.address, why)
        self._attempt(lookup)

    def reply_received(self, lookup: _Lookup, data: bytes, addr: tuple[str | int, ...]) -> None:
        """A datagram with a pending id: accepted only from that upstream with that question (RFC 5452)."""
        assert lookup.upstream is not None
        if (_normal(str(addr[0])), addr[1]) != lookup.upstream.address or not self._answers(lookup, data):
            self.ignored += 1
            return
        self._release(lookup)
        if data[2] & (TC >> 8):
            self._spawn(self._over_tcp(lookup))
            return
        self._accept(lookup, data)

    @staticmethod
    def _answers(lookup: _Lookup, data: bytes) -> bool:
        end = HEADER_SIZE + len(lookup.question)
        return (
            bool(data[2] & 0x80)  # QR
            and data[4:6] == b"\x00\x01"
            and len(data) >= end
            and data[HEADER_SIZE : end - 4].lower() + data[end - 4 : end] == lookup.question
        )

    async def _over_tcp(self, lookup: _Lookup) -> None:
        """RFC 7766 §5: the UDP reply was truncated; ask the same upstream over TCP."""
        assert lookup.upstream is not None
        host, port = lookup.upstream.address
        lookup.qid = secrets.randbits(16)
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    query = lookup.wire()
                    writer.write(len(query).to_bytes(2, "big") + query)
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(length)
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self._upstream_failed(lookup, f"over TCP: {exc or type(exc).__name__}")
            return
        if data[:2] != lookup.qid.to_bytes(2, "big") or not self._answers(lookup, data):
            self._upstream_failed(lookup, "over TCP: a reply to another query")
            return
        self._accept(lookup, data)

    def _accept(self, lookup: _Lookup, data: bytes) -> None:
        assert lookup.upstream is not None
        try:
            scan = scan_reply(data)
        except Malformed as exc:
            self._upstream_failed(lookup, f"sent a malformed reply: {exc}")
            return
        if scan.rcode in (Rcode.SERVFAIL, Rcode.REFUSED) or scan.rcode > 0xF:
            lookup.upstream.succeeded(self._now() - lookup.sent_at)
            self._upstream_failed(lookup, f"answered rcode {scan.rcode}", unhealthy=False)
            return
        lookup.upstream.succeeded(self._now() - lookup.sent_at)
        entry = entry_from_reply(lookup.key, data, scan, self._now())
        self.cache.store(entry)
        self._finish(lookup, entry)

    def _finish(self, lookup: _Lookup, entry: Entry | None) -> None:
        """Answer everyone waiting: the entry, else a stale answer (RFC 8767), else SERVFAIL."""
        self._inflight.pop(lookup.key, None)
        if entry is None and lookup.waiters:
            entry = self.cache.stale(lookup.key)
            if entry is not None:
                self.stale_answers += len(lookup.waiters)
        for waiter in lookup.waiters:
            if entry is not None:
                reply = self._render(waiter.data, waiter.qend, entry, waiter.edns, waiter.limit)
            else:
                self.failures += 1
                reply = error_response(
                    waiter.data, Rcode.SERVFAIL, question_end=waiter.qend, edns=waiter.edns
                )
            try:
                waiter.send(reply)
            except Exception:  # one client's closed connection must not cost the others their answer
                logger.debug("could not send a forwarded reply", exc_info=True)


def _normal(host: str) -> str:
    """One spelling per address, so a reply's source compares equal to the configured upstream."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    return host


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET

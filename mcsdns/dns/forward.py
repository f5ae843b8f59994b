"""Forwarding: the cache misses of a sidecar resolver, sent upstream and answered when the reply comes.

Off the authoritative path. The responder answers names outside the zone from the forwarding cache
(``cache.py``) and hands a miss back as a ``responder.Forward``; the server then calls ``Forwarder.forward``
with a way to send the reply. Only clients in ``--forward-allow`` (default loopback) reach this, so mcsdns
is never an open resolver; the server answers the others REFUSED.

A miss costs no task: identical misses in flight wait on one upstream query (coalescing), which goes out on
one of a small pool of UDP sockets with kernel-chosen ports and a random id, and its reply is accepted only
from the upstream's address and port, with that id and that question (RFC 5452 §9). A reply with TC is asked
again over TCP (RFC 7766 §5). Upstreams are tried healthy first, in configured order within a latency band;
one that failed twice in a row is down for a growing while and tried last (as CoreDNS's ``forward`` marks
upstreams down). When every upstream fails, an expired answer still inside ``--forward-serve-stale`` is
served with TTL 30 s (RFC 8767), else SERVFAIL. A popular entry is refreshed shortly before it expires
(Unbound's ``prefetch``), so hot names rarely go through a miss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcsdns.dns import batch
from mcsdns.dns.cache import DO_BIT, Entry, ForwardCache, entry_from_reply, split_key
from mcsdns.dns.responder import Forward, Send
from mcsdns.histogram import DURATION_BUCKETS, Histogram
from mcsdns.wire import (
    CD,
    EDNS_DO,
    HEADER,
    HEADER_SIZE,
    RD,
    RR_FIXED,
    SERVER_UDP_PAYLOAD,
    TC,
    Malformed,
    QType,
    Rcode,
    error_response,
    scan_reply,
)

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 1.0  # per upstream attempt; the client's own retry usually comes after 1-5 s
POOL_SIZE = 8  # UDP sockets per upstream
UPSTREAM_BATCH = 16  # replies read per recvmmsg from a pooled socket, queries sent per sendmmsg
QUERY_SLOT = 512  # bytes an upstream query may have: the question, a header and an OPT (at most 283)
RECYCLE_AFTER = 4096  # queries a pooled socket carries before it is replaced, so source ports keep moving
LATENCY_BAND = 0.05  # upstreams within 50 ms of each other count as equally fast
ORDER_EVERY = 0.1  # seconds between reorderings of the upstreams by health and latency
DOWN_AFTER = 2  # consecutive failures that mark an upstream down (CoreDNS's max_fails)
DOWN_MAX = 30.0
DOWN_DOUBLINGS = math.ceil(math.log2(DOWN_MAX))  # doublings of 1 s that reach DOWN_MAX
_ALLOWED_MEMO = 4096

_OPT_PLAIN = b"\x00" + RR_FIXED.pack(QType.OPT, SERVER_UDP_PAYLOAD, 0, 0)
_OPT_DO = b"\x00" + RR_FIXED.pack(QType.OPT, SERVER_UDP_PAYLOAD, EDNS_DO, 0)

Upstream = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The responder's rendering of an entry for one client: (query, question end, entry, OPT, limit) -> reply.
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
    rcodes: collections.Counter[int] = field(default_factory=collections.Counter)  # of its replies
    durations: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))  # each reply's

    def succeeded(self, rtt: float) -> None:
        self.replies += 1
        self.durations.observe(rtt)
        self.srtt = rtt if self.srtt == 0 else self.srtt + (rtt - self.srtt) / 8
        self.fails = 0
        self.down_until = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        self.fails += 1
        if self.fails >= DOWN_AFTER:
            # Doubling up to DOWN_MAX; the exponent stops growing there, as 2.0 ** 1024 would overflow
            # after a long enough outage and every later failure would raise.
            self.down_until = now + min(DOWN_MAX, 2.0 ** min(self.fails - DOWN_AFTER, DOWN_DOUBLINGS))


@dataclass(slots=True, eq=False)
class _Lookup:
    """One upstream question in flight, and every client waiting for its answer."""

    key: bytes
    question: bytes  # lower-cased qname + QTYPE + QCLASS, as sent upstream
    flags: int  # RD, and CD when the client set it
    do: bool
    order: list[UpstreamHealth]
    waiters: list[Forward]  # the clients' queries, as the responder handed them over
    tried: int = 0  # attempts made; also tells a stale deadline from the current attempt's
    qid: int = 0
    sent_at: float = 0.0
    upstream: UpstreamHealth | None = None
    socket: _PooledSocket | None = None  # while a UDP reply is awaited

    def wire(self) -> bytes:
        """The upstream query: our id, RD (and CD), the question, and an OPT with our payload and DO."""
        return b"".join(
            (HEADER.pack(self.qid, self.flags, 1, 0, 0, 1), self.question, _OPT_DO if self.do else _OPT_PLAIN)
        )


class _PooledSocket:
    """One UDP socket connected to one upstream, read straight from the loop's reader callback (no
    transport): each wake-up drains every datagram waiting, and replies are matched to lookups by id, then
    checked by the forwarder.

    Connected (``connect``, udp(7)), because the kernel then drops datagrams from any other address or port
    before they reach us (the first check of RFC 5452 §9.1, for free), sends without resolving the address
    again for every datagram, and ``recv`` builds no address tuple: a miss's two upstream system calls are
    the cheapest they can be.
    """

    def __init__(
        self, forwarder: Forwarder, loop: asyncio.AbstractEventLoop, upstream: UpstreamHealth
    ) -> None:
        self.forwarder = forwarder
        self.loop = loop
        self.upstream = upstream
        # No bind: connect picks a random ephemeral port (Linux randomises them, RFC 6056).
        self.sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(upstream.address)
        self.pending: dict[int, _Lookup] = {}
        self.used = 0
        self.retired = False
        # Queries queued in this turn of the loop, sent together by ``flush`` (one sendmmsg).
        self.outbox = (
            batch.Batch(self.sock.fileno(), slots=0, sends=UPSTREAM_BATCH, send_slot=QUERY_SLOT)
            if forwarder.inbox is not None
            else None
        )
        self.queued: list[_Lookup] = []
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        # Every reply waiting, in one recvmmsg (``batch.py``) where there is one: under load several have
        # arrived by the time the loop calls, and each costed a wake-up and a recv. Without it, one
        # datagram per wake-up: the loop polls level-triggered, so it calls again while more wait, and
        # draining would cost an extra failing recv (EAGAIN) per wake-up.
        inbox = self.forwarder.inbox
        try:
            if inbox is None:
                self._received(self.sock.recv(65535))
                return
            count = inbox.recv(self.sock.fileno())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. ECONNREFUSED: ICMP port unreachable for an earlier query
            logger.debug("upstream socket error: %s", exc)
            return
        for i in range(count):
            self._received(inbox.datagram(i)[0])  # a slot holds 64 KiB, any UDP datagram: never cut

    def _received(self, data: bytes) -> None:
        lookup = self.pending.get(data[0] << 8 | data[1]) if len(data) >= HEADER_SIZE else None
        if lookup is None:
            self.forwarder.ignored += 1
            return
        self.forwarder.reply_received(lookup, data)

    def send(self, lookup: _Lookup) -> bool:
        """Send ``lookup``'s query, or queue it for ``flush`` (True: the forwarder must flush this socket
        before the loop turns). False: it could not be sent, the attempt failed."""
        data = lookup.wire()
        outbox = self.outbox
        if outbox is not None:
            if outbox.queued >= outbox.sends:
                self.forwarder.sent_failed(self, self.flush())
            if outbox.queue_to(None, data):
                self.queued.append(lookup)
                return True
        try:
            self.sock.send(data)
        except OSError as exc:  # a full send buffer, an unreachable network, ECONNREFUSED: the attempt failed
            logger.debug("upstream send failed: %s", exc)
            return False
        return True

    def flush(self) -> list[_Lookup]:
        """Send the queued queries; the lookups whose query the kernel did not take."""
        assert self.outbox is not None
        failed: list[int] = []
        if self.sock.fileno() >= 0:
            self.outbox.flush(failed)
        else:
            self.outbox.queued = 0
            failed = list(range(len(self.queued)))
        queued, self.queued = self.queued, []
        return [queued[i] for i in failed]

    def close_if_idle(self) -> None:
        if self.retired and not self.pending and self.sock.fileno() >= 0:
            self.close()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class _Random:
    """Unpredictable 16-bit ids and choices from the OS's random source (RFC 5452 §9.2), read in batches so
    a query costs no system call."""

    def __init__(self) -> None:
        self._values = memoryview(b"").cast("H")
        self._at = 0

    def u16(self) -> int:
        if self._at >= len(self._values):
            self._values, self._at = memoryview(os.urandom(4096)).cast("H"), 0
        self._at += 1
        return self._values[self._at - 1]


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
        self._ordered = list(self.upstreams)
        self._ordered_until = 0.0
        self._pools: dict[int, list[_PooledSocket]] = {}  # by upstream index
        self._retired: list[_PooledSocket] = []
        self._random = _Random()
        # One receive array for every pooled socket: the loop runs one reader callback at a time.
        self.inbox = batch.Batch(-1, slots=UPSTREAM_BATCH, slot=65536, sends=0) if batch.available() else None
        # One timer for every attempt: deadlines come in send order, as the timeout is the same for all.
        self._deadlines: collections.deque[tuple[float, _Lookup, int]] = collections.deque()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._unflushed: list[_PooledSocket] = []  # pooled sockets with queries queued in this turn
        self._flush_soon = False
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
        """Open the upstream socket pools, one per upstream."""
        loop = self._loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            self._pools[upstream.index] = [_PooledSocket(self, loop, upstream) for _ in range(POOL_SIZE)]

    def close(self) -> None:
        for pooled in [*(p for pool in self._pools.values() for p in pool), *self._retired]:
            pooled.close()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        for task in self._tasks:
            task.cancel()

    # -- changed live (SIGHUP) -------------------------------------------------------------------------

    def reconfigure(self, upstreams: Sequence[Upstream], allow: Sequence[Network]) -> None:
        """New upstreams and client networks, without a restart. Lookups in flight finish on the sockets
        they were sent from (retired, closed once idle); an upstream kept keeps its health and counters."""
        self._allow = tuple(allow)
        self._allowed.clear()
        known = {u.address: u for u in self.upstreams}
        wanted = [(_normal(host), port) for host, port in upstreams]
        if wanted == [u.address for u in self.upstreams]:
            return
        if not wanted:
            raise ValueError("forwarding needs at least one upstream")
        old_pools = self._pools
        self.upstreams = tuple(
            known.get(address) or UpstreamHealth(address, index, _family(address[0]))
            for index, address in enumerate(wanted)
        )
        for index, upstream in enumerate(self.upstreams):
            upstream.index = index
        self._ordered, self._ordered_until = list(self.upstreams), 0.0
        self._pools = {}
        for pool in old_pools.values():
            for pooled in pool:
                pooled.retired = True
                self._retired.append(pooled)
                pooled.close_if_idle()
        if self._loop is not None:
            for upstream in self.upstreams:
                self._pools[upstream.index] = [
                    _PooledSocket(self, self._loop, upstream) for _ in range(POOL_SIZE)
                ]

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

    def forward(self, query: Forward, send: Send, to: Any) -> None:
        """Answer ``query`` through ``send(to, reply)``: a query the responder found outside the zone and not
        in the cache."""
        query.send, query.to = send, to
        self.misses += 1
        key = query.key
        lookup = self._inflight.get(key)
        if lookup is not None:
            self.coalesced += 1
            lookup.waiters.append(query)
            return
        now = time.monotonic()
        waiters = [query]
        if self._order(now)[0].down_until > now and (stale := self.cache.stale(key)) is not None:
            # RFC 8767 §5: every upstream is known to be down; answer stale now and refresh behind it.
            self.stale_answers += 1
            send(to, self._render(query.data, query.qend, stale, query.edns, query.limit))
            waiters = []
        self._attempt(self._lookup(key, query.qend - HEADER_SIZE, now, waiters), now)

    def _prefetch(self, entry: Entry) -> None:
        """Refresh ``entry`` before it expires (Unbound's ``prefetch``): a lookup nobody waits for."""
        if entry.key not in self._inflight and self._loop is not None:
            now = time.monotonic()
            self._attempt(self._lookup(entry.key, len(split_key(entry.key)[0]), now, []), now)

    def _lookup(self, key: bytes, qlen: int, now: float, waiters: list[Forward]) -> _Lookup:
        """A lookup for ``key``: its first ``qlen`` bytes are the question to send, a byte after is DO/CD."""
        bits = key[qlen] if len(key) > qlen else 0
        lookup = _Lookup(key, key[:qlen], RD | (bits & CD), bool(bits & DO_BIT), self._order(now), waiters)
        self._inflight[key] = lookup
        return lookup

    def _order(self, now: float) -> list[UpstreamHealth]:
        """Healthy before down, then by latency band, then as configured; worked out at most every 100 ms
        (or at once after a failure), not per query."""
        if now >= self._ordered_until:
            self._ordered = sorted(
                self.upstreams,
                key=lambda u: (u.down_until > now, int(u.srtt / LATENCY_BAND), u.index),
            )
            self._ordered_until = now + ORDER_EVERY
        return self._ordered

    def _attempt(self, lookup: _Lookup, now: float) -> None:
        """Send ``lookup`` to its next upstream at ``now``, or finish it when none is left."""
        if lookup.tried >= len(lookup.order):
            self._finish(lookup, None)
            return
        upstream = lookup.order[lookup.tried]
        lookup.tried += 1
        pooled = self._socket(upstream)
        qid = self._random.u16()
        while qid in pooled.pending:
            qid = self._random.u16()
        lookup.qid, lookup.upstream, lookup.sent_at = qid, upstream, now
        upstream.queries += 1
        pooled.used += 1
        if not pooled.send(lookup):
            self._upstream_failed(lookup, "could not be sent to", now)
            return
        pooled.pending[qid] = lookup
        lookup.socket = pooled
        if len(pooled.queued) == 1:  # the first query queued on it since its last flush
            self._unflushed.append(pooled)
            if not self._flush_soon:
                self._flush_soon = True
                assert self._loop is not None
                self._loop.call_soon(self._flush_queries)
        self._deadlines.append((now + self._timeout, lookup, lookup.tried))
        if self._sweep_timer is None:
            assert self._loop is not None
            self._sweep_timer = self._loop.call_later(self._timeout, self._sweep)

    def _flush_queries(self) -> None:
        """Send every query queued in this turn of the loop: one sendmmsg per pooled socket used."""
        self._flush_soon = False
        unflushed, self._unflushed = self._unflushed, []
        for pooled in unflushed:
            self.sent_failed(pooled, pooled.flush())

    def sent_failed(self, pooled: _PooledSocket, lookups: list[_Lookup]) -> None:
        """The kernel did not take these lookups' queries from ``pooled``: try their next upstream."""
        for lookup in lookups:
            if lookup.socket is pooled and pooled.pending.get(lookup.qid) is lookup:
                self._release(lookup)
                self._upstream_failed(lookup, "could not be sent to", time.monotonic())

    def _sweep(self) -> None:
        """Time out every attempt whose deadline has passed and that is still waiting for its reply."""
        self._sweep_timer = None
        deadlines = self._deadlines
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, lookup, attempt = deadlines.popleft()
            if lookup.tried == attempt and lookup.socket is not None:
                self._release(lookup)
                self._upstream_failed(lookup, "timed out", now)
        if deadlines and self._sweep_timer is None:
            assert self._loop is not None
            self._sweep_timer = self._loop.call_later(max(deadlines[0][0] - now, 0.001), self._sweep)

    def _socket(self, upstream: UpstreamHealth) -> _PooledSocket:
        pool = self._pools[upstream.index]
        slot = self._random.u16() % len(pool)
        pooled = pool[slot]
        if pooled.used >= RECYCLE_AFTER:
            # A fresh port in its place; the old socket still takes the replies it awaits, then closes.
            assert self._loop is not None
            pooled.retired = True
            self._retired = [p for p in self._retired if p.sock.fileno() >= 0]
            self._retired.append(pooled)
            pooled.close_if_idle()
            pooled = pool[slot] = _PooledSocket(self, self._loop, upstream)
        return pooled

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, lookup: _Lookup) -> None:
        pooled = lookup.socket
        if pooled is not None:
            pooled.pending.pop(lookup.qid, None)
            if pooled.retired:
                pooled.close_if_idle()
            lookup.socket = None

    def _upstream_failed(self, lookup: _Lookup, why: str, now: float, *, unhealthy: bool = True) -> None:
        """Try the next upstream. ``unhealthy``: count it against this one's health (not for an answer
        such as SERVFAIL, which says more about the name than the upstream, as CoreDNS's health checks)."""
        assert lookup.upstream is not None
        self.upstream_errors += 1
        if unhealthy:
            lookup.upstream.failed(now)
            self._ordered_until = 0.0
        logger.debug("upstream %s:%d %s", *lookup.upstream.address, why)
        self._attempt(lookup, now)

    def reply_received(self, lookup: _Lookup, data: bytes) -> None:
        """A datagram with a pending id, on a socket connected to the lookup's upstream (so from its address
        and port): accepted only with that question (RFC 5452 §9.1)."""
        if not self._answers(lookup, data):
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
        if not data[2] & 0x80 or data[4:6] != b"\x00\x01" or len(data) < end:  # QR, one question
            return False
        echoed = data[HEADER_SIZE:end]
        # Upstreams echo the question as sent (lower case); one may change the name's case (RFC 4343).
        return echoed == lookup.question or echoed[:-4].lower() + echoed[-4:] == lookup.question

    async def _over_tcp(self, lookup: _Lookup) -> None:
        """RFC 7766 §5: the UDP reply was truncated; ask the same upstream over TCP."""
        assert lookup.upstream is not None
        host, port = lookup.upstream.address
        lookup.qid = self._random.u16()
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
            self._upstream_failed(lookup, f"over TCP: {exc or type(exc).__name__}", time.monotonic())
            return
        if data[:2] != lookup.qid.to_bytes(2, "big") or not self._answers(lookup, data):
            self._upstream_failed(lookup, "over TCP: a reply to another query", time.monotonic())
            return
        self._accept(lookup, data)

    def _accept(self, lookup: _Lookup, data: bytes) -> None:
        assert lookup.upstream is not None
        now = time.monotonic()
        try:
            # The question is ours (``_answers``): the scan starts past it. DNSSEC needs what a minimal
            # answer drops.
            scan = scan_reply(data, minimal=not lookup.do, qend=HEADER_SIZE + len(lookup.question))
        except Malformed as exc:
            self._upstream_failed(lookup, f"sent a malformed reply: {exc}", now)
            return
        lookup.upstream.rcodes[scan.rcode] += 1
        lookup.upstream.succeeded(now - lookup.sent_at)
        if scan.rcode in (Rcode.SERVFAIL, Rcode.REFUSED) or scan.rcode > 0xF:
            self._upstream_failed(lookup, f"answered rcode {scan.rcode}", now, unhealthy=False)
            return
        entry = entry_from_reply(lookup.key, data, scan, now)
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
                waiter.send(waiter.to, reply)  # type: ignore[misc]  # set by ``forward``
            except Exception:  # one client's closed connection must not cost the others their answer
                logger.debug("could not send a forwarded reply", exc_info=True)


def _normal(host: str) -> str:
    """One spelling per address, for the metrics' upstream labels and the logs."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    return host


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET

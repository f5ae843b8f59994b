"""Sockets: UDP and TCP listeners that hand each DNS message to the responder.

The only socket code in mcsdns (with ``batch.py``, the recvmmsg/sendmmsg calls it uses). UDP answers
synchronously as each batch of datagrams is read (``BatchedUdp``; ``UdpProtocol`` on uvloop's transport
where those calls are missing): no task, no await, no log line per packet. TCP (RFC 7766) frames messages
with a 2-byte length, answers pipelined queries in order, closes idle connections, caps open connections
and stops reading while the peer is not reading its replies. Nothing a client sends can raise out of a
callback: an unexpected error answers SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from mcsdns.dns import batch
from mcsdns.dns.forward import Forwarder
from mcsdns.dns.responder import TCP, UDP, Forward
from mcsdns.dns.stats import RequestStats
from mcsdns.errors import ListenError
from mcsdns.settings import ListenAddress, ServerSettings
from mcsdns.wire import Rcode, error_response

logger = logging.getLogger(__name__)

Respond = Callable[[bytes, int, bool], "bytes | Forward | None"]
UDP_BUFFER = 4 * 1024 * 1024  # absorb bursts while the loop is busy (e.g. publishing a large snapshot)
# Full batches read in one wake-up before the loop runs its other callbacks (TCP, timers, the forwarder's
# upstream replies): 256 datagrams, as uvloop reads at most 32 per wake-up for the same fairness.
BATCHES_PER_WAKEUP = 4
_ERROR_LOG_INTERVAL = 10.0


class _ErrorLog:
    """Logs an unexpected exception at most once per interval, with how many were suppressed."""

    def __init__(self) -> None:
        self._last = 0.0
        self._suppressed = 0
        self.count = 0  # every one: CoreDNS's panics counter

    def report(self, where: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last < _ERROR_LOG_INTERVAL:
            self._suppressed += 1
            return
        logger.exception(
            "unexpected error answering a %s query (%d more suppressed)", where, self._suppressed
        )
        self._last, self._suppressed = now, 0


errors = _ErrorLog()


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        respond: Respond,
        servfail: Callable[[bytes], bytes | None],
        forwarder: Forwarder | None = None,
        stats: RequestStats | None = None,
    ) -> None:
        self._respond = respond
        self._servfail = servfail
        self._forwarder = forwarder
        self._stats = stats or RequestStats()
        self._transport: asyncio.DatagramTransport

    # Protocol interface
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport but implements it.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        forwarder = self._forwarder
        stats = self._stats
        started = time.perf_counter() if stats.sample else 0.0  # stats.py: a query every 5 ms is timed
        try:
            reply = self._respond(data, UDP, forwarder is not None and forwarder.allowed(str(addr[0])))
            if type(reply) is Forward and forwarder is not None:
                forwarder.forward(reply, self._send, addr)  # a cache miss: answered when it is in
                return  # not timed here (forward's own histogram is): the next query is
        except Exception:
            errors.report("UDP")
            reply = self._servfail(data)
        if isinstance(reply, bytes):
            self._transport.sendto(reply, addr)
        if started:
            stats.observe("udp", data, reply, time.perf_counter() - started)

    def _send(self, addr: tuple[str | int, ...], reply: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (port unreachable): the client is gone, nothing to do.
        logger.debug("UDP socket error: %s", exc)


@dataclass(slots=True)
class TcpLimits:
    """What every TCP connection of the server shares: the limits, the open connections and the counts."""

    idle_timeout: float  # silent this long, or this long on one message, and the connection is closed
    max_connections: int
    max_lifetime: float  # a connection is closed this long after it opened
    open: int = 0
    accepted: int = 0
    rejected: int = 0  # closed at once: the table was full of connections in the middle of a message
    evicted: int = 0  # idle connections closed to admit a new one at the cap
    timed_out: int = 0  # closed for silence, a slow message or their lifetime
    connections: dict[TcpProtocol, None] = field(default_factory=dict)  # open ones, oldest first

    def oldest_idle(self) -> TcpProtocol | None:
        """The connection that has waited longest since its last whole message, none in the middle of one."""
        idle = [c for c in self.connections if c.idle]
        return min(idle, key=lambda c: c.last_activity) if idle else None


class TcpProtocol(asyncio.Protocol):
    def __init__(
        self,
        respond: Respond,
        servfail: Callable[[bytes], bytes | None],
        limits: TcpLimits,
        forwarder: Forwarder | None = None,
        stats: RequestStats | None = None,
    ) -> None:
        # Global state
        self._respond = respond
        self._servfail = servfail
        self._limits = limits
        self._forwarder = forwarder
        self._stats = stats or RequestStats()
        self._loop = asyncio.get_running_loop()
        # Per-connection state
        self._transport: asyncio.Transport
        self._forwarding = False  # this client may use forwarding (``--forward-allow``)
        self._buffer = bytearray()
        self._opened = 0.0
        self.last_activity = 0.0  # when the connection opened or its last whole message arrived
        self._partial_since: float | None = None  # when the first byte of an unfinished message arrived
        self._idle_timer: asyncio.TimerHandle | None = None
        self._counted = False

    # Protocol interface
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._forwarding = (
            self._forwarder is not None and bool(peer) and self._forwarder.allowed(str(peer[0]))
        )
        limits = self._limits
        if limits.open >= limits.max_connections:
            # RFC 7766 §6.2.2: a server may close connections to protect its resources. As NSD and Knot do,
            # the one idle longest makes room; only a table full of connections mid-message turns this away.
            victim = limits.oldest_idle()
            if victim is None:
                limits.rejected += 1
                self._transport.abort()
                return
            limits.evicted += 1
            victim.close()
        limits.open += 1
        limits.accepted += 1
        limits.connections[self] = None
        self._counted = True
        self._opened = self.last_activity = self._loop.time()
        self._idle_timer = self._loop.call_later(limits.idle_timeout, self._check_deadlines)

    @property
    def idle(self) -> bool:
        return self._partial_since is None

    def close(self) -> None:
        """Close once the replies already written are sent; the slot is free at once."""
        self._release()
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        replies: list[bytes] = []
        while len(buffer) - start >= 2:
            length = buffer[start] << 8 | buffer[start + 1]
            end = start + 2 + length
            if len(buffer) < end:
                break
            message = bytes(buffer[start + 2 : end])
            start = end
            stats = self._stats
            started = time.perf_counter() if stats.sample else 0.0
            try:
                reply = self._respond(message, TCP, self._forwarding)
                if type(reply) is Forward and self._forwarder is not None:
                    # RFC 7766 §6.2.1.1: replies to pipelined queries may come back in any order.
                    self._forwarder.forward(reply, self._send, None)
                    continue  # not timed here: the next query is
            except Exception:
                errors.report("TCP")
                reply = self._servfail(message)
            if isinstance(reply, bytes):
                replies.append(len(reply).to_bytes(2, "big") + reply)
            if started:
                stats.observe("tcp", message, reply, time.perf_counter() - started)
        del buffer[:start]
        # Deadlines count whole messages, not bytes: a byte now and then does not keep a slot (slowloris).
        if start:
            self.last_activity = self._loop.time()
        if not buffer:
            self._partial_since = None
        elif start or self._partial_since is None:
            self._partial_since = self._loop.time()
        if replies:
            # One write for a pipelined batch keeps the order of replies (RFC 7766 §6.2.1.1 allows any
            # order; in-order is what simple clients expect).
            self._transport.write(b"".join(replies))

    def _send(self, _to: None, reply: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(len(reply).to_bytes(2, "big") + reply)

    def eof_received(self) -> bool | None:
        return None  # the peer is done sending: close once our replies are written

    def pause_writing(self) -> None:
        # The peer does not read its replies: stop reading its queries until it does.
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _release(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._counted:
            self._limits.open -= 1
            self._limits.connections.pop(self, None)
            self._counted = False

    def _check_deadlines(self) -> None:
        limits = self._limits
        started = self.last_activity if self._partial_since is None else self._partial_since
        deadline = min(started + limits.idle_timeout, self._opened + limits.max_lifetime)
        remaining = deadline - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._check_deadlines)
            return
        # RFC 7766 §6.2.3: the server closes idle connections; and one message may not take longer than
        # an idle period, nor a connection live past its lifetime.
        self._idle_timer = None
        limits.timed_out += 1
        self.close()


class BatchedUdp:
    """A UDP listener that reads up to ``batch.BATCH`` queries per system call and sends their replies with
    one more (recvmmsg/sendmmsg, ``batch.py``), where uvloop's transport makes two calls per query: on a
    small VM those calls cost more than the answer. Same answers, same callbacks, same counting as
    ``UdpProtocol``. Misses go to the forwarder, whose answers come later, from its upstream sockets'
    callbacks: each is queued with a copy of its client's address and every answer queued in one turn of
    the loop leaves with one sendmmsg (``_send_later``), as a batch's own replies do."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        respond: Respond,
        servfail: Callable[[bytes], bytes | None],
        forwarder: Forwarder | None,
        stats: RequestStats,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._batch = batch.Batch(sock.fileno())
        self._flush_soon = False  # a flush of answers queued outside ``_readable`` is scheduled
        self._respond = respond
        self._servfail = servfail
        self._forwarder = forwarder
        self._stats = stats
        self._allowed: dict[bytes, bool] = {}  # forwarding allowed, by the sender's address bytes
        self.dropped = 0  # replies the kernel did not take (a full send buffer)
        loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def bind(
        cls,
        loop: asyncio.AbstractEventLoop,
        address: ListenAddress,
        family: int,
        reuse_port: bool,
        respond: Respond,
        servfail: Callable[[bytes], bytes | None],
        forwarder: Forwarder | None,
        stats: RequestStats,
    ) -> BatchedUdp:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address.host, address.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(loop, sock, respond, servfail, forwarder, stats)

    def get_extra_info(self, name: str) -> object:
        return self._sock if name == "socket" else None

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def _readable(self) -> None:
        batch_, respond, forwarder, stats = self._batch, self._respond, self._forwarder, self._stats
        for _ in range(BATCHES_PER_WAKEUP):
            try:
                count = batch_.recv()
            except OSError as exc:  # e.g. ECONNREFUSED left by an earlier reply's ICMP: nothing to answer
                logger.debug("UDP socket error: %s", exc)
                return
            for i in range(count):
                data, cut = batch_.datagram(i)
                started = time.perf_counter() if stats.sample else 0.0  # stats.py: a query every 5 ms
                reply: bytes | Forward | None
                try:
                    if cut:  # larger than any query needs (batch.SLOT): its end is lost, so is its meaning
                        reply = error_response(data, Rcode.FORMERR)
                    elif forwarder is None:
                        reply = respond(data, UDP, False)
                    else:
                        sender = batch_.sender(i)
                        reply = respond(data, UDP, self._may_forward(sender))
                        if type(reply) is Forward:
                            forwarder.forward(reply, self._send_later, sender)
                            continue
                except Exception:
                    errors.report("UDP")
                    reply = self._servfail(data)
                if isinstance(reply, bytes) and not batch_.queue(i, reply):
                    self._send_later(batch_.sender(i), reply)
                if started:  # the reply's send comes at the batch's end: timed up to its rendering
                    stats.observe("udp", data, reply, time.perf_counter() - started)
            if count:
                self.dropped += batch_.flush()
            if count < batch.BATCH:
                return

    def _may_forward(self, name: bytes) -> bool:
        key = name[:2] + name[4:8] if len(name) == 16 else name[:2] + name[8:28]  # family + address
        known = self._allowed.get(key)
        if known is None:
            assert self._forwarder is not None
            known = self._forwarder.allowed(batch.address(name)[0])
            if len(self._allowed) >= 4096:
                self._allowed.clear()
            self._allowed[key] = known
        return known

    def _send_later(self, name: bytes, reply: bytes) -> None:
        """Queue ``reply`` to ``name`` (a sender's sockaddr bytes) for a sendmmsg at the end of this turn of
        the loop (or of the batch being answered); sent at once only when it fits no send slot. The
        forwarder answers a client through it too, with the sender kept as the ``Forward``'s ``to``."""
        if self._sock.fileno() < 0:
            return
        batch_ = self._batch
        if batch_.queued >= batch_.sends:
            self.dropped += batch_.flush()
        if not batch_.queue_to(name, reply):
            try:
                self._sock.sendto(reply, batch.address(name))
            except OSError as exc:  # a full buffer, an unreachable client: a UDP reply is best effort
                logger.debug("UDP reply not sent: %s", exc)
            return
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush_queued)

    def _flush_queued(self) -> None:
        self._flush_soon = False
        if self._batch.queued and self._sock.fileno() >= 0:
            self.dropped += self._batch.flush()


@dataclass(frozen=True, slots=True)
class Listener:
    udp: asyncio.DatagramTransport | BatchedUdp
    tcp: asyncio.Server
    address: ListenAddress  # with the port actually bound
    connections: TcpLimits  # shared by every listener: open, accepted and rejected TCP connections
    requests: RequestStats  # shared by every listener: queries seen, sampled durations and sizes


async def start_listeners(
    settings: ServerSettings,
    respond: Respond,
    servfail: Callable[[bytes], bytes | None],
    forwarder: Forwarder | None = None,
    *,
    reuse_port: bool = False,
) -> list[Listener]:
    """Bind UDP and TCP on every ``--listen`` address; port 0 picks one port for both. ``reuse_port``:
    share each address with the other serving processes (``--workers``), the kernel spreading clients
    over them (SO_REUSEPORT)."""
    loop = asyncio.get_running_loop()
    limits = TcpLimits(settings.tcp_idle_timeout, settings.tcp_max_connections, settings.tcp_max_lifetime)
    stats = RequestStats()
    stats.start(loop)
    listeners: list[Listener] = []
    try:
        for address in settings.listen:
            listeners.append(
                await _bind(
                    loop, address, respond, servfail, limits, stats, forwarder, reuse_port, settings.workers
                )
            )
    except BaseException:
        close_listeners(listeners)
        stats.stop()
        raise
    return listeners


async def _bind(
    loop: asyncio.AbstractEventLoop,
    address: ListenAddress,
    respond: Respond,
    servfail: Callable[[bytes], bytes | None],
    limits: TcpLimits,
    stats: RequestStats,
    forwarder: Forwarder | None,
    reuse_port: bool,
    processes: int,
) -> Listener:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    attempts = 20 if address.port == 0 else 1
    for attempt in range(attempts):
        udp: asyncio.DatagramTransport | BatchedUdp
        try:
            if batch.available():
                udp = BatchedUdp.bind(loop, address, family, reuse_port, respond, servfail, forwarder, stats)
            else:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: UdpProtocol(respond, servfail, forwarder, stats),
                    local_addr=(address.host, address.port),
                    family=family,
                    reuse_port=reuse_port or None,
                )
        except OSError as exc:
            raise ListenError(f"cannot listen on udp {address}: {bind_reason(exc)}") from None
        sock = cast(socket.socket, udp.get_extra_info("socket"))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        if reuse_port and processes > 1:
            spread_queries(sock, processes)
        port = sock.getsockname()[1]
        try:
            tcp = await loop.create_server(
                lambda: TcpProtocol(respond, servfail, limits, forwarder, stats),
                address.host,
                port,
                family=family,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=1024,
            )
        except OSError as exc:
            udp.close()
            if attempt + 1 == attempts:
                raise ListenError(f"cannot listen on tcp {address.host}:{port}: {bind_reason(exc)}") from None
            continue  # the UDP port's TCP twin was taken: pick another ephemeral port
        return Listener(udp, tcp, ListenAddress(address.host, port), limits, stats)
    raise AssertionError("unreachable")


# SO_ATTACH_REUSEPORT_CBPF (Linux 4.5, socket(7)): a classic BPF program that picks, for each datagram, the
# index of the socket in the address's SO_REUSEPORT group that receives it.
SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_RET_A = 0x20, 0x94, 0x16
_SKF_AD_RANDOM = -0x1000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: a load that yields a random 32-bit number


def spread_queries(sock: socket.socket, processes: int) -> bool:
    """Make the kernel hand each datagram to a random one of the ``processes`` sockets of ``sock``'s
    SO_REUSEPORT group, instead of hashing the client's address and port onto one of them.

    The hash keeps a flow on one process, and a DNS client sends all its queries from one or a few ports
    (dnsperf, a node's CoreDNS forwarding to mcsdns), so two processes split such load as unevenly as 68/32
    and one saturates while the other idles. A query carries no state across datagrams, so any process may
    answer it. An index past the group's size (a worker still starting) falls back to the hash. Without the
    option (not Linux, or a kernel that refuses it) the hash stays: logged, not fatal.
    """
    program = b"".join(
        struct.pack("HBBi", code, 0, 0, k)
        for code, k in ((_BPF_LD_W_ABS, _SKF_AD_RANDOM), (_BPF_ALU_MOD_K, processes), (_BPF_RET_A, 0))
    )
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        logger.info("queries spread over the serving processes by client address and port: %s", exc)
        return False
    return True


def bind_reason(exc: OSError) -> str:
    """The system's words for a bind error: uvloop wraps it ("could not bind to local_addr", with the errno
    on its cause) or repeats the address in its text ("error while attempting to bind on address ...")."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    return os.strerror(cause.errno) if cause.errno else cause.strerror or str(cause)


def close_listeners(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.requests.stop()
        listener.udp.close()
        listener.tcp.close()

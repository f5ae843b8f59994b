"""The floor: the least mcsdns's listeners do per UDP query, for workers_bench.py's "floor" row.

Each datagram is answered at once with its own bytes turned into a reply (QR and RA set, RCODE NOERROR, no
records added: a NODATA answer as long as the query) by mcsdns's own listeners (``server.start_listeners``:
N processes on one address with SO_REUSEPORT, queries spread over them by the kernel, read and answered
in batches with recvmmsg/sendmmsg) with the responder replaced by a function that does nothing. No
parsing, no lookup, no counting: the gap between this row and mcsdns's is what answering DNS costs, and
this row's ratio to NSD is the ceiling of mcsdns's on this machine. The readiness probe (``--probe
NAME=IP``) gets a real A answer, built with dnspython.

With ``--forward HOST:PORT`` it is the floor of forwarding instead, for forward_bench.py's misses: every
query is relayed to the upstream and its reply to the client, with the I/O of mcsdns's forwarder
(``forward.py``) and none of its work: the same listener, a pool of ``POOL_SIZE`` connected UDP sockets read
through one recvmmsg array, the queries of one turn of the loop sent with one sendmmsg per socket, the
answers queued to the clients and sent with one sendmmsg. No cache, no question check, no coalescing, no
health, ids from a counter: the gap between this row and mcsdns's misses is what mcsdns does per miss, and
this row is the most any forwarder on mcsdns's listeners could answer on this machine.

    python bench/floor_server.py --listen 127.0.0.1:PORT --processes N --probe web.ns.svc.zone=10.0.0.1
    python bench/floor_server.py --listen 127.0.0.1:PORT --forward 127.0.0.1:UPSTREAM
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import dns.message
import dns.name
import dns.rrset
import uvloop

from mcsdns.dns import batch
from mcsdns.dns.forward import POOL_SIZE, QUERY_SLOT, UPSTREAM_BATCH
from mcsdns.dns.responder import Forward, Send
from mcsdns.dns.server import start_listeners
from mcsdns.settings import ListenAddress, ServerSettings


class Floor:
    """The responder's place in the listener, doing nothing: the query's own bytes as its reply."""

    def __init__(self, probe_name: bytes, probe_address: str) -> None:
        self.probe_name = probe_name  # lower-cased wire form
        self.probe_address = probe_address

    def respond(self, data: bytes, limit: int, forward: bool = False) -> bytes | None:
        if len(data) < 12:
            return None
        end = 12 + len(self.probe_name)
        if len(data) >= end and data[12:end].lower() == self.probe_name:
            return self.probe_reply(data)
        return data[:2] + b"\x81\x80" + data[4:]

    def probe_reply(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A", self.probe_address))
        return reply.to_wire()


class Relay:
    """The forwarder's place in the listener, doing nothing but relay (``--forward``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: tuple[str, int]) -> None:
        self.loop = loop
        self.inbox = batch.Batch(-1, slots=UPSTREAM_BATCH, slot=65536, sends=0)
        self.pool: list[tuple[socket.socket, batch.Batch]] = []
        for _ in range(POOL_SIZE):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(upstream)
            self.pool.append(
                (sock, batch.Batch(sock.fileno(), slots=0, sends=UPSTREAM_BATCH, send_slot=QUERY_SLOT))
            )
            loop.add_reader(sock.fileno(), self.readable, sock.fileno())
        self.waiting: dict[int, Forward] = {}
        self.next_id = 0
        self.unflushed: set[int] = set()

    @staticmethod
    def respond(data: bytes, limit: int, forward: bool = False) -> Forward | None:
        # Forward every query: the one object a miss makes in mcsdns, made here too.
        return Forward(data, 0, -1, limit, b"") if len(data) >= 12 else None

    @staticmethod
    def allowed(client: str) -> bool:
        return True

    def forward(self, query: Forward, send: Send, to: Any) -> None:
        query.send, query.to = send, to
        data = query.data
        qid = self.next_id = (self.next_id + 1) & 0xFFFF
        self.waiting[qid] = query
        slot = qid % POOL_SIZE
        outbox = self.pool[slot][1]
        if outbox.queued >= outbox.sends:
            outbox.flush()
        outbox.queue_to(None, qid.to_bytes(2, "big") + data[2:])
        if not self.unflushed:
            self.loop.call_soon(self.flush)
        self.unflushed.add(slot)

    def flush(self) -> None:
        for slot in self.unflushed:
            self.pool[slot][1].flush()
        self.unflushed.clear()

    def readable(self, fd: int) -> None:
        count = self.inbox.recv(fd)
        for i in range(count):
            reply = self.inbox.datagram(i)[0]
            query = self.waiting.pop(reply[0] << 8 | reply[1], None)
            if query is not None:
                query.send(query.to, query.data[:2] + reply[2:])  # type: ignore[misc]


async def serve(host: str, port: int, processes: int, probe: str | None, forward: str | None) -> None:
    settings = ServerSettings(listen=(ListenAddress(host, port),), workers=processes)
    if forward:
        upstream_host, _, upstream_port = forward.rpartition(":")
        relay = Relay(asyncio.get_running_loop(), (upstream_host, int(upstream_port)))
        # Duck-typed: the listener calls only a forwarder's ``allowed`` and ``forward``.
        await start_listeners(settings, relay.respond, lambda _data: None, relay, reuse_port=True)  # type: ignore[arg-type]
    else:
        assert probe is not None
        name, _, address = probe.partition("=")
        floor = Floor(dns.name.from_text(name).to_wire().lower(), address)
        await start_listeners(settings, floor.respond, lambda _data: None, reuse_port=True)
    await asyncio.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--probe", help="NAME=IPV4 answered with an A record")
    parser.add_argument("--forward", help="HOST:PORT: relay every query there instead (the forwarding floor)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.probe and not args.forward:
        parser.error("one of --probe or --forward is needed")
    host, _, port = args.listen.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that the children are stopped below
    children: list[subprocess.Popen[bytes]] = []
    if not args.child:
        argv = [sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]]
        children = [subprocess.Popen(argv) for _ in range(args.processes - 1)]
    try:
        uvloop.run(serve(host.strip("[]"), int(port), args.processes, args.probe, args.forward))
    finally:
        for child in children:
            child.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

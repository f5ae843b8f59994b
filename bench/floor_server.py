"""The floor: the least mcsdns's listeners do per UDP query, for workers_bench.py's "floor" row.

Each datagram is answered at once with its own bytes turned into a reply (QR and RA set, RCODE NOERROR, no
records added: a NODATA answer as long as the query) by mcsdns's own listeners (``server.start_listeners``:
N processes on one address with SO_REUSEPORT, queries spread over them by the kernel, read and answered
in batches with recvmmsg/sendmmsg) with the responder replaced by a function that does nothing. No
parsing, no lookup, no counting: the gap between this row and mcsdns's is what answering DNS costs, and
this row's ratio to NSD is the ceiling of mcsdns's on this machine. The readiness probe (``--probe
NAME=IP``) gets a real A answer, built with dnspython.

    python bench/floor_server.py --listen 127.0.0.1:PORT --processes N --probe web.ns.svc.zone=10.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys

import dns.message
import dns.name
import dns.rrset
import uvloop

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


async def serve(host: str, port: int, processes: int, probe: str) -> None:
    name, _, address = probe.partition("=")
    floor = Floor(dns.name.from_text(name).to_wire().lower(), address)
    settings = ServerSettings(listen=(ListenAddress(host, port),), workers=processes)
    await start_listeners(settings, floor.respond, lambda _data: None, reuse_port=True)
    await asyncio.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--probe", required=True, help="NAME=IPV4 answered with an A record")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that the children are stopped below
    children: list[subprocess.Popen[bytes]] = []
    if not args.child:
        argv = [sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]]
        children = [subprocess.Popen(argv) for _ in range(args.processes - 1)]
    try:
        uvloop.run(serve(host.strip("[]"), int(port), args.processes, args.probe))
    finally:
        for child in children:
            child.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

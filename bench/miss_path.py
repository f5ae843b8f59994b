"""The Python a forwarded miss costs, in process: the figure to cut when misses are short of their target.

forward_bench.py's floor row shows how many misses a second mcsdns's I/O alone relays on the machine; the
rest of a miss's time is the Python this script times, without sockets: the client's query answered by
``Responder.respond`` (a miss: a ``Forward``), handed to ``Forwarder.forward`` (the lookup, its id and
deadline, the upstream query made and queued), then the upstream's reply given to the pooled socket that
would have read it (checked against the query, scanned, stored in the cache, the client's answer rendered
and handed to its sender). Only the last step of each side is left out: the query's bytes are taken where
``_PooledSocket.send`` would queue them for sendmmsg, and the client's answers are appended to a list.

The upstream replies are what NSD sends for a name under a wildcard (the answer, the zone's NS RRset and
its glue, an OPT), one per miss, with the names forward_bench.py asks. Misses go in turns of ``--turn``
(the queries of a loop turn, then their replies), as under load, so the dicts of lookups in flight stay at
their working size. The collector runs as in the server (app.py's thresholds, the zone frozen): with
Python's defaults it walked the lookups in flight so often that it was a third of the figure, a cost
the server does not pay. Bounded: ``--misses`` per run, ``--runs`` runs; the least of the runs is
printed (this VM's neighbours only ever add time).

    .venv/bin/python bench/miss_path.py [--misses 100000] [--turn 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import time

import dns.message
import dns.rrset
import hotpath

from mcsdns.app import GC_THRESHOLDS
from mcsdns.dns import forward
from mcsdns.dns.cache import ForwardCache
from mcsdns.dns.responder import UDP, Forward, Responder
from mcsdns.settings import ZoneSettings


def upstream_reply(query: bytes) -> bytes:
    """NSD's reply to ``query`` (asked with our OPT) for a name under ``*.miss.fwd.test``."""
    message = dns.message.from_wire(query)
    reply = dns.message.make_response(message)
    name = message.question[0].name
    reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "198.19.0.1"))
    reply.authority.append(dns.rrset.from_text("fwd.test.", 300, "IN", "NS", "ns.fwd.test."))
    reply.additional.append(dns.rrset.from_text("ns.fwd.test.", 300, "IN", "A", "198.19.255.254"))
    return reply.to_wire()


async def one_run(store: object, misses: int, turn: int) -> tuple[float, float]:
    """Microseconds per miss: (the query's side, the reply's side)."""
    cache = ForwardCache(
        max_entries=misses // 2, max_bytes=1 << 30
    )  # full halfway: stores evict, as in a run
    responder = Responder(store, ZoneSettings(), cache=cache)  # type: ignore[arg-type]
    forwarder = forward.Forwarder(
        [("127.0.0.1", 9)], allow=[], cache=cache, render=responder.render_cached
    )  # connected, never sent to: queries are taken from the send below
    await forwarder.start()
    queued: list[tuple[forward._Lookup, bytes]] = []

    def taken(pooled: forward._PooledSocket, lookup: forward._Lookup) -> bool:
        queued.append((lookup, lookup.wire()))
        return True

    send, forward._PooledSocket.send = forward._PooledSocket.send, taken  # type: ignore[method-assign, assignment]
    prefix = secrets.token_hex(4)
    queries = [dns.message.make_query(f"{prefix}-{i}.miss.fwd.test.", "A").to_wire() for i in range(misses)]
    answers: list[bytes] = []

    def send_to(_to: None, reply: bytes) -> None:
        answers.append(reply)

    query_side = reply_side = 0.0
    try:
        for start in range(0, misses, turn):
            began = time.perf_counter()
            for query in queries[start : start + turn]:
                parsed = responder.respond(query, UDP, True)
                assert type(parsed) is Forward
                forwarder.forward(parsed, send_to, None)
            sent = time.perf_counter()
            # The replies, made outside the timing: each echoes its query's id and question.
            replies = [(lookup, upstream_reply(wire)) for lookup, wire in queued]
            queued.clear()
            received = time.perf_counter()
            for lookup, reply in replies:
                assert lookup.socket is not None
                lookup.socket._received(reply)
            query_side += sent - began
            reply_side += time.perf_counter() - received
    finally:
        forward._PooledSocket.send = send  # type: ignore[method-assign]
        forwarder.close()
    if len(answers) != misses or forwarder.upstream_errors:
        raise SystemExit(
            f"{len(answers)} answers to {misses} misses, {forwarder.upstream_errors} upstream errors"
        )
    last = dns.message.from_wire(answers[-1])
    assert [r.to_text() for r in last.answer[0]] == ["198.19.0.1"], last
    return query_side / misses * 1e6, reply_side / misses * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--misses", type=int, default=100_000)
    parser.add_argument("--turn", type=int, default=200, help="misses per loop turn")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--services", type=int, default=1_000, help="services in the zone beside")
    args = parser.parse_args()
    store = hotpath.build(args.services)
    # The collector as the server runs it (app.py): its thresholds, and the zone frozen once published.
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    runs = [asyncio.run(one_run(store, args.misses, args.turn)) for _ in range(args.runs)]
    query, reply = min(runs, key=sum)
    print(f"a miss's Python, in process (least of {args.runs} runs of {args.misses:,} misses):")
    print(f"  query side {query:.2f} us + reply side {reply:.2f} us = {query + reply:.2f} us")
    print(f"  all runs: {', '.join(f'{q + r:.1f}' for q, r in runs)} us")


if __name__ == "__main__":
    main()

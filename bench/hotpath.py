"""Cost of one query inside the process, and the share the metrics counting takes of it.

Runs ``Responder.respond`` on prebuilt packets (no sockets) and prints microseconds per query; then times
the one statement the packet path spends on metrics (``counts[answer.metric] += 1``) in the same loop shape
and prints its share. A query asked again in the same bytes is answered from the responder's reply memo;
the "rendered" rows time the path a first query takes (lookup and rendering), and "0x20, every query new"
a client whose every query differs (random case, as Unbound's use-caps-for-id sends), so the memo never
hits (it pauses itself after a fill that earned too few hits). The DNS benchmark (dns_bench.py) measures
queries/s over real sockets; this isolates the part of the packet path that mcsdns's own code costs.
Bounded: a fixed number of calls per case.

    .venv/bin/python bench/hotpath.py [--services 10000] [--calls 300000]
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import dns.edns
import dns.message

from mcsdns.dns.responder import UDP, Responder
from mcsdns.settings import ZoneSettings
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.model import (
    ClusterId,
    Endpoint,
    EndpointGroup,
    ImportedService,
    Port,
    ServiceImport,
    ServiceKey,
    ServiceType,
)
from mcsdns.zone.store import ZoneStore


def build(services: int) -> ZoneStore:
    changes: dict[ServiceKey, ImportedService | None] = {}
    for i in range(services):
        key = ServiceKey(f"ns{i % 50}", f"svc{i}")
        if i % 5 == 0:
            endpoints = tuple(
                Endpoint(
                    cluster=ClusterId(f"c{j % 2}"),
                    addresses=(f"10.{i >> 8 & 255}.{i & 255}.{j}",),
                    hostname=f"h{j}",
                )
                for j in range(6)
            )
            group = EndpointGroup(service=key, cluster=ClusterId("c0"), ports=(), endpoints=endpoints)
            changes[key] = ImportedService(
                spec=ServiceImport(key=key, type=ServiceType.HEADLESS, ports=(Port("http", "TCP", 80),)),
                groups=(group,),
            )
        else:
            changes[key] = ImportedService(
                spec=ServiceImport(
                    key=key,
                    type=ServiceType.CLUSTERSET_IP,
                    ips=(f"172.20.{i >> 8}.{i & 255}",),
                    ports=(Port("http", "TCP", 80),),
                )
            )
    store = ZoneStore()
    store.current = ZoneBuilder(ZoneSettings()).build(changes, serial=1)
    return store


def per_query(answer: Callable[[bytes, int, bool], object], packet: bytes, calls: int) -> float:
    """Median of five runs, microseconds per call of ``answer`` (``Responder.respond``, or ``_respond``:
    the path behind the memo)."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls // 5):
            answer(packet, UDP, False)
        runs.append((time.perf_counter() - started) / (calls // 5) * 1e6)
    return statistics.median(runs)


def per_query_each_new(
    responder: Responder, answer: Callable[[bytes, int, bool], object], name: str, calls: int
) -> float:
    """Microseconds per call of ``answer`` when every query is new: ``name`` in a different letter case
    each time."""
    rng = random.Random(1)
    packets = []
    for _ in range(min(calls, 50_000)):
        mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        packets.append(dns.message.make_query(mixed, "A").to_wire())
    for packet in packets:  # fill the memo first: the timed calls find it as a long run would
        responder.respond(packet, UDP)
    started = time.perf_counter()
    for i in range(calls):
        answer(packets[i % len(packets)], UDP, False)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=300_000)
    args = parser.parse_args()
    store = build(args.services)
    packets: dict[str, Any] = {
        "A, ClusterSetIP": dns.message.make_query("svc1.ns1.svc.clusterset.local", "A").to_wire(),
        "A, EDNS + cookie": dns.message.make_query(
            "svc1.ns1.svc.clusterset.local",
            "A",
            use_edns=0,
            options=[dns.edns.GenericOption(10, b"12345678")],
        ).to_wire(),
        "NXDOMAIN": dns.message.make_query("nope.ns1.svc.clusterset.local", "A").to_wire(),
    }
    responder = Responder(store, ZoneSettings())
    increment = counting_cost(store, args.calls)
    print(f"{'query':30} {'us/query':>9} {'counting share':>15}")
    for name, packet in packets.items():
        total = per_query(responder.respond, packet, args.calls)
        print(f"{name:30} {total:9.2f} {increment / total * 100:14.1f}%")
    for name, packet in packets.items():
        total = per_query(responder._respond, packet, args.calls)
        print(f"{name + ', rendered':30} {total:9.2f}")
    for label, answer in (("", responder.respond), (", rendered", responder._respond)):
        total = per_query_each_new(responder, answer, "svc1.ns1.svc.clusterset.local", args.calls)
        print(f"{'A, 0x20, every query new' + label:30} {total:9.2f}")
    print(f"(the counter increment alone: {increment * 1000:.0f} ns)")


def counting_cost(store: ZoneStore, calls: int) -> float:
    """Microseconds of ``counts[answer.metric] += 1`` beyond an empty loop body reading the answer."""
    assert store.current is not None
    answer = next(iter(store.current.answers.values()))
    counts: collections.defaultdict[int, int] = collections.defaultdict(int)
    started = time.perf_counter()
    for _ in range(calls):
        counts[answer.metric] += 1
    counted = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(calls):
        answer.metric  # noqa: B018 - the same attribute read, without the increment
    empty = time.perf_counter() - started
    return (counted - empty) / calls * 1e6


if __name__ == "__main__":
    main()

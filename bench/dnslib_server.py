"""The naive Python baseline: dnslib's stock ``DNSServer`` answering from a dict of the zone's records.

This is what "just write it in Python" looks like without mcsdns's precomputed wire answers: dnslib parses
every query into objects, a resolver looks the name up in a dict, and dnslib packs a reply. The resolver is
kept honest in both directions: one dict lookup per query (not dnslib's ``ZoneResolver``, which scans every
record), and the same sections mcsdns sends (SOA in negative answers, target A records for SRV).

    .venv/bin/python bench/dnslib_server.py --zone-file bench/out/data/clusterset.local.zone --port 5300
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


def _key(name: object) -> str:
    return str(name).lower()


class DictResolver(BaseResolver):  # type: ignore[misc]
    """Answers from ``{(lower-case name, qtype): [RR]}``; everything needed per query is a dict lookup."""

    def __init__(self, zone_text: str, zone: str) -> None:
        self.origin = DNSLabel(zone)
        self.rrsets: dict[tuple[str, int], list[RR]] = defaultdict(list)
        self.names: set[str] = set()  # every owner and every empty non-terminal, for NODATA vs NXDOMAIN
        for rr in RR.fromZone(zone_text):
            self.rrsets[(_key(rr.rname), rr.rtype)].append(rr)
            self._add_name(rr.rname)
        self.soa = self.rrsets[(_key(self.origin), QTYPE.SOA)]

    def _add_name(self, name: DNSLabel) -> None:
        label = DNSLabel(name)
        while label.matchSuffix(self.origin) and _key(label) not in self.names:
            self.names.add(_key(label))
            if label == self.origin:
                break
            label = DNSLabel(label.label[1:])

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply(ra=0, aa=1)
        q = request.q
        if not q.qname.matchSuffix(self.origin):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        name = _key(q.qname)
        answer = self.rrsets.get((name, q.qtype))
        if answer:
            reply.add_answer(*answer)
            if q.qtype == QTYPE.SRV:
                for rr in answer:
                    reply.add_ar(*self.rrsets.get((_key(rr.rdata.target), QTYPE.A), []))
            return reply
        if name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(*self.soa)  # RFC 2308: negative answers carry the SOA
        return reply


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zone-file", type=Path, required=True)
    ap.add_argument("--zone", default="clusterset.local")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    resolver = DictResolver(args.zone_file.read_text(), args.zone)
    # Per-query logging off: mcsdns and NSD do not log per query either, and printing would dominate.
    logger = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    DNSServer(resolver, address=args.address, port=args.port, logger=logger).start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Question → answer on a snapshot: dict and set probes only.

The common case is one dict probe on the lower-cased question (the responder does it inline); this module
decides the rest: NODATA for existing names and empty non-terminals, NXDOMAIN below the apex, and "not
ours" (None) for names outside the zone.
"""

from __future__ import annotations

from mcsdns.zone.snapshot import Answer, ZoneSnapshot


def in_zone(qname: bytes, zone_wire: bytes) -> bool:
    """Whether the lower-cased wire name ``qname`` is the apex or below it, on a label boundary."""
    if not qname.endswith(zone_wire):
        return False
    cut = len(qname) - len(zone_wire)
    pos = 0
    while pos < cut:
        pos += qname[pos] + 1
    return pos == cut


def find_answer(snapshot: ZoneSnapshot, question: bytes) -> Answer | None:
    """``question`` is the lower-cased qname wire + QTYPE + QCLASS IN; None when outside the zone."""
    found = snapshot.answers.get(question)
    if found is not None:
        return found
    qname = question[:-4]
    if not in_zone(qname, snapshot.zone_wire):
        return None
    # RFC 2308 §2.2 / RFC 8020: NODATA for a name that exists (records of other types, or names below it).
    return snapshot.nodata[len(qname)] if qname in snapshot.names else snapshot.nxdomain[len(qname)]

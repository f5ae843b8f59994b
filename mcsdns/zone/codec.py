"""A published zone as bytes: for the state file (the last known zone across restarts) and for the
serving workers (every publish, without rendering it again).

One encoding for both, so what a restart reads back is exactly what a worker is sent. A frame is::

    MAGIC | version (u16) | payload length (u32) | SHA-256 of the payload | payload

and the payload is ``marshal`` data of plain tuples, lists, bytes and ints. ``marshal`` is the cheapest
form CPython reads (about 40 ms for 120,000 answers, against 45 ms for pickle and far more for anything
parsed in Python), and it builds no object but those: no class is looked up or called, so a hostile file
could at most fail to decode. The checksum is checked before ``marshal`` sees a byte, so a torn or
truncated file is refused rather than half read. The ``marshal`` format belongs to the Python version: a
file from another one is refused by the version check (``FORMAT``) and rewritten at the next publish.

Two kinds of payload:

* **full**: every answer and name; the state file, and a worker's first snapshot;
* **delta**: what one publish changed against the serial before it (``ZoneSnapshot.touched``), so a
  publish reaches a worker in the time its change takes, not the zone's size.

Pure: no files, no sockets.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import marshal
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from immutables import Map

from mcsdns.wire import Rcode, wire_to_name
from mcsdns.zone.render import Negatives, Soa
from mcsdns.zone.snapshot import Answer, ZoneSnapshot

MAGIC = b"mcsdns zone\n"
# The payload's layout, and the marshal format of this Python (its version is part of what marshal writes).
FORMAT = 1 << 8 | sys.version_info.minor
_HEADER = struct.Struct(">HI32s")
HEADER_SIZE = len(MAGIC) + _HEADER.size
FULL, DELTA = 0, 1


class ZoneDataError(ValueError):
    """A frame that cannot be used: the reason is one line for the log."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded frame: a full zone (``base`` None) or the changes from serial ``base``."""

    zone_wire: bytes
    serial: int
    base: int | None
    services: int
    ttl: int
    soa: tuple[object, ...]
    saved_at: float
    answers: dict[bytes, Answer]  # added or changed
    removed: list[bytes]  # answer keys
    names: list[bytes]  # present (added, for a delta)
    gone: list[bytes]  # names removed


@contextlib.contextmanager
def _acyclic() -> Iterator[None]:
    """No garbage collection while a zone's 10^5 tuples are made: they hold no cycles, and the collections
    their count would trigger walked the growing heap again and again (3x the decoding's own time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _frame(fields: Any) -> bytes:
    payload = marshal.dumps(fields, 4)
    return MAGIC + _HEADER.pack(FORMAT, len(payload), hashlib.sha256(payload).digest()) + payload


def _rows(answers: Iterable[Answer]) -> list[tuple[int | bytes, ...]]:
    """Answers as plain tuples (marshal writes no subclass), their flags and metric ints shared: marshal
    writes a repeated object once and a reference after, so a worker's 120,000 answers share a few dozen
    int objects instead of holding two each (about 4 MB at 10,000 services)."""
    shared: dict[int, int] = {}
    return [
        (
            shared.setdefault(a.flags, a.flags),
            a.ancount,
            a.nscount,
            a.arcount,
            a.body,
            a.additional_at,
            shared.setdefault(a.metric, a.metric),
        )
        for a in answers
    ]


def encode_full(snapshot: ZoneSnapshot, *, saved_at: float = 0.0) -> bytes:
    answers = snapshot.answers
    return _frame(
        (
            *(FULL, snapshot.zone_wire, snapshot.serial, None, snapshot.services, snapshot.ttl),
            *(snapshot.soa, saved_at, list(answers.keys()), _rows(answers.values()), []),
            *(list(snapshot.names), []),
        )
    )


def encode_delta(snapshot: ZoneSnapshot) -> bytes | None:
    """The changes ``snapshot`` made to the one before it; None when it does not know them (a first
    snapshot, or one from a state file): send it full."""
    if snapshot.touched is None:
        return None
    base, touched_answers, touched_names = snapshot.touched
    answers, names = snapshot.answers, snapshot.names
    keys = [key for key in touched_answers if key in answers]
    removed = [key for key in touched_answers if key not in answers]
    present = [name for name in touched_names if name in names]
    gone = [name for name in touched_names if name not in names]
    return _frame(
        (
            *(DELTA, snapshot.zone_wire, snapshot.serial, base, snapshot.services, snapshot.ttl),
            *(snapshot.soa, 0.0, keys, _rows(answers[key] for key in keys), removed, present, gone),
        )
    )


def decode(data: bytes | bytearray | memoryview) -> Decoded:
    """A frame's content; ``ZoneDataError`` says why it cannot be used."""
    data = memoryview(data)
    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise ZoneDataError("not an mcsdns zone (no header)")
    version, length, digest = _HEADER.unpack_from(data, len(MAGIC))
    if version != FORMAT:
        raise ZoneDataError(
            f"written in format {version >> 8}.{version & 0xFF}, this mcsdns reads "
            f"{FORMAT >> 8}.{FORMAT & 0xFF} (another mcsdns or Python version)"
        )
    payload = data[HEADER_SIZE:]
    if len(payload) != length:
        raise ZoneDataError(f"truncated: {len(payload)} of {length} bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise ZoneDataError("checksum mismatch (corrupt)")
    try:
        with _acyclic():
            fields = marshal.loads(payload)
            (
                kind,
                zone_wire,
                serial,
                base,
                services,
                ttl,
                soa,
                saved_at,
                keys,
                values,
                removed,
                names,
                gone,
            ) = fields
            answers = dict(zip(keys, map(Answer._make, values), strict=True))
        if kind not in (FULL, DELTA) or (kind == DELTA) == (base is None) or not isinstance(zone_wire, bytes):
            raise ValueError("unknown kind")
        if len(soa) != 7:
            raise ValueError("bad SOA")
    except (ValueError, TypeError, EOFError) as exc:
        raise ZoneDataError(f"unreadable content: {exc}") from None
    return Decoded(
        zone_wire, serial, base, services, ttl, tuple(soa), saved_at, answers, removed, names, gone
    )


def snapshot_from(decoded: Decoded, previous: ZoneSnapshot | None = None) -> ZoneSnapshot:
    """The snapshot a frame describes: a full one on its own, a delta applied to ``previous`` (which must
    be its base serial, else ``ZoneDataError``)."""
    if decoded.base is None:
        with _acyclic():
            answers = Map(decoded.answers)
            names = Map(dict.fromkeys(decoded.names))
    else:
        if previous is None or previous.serial != decoded.base:
            have = "nothing" if previous is None else f"serial {previous.serial}"
            raise ZoneDataError(f"a change from serial {decoded.base}, but this worker has {have}")
        # A worker's snapshots all come from here or the builder: persistent maps (zone/build.py).
        assert isinstance(previous.answers, Map) and isinstance(previous.names, Map)
        answer_map = previous.answers.mutate()
        for key in decoded.removed:
            answer_map.pop(key, None)
        answer_map.update(decoded.answers)
        answers = answer_map.finish()
        name_map = previous.names.mutate()
        for name in decoded.gone:
            name_map.pop(name, None)
        name_map.update(dict.fromkeys(decoded.names))
        names = name_map.finish()
    return _snapshot(decoded, answers, names)


def _snapshot(decoded: Decoded, answers: Map[bytes, Answer], names: Map[bytes, None]) -> ZoneSnapshot:
    mname, rname, *numbers = decoded.soa
    soa = Soa(tuple(mname), tuple(rname), *numbers)  # type: ignore[arg-type]
    apex = wire_to_name(decoded.zone_wire)
    return ZoneSnapshot(
        serial=decoded.serial,
        zone_wire=decoded.zone_wire,
        answers=answers,
        names=names,
        nodata=Negatives(rcode=Rcode.NOERROR, apex=apex, soa=soa, ttl=decoded.ttl),
        nxdomain=Negatives(rcode=Rcode.NXDOMAIN, apex=apex, soa=soa, ttl=decoded.ttl),
        services=decoded.services,
        ttl=decoded.ttl,
        soa=decoded.soa,
        saved_at=decoded.saved_at,
    )

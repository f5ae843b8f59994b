"""Records to bytes: render one answer (answer, authority, additional sections) for one question.

Each answer is rendered for the exact question it answers, so every absolute offset is known at build time
and names are compressed against the question (RFC 1035 §4.1.4). SRV targets are never compressed
(RFC 2782, "name compression is not to be used for this field"); SOA and NS names may be (RFC 3597 §4).
Pure: runs while a snapshot is built, except ``Negatives``, which renders a negative answer the first time
a qname of its length is asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mcsdns.wire import (
    AA,
    HEADER_SIZE,
    MAX_MESSAGE,
    MAX_NAME_WIRE,
    QR,
    RR_FIXED,
    SOA_FIXED,
    SRV_FIXED,
    U16,
    Name,
    QType,
    name_to_wire,
)
from mcsdns.zone.snapshot import Answer

# Room kept free for the largest question and our OPT record, so a rendered answer always fits a TCP
# message (RFC 1035 §4.2.2). Records past the budget are left out: for headless services the spec allows
# answering "a subset of ready endpoints ... due to ... response size limit" (spec §2.4.1).
BODY_BUDGET = MAX_MESSAGE - HEADER_SIZE - 255 - 4 - 11


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: Name


@dataclass(frozen=True, slots=True)
class Soa:
    mname: Name
    rname: Name
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True, slots=True)
class Ns:
    target: Name


Rdata = bytes | Srv | Soa | Ns  # bytes: opaque RDATA (A, AAAA, TXT)


@dataclass(frozen=True, slots=True)
class RRset:
    name: Name
    rtype: int
    ttl: int
    rdatas: tuple[Rdata, ...]


class _Writer:
    """Appends records after a question, compressing names against everything written before."""

    def __init__(self, qname: Name) -> None:
        self._suffixes = _question_offsets(qname)
        self._base = _body_offset(qname)
        self.buf = bytearray()

    def name(self, name: Name, *, compress: bool = True) -> None:
        for index, label in enumerate(name):
            suffix = name[index:]
            pointer = self._suffixes.get(suffix)
            if compress and pointer is not None:
                self.buf += U16.pack(0xC000 | pointer)
                return
            offset = self._base + len(self.buf)
            if pointer is None and offset < 0x4000:  # pointers have 14 bits
                self._suffixes[suffix] = offset
            self.buf += bytes((len(label),)) + label
        self.buf += b"\x00"

    def rr(self, rrset: RRset, rdata: Rdata) -> None:
        self.name(rrset.name)
        fixed_at = len(self.buf)
        self.buf += RR_FIXED.pack(rrset.rtype, 1, rrset.ttl, 0)
        start = len(self.buf)
        if isinstance(rdata, bytes):
            self.buf += rdata
        elif isinstance(rdata, Srv):
            self.buf += SRV_FIXED.pack(rdata.priority, rdata.weight, rdata.port)
            self.name(rdata.target, compress=False)
        elif isinstance(rdata, Soa):
            self.name(rdata.mname)
            self.name(rdata.rname)
            self.buf += SOA_FIXED.pack(rdata.serial, rdata.refresh, rdata.retry, rdata.expire, rdata.minimum)
        else:
            self.name(rdata.target)
        U16.pack_into(self.buf, fixed_at + 8, len(self.buf) - start)

    def section(self, rrsets: Iterable[RRset]) -> int:
        """Write whole records while they fit the budget; return how many were written."""
        count = 0
        for rrset in rrsets:
            for rdata in rrset.rdatas:
                mark = len(self.buf)
                self.rr(rrset, rdata)
                if len(self.buf) > BODY_BUDGET:
                    del self.buf[mark:]
                    return count
                count += 1
        return count


def render_answer(
    qname: Name,
    *,
    qtype: int = 0,
    rcode: int = 0,
    answer: Sequence[RRset] = (),
    authority: Sequence[RRset] = (),
    additional: Sequence[RRset] = (),
) -> Answer:
    """Render the sections of the reply to a question for ``qname`` (its owner names point at it)."""
    if not authority:
        direct = _render_direct(qname, qtype, rcode, answer, additional)
        if direct is not None:
            return direct
    return _render_general(qname, qtype, rcode, answer, authority, additional)


def _render_general(
    qname: Name,
    qtype: int,
    rcode: int,
    answer: Sequence[RRset],
    authority: Sequence[RRset],
    additional: Sequence[RRset],
) -> Answer:
    writer = _Writer(qname)
    ancount = writer.section(answer)
    nscount = writer.section(authority)
    additional_at = len(writer.buf)
    arcount = writer.section(additional)
    body = bytes(writer.buf)
    return Answer(QR | AA | rcode, ancount, nscount, arcount, body, additional_at, qtype << 8 | rcode)


def _render_direct(
    qname: Name, qtype: int, rcode: int, answer: Sequence[RRset], additional: Sequence[RRset]
) -> Answer | None:
    """The shapes of the zone's own answers, without the writer's lookup of every suffix of every name.

    Answer records owned by the qname (the owner is a pointer to the question), with opaque or SRV RDATA,
    SRV targets written in full (RFC 2782: never compressed), and additional address records owned by a
    name already written whole (a pointer to it). These are the bytes the writer produces for the same
    records (tests/unit/zone/test_render.py); None for any other shape, which the writer then renders.
    """
    start = _body_offset(qname)
    # A name written whole → its offset, as the writer registers it; only Additional owners read it.
    seen: dict[Name, int] | None = _question_offsets(qname) if additional else None
    parts: list[bytes] = []
    size = ancount = arcount = 0
    for rrset in answer:
        if rrset.name != qname:
            return None
        for rdata in rrset.rdatas:
            if isinstance(rdata, bytes):
                target: Name | None = None
            elif isinstance(rdata, Srv):
                target = rdata.target
                rdata = SRV_FIXED.pack(rdata.priority, rdata.weight, rdata.port) + name_to_wire(target)
            else:
                return None
            record = _QNAME_POINTER + RR_FIXED.pack(rrset.rtype, 1, rrset.ttl, len(rdata)) + rdata
            if size + len(record) > BODY_BUDGET:
                break  # the rest of the section is left out, as the writer does (spec §2.4.1)
            if (
                seen is not None
                and target is not None
                and (at := start + size + len(record) - len(rdata) + 6) < 0x4000
            ):
                seen.setdefault(target, at)  # pointers have 14 bits
            parts.append(record)
            size += len(record)
            ancount += 1
        else:
            continue
        break
    additional_at = size
    for rrset in additional:
        assert seen is not None
        pointer = seen.get(rrset.name)
        if pointer is None:
            return None  # not written whole before: the writer compresses a suffix of it
        owner = U16.pack(0xC000 | pointer)
        for rdata in rrset.rdatas:
            if not isinstance(rdata, bytes):
                return None
            record = owner + RR_FIXED.pack(rrset.rtype, 1, rrset.ttl, len(rdata)) + rdata
            if size + len(record) > BODY_BUDGET:
                break
            parts.append(record)
            size += len(record)
            arcount += 1
        else:
            continue
        break
    return Answer(QR | AA | rcode, ancount, 0, arcount, b"".join(parts), additional_at, qtype << 8 | rcode)


_QNAME_POINTER = U16.pack(0xC000 | HEADER_SIZE)  # the question's name, right after the header


def _body_offset(qname: Name) -> int:
    """Where the answer section starts: after the header and the question (name, QTYPE, QCLASS)."""
    return HEADER_SIZE + len(name_to_wire(qname)) + 4


def _question_offsets(qname: Name) -> dict[Name, int]:
    """Every suffix of the question's name → its offset in the message."""
    offsets: dict[Name, int] = {}
    offset = HEADER_SIZE
    for index, label in enumerate(qname):
        offsets[qname[index:]] = offset
        offset += 1 + len(label)
    return offsets


class Negatives(dict[int, Answer | None]):
    """NXDOMAIN or NODATA answers of one SOA, by the qname's wire length, each rendered on first use.

    The SOA serial changes with every publish, so rendering all ~230 possible lengths up front (twice) cost
    every publish ~3 ms while only a handful of lengths are ever asked. Filled from the event-loop thread
    only (a memo: each length always maps to the same bytes, so a snapshot's answers never change).
    """

    __slots__ = ("_apex_length", "_fixed", "_mname", "_rcode", "_rname", "_timers")

    def __init__(self, *, rcode: int, apex: Name, soa: Soa, ttl: int) -> None:
        super().__init__()
        self._rcode = rcode
        self._apex_length = len(name_to_wire(apex))
        # The apex is a suffix of every in-zone question, at offset 12 + qname length - apex length, so
        # the SOA owner, and the apex inside its MNAME and RNAME, point there whatever name was asked
        # (RFC 2308 §3).
        self._mname = name_to_wire(soa.mname[: len(soa.mname) - len(apex)])[:-1]  # without the root label
        self._rname = name_to_wire(soa.rname[: len(soa.rname) - len(apex)])[:-1]
        self._timers = SOA_FIXED.pack(soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)
        rdlength = len(self._mname) + len(self._rname) + 4 + len(self._timers)
        self._fixed = RR_FIXED.pack(QType.SOA, 1, ttl, rdlength)

    def __missing__(self, length: int) -> Answer | None:
        # Lengths no in-zone name can have (shorter than the apex, one octet longer, or past the RFC 1035
        # §3.1 limit) have no answer.
        answer = None
        if self._apex_length <= length <= MAX_NAME_WIRE and length != self._apex_length + 1:
            pointer = U16.pack(0xC000 | (HEADER_SIZE + length - self._apex_length))
            body = b"".join((pointer, self._fixed, self._mname, pointer, self._rname, pointer, self._timers))
            answer = Answer(QR | AA | self._rcode, 0, 1, 0, body, len(body))
        self[length] = answer
        return answer

"""DNS wire format: the bytes of queries and responses (RFC 1035 §4, RFC 6891 EDNS0).

Pure functions on ``bytes``: no sockets, no asyncio, no dnspython. The zone renders its records with the
helpers at the bottom; the responder parses queries with ``parse_question``/``parse_edns`` and assembles
replies with ``HEADER``. Everything here runs per packet or per record, so it works on ints and bytes only.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from typing import NamedTuple

from mcsdns.errors import WireError

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
HEADER_TAIL = struct.Struct("!HHHHH")  # the header after the id: flags and the four counts
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
SOA_FIXED = struct.Struct("!IIIII")
SRV_FIXED = struct.Struct("!HHH")
U16 = struct.Struct("!H")

HEADER_SIZE = 12
MAX_NAME_WIRE = 255  # RFC 1035 §3.1: a name is at most 255 octets on the wire
MAX_LABEL = 63
MAX_MESSAGE = 65535  # RFC 1035 §4.2.2: the TCP length prefix is 16 bits
MIN_UDP_PAYLOAD = 512  # RFC 1035 §4.2.1; RFC 6891 §6.2.5: smaller EDNS sizes are treated as 512
SERVER_UDP_PAYLOAD = 1232  # DNS flag day 2020: the largest payload that avoids IP fragmentation

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for CD).
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
CD = 0x0010
COPIED_FLAGS = RD | CD  # RFC 1035 §4.1.1 copies RD; RFC 6840 §5.9 copies CD

CLASS_IN = 1
CLASS_ANY = 255
EDNS_DO = 0x8000  # RFC 3225 §3: the DO bit is copied into the response


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16  # RFC 6891 §6.1.3: extended rcode, upper 8 bits go into the OPT TTL


class QType(enum.IntEnum):
    A = 1
    NS = 2
    SOA = 6
    PTR = 12
    TXT = 16
    AAAA = 28
    SRV = 33
    OPT = 41
    IXFR = 251
    AXFR = 252
    ANY = 255


class Malformed(WireError):
    """The question cannot be read: answered with FORMERR and no question section."""


class BadOption(Malformed):
    """An EDNS option breaks its RFC: FORMERR, with the question and our OPT (the OPT itself was read)."""

    def __init__(self, message: str, edns: int) -> None:
        super().__init__(message)
        self.edns = edns


def parse_question(data: bytes) -> int:
    """Return the offset just past the single question of ``data`` (after QTYPE and QCLASS).

    The caller has checked the header. Compression pointers and the RFC 6891 extended label types are
    refused in a question (RFC 1035 §4.1.4 allows pointers only to earlier names, and a question has
    none before it), as are labels longer than 63 octets and names longer than 255.
    """
    pos = HEADER_SIZE
    end = len(data)
    try:
        length = data[pos]
        while length:
            if length > MAX_LABEL:
                raise Malformed("compression pointer or bad label type in the question")
            pos += length + 1
            length = data[pos]
    except IndexError:
        raise Malformed("question runs past the end of the message") from None
    if pos - HEADER_SIZE + 1 > MAX_NAME_WIRE:
        raise Malformed("question name longer than 255 octets")
    pos += 5  # the root label, QTYPE, QCLASS
    if pos > end:
        raise Malformed("question has no QTYPE/QCLASS")
    return pos


def skip_name(data: bytes, pos: int) -> int:
    """Return the offset after the (possibly compressed) name at ``pos``, for skipping records."""
    try:
        while True:
            length = data[pos]
            if length == 0:
                return pos + 1
            if length & 0xC0 == 0xC0:
                return pos + 2  # a pointer ends the name (RFC 1035 §4.1.4)
            if length > MAX_LABEL:
                raise Malformed("bad label type")
            pos += length + 1
    except IndexError:
        raise Malformed("name runs past the end of the message") from None


def record_at(data: bytes, pos: int) -> tuple[int, int, int, int, int]:
    """The record at ``pos``, read past its owner: TYPE, CLASS, TTL, RDLENGTH and the offset after it."""
    pos = skip_name(data, pos)
    if pos + 10 > len(data):
        raise Malformed("record runs past the end of the message")
    rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, pos)
    pos += 10 + rdlength
    if pos > len(data):
        raise Malformed("record data runs past the end of the message")
    return rtype, rclass, ttl, rdlength, pos


NO_EDNS = -1


_OPT_AFTER_QUESTION = struct.Struct("!BHHIH")  # root owner, TYPE, CLASS (payload), TTL, RDLENGTH
_ONLY_ADDITIONAL_ONE = b"\x00\x00\x00\x00\x00\x01"


def parse_edns(data: bytes, qend: int) -> int:
    """Find the OPT record of a query; return ``NO_EDNS`` or ``payload << 32 | ttl``.

    ``ttl`` holds the extended rcode, version and flags (RFC 6891 §6.1.3). Two OPT records are
    malformed (§6.1.1). Records in the answer and authority sections of a query are skipped.
    """
    if data[6:12] == _ONLY_ADDITIONAL_ONE and len(data) >= qend + 11:
        # The common shape (one OPT right after the question, options such as a cookie inside it).
        owner, rtype, payload, ttl, rdlength = _OPT_AFTER_QUESTION.unpack_from(data, qend)
        if owner == 0 and rtype == QType.OPT and qend + 11 + rdlength <= len(data):
            edns = int(max(payload, MIN_UDP_PAYLOAD)) << 32 | int(ttl)
            if rdlength:
                check_options(data, qend + 11, qend + 11 + rdlength, edns)
            return edns
    counts = data[6:12]
    records = (counts[0] << 8 | counts[1]) + (counts[2] << 8 | counts[3]) + (counts[4] << 8 | counts[5])
    found = NO_EDNS
    pos = qend
    ar_start = records - (counts[4] << 8 | counts[5])
    for index in range(records):
        owner = pos
        rtype, rclass, ttl, rdlength, pos = record_at(data, pos)
        if rtype == QType.OPT and index >= ar_start:
            if found != NO_EDNS:
                raise Malformed("more than one OPT record")
            if data[owner] != 0:
                raise Malformed("OPT owner is not the root")
            found = max(rclass, MIN_UDP_PAYLOAD) << 32 | ttl
            check_options(data, pos - rdlength, pos, found)
    return found


# EDNS option codes (IANA "DNS EDNS0 Option Codes") whose length in a query an RFC fixes.
OPTION_NSID = 3  # RFC 5001 §2.1: empty in a query
OPTION_ECS = 8  # RFC 7871 §6: FAMILY, SOURCE and SCOPE PREFIX-LENGTH, then the address bytes
OPTION_EXPIRE = 9  # RFC 7314 §2: empty in a query
OPTION_COOKIE = 10  # RFC 7873 §4: client cookie 8, optionally a server cookie of 8-32
OPTION_KEEPALIVE = 11  # RFC 7828 §3.1: empty in a query
OPTION_KEY_TAG = 14  # RFC 8145 §4.1: a list of 2-byte key tags


def check_options(data: bytes, start: int, end: int, edns: int) -> None:
    """Check the options of a query's OPT RDATA; ``BadOption`` when one breaks its RFC.

    The options must fill the RDATA exactly (RFC 6891 §6.1.2); unknown options are skipped (§6.1.2: "Any
    OPTION-CODE values not understood by a responder or requestor MUST be ignored").
    """
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise BadOption("EDNS option header runs past the OPT record", edns)
        code, length = (
            int.from_bytes(data[pos : pos + 2], "big"),
            int.from_bytes(data[pos + 2 : pos + 4], "big"),
        )
        pos += 4
        if pos + length > end:
            raise BadOption(f"EDNS option {code} runs past the OPT record", edns)
        if code == OPTION_COOKIE and not (length == 8 or 16 <= length <= 40):
            raise BadOption(f"COOKIE of {length} bytes (RFC 7873 §5.2.2: 8 or 16-40)", edns)
        if code in (OPTION_NSID, OPTION_EXPIRE, OPTION_KEEPALIVE) and length:
            raise BadOption(f"EDNS option {code} must be empty in a query", edns)
        if code == OPTION_KEY_TAG and (length == 0 or length % 2):
            raise BadOption(f"edns-key-tag of {length} bytes (RFC 8145 §4.1: a multiple of 2)", edns)
        if code == OPTION_ECS:
            _check_client_subnet(data[pos : pos + length], edns)
        pos += length


def _check_client_subnet(option: bytes, edns: int) -> None:
    """RFC 7871 §6 and §7.1.1: a known family, a source prefix that fits it, exactly the address bytes
    that prefix needs, and a scope prefix of 0 in a query."""
    if len(option) < 4:
        raise BadOption("ECS shorter than its fixed 4 bytes", edns)
    family, source, scope = int.from_bytes(option[:2], "big"), option[2], option[3]
    bits = {1: 32, 2: 128}.get(family)
    if bits is None or source > bits:
        raise BadOption(f"ECS family {family} with source prefix {source}", edns)
    if scope:
        raise BadOption("ECS scope prefix must be 0 in a query (RFC 7871 §7.1.1)", edns)
    if len(option) - 4 != (source + 7) // 8:
        raise BadOption(f"ECS address of {len(option) - 4} bytes for a /{source} (RFC 7871 §6)", edns)


class ReplyScan(NamedTuple):
    """Where the parts of an upstream reply are, found once so that a cache can answer from its bytes."""

    rcode: int  # with the extended bits of its OPT (RFC 6891 §6.1.3)
    flags: int
    qend: int
    counts: tuple[int, int, int]  # answer, authority, additional records kept (OPT and what follows dropped)
    end: int  # offset where the kept records end
    additional_at: int  # offset where the additional section starts
    ttls: tuple[tuple[int, int], ...]  # (offset after the question, TTL) of every kept record's TTL field
    answer_ttl: int  # the smallest TTL in the answer section; -1 if it is empty
    negative_ttl: int  # min(SOA TTL, SOA MINIMUM) of the authority's SOA (RFC 2308 §5); -1 without one


# Where the names are in the RDATA of the types whose names may be compressed and that resolvers decompress
# (RFC 1035 §3.3, RFC 2163, 1183, 2230, 2782, 2915, 4034, 6672): a run of steps, "n" a name, "s" a
# character-string, a number that many fixed bytes.
_RDATA_NAMES: dict[int, tuple[int | str, ...]] = {
    **dict.fromkeys((2, 3, 4, 5, 7, 8, 9, 12, 39, 47), ("n",)),  # NS MD MF CNAME MB MG MR PTR DNAME NSEC
    **dict.fromkeys((14, 17), ("n", "n")),  # MINFO, RP
    6: ("n", "n"),  # SOA
    **dict.fromkeys((15, 18, 21, 36), (2, "n")),  # MX AFSDB RT KX
    26: (2, "n", "n"),  # PX
    33: (6, "n"),  # SRV
    35: (4, "s", "s", "s", "n"),  # NAPTR
    46: (18, "n"),  # RRSIG
}


def _walk_name(data: bytes, pos: int, end: int, rewritten: bytearray) -> int:
    """Skip the name at ``pos`` (ending by ``end``) and check what its compression pointers lead to.

    A cache answers from these bytes with another header and with TTLs lowered (``rewritten`` marks those
    bytes), so a name that, through a pointer, reads any of them would read differently in our reply; such a
    name, and a pointer that does not point back to an earlier offset (RFC 1035 §4.1.4: "a prior
    occurance"), make the reply malformed.
    """
    after = -1  # where the name ends in place: after its first pointer
    hops = 0  # a pointer may lead back to one that leads back to it: a loop, not a name
    try:
        while True:
            length = data[pos]
            if length & 0xC0 == 0xC0:
                target = (length & 0x3F) << 8 | data[pos + 1]
                if after < 0:
                    after = pos + 2
                elif rewritten[pos] or rewritten[pos + 1]:
                    raise Malformed("a compression pointer leads into the header or a TTL")
                if target >= pos or rewritten[target] or hops == MAX_NAME_WIRE // 2:
                    raise Malformed("a compression pointer into the header, a TTL or forward, or a loop")
                pos, hops = target, hops + 1
                continue
            if length > MAX_LABEL:
                raise Malformed("bad label type")
            if after >= 0 and 1 in rewritten[pos : pos + length + 1]:
                raise Malformed("a compression pointer leads into the header or a TTL")
            if length == 0:
                pos += 1
                break
            pos += length + 1
    except IndexError:
        raise Malformed("name runs past the end of the message") from None
    pos = after if after >= 0 else pos
    if pos > end:
        raise Malformed("name runs past its record")
    return pos


def _checked_name_end(data: bytes, pos: int, end: int, checked: set[int]) -> int:
    """The offset after the name at ``pos`` (ending by ``end``) when it is labels in place ending in the root
    or in a pointer to a label in ``checked``, else -1 (the caller walks it with ``_walk_name``).

    ``checked`` holds where the labels of names already read start: the question's, and those of names this
    function accepted. A name read through one of them reads only bytes in place in earlier names, never the
    header or a TTL field (those lie between names, not in them) and never forward, so it needs none of
    ``_walk_name``'s checks, nor the map of rewritten bytes they cost: the names of most replies are a
    label or two before a pointer into the question or into an earlier record (RFC 1035 §4.1.4). This
    name's labels join ``checked``.
    """
    starts = []
    try:
        while True:
            length = data[pos]
            if length == 0:
                pos += 1
                break
            if length > MAX_LABEL:
                if length & 0xC0 != 0xC0 or ((length & 0x3F) << 8 | data[pos + 1]) not in checked:
                    return -1
                pos += 2
                break
            starts.append(pos)
            pos += length + 1
    except IndexError:
        return -1
    if pos > end:
        return -1
    checked.update(starts)
    return pos


def _label_starts(data: bytes) -> set[int]:
    """Where the question's labels start (``parse_question`` has checked it)."""
    starts = set()
    pos = HEADER_SIZE
    while data[pos]:
        starts.add(pos)
        pos += data[pos] + 1
    return starts


class _Names:
    """The names of one reply that are more than a pointer to the question, read as a cache must: through
    ``_checked_name_end`` when they read only names, else through ``_walk_name`` and the map of rewritten
    bytes, built at the first such name (most replies never have one) and kept up to date by the caller."""

    __slots__ = ("checked", "data", "rewritten", "ttl_at")

    def __init__(self, data: bytes, ttl_at: list[int]) -> None:
        self.data = data
        self.ttl_at = ttl_at  # every TTL field so far, this record's included
        self.checked = _label_starts(data)
        self.rewritten: bytearray | None = None

    def end(self, pos: int, end: int) -> int:
        """The offset after the name at ``pos``, which must end by ``end``."""
        after = _checked_name_end(self.data, pos, end, self.checked)
        if after < 0:
            if self.rewritten is None:
                self.rewritten = _rewritten(len(self.data), self.ttl_at)
            after = _walk_name(self.data, pos, end, self.rewritten)
        return after


def _rewritten(size: int, ttl_at: list[int]) -> bytearray:
    """The bytes of a ``size``-byte reply that a cache answers differently: its header and the TTL fields at
    ``ttl_at``."""
    rewritten = bytearray(size)
    rewritten[:HEADER_SIZE] = b"\x01" * HEADER_SIZE
    for at in ttl_at:
        rewritten[at : at + 4] = b"\x01\x01\x01\x01"
    return rewritten


_OPT, _SOA = int(QType.OPT), int(QType.SOA)  # plain ints: an enum member costs a lookup per record


def scan_reply(data: bytes, *, minimal: bool = False, qend: int = 0) -> ReplyScan:
    """Walk an upstream reply's records (compressed names allowed) and note what a cache needs.

    The OPT record and anything after it are left out: the reply a client gets carries our own OPT
    (RFC 6891 §6.1.1: OPT is hop-by-hop), and additional records may be dropped (RFC 2181 §9). A TTL with
    the top bit set counts as 0 (RFC 2181 §8).

    ``minimal``: of a positive answer (NOERROR with answer records) keep the answer section only, as
    Unbound's and BIND's ``minimal-responses`` answer: the upstream's NS RRset in the authority section and
    its glue are of no use to a stub resolver, and leaving them costs less to read, keep and send. The
    records left are still walked, lightly, for a well-formed message and the OPT's extended RCODE. A
    negative answer keeps its authority section: its SOA is the negative TTL (RFC 2308 §3).

    ``qend``: where the question ends, when the caller has checked it is the one asked (else it is read).
    """
    if len(data) < HEADER_SIZE or data[4:6] != b"\x00\x01":
        raise Malformed("a reply needs a header and exactly one question")
    if not qend:
        qend = parse_question(data)
    _id, flags, _qd, an, ns, ar = HEADER.unpack_from(data)
    rcode = flags & 0xF
    kept = an if minimal and an and not rcode else an + ns + ar
    pos = qend
    ttls: list[tuple[int, int]] = []
    answer_ttl = negative_ttl = -1
    additional_at = end = qend  # additional_at is set when the walk reaches that section
    size = len(data)
    ttl_at: list[int] = []  # where every TTL field so far is: a cache rewrites them
    names: _Names | None = None  # made at the first name that is more than a pointer to the question
    kept_ar = 0
    authority_end = an + ns  # the index where the additional section starts
    for index in range(kept):
        if index == authority_end:
            additional_at = pos
        start = pos
        if pos + 1 < size and data[pos] == 0xC0 and data[pos + 1] == HEADER_SIZE:
            pos += 2  # a pointer to the question's name: earlier, and never rewritten
        elif pos < size and data[pos] == 0:
            pos += 1  # the root (OPT's owner)
        else:
            if names is None:
                names = _Names(data, ttl_at)
            pos = names.end(pos, size)
        if pos + 10 > size:
            raise Malformed("record runs past the end of the message")
        rtype, _rclass, ttl, rdlength = RR_FIXED.unpack_from(data, pos)
        rdata = pos + 10
        pos = rdata + rdlength
        if pos > size:
            raise Malformed("record data runs past the end of the message")
        ttl_at.append(rdata - 6)
        if names is not None and names.rewritten is not None:
            names.rewritten[rdata - 6 : rdata - 2] = b"\x01\x01\x01\x01"
        at = rdata
        for step in _RDATA_NAMES.get(rtype, ()):
            if step == "n":
                if names is None:
                    names = _Names(data, ttl_at)
                at = names.end(at, pos)
            elif step == "s":
                at += 1 + data[at] if at < pos else 1
            else:
                at += int(step)
            if at > pos:
                raise Malformed("record data shorter than its type's fields")
        if rtype == _OPT:
            if index < authority_end or data[start] != 0:
                raise Malformed("OPT outside the additional section or not owned by the root")
            rcode |= (ttl >> 24) << 4
            break
        if ttl & 0x80000000:
            ttl = 0
        ttls.append((rdata - 6 - qend, ttl))
        if index < an:
            answer_ttl = ttl if answer_ttl < 0 else min(answer_ttl, ttl)
        elif index < authority_end:
            if rtype == _SOA and negative_ttl < 0 and rdlength >= 22:
                negative_ttl = min(ttl, int.from_bytes(data[pos - 4 : pos], "big"))
        else:
            kept_ar += 1
        end = pos
    if kept < an + ns + ar:
        rcode = _dropped_opt_rcode(data, pos, ns, ar, rcode)
        ns = 0
        additional_at = end
    elif ar == 0:
        additional_at = end
    return ReplyScan(
        rcode,
        flags,
        qend,
        (an, ns, kept_ar),
        end,
        additional_at,
        tuple(ttls),
        answer_ttl,
        negative_ttl,
    )


def _dropped_opt_rcode(data: bytes, pos: int, ns: int, ar: int, rcode: int) -> int:
    """``rcode`` with the extended bits of the OPT among the ``ns`` authority and ``ar`` additional records
    from ``pos``, which a minimal answer drops (so their names and TTLs need no reading)."""
    for index in range(ns + ar):
        owner = pos
        rtype, _rclass, ttl, _rdlength, pos = record_at(data, pos)
        if rtype == _OPT:
            if index < ns or data[owner] != 0:
                raise Malformed("OPT outside the additional section or not owned by the root")
            return rcode | (ttl >> 24) << 4
    return rcode


def error_response(data: bytes, rcode: int, *, question_end: int = 0, edns: int = NO_EDNS) -> bytes:
    """A reply carrying only ``rcode``: header, the question if it could be read, and OPT if asked.

    With ``question_end`` 0 the question could not be read, so QDCOUNT is 0 (what NSD and BIND do for
    FORMERR).
    """
    flags = QR | (data[2] << 8 | data[3]) & (OPCODE_MASK | COPIED_FLAGS)
    opt = b""
    if edns != NO_EDNS:
        opt = opt_record(edns, rcode)
    flags |= rcode & 0xF
    header = data[:2] + HEADER_TAIL.pack(flags, 1 if question_end else 0, 0, 0, 1 if opt else 0)
    return header + data[HEADER_SIZE:question_end] + opt


def opt_record(edns: int, rcode: int = 0) -> bytes:
    """Our OPT record for a reply to a query whose OPT was ``edns`` (RFC 6891 §6.1.2-§6.1.3)."""
    ttl = (rcode >> 4) << 24 | (edns & EDNS_DO)
    return b"\x00" + RR_FIXED.pack(QType.OPT, SERVER_UDP_PAYLOAD, ttl, 0)


OPT_PLAIN = opt_record(0)
OPT_DO = opt_record(EDNS_DO)


# --- rendering helpers used when the zone is built ----------------------------------------------------------

Name = tuple[bytes, ...]  # labels, lower-cased, without the root label


@functools.lru_cache(maxsize=4096)
def name_to_wire(name: Name) -> bytes:
    # Cached: a service's names are needed as keys and again as the SRV targets of its answers.
    return b"".join([bytes((len(label),)) + label for label in name]) + b"\x00"


def wire_to_name(wire: bytes) -> Name:
    """The labels of an uncompressed wire-form name, ``name_to_wire``'s inverse (our own data only)."""
    labels, at = [], 0
    while at < len(wire) and wire[at]:
        labels.append(wire[at + 1 : at + 1 + wire[at]])
        at += 1 + wire[at]
    return tuple(labels)


def text_to_name(text: str) -> Name:
    """``"a.b.c."`` → ``(b"a", b"b", b"c")``, lower-cased; raises ``ValueError`` if not a valid name."""
    text = text.rstrip(".")
    if not text:
        return ()
    labels = tuple(label.encode("ascii").lower() for label in text.split("."))
    if any(not label or len(label) > MAX_LABEL for label in labels):
        raise ValueError(f"invalid DNS name {text!r}: empty label or label over 63 characters")
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME_WIRE:
        raise ValueError(f"invalid DNS name {text!r}: longer than 255 octets")
    return labels


def address_rdata(address: str) -> tuple[int, bytes]:
    """An address's record type (A or AAAA) and RDATA."""
    ip = ipaddress.ip_address(address)
    return (QType.A if ip.version == 4 else QType.AAAA), ip.packed


def txt_rdata(*strings: str) -> bytes:
    out = b""
    for text in strings:
        raw = text.encode("utf-8")
        for start in range(0, max(len(raw), 1), 255):  # RFC 1035 §3.3.14: character-strings of ≤ 255
            chunk = raw[start : start + 255]
            out += bytes((len(chunk),)) + chunk
    return out

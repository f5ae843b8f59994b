"""Rendering: the direct paths for the zone's own answer shapes produce the general writer's bytes."""

from __future__ import annotations

import dns.message
import pytest

from mcsdns.wire import QType, text_to_name
from mcsdns.zone.render import RRset, Srv, _render_direct, _render_general, render_answer

TTL = 5
BASE = text_to_name("db.prod.svc.clusterset.local")


def host(index: int) -> tuple[bytes, ...]:
    return (f"db-{index}".encode(), b"cls1", *BASE)


def a_rrset(name: tuple[bytes, ...], count: int, first: int = 1) -> RRset:
    return RRset(
        name,
        QType.A,
        TTL,
        tuple(bytes((10, 0, (first + i) >> 8 & 255, (first + i) & 255)) for i in range(count)),
    )


def srv_case(count: int) -> tuple[tuple[bytes, ...], list[RRset], list[RRset]]:
    targets = [host(i) for i in range(count)]
    srv = RRset(BASE, QType.SRV, TTL, tuple(Srv(0, 100 // count, 5432, target) for target in targets))
    return BASE, [srv], [a_rrset(target, 1, i) for i, target in enumerate(targets)]


CASES = {
    "A": (BASE, [a_rrset(BASE, 3)], []),
    "AAAA": (BASE, [RRset(BASE, QType.AAAA, TTL, (bytes(15) + b"\x01",))], []),
    "A over the size budget": (BASE, [a_rrset(BASE, 6000)], []),
    "SRV to the service name (ClusterSetIP)": (
        (b"_pg", b"_tcp", *BASE),
        [RRset((b"_pg", b"_tcp", *BASE), QType.SRV, TTL, (Srv(0, 100, 5432, BASE),))],
        [a_rrset(BASE, 1)],
    ),
    "SRV to endpoint hostnames (headless)": srv_case(30),
    "SRV past 16 KiB, where pointers end": srv_case(700),
    "SRV over the size budget": srv_case(2500),
}


# Past 16 KiB a target's offset does not fit a pointer; the writer then compresses a suffix of it.
LEFT_TO_THE_WRITER = {"SRV past 16 KiB, where pointers end"}


@pytest.mark.parametrize("case", CASES)
def test_direct_rendering_is_byte_identical_to_the_writer(case: str) -> None:
    qname, answer, additional = CASES[case]
    taken = _render_direct(qname, answer[0].rtype, 0, answer, additional) is not None
    assert taken == (case not in LEFT_TO_THE_WRITER)
    direct = render_answer(qname, qtype=answer[0].rtype, answer=answer, additional=additional)
    general = _render_general(qname, answer[0].rtype, 0, answer, (), additional)
    assert direct == general
    text = b".".join(qname).decode()
    query = dns.message.make_query(text, answer[0].rtype).to_wire()
    counts = (1, direct.ancount, direct.nscount, direct.arcount)
    header = direct.flags.to_bytes(2, "big") + b"".join(n.to_bytes(2, "big") for n in counts)
    parsed = dns.message.from_wire(query[:2] + header + query[12:] + direct.body)
    assert sum(len(rrset) for rrset in parsed.answer) == direct.ancount > 0
    assert sum(len(rrset) for rrset in parsed.additional) == direct.arcount

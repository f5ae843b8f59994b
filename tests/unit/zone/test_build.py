"""The zone builder: incremental rendering, immutability of published snapshots, size caps."""

from __future__ import annotations

import dns.message

from mcsdns.settings import ZoneSettings
from mcsdns.wire import MAX_MESSAGE, QType, name_to_wire, text_to_name
from mcsdns.zone.build import ZoneBuilder, question_key
from mcsdns.zone.lookup import find_answer
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


def clusterset_ip(namespace: str, name: str, ip: str) -> ImportedService:
    return ImportedService(
        spec=ServiceImport(
            key=ServiceKey(namespace, name),
            type=ServiceType.CLUSTERSET_IP,
            ips=(ip,),
            ports=(Port("http", "TCP", 80),),
        )
    )


def key(text: str, qtype: int) -> bytes:
    return question_key(text_to_name(text), qtype)


def test_a_change_renders_only_the_changed_service() -> None:
    builder = ZoneBuilder(ZoneSettings())
    services = {
        ServiceKey("ns", f"s{i}"): clusterset_ip("ns", f"s{i}", f"10.0.{i // 200}.{i % 200 + 1}")
        for i in range(1000)
    }
    first = builder.build(services, serial=1)
    second = builder.build({ServiceKey("ns", "s7"): clusterset_ip("ns", "s7", "10.9.9.9")}, serial=2)
    untouched = key("s8.ns.svc.clusterset.local", QType.A)
    assert second.answers[untouched] is first.answers[untouched], "the same bytes object: not rendered again"
    changed = key("s7.ns.svc.clusterset.local", QType.A)
    assert second.answers[changed] is not first.answers[changed]
    assert second.services == first.services == 1000


def test_published_snapshots_never_change() -> None:
    builder = ZoneBuilder(ZoneSettings())
    first = builder.build({ServiceKey("ns", "a"): clusterset_ip("ns", "a", "10.0.0.1")}, serial=1)
    answers, names = dict(first.answers), set(first.names)
    builder.build(
        {ServiceKey("ns", "a"): None, ServiceKey("ns", "b"): clusterset_ip("ns", "b", "10.0.0.2")}, serial=2
    )
    assert dict(first.answers) == answers and set(first.names) == names


def test_namespace_exists_while_it_has_a_service() -> None:
    builder = ZoneBuilder(ZoneSettings())
    namespace = name_to_wire(text_to_name("ns.svc.clusterset.local"))
    a, b = ServiceKey("ns", "a"), ServiceKey("ns", "b")
    snapshot = builder.build(
        {a: clusterset_ip("ns", "a", "10.0.0.1"), b: clusterset_ip("ns", "b", "10.0.0.2")}, serial=1
    )
    assert namespace in snapshot.names
    assert namespace in builder.build({a: None}, serial=2).names
    snapshot = builder.build({b: None}, serial=3)
    assert namespace not in snapshot.names
    answer = find_answer(snapshot, key("ns.svc.clusterset.local", QType.A))
    assert answer is not None and answer.flags & 0xF == 3, "NXDOMAIN once the namespace is empty"


def test_huge_headless_answer_is_capped_to_fit_a_tcp_message() -> None:
    endpoints = tuple(
        Endpoint(cluster=ClusterId("c"), addresses=(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",))
        for i in range(6000)
    )
    service = ImportedService(
        spec=ServiceImport(
            key=ServiceKey("ns", "h"), type=ServiceType.HEADLESS, ports=(Port("p", "TCP", 1),)
        ),
        groups=(
            EndpointGroup(
                service=ServiceKey("ns", "h"), cluster=ClusterId("c"), ports=(), endpoints=endpoints
            ),
        ),
    )
    snapshot = ZoneBuilder(ZoneSettings()).build({ServiceKey("ns", "h"): service}, serial=1)
    for qtype in (QType.A, QType.SRV):
        answer = snapshot.answers[key("h.ns.svc.clusterset.local", qtype)]
        question = dns.message.make_query("h.ns.svc.clusterset.local", qtype).to_wire()
        reply = (
            question[:2]
            + b"\x84\x00\x00\x01"
            + answer.ancount.to_bytes(2, "big")
            + b"\x00\x00"
            + answer.arcount.to_bytes(2, "big")
            + question[12:]
            + answer.body
        )
        assert len(reply) <= MAX_MESSAGE
        parsed = dns.message.from_wire(reply)
        assert 0 < len(parsed.answer[0]) == answer.ancount < 6000, "a subset, spec §2.4.1"


def test_zone_name_and_ttl_are_settings() -> None:
    snapshot = ZoneBuilder(ZoneSettings(zone="mesh.example", ttl=30)).build(
        {ServiceKey("ns", "a"): clusterset_ip("ns", "a", "10.0.0.1")}, serial=7
    )
    answer = snapshot.answers[key("a.ns.svc.mesh.example", QType.A)]
    question = dns.message.make_query("a.ns.svc.mesh.example", "A").to_wire()
    reply = question[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00" + question[12:] + answer.body
    assert dns.message.from_wire(reply).answer[0].ttl == 30

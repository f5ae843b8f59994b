"""The zone builder: incremental rendering, immutability of published snapshots, size caps."""

from __future__ import annotations

import dns.message
import dns.rcode

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
from mcsdns.zone.snapshot import Answer


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


def reply(qname: str, qtype: int, answer: Answer) -> bytes:
    """The message the server sends for ``answer``: header, the question, the precomputed sections."""
    question = dns.message.make_query(qname, qtype).to_wire()
    counts = (1, answer.ancount, answer.nscount, answer.arcount)
    header = (answer.flags).to_bytes(2, "big") + b"".join(n.to_bytes(2, "big") for n in counts)
    return question[:2] + header + question[12:] + answer.body


def headless(namespace: str, name: str, *addresses: str) -> ImportedService:
    key_ = ServiceKey(namespace, name)
    endpoints = tuple(Endpoint(cluster=ClusterId("c1"), addresses=(a,)) for a in addresses)
    return ImportedService(
        spec=ServiceImport(key=key_, type=ServiceType.HEADLESS),
        groups=(EndpointGroup(service=key_, cluster=ClusterId("c1"), ports=(), endpoints=endpoints),),
    )


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


def test_an_endpoint_change_renders_only_where_endpoints_are_answered() -> None:
    builder = ZoneBuilder(ZoneSettings())
    vip, db = ServiceKey("ns", "vip"), ServiceKey("ns", "db")
    with_endpoints = ImportedService(
        spec=clusterset_ip("ns", "vip", "10.0.0.1").spec, groups=headless("ns", "vip", "10.1.0.1").groups
    )
    first = builder.build({vip: with_endpoints, db: headless("ns", "db", "10.2.0.1")}, serial=1)
    moved = ImportedService(spec=with_endpoints.spec, groups=headless("ns", "vip", "10.1.0.2").groups)
    second = builder.build({vip: moved, db: headless("ns", "db", "10.2.0.2")}, serial=2)
    # Spec §2.3.1: a ClusterSetIP name answers the clusterset IP whatever its endpoints do.
    vip_a = key("vip.ns.svc.clusterset.local", QType.A)
    assert second.answers[vip_a] is first.answers[vip_a]
    # §2.4.1: a headless name answers its ready endpoints.
    db_a = key("db.ns.svc.clusterset.local", QType.A)
    parsed = dns.message.from_wire(reply("db.ns.svc.clusterset.local", QType.A, second.answers[db_a]))
    assert [r.address for r in parsed.answer[0]] == ["10.2.0.2"]


def test_negative_answers_carry_their_own_snapshots_serial() -> None:
    builder = ZoneBuilder(ZoneSettings())
    first = builder.build({ServiceKey("ns", "a"): clusterset_ip("ns", "a", "10.0.0.1")}, serial=41)
    second = builder.build({ServiceKey("ns", "b"): clusterset_ip("ns", "b", "10.0.0.2")}, serial=42)
    for snapshot, qname, rcode in (
        (second, "nope.ns.svc.clusterset.local", dns.rcode.NXDOMAIN),
        (first, "a.ns.svc.clusterset.local", dns.rcode.NOERROR),  # NODATA for TXT: a exists
        (first, "b.ns.svc.clusterset.local", dns.rcode.NXDOMAIN),  # b came later
        (second, "b.ns.svc.clusterset.local", dns.rcode.NOERROR),
    ):
        answer = find_answer(snapshot, key(qname, QType.TXT))
        assert answer is not None
        parsed = dns.message.from_wire(reply(qname, QType.TXT, answer))
        assert parsed.rcode() == rcode and not parsed.answer
        assert parsed.authority[0][0].serial == snapshot.serial, "RFC 2308 §3: the zone's SOA"


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
        message = reply("h.ns.svc.clusterset.local", qtype, answer)
        assert len(message) <= MAX_MESSAGE
        parsed = dns.message.from_wire(message)
        assert 0 < len(parsed.answer[0]) == answer.ancount < 6000, "a subset, spec §2.4.1"


def test_zone_name_and_ttl_are_settings() -> None:
    snapshot = ZoneBuilder(ZoneSettings(zone="mesh.example", ttl=30)).build(
        {ServiceKey("ns", "a"): clusterset_ip("ns", "a", "10.0.0.1")}, serial=7
    )
    answer = snapshot.answers[key("a.ns.svc.mesh.example", QType.A)]
    assert dns.message.from_wire(reply("a.ns.svc.mesh.example", QType.A, answer)).answer[0].ttl == 30


def two_clusters(local_ready: bool) -> ImportedService:
    """db.ns: headless, hosts a0 in c1 (ready or not) and b0 in c2 (ready), port 5432 named sql."""
    key_ = ServiceKey("ns", "db")
    ports = (Port("sql", "TCP", 5432),)

    def group(cluster: str, address: str, ready: bool) -> EndpointGroup:
        endpoint = Endpoint(
            cluster=ClusterId(cluster), addresses=(address,), hostname=f"{cluster}-0", ready=ready
        )
        return EndpointGroup(service=key_, cluster=ClusterId(cluster), ports=ports, endpoints=(endpoint,))

    return ImportedService(
        spec=ServiceImport(key=key_, type=ServiceType.HEADLESS, ports=ports),
        groups=(group("c1", "10.1.0.1", local_ready), group("c2", "10.2.0.1", True)),
    )


def answer_texts(snapshot: object, qname: str, qtype: int) -> list[str]:
    answer = snapshot.answers[key(qname, qtype)]  # type: ignore[attr-defined]
    return sorted(
        r.to_text() for rrset in dns.message.from_wire(reply(qname, qtype, answer)).answer for r in rrset
    )


def test_prefer_local_cluster_answers_its_own_ready_endpoints_while_it_has_any() -> None:
    db = ServiceKey("ns", "db")
    base = "db.ns.svc.clusterset.local"
    local = ZoneBuilder(ZoneSettings(prefer_local_cluster=True), local_cluster="c1").build(
        {db: two_clusters(local_ready=True)}, serial=1
    )
    assert answer_texts(local, base, QType.A) == ["10.1.0.1"]
    assert answer_texts(local, f"_sql._tcp.{base}", QType.SRV) == [f"0 100 5432 c1-0.c1.{base}."]
    assert answer_texts(local, f"c2-0.c2.{base}", QType.A) == ["10.2.0.1"], "per-cluster names stay"
    # No ready endpoint here: every cluster's, as without the preference.
    fallback = ZoneBuilder(ZoneSettings(prefer_local_cluster=True), local_cluster="c1").build(
        {db: two_clusters(local_ready=False)}, serial=1
    )
    assert answer_texts(fallback, base, QType.A) == ["10.2.0.1"]
    everyone = ZoneBuilder(ZoneSettings()).build({db: two_clusters(local_ready=True)}, serial=1)
    assert answer_texts(everyone, base, QType.A) == ["10.1.0.1", "10.2.0.1"]


def test_retune_renders_every_service_again() -> None:
    builder = ZoneBuilder(ZoneSettings())
    services = {ServiceKey("ns", f"s{i}"): clusterset_ip("ns", f"s{i}", f"10.0.0.{i + 1}") for i in range(3)}
    first = builder.build(services, serial=1)
    again = builder.retune(ttl=30)
    assert again == set(services)
    second = builder.build({k: services[k] for k in again}, serial=2)
    message = dns.message.from_wire(
        reply(
            "s1.ns.svc.clusterset.local", QType.A, second.answers[key("s1.ns.svc.clusterset.local", QType.A)]
        )
    )
    assert message.answer[0].ttl == 30
    assert first.answers != second.answers
    # The next change renders only what changed again.
    third = builder.build({ServiceKey("ns", "s0"): clusterset_ip("ns", "s0", "10.9.9.9")}, serial=3)
    s2 = key("s2.ns.svc.clusterset.local", QType.A)
    assert third.answers[s2] is second.answers[s2]


def test_ptr_names_each_address_by_its_own_name_and_only_when_asked() -> None:
    """--ptr: a ClusterSetIP by the service, a headless endpoint by <host>.<cluster>.<svc> (spec §2.4.1),
    an IPv6 address by its nibbles (RFC 3596 §2.5)."""
    web, db = ServiceKey("ns", "web"), ServiceKey("ns", "db")
    v6 = ImportedService(
        spec=ServiceImport(key=web, type=ServiceType.CLUSTERSET_IP, ips=("10.0.0.1", "fd00::1"), ports=())
    )
    snapshot = ZoneBuilder(ZoneSettings(ptr=True)).build({web: v6, db: two_clusters(True)}, serial=1)
    assert answer_texts(snapshot, "1.0.0.10.in-addr.arpa", QType.PTR) == ["web.ns.svc.clusterset.local."]
    nibbles = ".".join("1" + "0" * 27 + "00df") + ".ip6.arpa"  # fd00::1, nibbles from the last
    assert answer_texts(snapshot, nibbles, QType.PTR) == ["web.ns.svc.clusterset.local."]
    assert answer_texts(snapshot, "1.0.2.10.in-addr.arpa", QType.PTR) == [
        "c2-0.c2.db.ns.svc.clusterset.local."
    ]
    assert find_answer(snapshot, key("9.9.9.10.in-addr.arpa", QType.PTR)) is None, "others fall through"
    assert find_answer(snapshot, key("1.0.0.10.in-addr.arpa", QType.A)) is None
    off = ZoneBuilder(ZoneSettings()).build({web: v6}, serial=1)
    assert key("1.0.0.10.in-addr.arpa", QType.PTR) not in off.answers


def test_an_address_two_services_share_answers_both_until_one_goes() -> None:
    a, b = ServiceKey("ns", "a"), ServiceKey("ns", "b")
    builder = ZoneBuilder(ZoneSettings(ptr=True))
    both = builder.build({a: headless("ns", "a", "10.9.0.1"), b: headless("ns", "b", "10.9.0.1")}, serial=1)
    reverse = "1.0.9.10.in-addr.arpa"
    assert answer_texts(both, reverse, QType.PTR) == [
        "10-9-0-1.c1.a.ns.svc.clusterset.local.",
        "10-9-0-1.c1.b.ns.svc.clusterset.local.",
    ], "no hostname: the dashed address is the endpoint's name (spec §2.4.1)"
    one = builder.build({a: None}, serial=2)
    assert answer_texts(one, reverse, QType.PTR) == ["10-9-0-1.c1.b.ns.svc.clusterset.local."]
    none = builder.build({b: None}, serial=3)
    assert key(reverse, QType.PTR) not in none.answers and builder.ptr_addresses == 0

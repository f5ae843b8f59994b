"""Sidecar forwarding against real upstreams on loopback: a second mcsdns serving another zone, and a
scripted resolver (``tests/upstream.py``) for what an upstream must be made to do. Cache hits and their
TTL aging, 0x20 case, EDNS sizes and truncation, negative caching, forged replies, coalescing, prefetch,
serve-stale, upstream failover and down, and the client ACL."""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mcsdns.settings import ForwardSettings, ListenAddress, Settings, ZoneSettings
from tests.integration.test_health import get
from tests.support import (
    ServerThread,
    free_port,
    query,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)
from tests.upstream import Upstream

UP = "web.prod.svc.upstream.test."


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[ServerThread]:
    write_manifests(tmp_path / "up", "up.yaml", [service_import("web", "prod", ips=["10.9.9.9"])])
    settings = settings_for(tmp_path / "up", zone=ZoneSettings(zone="upstream.test", ttl=1))
    with ServerThread(settings) as server:
        server.wait_serving()
        yield server


def sidecar_settings(
    tmp_path: Path, *upstreams: ServerThread | Upstream | tuple[str, int], **forward: Any
) -> Settings:
    write_manifests(tmp_path / "local", "local.yaml", [service_import("api", "prod", ips=["10.0.0.1"])])
    addresses = tuple(
        ListenAddress(u.host, u.port)
        if isinstance(u, ServerThread)
        else ListenAddress(*(u.address if isinstance(u, Upstream) else u))
        for u in upstreams
    )
    return replace(settings_for(tmp_path / "local"), forward=ForwardSettings(upstreams=addresses, **forward))


def test_forwards_other_names_and_answers_its_own(upstream: ServerThread, tmp_path: Path) -> None:
    with ServerThread(sidecar_settings(tmp_path, upstream)) as sidecar:
        sidecar.wait_serving()
        own = query(sidecar, "api.prod.svc.clusterset.local.")
        assert [r.to_text() for r in own.answer[0]] == ["10.0.0.1"] and own.flags & dns.flags.AA
        forwarded = query(sidecar, UP)
        assert [r.to_text() for r in forwarded.answer[0]] == ["10.9.9.9"]
        assert forwarded.flags & dns.flags.RA and not forwarded.flags & dns.flags.AA
        tcp = query(sidecar, UP, tcp=True)
        assert [r.to_text() for r in tcp.answer[0]] == ["10.9.9.9"]
        mixed = query(sidecar, "WeB.pRoD.sVc.UpStReAm.TeSt.")
        assert mixed.question[0].name.to_text() == "WeB.pRoD.sVc.UpStReAm.TeSt.", (
            "the client's case comes back"
        )


def test_cache_hits_expire_with_the_ttl(upstream: ServerThread, tmp_path: Path) -> None:
    with ServerThread(sidecar_settings(tmp_path, upstream, serve_stale=0.0)) as sidecar:
        sidecar.wait_serving()
        assert sidecar.app is not None
        query(sidecar, UP)
        upstream.stop()  # from now on only the cache can answer
        hit = query(sidecar, UP)
        assert [r.to_text() for r in hit.answer[0]] == ["10.9.9.9"] and hit.answer[0].ttl <= 1
        time.sleep(1.2)  # the 1 s TTL runs out: the next query needs the (stopped) upstream
        started = time.monotonic()
        assert query(sidecar, UP).rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - started < 2.0, "SERVFAIL within a bounded time"


def test_negative_answers_are_cached_for_the_soa_minimum(upstream: ServerThread, tmp_path: Path) -> None:
    with ServerThread(sidecar_settings(tmp_path, upstream, serve_stale=0.0)) as sidecar:
        sidecar.wait_serving()
        missing = "nope.prod.svc.upstream.test."
        first = query(sidecar, missing)
        assert first.rcode() == dns.rcode.NXDOMAIN and first.authority[0].rdtype == dns.rdatatype.SOA
        upstream.stop()
        assert query(sidecar, missing).rcode() == dns.rcode.NXDOMAIN, "served from the negative cache"
        time.sleep(1.2)
        assert query(sidecar, missing).rcode() == dns.rcode.SERVFAIL


def test_a_dead_upstream_is_skipped(upstream: ServerThread, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:  # bound, never answers
        dead.bind(("127.0.0.1", 0))
        with ServerThread(
            sidecar_settings(tmp_path, ("127.0.0.1", dead.getsockname()[1]), upstream)
        ) as sidecar:
            sidecar.wait_serving()
            started = time.monotonic()
            reply = query(sidecar, UP)
            assert [r.to_text() for r in reply.answer[0]] == ["10.9.9.9"]
            assert time.monotonic() - started < 2.0


def test_clients_outside_the_allowed_networks_are_refused(upstream: ServerThread, tmp_path: Path) -> None:
    with ServerThread(sidecar_settings(tmp_path, upstream, allow=(ip_network("10.0.0.0/8"),))) as sidecar:
        sidecar.wait_serving()
        assert query(sidecar, UP).rcode() == dns.rcode.REFUSED, "never an open resolver"
        assert query(sidecar, UP, tcp=True).rcode() == dns.rcode.REFUSED
        assert query(sidecar, "api.prod.svc.clusterset.local.").answer, "the zone is still answered"


@pytest.mark.parametrize(("allow", "rcode"), [(None, dns.rcode.NOERROR), ("127.0.0.0/8", dns.rcode.REFUSED)])
def test_a_client_over_ipv6_is_forwarded_as_its_networks_allow(
    upstream: ServerThread, tmp_path: Path, allow: str | None, rcode: int
) -> None:
    # The sender's IPv6 sockaddr is read back from the kernel's bytes (dns/batch.py) for the check and for
    # the reply that comes when the upstream answers.
    settings = sidecar_settings(tmp_path, upstream, **({"allow": (ip_network(allow),)} if allow else {}))
    settings = replace(settings, server=replace(settings.server, listen=(ListenAddress("::1", 0),)))
    with ServerThread(settings) as sidecar:
        sidecar.wait_serving()
        request = dns.message.make_query(UP, "A")
        reply = dns.query.udp(request, "::1", port=sidecar.port, timeout=2)
        assert reply.rcode() == rcode
        if rcode == dns.rcode.NOERROR:
            assert [r.to_text() for r in reply.answer[0]] == ["10.9.9.9"]


def test_without_forwarders_other_names_are_refused(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("api", "prod", ips=["10.0.0.1"])])
    with ServerThread(settings_for(tmp_path)) as server:
        server.wait_serving()
        assert query(server, UP).rcode() == dns.rcode.REFUSED


# --- against the scripted upstream ---------------------------------------------------------------------

NAME = "www.up.test."
MANY = "many.up.test."  # 60 A records: 976 bytes, more than 512 and less than 1232
HUGE = "huge.up.test."  # 120 A records: more than 1232, so the upstream's UDP reply is truncated
RECORDS = {
    (NAME, "A"): ["192.0.2.1"],
    (MANY, "A"): [f"198.51.100.{i}" for i in range(1, 61)],
    (HUGE, "A"): [f"203.0.113.{i}" for i in range(1, 121)],
    (NAME, "HTTPS"): ['1 . alpn="h2"'],  # QTYPE 65, whose low byte is an ASCII "A"
}


@pytest.fixture
def scripted() -> Iterator[Upstream]:
    with Upstream(records=dict(RECORDS)) as upstream:
        yield upstream


@contextlib.contextmanager
def started(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as server:
        server.wait_serving()
        yield server


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def test_hits_are_aged_and_keep_the_clients_case(scripted: Upstream, tmp_path: Path) -> None:
    with started(sidecar_settings(tmp_path, scripted)) as sidecar:
        first = query(sidecar, NAME)
        assert addresses(first) == ["192.0.2.1"] and first.answer[0].ttl == 300
        time.sleep(1.1)
        hit = query(sidecar, "wWw.Up.TeSt.")
        assert hit.question[0].name.to_text() == "wWw.Up.TeSt.", "0x20: the question comes back as asked"
        assert addresses(hit) == ["192.0.2.1"]
        assert hit.answer[0].ttl in (298, 299), "RFC 1035 §6.1.3: TTL lowered by the time in the cache"
        assert scripted.asked(NAME) == 1, "the second query was a cache hit"
        https = query(sidecar, NAME, "HTTPS")
        assert [r.to_text() for r in https.answer[0]] == ['1 . alpn="h2"'] and scripted.asked(
            NAME, "HTTPS"
        ) == 1
        assert hit.flags & dns.flags.RA and hit.flags & dns.flags.RD and not hit.flags & dns.flags.AA


def test_positive_answers_are_minimal_unless_dnssec_is_asked(tmp_path: Path) -> None:
    with (
        Upstream(records=dict(RECORDS), referral_data=True) as upstream,
        started(sidecar_settings(tmp_path, upstream)) as sidecar,
    ):
        plain = query(sidecar, NAME)
        assert addresses(plain) == ["192.0.2.1"]
        assert (plain.authority, plain.additional) == ([], []), "the upstream's NS and glue are left out"
        signed = query(sidecar, NAME, payload=1232, want_dnssec=True)
        assert addresses(signed) == ["192.0.2.1"]
        assert [r.rdtype for r in signed.authority] == [dns.rdatatype.NS], "DO: the reply is whole"
        assert [r.rdtype for r in signed.additional] == [dns.rdatatype.A]
        negative = query(sidecar, "nothing.up.test.")
        assert negative.rcode() == dns.rcode.NXDOMAIN
        assert [r.rdtype for r in negative.authority] == [dns.rdatatype.SOA]


def test_edns_sizes_truncation_and_tcp(scripted: Upstream, tmp_path: Path) -> None:
    with started(sidecar_settings(tmp_path, scripted)) as sidecar:
        assert len(addresses(query(sidecar, MANY, payload=1232))) == 60, "fits the client's EDNS size"
        plain = query(sidecar, MANY)  # no EDNS: 512 bytes at most (RFC 1035 §4.2.1)
        assert plain.flags & dns.flags.TC and not plain.answer
        assert len(addresses(query(sidecar, MANY, tcp=True))) == 60
        # The upstream truncates HUGE over UDP: mcsdns asks it again over TCP (RFC 7766 §5) and keeps the
        # whole answer, which a UDP client gets as TC and a TCP client whole.
        assert query(sidecar, HUGE, payload=1232).flags & dns.flags.TC
        assert len(addresses(query(sidecar, HUGE, tcp=True))) == 120
        transports = {q[2] for q in scripted.queries if q[0] == HUGE}
        assert transports == {"udp", "tcp"} and scripted.asked(HUGE) == 2, "fetched once, over UDP then TCP"
        with_opt = query(sidecar, NAME, payload=4096)
        assert with_opt.edns == 0 and with_opt.payload == 1232, "our own OPT, with our payload"
        assert query(sidecar, NAME).edns == -1, "no OPT for a client that sent none"


def test_negative_answers_nodata_and_nxdomain(scripted: Upstream, tmp_path: Path) -> None:
    scripted.negative_ttl = 30
    with started(sidecar_settings(tmp_path, scripted)) as sidecar:
        nodata = query(sidecar, NAME, "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA
        nxdomain = query(sidecar, "absent.up.test.")
        assert nxdomain.rcode() == dns.rcode.NXDOMAIN and nxdomain.authority[0].ttl == 30
        time.sleep(1.1)
        again = query(sidecar, "absent.up.test.")
        assert again.rcode() == dns.rcode.NXDOMAIN and again.authority[0].ttl in (28, 29), "SOA TTL aged"
        assert query(sidecar, NAME, "AAAA").rcode() == dns.rcode.NOERROR
        assert scripted.asked("absent.up.test.") == 1 and scripted.asked(NAME, "AAAA") == 1, (
            "RFC 2308 §5: negative answers come from the cache"
        )


def test_forged_replies_are_ignored(scripted: Upstream, tmp_path: Path) -> None:
    scripted.forge = True
    with started(sidecar_settings(tmp_path, scripted)) as sidecar:
        reply = query(sidecar, NAME)
        assert addresses(reply) == ["192.0.2.1"], "RFC 5452: only the upstream's port, id and question count"
        assert sidecar.app is not None and sidecar.app.forwarder is not None
        # The wrong port never reaches mcsdns (its upstream sockets are connected, so the kernel drops it);
        # the wrong question does and is counted (a wrong id may collide with another query's).
        assert sidecar.app.forwarder.ignored >= 1


def test_identical_misses_in_flight_go_upstream_once(scripted: Upstream, tmp_path: Path) -> None:
    scripted.delay = 0.5
    with started(sidecar_settings(tmp_path, scripted)) as sidecar:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(lambda _: query(sidecar, NAME), range(20)))
        assert all(addresses(r) == ["192.0.2.1"] for r in replies)
        assert scripted.asked(NAME) == 1, "20 clients, one upstream query"
        assert sidecar.app is not None and sidecar.app.forwarder is not None
        assert sidecar.app.forwarder.coalesced >= 1


def test_a_burst_of_distinct_misses_from_many_clients_gets_each_its_own_answer(
    scripted: Upstream, tmp_path: Path
) -> None:
    # Sent all at once, the misses reach mcsdns in one read, go upstream together and come back together:
    # each answer must still reach the client that asked, with its id and its question.
    count = 64
    names = [f"n{i}.up.test." for i in range(count)]
    scripted.records.update({(name, "A"): [f"192.0.2.{i + 1}"] for i, name in enumerate(names)})
    with started(sidecar_settings(tmp_path, scripted)) as sidecar, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in names]
        sent = []
        for i, (client, name) in enumerate(zip(clients, names, strict=True)):
            message = dns.message.make_query(name, "A")
            message.id = 1000 + i
            client.sendto(message.to_wire(), (sidecar.host, sidecar.port))
            sent.append(message)
        for i, (client, message) in enumerate(zip(clients, sent, strict=True)):
            client.settimeout(5)
            reply = dns.message.from_wire(client.recv(4096))
            assert reply.id == message.id and reply.question == message.question
            assert addresses(reply) == [f"192.0.2.{i + 1}"]
        assert all(scripted.asked(name) == 1 for name in names)


def test_popular_entries_are_prefetched(scripted: Upstream, tmp_path: Path) -> None:
    scripted.ttl = 2
    with started(sidecar_settings(tmp_path, scripted, serve_stale=0.0)) as sidecar:
        assert sidecar.app is not None and sidecar.app.forwarder is not None
        sidecar.app.forwarder.cache.prefetch_min_ttl = 1  # the default (10 s) would make this test slow
        query(sidecar, NAME)
        time.sleep(1.85)  # inside the last 10 % of the 2 s TTL
        assert addresses(query(sidecar, NAME)) == ["192.0.2.1"], "answered from the cache at once"
        wait_for(lambda: scripted.asked(NAME) == 2, timeout=2, what="the prefetch")
        time.sleep(0.3)  # the first entry has expired by now; only the prefetched one can answer
        scripted.silent = True
        reply = query(sidecar, NAME)
        assert addresses(reply) == ["192.0.2.1"] and reply.answer[0].ttl >= 1, "the refreshed entry answers"


def test_serve_stale_when_every_upstream_fails(scripted: Upstream, tmp_path: Path) -> None:
    scripted.ttl = 1
    with started(sidecar_settings(tmp_path, scripted, serve_stale=4.0)) as sidecar:
        query(sidecar, NAME)
        scripted.silent = True
        time.sleep(1.1)
        for _ in range(2):  # each waits for the upstream's timeout; two failures mark it down
            stale = query(sidecar, NAME)
            assert addresses(stale) == ["192.0.2.1"] and stale.answer[0].ttl == 30, "RFC 8767 §4: TTL 30 s"
        # Every upstream is down now: a stale answer comes at once, without waiting for a timeout.
        before = time.monotonic()
        assert addresses(query(sidecar, NAME)) == ["192.0.2.1"]
        assert time.monotonic() - before < 0.5
        time.sleep(2.2)  # past the serve-stale window (1 s TTL + 4 s)
        assert query(sidecar, NAME).rcode() == dns.rcode.SERVFAIL


def test_metrics_in_mcsdns_and_coredns_names(scripted: Upstream, tmp_path: Path) -> None:
    port = free_port()
    settings = replace(
        sidecar_settings(tmp_path, scripted), http=ListenAddress("127.0.0.1", port), metrics_names="coredns"
    )
    with started(settings) as sidecar:
        query(sidecar, NAME)  # miss
        query(sidecar, NAME)  # hit
        query(sidecar, "absent.up.test.")  # miss, cached as a denial
        query(sidecar, "absent.up.test.")  # denial hit
        status, text = get(port, "/metrics")
    assert status == 200
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    server = f'server="dns://{sidecar.host}:{sidecar.port}"'
    upstream = f'upstream="127.0.0.1:{scripted.port}"'
    expect = {
        'mcsdns_forward_queries_total{outcome="cache_hit"}': 2,
        'mcsdns_forward_queries_total{outcome="cache_miss"}': 2,
        'mcsdns_forward_cache_entries{type="positive"}': 1,
        'mcsdns_forward_cache_entries{type="negative"}': 1,
        f"mcsdns_forward_upstream_queries_total{{{upstream}}}": 2,
        f"mcsdns_forward_upstream_up{{{upstream}}}": 1,
        f'coredns_cache_hits_total{{{server},type="success",view="",zones="."}}': 1,
        f'coredns_cache_hits_total{{{server},type="denial",view="",zones="."}}': 1,
        f'coredns_cache_misses_total{{{server},view="",zones="."}}': 2,
        f'coredns_cache_requests_total{{{server},view="",zones="."}}': 4,
        f'coredns_cache_entries{{{server},type="success",view="",zones="."}}': 1,
        f'coredns_forward_requests_total{{to="127.0.0.1:{scripted.port}"}}': 2,
    }
    assert {key: lines.get(key) for key in expect} == expect
    assert lines["mcsdns_forward_cache_bytes"] > 0

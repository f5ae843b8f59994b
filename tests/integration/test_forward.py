"""Sidecar forwarding against a real upstream on loopback (a second mcsdns serving another zone):
cache hits, TTL expiry, negative caching, upstream failover and down, and the client ACL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from mcsdns.settings import ForwardSettings, ListenAddress, Network, ZoneSettings
from tests.support import ServerThread, query, service_import, settings_for, write_manifests

UP = "web.prod.svc.upstream.test."


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[ServerThread]:
    write_manifests(tmp_path / "up", "up.yaml", [service_import("web", "prod", ips=["10.9.9.9"])])
    settings = settings_for(tmp_path / "up", zone=ZoneSettings(zone="upstream.test", ttl=1))
    with ServerThread(settings) as server:
        server.wait_serving()
        yield server


def sidecar_settings(
    tmp_path: Path, *upstreams: ServerThread | tuple[str, int], allow: tuple[Network, ...] = ()
):
    write_manifests(tmp_path / "local", "local.yaml", [service_import("api", "prod", ips=["10.0.0.1"])])
    addresses = tuple(
        ListenAddress(u.host, u.port) if isinstance(u, ServerThread) else ListenAddress(*u) for u in upstreams
    )
    forward = ForwardSettings(upstreams=addresses, **({"allow": allow} if allow else {}))
    return replace(settings_for(tmp_path / "local"), forward=forward)


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
    with ServerThread(sidecar_settings(tmp_path, upstream)) as sidecar:
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
    with ServerThread(sidecar_settings(tmp_path, upstream)) as sidecar:
        sidecar.wait_serving()
        missing = "nope.prod.svc.upstream.test."
        first = query(sidecar, missing)
        assert first.rcode() == dns.rcode.NXDOMAIN and first.authority[0].rdtype == dns.rdatatype.SOA
        upstream.stop()
        assert query(sidecar, missing).rcode() == dns.rcode.NXDOMAIN, "served from the negative cache"
        time.sleep(1.2)
        assert query(sidecar, missing).rcode() == dns.rcode.SERVFAIL


def test_a_dead_upstream_is_skipped(upstream: ServerThread, tmp_path: Path) -> None:
    import socket

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


def test_without_forwarders_other_names_are_refused(tmp_path: Path) -> None:
    write_manifests(tmp_path, "a.yaml", [service_import("api", "prod", ips=["10.0.0.1"])])
    with ServerThread(settings_for(tmp_path)) as server:
        server.wait_serving()
        assert query(server, UP).rcode() == dns.rcode.REFUSED

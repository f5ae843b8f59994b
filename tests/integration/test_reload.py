"""SIGHUP and a changed --config FILE reload what can change live (forwarders, who may use them, the log
level); a file that does not load leaves the running settings, and a setting that needs a restart says so.
Run as users run it: `mcsdns serve --config FILE` in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
import yaml

from tests.integration.test_workers import address_of
from tests.support import free_port, service_import, wait_for, write_manifests
from tests.upstream import Upstream


def records(address: str) -> dict[tuple[str, str], list[str]]:
    return {("a.up.test.", "A"): [address], ("b.up.test.", "A"): [address]}


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream(records=records("192.0.2.1")) as one, Upstream(records=records("192.0.2.2")) as two:
        yield one, two


def web_ttl(port: int) -> int | None:
    message = dns.message.make_query("web.prod.svc.clusterset.local.", "A")
    try:
        reply = dns.query.udp(message, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None
    return reply.answer[0].ttl if reply.answer else None


def write(path: Path, **settings: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(settings))
    temporary.replace(path)  # as editors and ConfigMap updates do: the watcher sees a new inode


def test_a_changed_config_file_and_sighup_reload_the_forwarders(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    one, two = upstreams
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    write_manifests(manifests, "web.yaml", [service_import("web", "prod", ips=["10.0.0.3"])])
    port = free_port()
    config = tmp_path / "mcsdns.yaml"
    base = {"manifests": str(manifests), "listen": [f"127.0.0.1:{port}"], "workers": 2}
    write(config, **base, forward=[f"127.0.0.1:{one.port}"])
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcsdns", "serve", "--config", str(config)], stdout=log, stderr=log
    )
    try:
        wait_for(lambda: address_of(port, "web.prod.svc.clusterset.local.") == ["10.0.0.3"], what="the zone")
        assert address_of(port, "a.up.test.") == ["192.0.2.1"]
        # The file changes: the next miss goes to the new upstream, in every serving process.
        write(config, **base, forward=[f"127.0.0.1:{two.port}"])
        wait_for(lambda: "reload: --forward is now" in (tmp_path / "log").read_text(), what="the reload")
        time.sleep(0.3)  # the workers apply it from the main process's frame
        for _ in range(8):  # new source ports: every process; b is a miss in each, as no one asked it yet
            assert address_of(port, "b.up.test.") == ["192.0.2.2"]
        # --ttl: the zone is rendered again, and every process serves the new one.
        write(config, **base, forward=[f"127.0.0.1:{two.port}"], ttl=30)
        wait_for(lambda: "reload: --ttl is now 30" in (tmp_path / "log").read_text(), what="the TTL reload")
        for _ in range(8):
            wait_for(lambda: web_ttl(port) == 30, timeout=3, what="answers with the new TTL")
        # A file that does not load: logged, and the running settings stay.
        config.write_text("forward: [not an address\n")
        wait_for(lambda: "the running settings stay" in (tmp_path / "log").read_text(), what="the refusal")
        assert proc.poll() is None and address_of(port, "web.prod.svc.clusterset.local.") == ["10.0.0.3"]
        # SIGHUP with a setting that needs a restart: said, not applied.
        write(config, **base, forward=[f"127.0.0.1:{two.port}"], ttl=30, zone="example.org")
        time.sleep(2.5)  # the watcher's own reload of this change comes within 2 s
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "--zone changed; it takes effect at the next start" in (tmp_path / "log").read_text(),
            what="the restart notice",
        )
        assert address_of(port, "web.prod.svc.clusterset.local.") == ["10.0.0.3"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        log.close()

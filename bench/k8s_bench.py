"""Kubernetes benchmark: mcsdns fed by a cluster's ServiceImports and EndpointSlices, at 10,000 services.

The cluster is the project's Kubernetes API emulator (``mcsdns_sandbox.kubeapi``), run as its own process
(this script with ``--emulator-child``) so it never shares a GIL with the measuring code. It is seeded
through its in-process store before mcsdns starts: N ServiceImports (~90 % ClusterSetIP with one VIP and
1-2 named ports, ~10 % Headless, half of those with StatefulSet hostnames), and for each one EndpointSlice
per cluster (3 clusters) of 10 ready endpoints; then its history is compacted. mcsdns then runs as a
separate process against it (``mcsdns serve --kubeconfig``) and the script measures:

1. first ready: from exec of mcsdns to the first correct answer for the last seeded ClusterSetIP service;
2. RSS: VmRSS of mcsdns from /proc once it answers;
3. update -> answer latency: while dnsperf loads mcsdns, change a ServiceImport's VIP (3 of 4 updates) or
   one endpoint IP of a headless service's EndpointSlice (1 of 4) with a merge PATCH over the emulator's
   HTTP API, 10 updates/s, and poll that name with dnspython every 2 ms until the new value is answered;
   the latency runs from just before the PATCH is sent to the reply that carries the new value;
4. queries/s of the same dnsperf run (closed loop, ``-c 4 -q 100 -e``, 20 s) with and without that churn,
   and their ratio; rounds alternate quiet/churn/churn/quiet, after an uncounted warm-up run (10 s).

Placement on the 2-core machine: mcsdns alone on core 1 (``taskset -c 1``); dnsperf, the emulator and this
script (the poller) on core 0. Other people's work shares the machine, so before each run the script waits
(bounded) until it is quiet, and repeats a run (at most ``--retries`` times) when other processes used more
than a tenth of a core meanwhile, or (quiet runs) mcsdns waited for its core more than 3 % of the time.

    .venv/bin/python bench/k8s_bench.py [--services 10000] [--duration 20] [--rounds 2] [--quick]

Only 127.0.0.1 is used; every wait and load loop is bounded in time; every process started here is
stopped in a ``finally`` (its whole process group). See bench/RESULTS-kubernetes.md for a run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import math
import os
import platform
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import gen
import perf
from machine import TICK, disturbance, wait_quiet
from servers import LOCALHOST, Running, ServerError, ask, free_port, spawn

OUT = Path(__file__).resolve().parent / "out"
CLUSTERS = ("cls1", "cls2", "cls3")
ENDPOINTS_PER_CLUSTER = 10
HEADLESS_SHARE = 0.1
SI_LIST = "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports"
ES_LIST = "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=multicluster.kubernetes.io%2Fservice-name"
ENDPOINT_UPDATE_EVERY = 4  # every 4th update changes a headless endpoint, the others a VIP

# Targets (issue): first ready < 10 s, RSS < 300 MB, p99 update->answer < 100 ms, qps with churn >= 0.9x.
READY_TARGET_S = 10.0
RSS_TARGET_BYTES = 300 * 10**6
P99_TARGET_S = 0.100
QPS_RATIO_TARGET = 0.9


# ---------------------------------------------------------------- data


class _Addresses:
    """Unique fake addresses: VIPs from 172.20/14, endpoint IPs from 10.1/16 up (300,000 and more)."""

    def __init__(self) -> None:
        self.vips = 0
        self.endpoints = 0

    def vip(self) -> str:
        self.vips += 1
        n = self.vips
        return f"172.{20 + n // 65024}.{(n // 254) % 256}.{n % 254 + 1}"

    def endpoint(self) -> str:
        self.endpoints += 1
        n = self.endpoints
        return f"10.{1 + n // 65024}.{(n // 254) % 256}.{n % 254 + 1}"


def generate(count: int, seed: int) -> list[gen.Service]:
    """``count`` services, each with ``ENDPOINTS_PER_CLUSTER`` ready endpoints in every cluster."""
    rng = random.Random(seed)
    addrs = _Addresses()
    services = []
    for i in range(count):
        namespace = gen.NAMESPACES[i % len(gen.NAMESPACES)]
        word = rng.choice(gen.SERVICE_WORDS)
        name = f"{word}-{i:05d}"
        headless = rng.random() < HEADLESS_SHARE
        stateful = headless and rng.random() < 0.5  # StatefulSet pods have hostnames, others use the IP
        n_ports = 1 if headless else rng.randint(1, 2)
        ports = tuple(gen.Port(*p) for p in rng.sample(gen.PORT_CHOICES, n_ports))
        endpoints = tuple(
            gen.Endpoint(cluster, addrs.endpoint(), f"{word}-{j}" if stateful else None, True)
            for cluster in CLUSTERS
            for j in range(ENDPOINTS_PER_CLUSTER)
        )
        services.append(gen.Service(namespace, name, headless, None if headless else addrs.vip(), ports,
                                    endpoints))
    return services


def objects(svc: gen.Service) -> Iterator[dict[str, Any]]:
    """The ServiceImport and one EndpointSlice per cluster (the manifests gen.py writes, 3 clusters)."""
    yield gen._service_import(svc)
    for cluster in CLUSTERS:
        yield gen._endpoint_slice(svc, cluster, [e for e in svc.endpoints if e.cluster == cluster])


# ---------------------------------------------------------------- the emulator process


def emulator_child(args: argparse.Namespace) -> int:
    """Run in its own process: seed the emulator, compact, write the kubeconfig, say READY, serve."""
    from mcsdns_sandbox.kubeapi import KubeApiEmulator  # only this process needs it

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    services = generate(args.services, args.seed)
    started = time.monotonic()
    with KubeApiEmulator(host=LOCALHOST, port=0, history_size=args.history_size,
                         auto_create_namespaces=True) as api:
        count = 0
        for svc in services:
            for obj in objects(svc):
                api.store.create(obj)
                count += 1
        api.compact()  # nothing needs the seeding events; a watch from before now gets 410 and relists
        tmp = args.kubeconfig.with_suffix(".tmp")
        api.write_kubeconfig(tmp)
        tmp.rename(args.kubeconfig)
        print(f"READY {api.url} {count} {time.monotonic() - started:.2f}", flush=True)
        stop.wait()
    return 0


@dataclass
class Emulator:
    running: Running
    host: str
    port: int
    objects: int
    seed_s: float


def start_emulator(args: argparse.Namespace, workdir: Path, cpu: int | None) -> Emulator:
    kubeconfig = workdir / "kubeconfig"
    argv = [sys.executable, str(Path(__file__).resolve()), "--emulator-child", "--services",
            str(args.services), "--seed", str(args.seed), "--kubeconfig", str(kubeconfig),
            "--history-size", str(args.history_size)]
    running = spawn("kubeapi", 0, argv, workdir, cpu)
    deadline = time.monotonic() + args.seed_timeout
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise ServerError(f"the emulator exited with {running.proc.returncode}:\n{running.log_tail()}")
        for line in running.log.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                _, url, count, seconds = line.split()
                host, port = url.removeprefix("http://").rsplit(":", 1)
                running.port = int(port)
                return Emulator(running, host, int(port), int(count), float(seconds))
        time.sleep(0.1)
    running.stop()
    raise ServerError(f"the emulator was not seeded within {args.seed_timeout:.0f} s")


def list_seconds(host: str, port: int, path: str, page: int = 500) -> tuple[float, int]:
    """Seconds to page through a list the way mcsdns's reflector does (``limit`` 500, ``continue``),
    reading but not parsing the bodies: what the emulator alone adds to first-ready time. Also pages."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    started = time.monotonic()
    token, pages = "", 0
    try:
        while True:
            sep = "&" if "?" in path else "?"
            query = f"{sep}limit={page}" + (f"&continue={urllib.parse.quote(token)}" if token else "")
            conn.request("GET", path + query, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
            pages += 1
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
            found = re.search(rb'"continue"\s*:\s*"([^"]+)"', body[:2000])
            if not found:
                return time.monotonic() - started, pages
            token = found.group(1).decode()
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK


def vm_hwm(pid: int) -> int:
    """Peak resident memory (VmHWM) of one process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- mcsdns


def mcsdns_argv(kubeconfig: Path, port: int) -> list[str]:
    # `python -m mcsdns` is the console script `mcsdns` without depending on PATH (as servers.py does).
    return [sys.executable, "-m", "mcsdns", "serve", "--kubeconfig", str(kubeconfig),
            "--listen", f"{LOCALHOST}:{port}", "--log-level", "warning", "--leader-elect", "false",
            "--workers", "1"]  # one process: its RSS and CPU are the figures


# ---------------------------------------------------------------- answers


def a_records(port: int, qname: str, timeout: float) -> set[str] | None:
    """The A addresses of ``qname`` (EDNS, so 30 headless addresses fit), or None on no/bad answer."""
    try:
        reply = ask(port, qname, "A", timeout)
    except (dns.exception.DNSException, OSError):
        return None
    if reply.rcode() != dns.rcode.NOERROR:
        return None
    return {rd.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def spot_check(port: int, services: Sequence[gen.Service], zone: str, sample: int, rng: random.Random) -> int:
    """How many of ``sample`` services answer something other than their seeded A records."""
    wrong = 0
    for svc in rng.sample(list(services), min(sample, len(services))):
        expected = {e.ip for e in svc.ready} if svc.headless else {svc.vip or ""}
        if a_records(port, svc.fqdn(zone), 0.5) != expected:
            wrong += 1
    return wrong


class Prober:
    """A light poller for one name: one connected UDP socket and the query packed once, a fresh ID per
    poll (a late reply to an earlier poll is skipped). Cheaper than ``dns.query.udp`` per poll, so the
    2 ms polling takes less of the client core from dnsperf."""

    def __init__(self, port: int) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect((LOCALHOST, port))
        self._id = 0
        self._wire = b""

    def close(self) -> None:
        self._sock.close()

    def aim(self, qname: str) -> None:
        query = dns.message.make_query(qname, "A", use_edns=0, payload=1232)
        query.flags &= ~dns.flags.RD
        self._wire = query.to_wire()

    def a_records(self, timeout: float) -> set[str] | None:
        self._id = (self._id + 1) & 0xFFFF
        qid = self._id.to_bytes(2, "big")
        self._sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            self._sock.send(qid + self._wire[2:])
            while True:
                data = self._sock.recv(65535)
                if data[:2] == qid:
                    break
                self._sock.settimeout(max(1e-4, deadline - time.monotonic()))
            reply = dns.message.from_wire(data)
        except (dns.exception.DNSException, OSError):
            return None
        if reply.rcode() != dns.rcode.NOERROR:
            return None
        return {rd.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


# ---------------------------------------------------------------- churn


@dataclass
class Update:
    kind: str  # "vip" or "endpoint"
    latency: float  # seconds from just before the PATCH to the first reply with the new value; inf: never
    api_s: float  # the PATCH round trip alone


@dataclass
class Churner:
    """Changes VIPs and headless endpoints through the emulator's HTTP API and times the DNS answers."""

    api_host: str
    api_port: int
    dns_port: int
    services: list[gen.Service]
    zone: str
    rng: random.Random
    poll_interval: float = 0.002
    give_up: float = 2.0  # an update not answered within this counts as infinitely slow
    _vips: int = 0
    _ips: int = 0
    _slices: dict[int, dict[str, list[gen.Endpoint]]] = field(default_factory=dict)  # headless, as changed

    def __post_init__(self) -> None:
        self._conn = http.client.HTTPConnection(self.api_host, self.api_port, timeout=5)
        self._prober = Prober(self.dns_port)
        self._clusterset = [i for i, s in enumerate(self.services) if not s.headless]
        self._headless = [i for i, s in enumerate(self.services) if s.headless]

    def close(self) -> None:
        self._conn.close()
        self._prober.close()

    def _patch(self, path: str, body: dict[str, Any]) -> None:
        self._conn.request("PATCH", path, body=json.dumps(body),
                           headers={"Content-Type": "application/merge-patch+json"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"PATCH {path}: {response.status} {data[:300]!r}")

    def _change_vip(self) -> tuple[gen.Service, str, dict[str, Any], set[str]]:
        i = self.rng.choice(self._clusterset)
        svc = self.services[i]
        self._vips += 1
        vip = f"172.30.{self._vips // 254 % 256}.{self._vips % 254 + 1}"
        path = (f"/apis/multicluster.x-k8s.io/v1alpha1/namespaces/{svc.namespace}"
                f"/serviceimports/{svc.name}")
        return svc, path, {"spec": {"ips": [vip]}}, {vip}

    def _change_endpoint(self) -> tuple[gen.Service, str, dict[str, Any], set[str]]:
        i = self.rng.choice(self._headless)
        svc = self.services[i]
        slices = self._slices.setdefault(
            i, {c: [e for e in svc.endpoints if e.cluster == c] for c in CLUSTERS})
        cluster = self.rng.choice(CLUSTERS)
        j = self.rng.randrange(len(slices[cluster]))
        self._ips += 1
        new_ip = f"10.200.{self._ips // 254 % 256}.{self._ips % 254 + 1}"
        slices[cluster][j] = dataclasses.replace(slices[cluster][j], ip=new_ip)
        body = gen._endpoint_slice(svc, cluster, slices[cluster])["endpoints"]
        path = f"/apis/discovery.k8s.io/v1/namespaces/{svc.namespace}/endpointslices/{svc.name}-{cluster}"
        return svc, path, {"endpoints": body}, {e.ip for eps in slices.values() for e in eps}

    def one(self, n: int) -> Update:
        kind = "endpoint" if n % ENDPOINT_UPDATE_EVERY == ENDPOINT_UPDATE_EVERY - 1 else "vip"
        svc, path, body, expected = self._change_endpoint() if kind == "endpoint" else self._change_vip()
        self._prober.aim(svc.fqdn(self.zone))
        started = time.monotonic()
        self._patch(path, body)
        api_s = time.monotonic() - started
        deadline = started + self.give_up
        next_poll = time.monotonic()
        while True:
            if self._prober.a_records(0.05) == expected:
                return Update(kind, time.monotonic() - started, api_s)
            now = time.monotonic()
            if now >= deadline:
                return Update(kind, math.inf, api_s)
            next_poll += self.poll_interval
            time.sleep(max(0.0, next_poll - now))

    def run(self, rate: float, duration: float) -> list[Update]:
        """Updates at ``rate``/s for ``duration`` s (one at a time: a slow answer delays the next)."""
        results: list[Update] = []
        start = time.monotonic()
        n = 0
        while True:
            due = start + n / rate
            if due >= start + duration:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            results.append(self.one(n))
            n += 1
        return results


# ---------------------------------------------------------------- dnsperf


@contextlib.contextmanager
def dnsperf(port: int, query_file: Path, load: perf.Load) -> Iterator[subprocess.Popen[str]]:
    """dnsperf (perf.py's command line) as a process this script owns, so a ``finally`` can kill it."""
    proc = subprocess.Popen(perf.command(port, query_file, load), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def finish(proc: subprocess.Popen[str], load: perf.Load) -> perf.PerfResult:
    out, err = proc.communicate(timeout=load.duration + load.timeout + 30)
    if proc.returncode != 0 or "Queries per second" not in out:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {err[-2000:]}")
    return perf.parse_summary(out)


@dataclass
class Phase:
    churn: bool
    result: perf.PerfResult
    updates: list[Update]
    foreign: float  # cores' worth of CPU used by other processes during the run
    waited: float  # share of the run mcsdns's threads sat runnable, waiting for their core
    server_busy: float  # mcsdns CPU time / wall time: 1.0 = its core was the limit
    client_busy: float  # dnsperf's likewise
    emulator_busy: float  # the emulator's likewise
    self_busy: float  # this script's (the poller and the PATCH requests)
    attempts: int = 1


def run_once(args: argparse.Namespace, churner: Churner, port: int, query_file: Path, load: perf.Load,
             churn: bool, ours: set[int], mcsdns_pgid: int, emulator_pid: int) -> Phase:
    wait_quiet(args.quiet_wait, ours)
    updates: list[Update] = []
    server0, client0 = cpu_seconds(mcsdns_pgid), resource.getrusage(resource.RUSAGE_CHILDREN)
    emulator0, self0 = cpu_seconds(emulator_pid), cpu_seconds(os.getpid())
    with disturbance(ours, mcsdns_pgid) as seen, dnsperf(port, query_file, load) as proc:
        started = time.monotonic()
        if churn:
            time.sleep(args.churn_delay)
            updates = churner.run(args.rate, load.duration - 2 * args.churn_delay)
        result = finish(proc, load)
        wall = time.monotonic() - started
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # only dnsperf has been waited for
    client = client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime
    return Phase(churn, result, updates, seen.foreign, seen.waited,
                 server_busy=(cpu_seconds(mcsdns_pgid) - server0) / wall, client_busy=client / wall,
                 emulator_busy=(cpu_seconds(emulator_pid) - emulator0) / wall,
                 self_busy=(cpu_seconds(os.getpid()) - self0) / wall)


def badness(args: argparse.Namespace, phase: Phase) -> float:
    """Over 1.0: other processes disturbed the run. Run-queue delay only counts in quiet runs: with churn,
    mcsdns's own zone-building thread competes with its packet thread for the one core."""
    max_foreign: float = args.max_foreign
    max_waited: float = args.max_waited
    return max(phase.foreign / max_foreign, 0.0 if phase.churn else phase.waited / max_waited)


def disturbed(args: argparse.Namespace, phase: Phase) -> bool:
    return badness(args, phase) > 1.0


def run_phase(args: argparse.Namespace, churner: Churner, port: int, query_file: Path, load: perf.Load,
              churn: bool, ours: set[int], mcsdns_pgid: int, emulator_pid: int) -> Phase:
    """One run, repeated (up to ``--retries`` times) while it was disturbed: other processes used more
    than ``--max-foreign`` cores, or (quiet runs) mcsdns waited for its core more than ``--max-waited`` of
    the time, which catches short-lived processes the CPU sum misses. The least disturbed try is kept."""
    best: Phase | None = None
    for attempt in range(1, args.retries + 2):
        phase = run_once(args, churner, port, query_file, load, churn, ours, mcsdns_pgid, emulator_pid)
        if best is None or badness(args, phase) < badness(args, best):
            best = phase
        best.attempts = attempt
        if not disturbed(args, phase):
            break
        print(f"    disturbed (others used {phase.foreign:.2f} cores, mcsdns waited {phase.waited:.1%}), "
              "again", file=sys.stderr, flush=True)
    assert best is not None
    return best


# ---------------------------------------------------------------- report


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; an update never answered is infinitely slow."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def ms(seconds: float) -> str:
    return "never" if math.isinf(seconds) else "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)


def cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(client core, server core): dnsperf, the emulator and this script on one, mcsdns on the other."""
    if args.no_pin or (os.cpu_count() or 1) < 2:
        return None, None
    return args.client_cpu, args.server_cpu


def benchmark(args: argparse.Namespace) -> int:
    out = Report()
    client_cpu, server_cpu = cpus(args)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # this script (the poller) on the client core too
    services = generate(args.services, args.seed)
    n_headless = sum(s.headless for s in services)
    root = OUT / f"k8s-{args.services}"
    root.mkdir(parents=True, exist_ok=True)
    query_file = root / "queries.txt"
    query_file.write_text("\n".join(gen.queries(services, args.queries, args.seed, gen.DEFAULT_ZONE)) + "\n")
    load = perf.Load(duration=args.duration, clients=args.clients, outstanding=args.outstanding,
                     qps=args.qps, edns=True, cpu=client_cpu)
    rng = random.Random(args.seed + 7)

    now = datetime.datetime.now().astimezone()
    out(f"k8s_bench {now:%Y-%m-%d %H:%M %Z}, Python {platform.python_version()}, {os.cpu_count()} cores")
    out(f"{len(services):,} ServiceImports ({len(services) - n_headless:,} ClusterSetIP, {n_headless:,} "
        f"Headless) x {len(CLUSTERS)} clusters = {len(services) * len(CLUSTERS):,} EndpointSlices of "
        f"{ENDPOINTS_PER_CLUSTER} endpoints")
    pin_text = ("not pinned" if client_cpu is None else f"mcsdns on core {server_cpu}; emulator, dnsperf "
                f"and this script (the poller) on core {client_cpu}")
    out(f"placement: {pin_text}")
    out("mcsdns: python -m mcsdns serve --kubeconfig KUBECONFIG --listen 127.0.0.1:PORT --log-level warning "
        "--leader-elect false")
    qps_text = f"-Q {args.qps}" if args.qps else "closed loop"
    out(f"dnsperf: {qps_text}, -c {args.clients} -q {args.outstanding} -l {args.duration:g} -e, "
        f"{args.queries:,} queries of gen.py's mix; churn {args.rate:g} updates/s for "
        f"{args.duration - 2 * args.churn_delay:g} s inside each churn run; {args.rounds} round(s)")
    out()

    with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
        workdir = Path(tmp)
        emulator: Emulator | None = None
        server: Running | None = None
        churner: Churner | None = None
        try:
            print("... seeding the emulator", file=sys.stderr, flush=True)
            emulator = start_emulator(args, workdir, client_cpu)
            out(f"emulator seeded with {emulator.objects:,} objects in {emulator.seed_s:.1f} s (store API)")
            si_s, si_pages = list_seconds(emulator.host, emulator.port, SI_LIST)
            es_s, es_pages = list_seconds(emulator.host, emulator.port, ES_LIST)
            out(f"emulator alone: paging the ServiceImports takes {si_s:.1f} s ({si_pages} pages), the MCS "
                f"EndpointSlices {es_s:.1f} s ({es_pages} pages) (HTTP, bodies read, not parsed)")
            ours = {os.getpgrp(), emulator.running.proc.pid}
            wait_quiet(args.quiet_wait, ours)
            port = free_port()
            print("... starting mcsdns", file=sys.stderr, flush=True)
            server = spawn("mcsdns", port, mcsdns_argv(workdir / "kubeconfig", port), workdir,
                           server_cpu)
            ours.add(server.proc.pid)
            probe = next(s for s in reversed(services) if not s.headless)
            with disturbance(ours, server.proc.pid) as ready_seen:
                ready_s = server.wait_ready(probe.fqdn(gen.DEFAULT_ZONE), probe.vip or "", args.ready_timeout)
            ready_cpu = cpu_seconds(server.proc.pid)
            out(f"mcsdns first ready after {ready_s:.2f} s, having used {ready_cpu:.2f} s of CPU; meanwhile "
                f"others used {ready_seen.foreign:.2f} cores, mcsdns waited {ready_seen.waited:.1%} for CPU")
            rss_ready = server.rss_bytes()
            hwm_ready = vm_hwm(server.proc.pid)
            wrong = spot_check(port, services, gen.DEFAULT_ZONE, args.spot_check, rng)
            out(f"spot check: {args.spot_check - wrong}/{args.spot_check} services answer their seeded A "
                f"records")
            churner = Churner(emulator.host, emulator.port, port, services, gen.DEFAULT_ZONE, rng)
            if args.warmup > 0:
                # The first load after start-up meets cold caches and lazily rendered negative answers,
                # and once ran a third slower than the next: it is not part of the comparison.
                print("... warm-up", file=sys.stderr, flush=True)
                with dnsperf(port, query_file, dataclasses.replace(load, duration=args.warmup)) as proc:
                    warm = finish(proc, load)
                out(f"warm-up: {warm.qps:,.0f} qps for {args.warmup:.0f} s (not counted)")
            phases: list[Phase] = []
            order = [False, True]
            for r in range(args.rounds):
                for churn in order if r % 2 == 0 else reversed(order):
                    print(f"... round {r + 1}: {'churn' if churn else 'quiet'}", file=sys.stderr, flush=True)
                    phases.append(run_phase(args, churner, port, query_file, load, churn, ours,
                                            server.proc.pid, emulator.running.proc.pid))
            rss_after = server.rss_bytes()
            hwm_after = vm_hwm(server.proc.pid)
        finally:
            if churner is not None:
                churner.close()
            if server is not None:
                server.stop()
            if emulator is not None:
                emulator.running.stop()

    quiet = [p for p in phases if not p.churn]
    churned = [p for p in phases if p.churn]
    updates = [u for p in churned for u in p.updates]
    latencies = [u.latency for u in updates]
    qps_quiet = statistics.median(p.result.qps for p in quiet)
    qps_churn = statistics.median(p.result.qps for p in churned)
    ratio = qps_churn / qps_quiet
    # mcsdns CPU per answered query, quiet over churn: the ratio mcsdns alone would reach with a client that
    # never limits (pessimistic: a less loaded server batches fewer packets per wake-up).
    cpu_ratio = (statistics.median(p.server_busy / p.result.qps for p in quiet)
                 / statistics.median(p.server_busy / p.result.qps for p in churned))
    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    churn_s = args.duration - 2 * args.churn_delay
    achieved = len(updates) / (churn_s * len(churned))

    out()
    out("runs (dnsperf qps and lost share; busy = CPU of mcsdns / dnsperf / emulator / this script as a "
        "share of one core; foreign = cores used by other processes):")
    for i, p in enumerate(phases):
        extra = ""
        if p.churn:
            lat = [u.latency for u in p.updates]
            extra = f", {len(p.updates)} updates, p50 {ms(pct(lat, 0.5))} ms, p99 {ms(pct(lat, 0.99))} ms"
        tries = f" (least disturbed of {p.attempts} tries)" if p.attempts > 1 else ""
        if disturbed(args, p):
            tries += " DISTURBED"
        out(f"  {i + 1}. {'churn' if p.churn else 'quiet'}: {p.result.qps:,.0f} qps, lost "
            f"{p.result.lost_share:.2%}, busy {p.server_busy:.0%} / {p.client_busy:.0%} / "
            f"{p.emulator_busy:.0%} / {p.self_busy:.0%} ({p.server_busy / p.result.qps * 1e6:.1f} us of "
            f"mcsdns CPU per query), foreign {p.foreign:.2f}, mcsdns waited {p.waited:.1%}{tries}{extra}")
    for kind in ("vip", "endpoint"):
        lat = [u.latency for u in updates if u.kind == kind]
        out(f"  {kind} updates: {len(lat)}, p50 {ms(pct(lat, 0.5))} ms, p99 {ms(pct(lat, 0.99))} ms, "
            f"max {ms(max(lat, default=math.nan))} ms")
    out(f"  PATCH round trip alone: p50 {ms(pct([u.api_s for u in updates], 0.5))} ms, "
        f"p99 {ms(pct([u.api_s for u in updates], 0.99))} ms; achieved {achieved:.1f} updates/s")
    out(f"  mcsdns memory: peak (VmHWM) {hwm_ready / 2**20:.1f} MiB by first ready; after the runs RSS "
        f"{rss_after / 2**20:.1f} MiB, peak {hwm_after / 2**20:.1f} MiB")
    out()
    rows = [
        ("time to first ready", f"{ready_s:.2f} s", f"< {READY_TARGET_S:g} s", ready_s < READY_TARGET_S),
        ("RSS after ready", f"{rss_ready / 2**20:.1f} MiB ({rss_ready / 1e6:.0f} MB)",
         f"< {RSS_TARGET_BYTES / 1e6:.0f} MB", rss_ready < RSS_TARGET_BYTES),
        ("update -> answer p50", f"{ms(p50)} ms", "", None),
        ("update -> answer p99", f"{ms(p99)} ms ({len(updates)} updates)", f"< {P99_TARGET_S * 1000:.0f} ms",
         p99 < P99_TARGET_S),
        ("queries/s quiet", f"{qps_quiet:,.0f}", "", None),
        ("queries/s with churn", f"{qps_churn:,.0f}", "", None),
        ("ratio churn / quiet", f"{ratio:.3f}", f">= {QPS_RATIO_TARGET}", ratio >= QPS_RATIO_TARGET),
        ("  same, mcsdns CPU/query", f"{cpu_ratio:.3f} (quiet / churn)", "", None),
        ("answers spot check", f"{args.spot_check - wrong}/{args.spot_check}", "all", wrong == 0),
    ]
    out(f"{'measure':<24} {'value':<30} {'target':<10} result")
    out("-" * 74)
    for name, value, target, ok in rows:
        out(f"{name:<24} {value:<30} {target:<10} {'' if ok is None else verdict(ok)}")
    failed = [name for name, _, _, ok in rows if ok is False]
    out()
    if any(disturbed(args, p) for p in phases):
        out("NOTE: other processes disturbed at least one kept run (DISTURBED above): its qps and the "
            "ratio are not reliable.")
    out("ALL PASS" if not failed else f"FAIL: {', '.join(failed)}")
    return 1 if failed else 0


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=None, help="ServiceImports to seed (10,000; --quick 500)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 500 services (unless --services), 5 s runs, one round")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each dnsperf run (20)")
    ap.add_argument("--rounds", type=int, default=2, help="quiet+churn pairs, order alternating (2)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of uncounted load before the runs (10)")
    ap.add_argument("--rate", type=float, default=10.0, help="updates per second during churn (10)")
    ap.add_argument("--churn-delay", type=float, default=1.0,
                    help="seconds after dnsperf starts before churn begins, and before its end that it stops")
    ap.add_argument("--qps", type=int, default=None, help="dnsperf -Q (default: closed loop)")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    ap.add_argument("--queries", type=int, default=100_000, help="lines of the dnsperf query file")
    ap.add_argument("--spot-check", type=int, default=200, help="services whose answers are checked")
    ap.add_argument("--history-size", type=int, default=200_000, help="emulator watch history")
    ap.add_argument("--seed-timeout", type=float, default=600.0)
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="wait up to this long for the machine to be quiet before each run (120 s)")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="a run during which other processes used more cores than this is repeated (0.1)")
    ap.add_argument("--max-waited", type=float, default=0.03,
                    help="a run during which mcsdns waited for its core longer than this share is repeated")
    ap.add_argument("--retries", type=int, default=3, help="repeats of a disturbed run at most (3)")
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--emulator-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.services = args.services or 500
        args.duration, args.rounds, args.queries = 5.0, 1, 20_000
        args.spot_check = min(args.spot_check, 100)
    args.services = args.services or 10_000
    if args.duration <= 2 * args.churn_delay:
        ap.error("--duration must be longer than twice --churn-delay")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.emulator_child:
        return emulator_child(args)
    return benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())

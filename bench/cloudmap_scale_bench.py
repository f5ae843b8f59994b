"""Cloud Map at clusterset scale: S services in N namespaces over C clusters, one account's quotas.

Set-up (defaults S=5000, N=50, C=5; ``--quick``: 1000, 10, 3). Every process is separate, so each has its
own GIL and its RSS and CPU are its own:

* the embedded Cloud Map, ``python -m mcsdns_sandbox.cloudmap --enforce-quotas`` (AWS's values: quota_scale
  1, ``quotas.DEFAULT_LIMITS``), driven and read over its ``/_mcsdns/`` admin paths (calls, throttled,
  throttle, faults/clear);
* per cluster, one Kubernetes API emulator (``KubeApiEmulator``) in a child process (this script with
  ``--emulator-child``), which also executes the bench's commands on its store (create objects, count
  imports, change a slice) over stdin/stdout JSON lines;
* per cluster, one engine: ``python -m mcsdns serve --kubeconfig K --cloudmap --cluster-id cN
  --clusterset-id set1 --listen 127.0.0.1:P --http 127.0.0.1:H --workers 1 --log-level warning``, defaults
  otherwise (``--cloudmap-poll 1s``, ``--cloudmap-rate 50``, ``--cloudmap-max-staleness 5m``, leader election
  on), with the AWS environment of ``EmbeddedCloudMap.env()``. One serving process per engine: DNS workers
  answer nothing the figures need and would only take the 2 CPUs from the rest.

Service j (0 <= j < S) is ``svc-j`` in namespace ``ns-(j mod N)``, exported by cluster ``c(j mod C)``:
a Service, an EndpointSlice of 3 ready endpoints (addresses unique per service) and a ServiceExport. The
first ``HEADLESS`` (20) are headless, the rest ClusterSetIP. Every namespace exists in every cluster. All
these objects are created directly in the emulators' stores **before the engines start**: the figure is a
cold start of a whole clusterset (every engine starts with S/C exports to make and S imports to read), the
hardest case for the quotas. The clock starts when the engines are spawned.

Phases and figures (each wait is bounded; an overall cap, ``--max-minutes``, skips what no longer fits):

1. Time until every cluster has every import: a ServiceImport with a VIP (ClusterSetIP) or of type Headless
   and a managed EndpointSlice with the 3 endpoints, counted in each emulator's store every 5 s.
2. Idle calls: once everything is imported and every export Ready, 20 s to settle, then a window of
   ``--idle-window`` (60) s: Cloud Map's own per-operation counter (the account) and each engine's
   ``mcsdns_cloudmap_calls_total`` (per cluster), as calls/s, against 10 % of the DiscoverInstancesRevision
   quota (300/s account-wide).
3. Export -> answer: 20 new ClusterSetIP services, one created per second (Service, slice, then export),
   exported by cluster i mod C into an existing namespace, each timed from the ServiceExport's creation to
   the first DNS A answer of the next cluster's engine (dnspython, UDP, every pending name every 50 ms,
   from this process). Once idle (target p95 < 3 s), once while cluster c0 exports a burst of 500 new
   services into ns-0..ns-4 (the 20 go into the other namespaces, from the other clusters; target p95 <
   15 s).
4. Endpoint change -> answer (idle): the headless services' slices in their exporting cluster get one
   endpoint address replaced, one change per second; timed until the next cluster's DNS answers the new
   address set exactly.
5. Throttling: every Cloud Map call is throttled for ``--storm`` (5) s (``POST /_mcsdns/throttle`` with a
   huge n, then ``faults/clear``); imports, managed slices and derived Services are counted in every
   cluster before, every second during, and 15 s after. Plus the throttled-call counter over the run.
6. RSS per engine (VmRSS of its main process, and of its whole process group with its DNS worker) and
   ``mcsdns_cloudmap_oldest_unverified_import_seconds`` of every engine, sampled through the run: its
   maximum over the run, since the cold start ended, and at the end.

    .venv/bin/python bench/cloudmap_scale_bench.py [--quick] [--services S] [--namespaces N] [--clusters C]

Only 127.0.0.1 is used; every process is stopped (its process group) in a ``finally``. Logs of the engines
and emulators go to bench/out/cloudmap-scale/. Results: bench/RESULTS-cloudmap.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import math
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from servers import _vm_rss, group_pids

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "cloudmap-scale"
LOCALHOST = "127.0.0.1"
CLUSTERSET = "set1"
ENDPOINTS = 3
HEADLESS = 20
ZONE = "svc.clusterset.local."
LATENCY_N = 20
BURST = 500
BURST_NAMESPACES = 5
REVISION_QUOTA = 3000.0
IDLE_TARGET = 0.1 * REVISION_QUOTA  # calls/s for the whole account
IDLE_P95_TARGET = 3.0
BURST_P95_TARGET = 15.0
RSS_TARGET_MB = 300.0
STALENESS_BOUND = 300.0
ENGINE_ARGS = ["--workers", "1", "--log-level", "warning"]

Obj = dict[str, Any]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- objects ---------------------------------------------------------------------------------------------


def address(index: int, k: int) -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.64.0.0")) + index * 4 + k + 1))


def service_objs(namespace: str, name: str, index: int, headless: bool) -> list[Obj]:
    spec: Obj = {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}
    if headless:
        spec["clusterIP"] = "None"
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
        {
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
                {"addresses": [address(index, k)], "conditions": {"ready": True}} for k in range(ENDPOINTS)
            ],
        },
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": namespace},
        },
    ]


# --- the emulator child ----------------------------------------------------------------------------------


def child_counts(api: Any) -> Obj:
    from mcsdns.mcs.import_ import MANAGED_LABEL, MANAGER, SLICE_MANAGED_LABEL
    from mcsdns.mcs.labels import SERVICE_NAME_LABEL

    imports = api.store.list("serviceimports", label_selector=f"{MANAGED_LABEL}={MANAGER}")
    slices = api.store.list("endpointslices", label_selector=f"{SLICE_MANAGED_LABEL}={MANAGER}")
    derived = api.store.list("services", label_selector=f"{MANAGED_LABEL}={MANAGER}")
    full = {
        (s["metadata"]["namespace"], (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL))
        for s in slices
        if len(s.get("endpoints") or []) >= ENDPOINTS
    }
    complete = 0
    for obj in imports:
        spec = obj.get("spec") or {}
        usable = bool(spec.get("ips")) or spec.get("type") == "Headless"
        if usable and (obj["metadata"]["namespace"], obj["metadata"]["name"]) in full:
            complete += 1
    ready = 0
    for obj in api.store.list("serviceexports"):
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready += 1
    return {
        "complete": complete,
        "imports": len(imports),
        "slices": len(slices),
        "derived": len(derived),
        "ready_exports": ready,
    }


def child_command(api: Any, request: Obj) -> Obj:
    op = request["op"]
    if op == "seed":
        started = time.monotonic()
        stamps = []
        for namespace, name, index, headless in request["services"]:
            objs = service_objs(namespace, name, index, headless)
            for obj in objs[:2]:
                api.store.create(obj)
            stamps.append(time.monotonic())  # just before the ServiceExport
            api.store.create(objs[2])
        return {"n": len(request["services"]), "seconds": time.monotonic() - started, "stamps": stamps}
    if op == "counts":
        return child_counts(api)
    if op == "set_endpoints":
        name = f"{request['name']}-abcde"
        obj = api.store.get("endpointslices", name, namespace=request["namespace"])
        obj["endpoints"] = [{"addresses": [a], "conditions": {"ready": True}} for a in request["addresses"]]
        api.store.update(obj)
        return {"at": time.monotonic()}
    raise ValueError(f"unknown op {op!r}")


def emulator_child(args: argparse.Namespace) -> int:
    from mcsdns_sandbox.kubeapi import KubeApiEmulator

    with KubeApiEmulator(
        host=LOCALHOST,
        port=0,
        cluster_name=args.child_cluster,
        cluster_id=args.child_cluster,
        clusterset_id=CLUSTERSET,
    ) as api:
        for i in range(args.namespaces):
            api.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{i}"}})
        tmp = Path(args.kubeconfig).with_suffix(".tmp")
        api.write_kubeconfig(tmp)
        tmp.rename(args.kubeconfig)
        print("READY", flush=True)
        for line in sys.stdin:  # EOF (the bench exited) ends the child
            try:
                reply = child_command(api, json.loads(line))
            except Exception as exc:  # reported to the parent, which fails the run
                reply = {"error": repr(exc)}
            print(json.dumps(reply), flush=True)
    return 0


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (mcsdns listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, 0))
            port = udp.getsockname()[1]
        with socket.socket() as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((LOCALHOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def rss_mb(pid: int) -> float:
    return _vm_rss(pid) / (1 << 20)


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Lines:
    """A child's stdout lines, read by a thread (select() on a buffered text stream misses lines)."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def get(self, timeout: float, what: str) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from {what} in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{what} exited")
        return line.strip()


class CloudMap:
    def __init__(self, logdir: Path) -> None:
        self.log = open(logdir / "cloudmap.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcsdns_sandbox.cloudmap", "--enforce-quotas"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        self.url = self.lines.get(60, "the Cloud Map emulator")
        self.env: dict[str, str] = {}
        while (line := self.lines.get(30, "the Cloud Map emulator")) != "ready":
            key, _, value = line.partition("=")
            self.env[key] = value

    def admin(self, path: str, body: Obj | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_mcsdns/{path}", data=data, method="GET" if data is None else "POST"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def calls(self) -> Counter[str]:
        return Counter(self.admin("calls"))

    def throttled(self) -> Counter[str]:
        return Counter(self.admin("throttled"))

    def close(self) -> None:
        stop_group(self.proc)
        self.log.close()


class Emulator:
    def __init__(self, name: str, namespaces: int, logdir: Path) -> None:
        self.name = name
        self.kubeconfig = logdir / f"{name}.kubeconfig"
        with contextlib.suppress(FileNotFoundError):
            self.kubeconfig.unlink()
        self.log = open(logdir / f"{name}-kubeapi.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--emulator-child",
                "--child-cluster",
                name,
                "--namespaces",
                str(namespaces),
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        if self.lines.get(60, f"emulator {name}") != "READY":
            raise RuntimeError(f"emulator {name} did not start")

    def call(self, op: str, timeout: float = 120.0, **params: Any) -> Obj:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.lines.get(timeout, f"emulator {self.name}"))
        if "error" in reply:
            raise RuntimeError(f"emulator {self.name}: {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        stop_group(self.proc)
        self.log.close()


class Engine:
    def __init__(self, name: str, kubeconfig: Path, env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.dns_port = free_port()
        self.http_port = free_port()
        self.log = open(logdir / f"{name}-mcsdns.log", "w")  # noqa: SIM115 - closed in close()
        self.argv = [
            sys.executable,
            "-m",
            "mcsdns",
            "serve",
            "--kubeconfig",
            str(kubeconfig),
            "--cloudmap",
            "--cluster-id",
            name,
            "--clusterset-id",
            CLUSTERSET,
            "--listen",
            f"{LOCALHOST}:{self.dns_port}",
            "--http",
            f"{LOCALHOST}:{self.http_port}",
            *ENGINE_ARGS,
        ]
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        self.max_rss = 0.0
        self.max_group_rss = 0.0

    def metrics(self) -> dict[str, float]:
        """The /metrics samples, name{labels} -> value (empty when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{self.http_port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def allowed(self) -> dict[str, float]:
        """``mcsdns_cloudmap_rate_allowed`` per quota group (the AIMD rate after throttling)."""
        prefix = 'mcsdns_cloudmap_rate_allowed{quota="'
        return {k[len(prefix) : -2]: v for k, v in self.metrics().items() if k.startswith(prefix)}

    def rss(self) -> tuple[float, float]:
        main = rss_mb(self.proc.pid)
        group = sum(rss_mb(pid) for pid in group_pids(self.proc.pid))
        self.max_rss, self.max_group_rss = max(self.max_rss, main), max(self.max_group_rss, group)
        return main, group

    def close(self) -> None:
        stop_group(self.proc)
        self.log.close()


def calls_by_operation(metrics: dict[str, float]) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in metrics.items():
        if key.startswith("mcsdns_cloudmap_calls_total{"):
            labels = dict(
                part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(",") if "=" in part
            )
            out[labels.get("operation", "?").strip('"')] += int(value)
    return out


# --- DNS -------------------------------------------------------------------------------------------------


def ask_a(port: int, qname: str, timeout: float = 0.5) -> set[str] | None:
    query = dns.message.make_query(qname, "A", use_edns=0)
    try:
        reply = dns.query.udp(query, LOCALHOST, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None
    return {r.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for r in rrset}


@dataclass
class Pending:
    label: str
    qname: str
    port: int
    start: float
    accept: Callable[[set[str]], bool]
    answerer: str = ""
    done: float | None = None


def probe_all(
    pending: list[Pending],
    deadline: float,
    schedule: list[Callable[[], Pending]] | None = None,
    spacing: float = 1.0,
) -> None:
    """Start the scheduled changes ``spacing`` s apart and ask for every pending name every 50 ms until all
    are answered or ``deadline``."""
    schedule = list(schedule or [])
    next_start = time.monotonic()
    while time.monotonic() < deadline:
        if schedule and time.monotonic() >= next_start:
            pending.append(schedule.pop(0)())
            next_start += spacing
        open_ = [p for p in pending if p.done is None]
        if not open_ and not schedule:
            return
        for p in open_:
            answer = ask_a(p.port, p.qname, timeout=0.3)
            if answer is not None and p.accept(answer):
                p.done = time.monotonic()
        time.sleep(0.05)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


def latency_line(pending: list[Pending]) -> tuple[str, float]:
    got = [p.done - p.start for p in pending if p.done is not None]
    missing = len(pending) - len(got)
    if not got:
        return f"no answer at all for {len(pending)}", float("inf")
    p95 = pct(got, 0.95) if not missing else float("inf")
    text = (
        f"n={len(pending)}  p50 {pct(got, 0.5):6.2f}  p95 {pct(got, 0.95):6.2f}  max {max(got):6.2f}"
        f"  min {min(got):5.2f} s"
    )
    if missing:
        text += f"  ({missing} not answered in time: p95 counts them as infinite)"
    answered = sorted((p.done - p.start, p.answerer) for p in pending if p.done is not None)
    text += "\n  each (s, answering cluster): " + " ".join(f"{v:.2f}/{who}" for v, who in answered)
    return text, p95


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    deadline: float
    out_lines: list[str] = field(default_factory=list)
    emulators: list[Emulator] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)
    cloudmap: CloudMap | None = None
    staleness: dict[str, float] = field(default_factory=dict)
    # the same gauge: its maximum since the cold start ended, and its last value
    staleness_since: dict[str, float] = field(default_factory=dict)
    staleness_now: dict[str, float] = field(default_factory=dict)
    converged: bool = False
    owner: dict[int, int] = field(default_factory=dict)
    next_index: int = 0

    def out(self, text: str = "") -> None:
        print(text, flush=True)
        self.out_lines.append(text)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sample(self) -> None:
        """RSS and the staleness gauge of every engine (maxima kept)."""
        for engine in self.engines:
            engine.rss()
            value = engine.metrics().get("mcsdns_cloudmap_oldest_unverified_import_seconds")
            if value is not None:
                self.staleness[engine.name] = max(self.staleness.get(engine.name, 0.0), value)
                self.staleness_now[engine.name] = value
                if self.converged:
                    self.staleness_since[engine.name] = max(self.staleness_since.get(engine.name, 0.0), value)

    def counts(self) -> list[Obj]:
        return [emulator.call("counts") for emulator in self.emulators]

    def fqdn(self, namespace: str, name: str) -> str:
        return f"{name}.{namespace}.{ZONE}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def seed_plan(args: argparse.Namespace) -> list[list[list[Any]]]:
    per_cluster: list[list[list[Any]]] = [[] for _ in range(args.clusters)]
    for j in range(args.services):
        per_cluster[j % args.clusters].append([f"ns-{j % args.namespaces}", f"svc-{j}", j, j < HEADLESS])
    return per_cluster


def wait_imported(run: Run, total: int, timeout: float, started: float) -> tuple[dict[str, float], list[Obj]]:
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    last: list[Obj] = []
    while time.monotonic() < deadline:
        last = run.counts()
        now = time.monotonic()
        for emulator, count in zip(run.emulators, last, strict=True):
            if count["complete"] >= total and emulator.name not in done:
                done[emulator.name] = now - started
        run.sample()
        assert run.cloudmap is not None
        log(
            f"imported {[c['complete'] for c in last]} of {total}, ready exports "
            f"{[c['ready_exports'] for c in last]}, Cloud Map throttled "
            f"{sum(run.cloudmap.throttled().values())}, "
            f"load {load()}"
        )
        if len(done) == len(run.emulators):
            break
        time.sleep(5)
    return done, last


def phase_converge(run: Run) -> bool:
    args = run.args
    plan = seed_plan(args)
    for emulator, services in zip(run.emulators, plan, strict=True):
        reply = emulator.call("seed", services=services, timeout=600)
        log(f"{emulator.name}: {reply['n']} services with their exports created in {reply['seconds']:.1f} s")
    run.next_index = args.services
    assert run.cloudmap is not None
    started = time.monotonic()
    for emulator in run.emulators:
        run.engines.append(Engine(emulator.name, emulator.kubeconfig, run.cloudmap.env, OUT))
    budget = min(args.converge_timeout, run.left() - 360)
    done, last = wait_imported(run, args.services, budget, started)
    run.out(
        "1. cold start: every cluster has every import"
        " (ServiceImport with VIP or Headless + 3-endpoint slice)"
    )
    for emulator, count in zip(run.emulators, last, strict=True):
        at = done.get(emulator.name)
        text = (
            f"{at:7.1f} s"
            if at is not None
            else f"NOT within {budget:.0f} s ({count['complete']} of {args.services})"
        )
        run.out(f"  {emulator.name}: {text}   (its {count['ready_exports']} exports Ready)")
    if len(done) == len(run.emulators):
        run.out(f"  all clusters: {max(done.values()):.1f} s after the engines were spawned")
    thr = run.cloudmap.throttled()
    calls = run.cloudmap.calls()
    run.out(
        f"  Cloud Map calls so far: {sum(calls.values())}"
        f" ({', '.join(f'{k} {v}' for k, v in calls.most_common())})"
    )
    run.out(
        f"  throttled so far: {sum(thr.values())}"
        f" ({', '.join(f'{k} {v}' for k, v in thr.most_common()) or 'none'})"
    )
    run.out(f"  load average (1/5/15 min): {load()}")
    return len(done) == len(run.emulators)


def wait_exports_ready(run: Run, timeout: float) -> None:
    expected = [len(s) for s in seed_plan(run.args)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = run.counts()
        if all(c["ready_exports"] >= e for c, e in zip(counts, expected, strict=True)):
            return
        time.sleep(5)
    log("not every export Ready before the idle window")


def phase_idle(run: Run) -> None:
    args = run.args
    assert run.cloudmap is not None
    wait_exports_ready(run, min(300.0, max(0.0, run.left() - 300)))
    time.sleep(20)
    before = run.cloudmap.calls()
    before_engines = [calls_by_operation(e.metrics()) for e in run.engines]
    start = time.monotonic()
    while time.monotonic() - start < args.idle_window:
        run.sample()
        time.sleep(min(10.0, max(0.0, args.idle_window - (time.monotonic() - start))))
    window = time.monotonic() - start
    after = run.cloudmap.calls()
    after_engines = [calls_by_operation(e.metrics()) for e in run.engines]
    account = after - before
    per_engine = [a - b for a, b in zip(after_engines, before_engines, strict=True)]
    ops = sorted(set(account) | {op for c in per_engine for op in c})
    run.out()
    run.out(
        f"2. idle Cloud Map calls per second over a {window:.1f} s window,"
        f" all {args.services} imported everywhere"
    )
    header = f"  {'operation':28s} {'account':>8s} " + " ".join(f"{e.name:>7s}" for e in run.engines)
    run.out(header)
    for op in ops:
        run.out(
            f"  {op:28s} {account[op] / window:8.2f} "
            + " ".join(f"{c[op] / window:7.2f}" for c in per_engine)
        )
    total = sum(account.values()) / window
    run.out(
        f"  {'total':28s} {total:8.2f} " + " ".join(f"{sum(c.values()) / window:7.2f}" for c in per_engine)
    )
    run.out(
        f"  account-wide idle rate / (10 % of DiscoverInstancesRevision's 3,000/s)"
        f" = {total / IDLE_TARGET:.3f}"
    )
    run.out(
        f"  target account-wide idle rate <= {IDLE_TARGET:.0f} calls/s:"
        f" {verdict(total <= IDLE_TARGET)} ({total:.1f}/s)"
    )
    allowed = [min(e.allowed().values(), default=None) for e in run.engines]
    run.out(
        f"  lowest mcsdns_cloudmap_rate_allowed (of the quota groups) at the end: {allowed}; load {load()}"
    )


def new_service(run: Run, cluster: int, namespace: str, headless: bool = False) -> tuple[str, str, int]:
    index = run.next_index
    run.next_index += 1
    return namespace, f"svc-{index}", index


def export_now(run: Run, cluster: int, namespace: str, answerer: int, label: str) -> Pending:
    ns, name, index = new_service(run, cluster, namespace)
    reply = run.emulators[cluster].call("seed", services=[[ns, name, index, False]])
    return Pending(
        label,
        run.fqdn(ns, name),
        run.engines[answerer].dns_port,
        reply["stamps"][0],
        lambda answer: bool(answer),
        run.engines[answerer].name,
    )


def phase_latency_idle(run: Run) -> float:
    c = run.args.clusters
    schedule = [
        (lambda i=i: export_now(run, i % c, f"ns-{i % run.args.namespaces}", (i + 1) % c, f"idle-{i}"))
        for i in range(LATENCY_N)
    ]
    pending: list[Pending] = []
    probe_all(pending, time.monotonic() + min(LATENCY_N + 90.0, max(30.0, run.left() - 200)), schedule)
    text, p95 = latency_line(pending)
    run.out()
    run.out(
        f"3a. export -> DNS answer in the next cluster, {LATENCY_N} new ClusterSetIP services,"
        " one per second, idle"
    )
    run.out(f"  {text}")
    run.out(
        f"  target p95 < {IDLE_P95_TARGET:.0f} s: {verdict(p95 < IDLE_P95_TARGET)}; load average {load()}"
    )
    return p95


def phase_endpoints(run: Run) -> float:
    c = run.args.clusters
    headless = list(range(min(HEADLESS, run.args.services)))

    def change(j: int, round_: int) -> Pending:
        ns, name = f"ns-{j % run.args.namespaces}", f"svc-{j}"
        new = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.200.0.0")) + j * 8 + round_))] + [
            address(j, k) for k in range(1, ENDPOINTS)
        ]
        reply = run.emulators[j % c].call("set_endpoints", namespace=ns, name=name, addresses=new)
        want = set(new)
        return Pending(
            f"ep-{j}",
            run.fqdn(ns, name),
            run.engines[(j + 1) % c].dns_port,
            reply["at"],
            lambda answer: answer == want,
            run.engines[(j + 1) % c].name,
        )

    schedule = [(lambda j=j: change(j, 1)) for j in headless]
    pending: list[Pending] = []
    probe_all(pending, time.monotonic() + min(len(headless) + 90.0, max(30.0, run.left() - 150)), schedule)
    text, p95 = latency_line(pending)
    run.out()
    run.out(
        f"4. endpoint change -> answer: {len(headless)} headless services,"
        " one endpoint address replaced in the"
    )
    run.out(
        "   exporting cluster's EndpointSlice (one per second, idle),"
        " until the next cluster's DNS answers the new set"
    )
    run.out(f"  {text}")
    run.out(f"  load average {load()}")
    return p95


def phase_burst(run: Run) -> float:
    args = run.args
    c = args.clusters
    burst = []
    for k in range(args.burst):
        ns, name, index = new_service(run, 0, f"ns-{k % BURST_NAMESPACES}")
        burst.append([ns, name, index, False])
    others = [f"ns-{i}" for i in range(BURST_NAMESPACES, args.namespaces)] or ["ns-0"]
    exporters = [i for i in range(c) if i != 0] or [0]
    schedule = [
        (
            lambda i=i: export_now(
                run,
                exporters[i % len(exporters)],
                others[i % len(others)],
                (exporters[i % len(exporters)] + 1) % c,
                f"burst-{i}",
            )
        )
        for i in range(LATENCY_N)
    ]
    assert run.cloudmap is not None
    calls_before = run.cloudmap.calls()
    reply = run.emulators[0].call("seed", services=burst, timeout=300)
    burst_start = reply["stamps"][0]
    log(f"burst of {args.burst} created in c0 in {reply['seconds']:.1f} s")
    pending: list[Pending] = []
    probe_all(pending, time.monotonic() + min(LATENCY_N + 150.0, max(30.0, run.left() - 120)), schedule)
    text, p95 = latency_line(pending)
    run.out()
    run.out(
        f"3b. the same while c0 exports a burst of {args.burst} new services"
        f" into ns-0..ns-{BURST_NAMESPACES - 1} "
        f"(created in {reply['seconds']:.1f} s);"
    )
    run.out(
        f"    the {LATENCY_N} are exported by c1..c{c - 1} into ns-{BURST_NAMESPACES}.."
        " and answered by the next cluster"
    )
    run.out(f"  {text}")
    run.out(
        f"  target p95 < {BURST_P95_TARGET:.0f} s: {verdict(p95 < BURST_P95_TARGET)}; load average {load()}"
    )
    # How long the burst itself took to reach every cluster (bounded).
    total = args.services + 2 * LATENCY_N + args.burst
    budget = min(300.0, max(0.0, run.left() - 90))
    deadline = time.monotonic() + budget
    counts = run.counts()
    while time.monotonic() < deadline and min(x["complete"] for x in counts) < total:
        time.sleep(5)
        run.sample()
        counts = run.counts()
    got = min(x["complete"] for x in counts)
    spent = time.monotonic() - burst_start
    if got >= total:
        run.out(f"  the burst imported in every cluster {spent:.1f} s after its first export was created")
    else:
        run.out(
            f"  the burst NOT imported everywhere within {spent:.0f} s:"
            f" {[x['complete'] for x in counts]} of {total}"
        )
    used = run.cloudmap.calls() - calls_before
    run.out(
        f"  Cloud Map calls during the burst: {sum(used.values())}"
        f" ({', '.join(f'{k} {v}' for k, v in used.most_common(6))})"
    )
    return p95


def phase_storm(run: Run) -> tuple[bool, int]:
    args = run.args
    assert run.cloudmap is not None
    before = run.counts()
    thr_before = sum(run.cloudmap.throttled().values())
    run.cloudmap.admin("throttle", {"n": 10_000_000})
    start = time.monotonic()
    minima = [dict(c) for c in before]
    while time.monotonic() - start < args.storm:
        for m, c in zip(minima, run.counts(), strict=True):
            for key in ("complete", "imports", "slices", "derived"):
                m[key] = min(m[key], c[key])
        time.sleep(1)
    run.cloudmap.admin("faults/clear", {})
    storm = time.monotonic() - start
    storm_throttled = sum(run.cloudmap.throttled().values()) - thr_before
    end = time.monotonic() + 15
    while time.monotonic() < end:
        for m, c in zip(minima, run.counts(), strict=True):
            for key in ("complete", "imports", "slices", "derived"):
                m[key] = min(m[key], c[key])
        time.sleep(1)
    after = run.counts()
    allowed = [e.allowed() for e in run.engines]
    run.out()
    run.out(
        f"5. throttling storm: every Cloud Map call throttled for {storm:.1f} s"
        f" ({storm_throttled} calls throttled), "
        "then 15 s more"
    )
    run.out(f"  {'cluster':8s} {'imports':>21s} {'managed slices':>21s} {'derived Services':>21s}")
    run.out(f"  {'':8s} {'before/min/after':>21s} {'before/min/after':>21s} {'before/min/after':>21s}")
    removed = 0
    for emulator, b, m, a in zip(run.emulators, before, minima, after, strict=True):
        cells = []
        for key in ("imports", "slices", "derived"):
            cells.append(f"{b[key]}/{m[key]}/{a[key]}")
            removed += max(0, b[key] - m[key])
        run.out(f"  {emulator.name:8s} " + " ".join(f"{cell:>21s}" for cell in cells))
    run.out(
        f"  removed by throttling: {removed} ({verdict(removed == 0)} the target of 0); "
        f"mcsdns_cloudmap_rate_allowed right after: {allowed}"
    )
    return removed == 0, storm_throttled


def benchmark(args: argparse.Namespace) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    run = Run(args, time.monotonic() + args.max_minutes * 60)
    now = datetime.datetime.now(datetime.UTC)
    run.out(
        f"mcsdns Cloud Map scale benchmark, {now:%Y-%m-%d %H:%M} UTC, CPython {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load()} at the start"
    )
    run.out(
        f"{args.services} services ({HEADLESS} headless) in {args.namespaces} namespaces,"
        f" {args.clusters} clusters "
        f"(each exports {args.services // args.clusters}, imports all), {ENDPOINTS} endpoints each;"
    )
    run.out(
        "embedded Cloud Map with AWS's quotas enforced (one account);"
        " one Kubernetes API emulator process and one"
    )
    run.out(
        "`mcsdns serve` process per cluster (--workers 1; --cloudmap-poll 1s,"
        " --cloudmap-rate 50 and --cloudmap-max-staleness 5m by"
    )
    run.out(
        f"default); objects created in the stores before the engines start; cap {args.max_minutes:.0f} min"
    )
    run.out()
    results: dict[str, Any] = {}
    try:
        run.cloudmap = CloudMap(OUT)
        for i in range(args.clusters):
            run.emulators.append(Emulator(f"c{i}", args.namespaces, OUT))
        converged = run.converged = phase_converge(run)
        if not converged:
            run.out("\nthe clusterset did not converge within the cap: the later phases are skipped")
        else:
            phase_idle(run)
            results["idle"] = phase_latency_idle(run)
            results["endpoints"] = phase_endpoints(run)
            if args.namespaces > BURST_NAMESPACES and run.left() > 240:
                results["burst"] = phase_burst(run)
            else:
                run.out("\n3b. skipped (needs more than 5 namespaces and 4 minutes of the cap)")
            if run.left() > 40:
                results["storm"] = phase_storm(run)
        run.sample()
        run.out()
        run.out("6. engines")
        run.out(
            f"  {'engine':8s} {'RSS now MB':>10s} {'max MB':>7s} {'group now':>10s} {'group max':>10s} "
            f"{'CPU s':>7s} {'oldest unverified max s':>24s} {'max since cold start':>20s} {'now':>6s}"
        )
        for engine in run.engines:
            main, group = engine.rss()
            cpu = cpu_seconds(group_pids(engine.proc.pid))
            run.out(
                f"  {engine.name:8s} {main:10.1f} {engine.max_rss:7.1f} {group:10.1f}"
                f" {engine.max_group_rss:10.1f} "
                f"{cpu:7.1f} {run.staleness.get(engine.name, float('nan')):24.1f}"
                f" {run.staleness_since.get(engine.name, float('nan')):20.1f}"
                f" {run.staleness_now.get(engine.name, float('nan')):6.1f}"
            )
        if run.engines:
            worst = max(e.max_rss for e in run.engines)
            run.out(
                f"  target RSS < {RSS_TARGET_MB:.0f} MB per engine (main process):"
                f" {verdict(worst < RSS_TARGET_MB)} "
                f"({worst:.1f} MB)"
            )
            stale = max(run.staleness.values(), default=float("nan"))
            run.out(
                f"  every import verified within {STALENESS_BOUND:.0f} s:"
                f" {verdict(stale <= STALENESS_BOUND)} "
                f"(max of the gauge over the run {stale:.1f} s)"
            )
        assert run.cloudmap is not None
        thr = run.cloudmap.throttled()
        calls = run.cloudmap.calls()
        run.out(
            f"  Cloud Map over the run: {sum(calls.values())} calls, {sum(thr.values())} throttled "
            f"({', '.join(f'{k} {v}' for k, v in thr.most_common()) or 'none'})"
        )
        for engine in run.engines:
            if engine.proc.poll() is not None:
                run.out(
                    f"  {engine.name} EXITED with {engine.proc.returncode}"
                    f" (log: {OUT}/{engine.name}-mcsdns.log)"
                )
        run.out(f"\nload average {load()} at the end (a shared machine: other work shows here)")
    finally:
        for engine in run.engines:
            engine.close()
        for emulator in run.emulators:
            emulator.close()
        if run.cloudmap is not None:
            run.cloudmap.close()
        stamp = now.strftime("%Y%m%d-%H%M")
        (OUT / f"output-{stamp}-{args.services}.txt").write_text("\n".join(run.out_lines) + "\n")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, help="S, services in the clusterset (5000; --quick 1000)")
    ap.add_argument("--namespaces", type=int, help="N (50; --quick 10)")
    ap.add_argument("--clusters", type=int, help="C (5; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="1000 services, 10 namespaces, 3 clusters")
    ap.add_argument("--idle-window", type=float, default=60.0, help="seconds of the idle window (60)")
    ap.add_argument("--burst", type=int, default=BURST, help="exports in the burst of 3b (500)")
    ap.add_argument("--storm", type=float, default=5.0, help="seconds of the throttling storm (5)")
    ap.add_argument("--max-minutes", type=float, default=40.0, help="overall cap (40 min)")
    ap.add_argument("--converge-timeout", type=float, default=1800.0, help="cold-start cap in seconds (1800)")
    ap.add_argument("--emulator-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-cluster", help=argparse.SUPPRESS)
    ap.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.max_minutes * 60 <= 360 + 60:
        ap.error("--max-minutes must be more than 7: the phases after the cold start take about 6 minutes")
    defaults = (1000, 10, 3) if args.quick else (5000, 50, 5)
    for key, value in zip(("services", "namespaces", "clusters"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.emulator_child:
        return emulator_child(args)
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())

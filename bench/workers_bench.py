"""``mcsdns serve --workers N`` against NSD with ``server-count: N``; the workers' cost at 10,000 services.

``--workers N`` runs N processes answering on the same address (SO_REUSEPORT): the main one (it also runs
the sync engine and serves /metrics) and N-1 workers that follow the zone it sends them. In one run, on
127.0.0.1 only, every load run bounded in time (``dnsperf -l``, reply timeout 2 s) and every wait bounded:

1. throughput: gen.py's data (``--services``, 1,000), and for each N of ``--workers-list`` (default: 1, 2, 4,
   ... up to ``--cores``, which defaults to the CPUs this process may use) mcsdns with ``--workers N
   --http 127.0.0.1:PORT`` (ready once it answers and /metrics shows every worker serving) and NSD with
   ``server-count: N`` (servers.py's config otherwise: RRL off; ``reuse-port`` stays off, NSD's default, so
   its serving processes share one socket), and the "floor" (``floor_server.py``: mcsdns's listeners in N
   processes, each query answered with its own bytes: the ceiling of mcsdns's ratios here).
   Nothing is pinned: the servers need every core, and dnsperf
   (one thread) and this script share them. ``--rounds`` (3) rounds, the servers interleaved, each one
   dnsperf closed loop (``-c 4 -q 100``, ``--duration`` 10 s); the table shows the median answered qps (and
   range), the server's CPU per answered query (utime + stime of its whole process group from
   /proc/<pid>/stat, in ticks of SC_CLK_TCK, over the run, divided by the queries dnsperf got a reply to),
   the busiest process's share of that CPU per round (mcsdns spreads queries over its processes at random:
   server.spread_queries), and the ratios to NSD
   at the same N. As in dns_bench.py, each run first waits (bounded) until other people's processes are
   quiet and is repeated when they used more than ``--max-foreign`` cores during it.
2. scale: ``--scale-services`` (10,000) services. mcsdns ``--workers 1`` until it answers for the last
   generated service: its RSS (VmRSS) then and after answering ``--sample`` (2,000) queries once; then
   mcsdns ``--workers 2 --http ...`` until it answers and /metrics shows ``mcsdns_workers_serving 1``: the
   RSS of the main process and of the worker, at the same two moments. Then ``--publishes`` (5) times: one
   manifest file of the data set (a ServiceImport of its own, written next to gen.py's files, its address
   changed each time) is replaced; mcsdns polls the directory every 250 ms; /metrics is polled until
   ``mcsdns_zone_serial`` has changed and ``mcsdns_workers_serving`` is back at 1, then
   ``mcsdns_workers_publish_seconds`` (from sending the zone to the slowest worker's acknowledgement) is read,
   and the new address is asked for 8 times (each from a new source port, so the worker gets some of them).

Printed: the machine, tools, the table, the scale figures and the targets with PASS/FAIL: mcsdns with 2
processes >= 0.8x NSD's qps with 2; mcsdns's CPU per answered query <= 2x NSD's at N = 2; the worker's RSS
<= 60 % of the single process's at 10,000 services (after the sample); publish to all workers < 100 ms
(median). Raw results go to ``bench/out/workers-<UTC time>.json``. A default run takes about 3 minutes on 2
cores, ``--quick`` (1 round of 3 s runs) about 1.

    .venv/bin/python bench/workers_bench.py [--workers-list 1,2] [--cores C] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import re
import resource
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import compare
import gen
import perf
import yaml
from dns_bench import _cpu_model, _version
from forward_bench import mcsdns_origin, save_raw, started
from machine import TICK, least_disturbed
from servers import (
    LOCALHOST,
    Data,
    Running,
    ServerError,
    _vm_rss,
    answers_a,
    free_port,
    group_pids,
    mcsdns_argv,
    mcsdns_runnable,
    nsd_argv,
)

OUT = Path(__file__).resolve().parent / "out"
SERVERS = ("nsd", "mcsdns", "floor")  # floor: floor_server.py, mcsdns's listeners answering nothing
AT_N = 2  # the N the targets are about
QPS_TARGET = 0.8  # mcsdns qps >= this x NSD's, both with AT_N processes
CPU_TARGET = 2.0  # mcsdns CPU per answered query <= this x NSD's at AT_N
RSS_TARGET = 0.6  # a worker's RSS <= this share of the single process's, at --scale-services
PUBLISH_TARGET_S = 0.1  # median seconds from sending a zone to the slowest worker's acknowledgement
PUBLISH_FILE = "zz-workers-bench.yaml"
PUBLISH_NAME = ("demo", "workers-bench")


# ---------------------------------------------------------------- measuring


def cpu_by_pid(pgid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) so far of every process in the group."""
    out = {}
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) * TICK
    return out


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children: dnsperf, once perf.run returns."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def metrics(http_port: int) -> dict[str, float]:
    """mcsdns's unlabelled /metrics samples; empty when it cannot be read."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(f"http://{LOCALHOST}:{http_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) (\S+)$", text, re.MULTILINE)}


def wait_metrics(http_port: int, done: Callable[[dict[str, float]], bool], timeout: float,
                 every: float = 0.02) -> dict[str, float] | None:
    """Poll /metrics until ``done`` holds (return the samples), at most ``timeout`` seconds (None)."""
    deadline = time.monotonic() + timeout
    while True:
        found = metrics(http_port)
        if found and done(found):
            return found
        if time.monotonic() > deadline:
            return None
        time.sleep(every)


def workers_serving(count: int, old_serial: float | None = None) -> Callable[[dict[str, float]], bool]:
    """A test of /metrics: ``count`` workers serve the current zone, whose serial is not ``old_serial``."""
    def done(found: dict[str, float]) -> bool:
        if old_serial is not None and found.get("mcsdns_zone_serial") in (None, old_serial):
            return False
        return found.get("mcsdns_workers_serving") == count

    return done


def log_problems(server: Running, limit: int = 5) -> list[str]:
    """The first lines of the server's log that report a problem (mcsdns runs at --log-level warning)."""
    with contextlib.suppress(OSError):
        lines = server.log.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error:", ln)]
        return [f"{server.name}: {ln.strip()[:200]}" for ln in bad[:limit]]
    return []


@dataclass
class Run:
    result: perf.PerfResult
    cpu_s: float  # the server's process group
    split: list[float]  # each process's share of cpu_s, largest first
    main_share: float  # the share of the process the server was started as (mcsdns: the main one)
    client_cores: float  # CPU dnsperf used, in cores over the run
    foreign: float  # cores other people's processes used during the run

    @property
    def us_per_answer(self) -> float:
        return self.cpu_s / self.result.completed * 1e6 if self.result.completed else math.nan

    def as_json(self) -> dict[str, Any]:
        r = self.result
        return {"sent": r.sent, "completed": r.completed, "lost": r.lost, "qps": r.qps, "avg_s": r.avg_s,
                "rcodes": r.rcodes, "cpu_s": self.cpu_s, "us_per_answer": self.us_per_answer,
                "cpu_split": self.split, "main_share": self.main_share,
                "client_cores": self.client_cores, "foreign_cores": self.foreign}


@dataclass
class Row:
    server: str
    n: int
    ready_s: float
    runs: list[Run] = field(default_factory=list)

    @property
    def qps(self) -> float:
        return statistics.median(r.result.qps for r in self.runs) if self.runs else math.nan

    def qps_range(self) -> str:
        if not self.runs:
            return "-"
        qps = [r.result.qps for r in self.runs]
        return f"{min(qps) / 1000:.1f}-{max(qps) / 1000:.1f}k"

    @property
    def cpu_us(self) -> float:
        return statistics.median(r.us_per_answer for r in self.runs) if self.runs else math.nan

    @property
    def lost(self) -> float:
        sent = sum(r.result.sent for r in self.runs)
        return sum(r.result.lost for r in self.runs) / sent if sent else math.nan

    def busiest(self) -> str:
        return ",".join(f"{r.split[0]:.0%}" if r.split else "-" for r in self.runs) or "-"

    @property
    def foreign(self) -> float:
        return max((r.foreign for r in self.runs), default=0.0)

    @property
    def client_cores(self) -> float:
        return statistics.median(r.client_cores for r in self.runs) if self.runs else math.nan


def measured_run(server: Running, query_file: Path, load: perf.Load, ours: set[int],
                 args: argparse.Namespace) -> Run:
    """One closed-loop run and the server's CPU during it, on a quiet machine, repeated while disturbed
    (machine.least_disturbed)."""

    def measure() -> tuple[perf.PerfResult, dict[int, float], float]:
        before, client0, start = cpu_by_pid(server.proc.pid), _children_cpu(), time.monotonic()
        result = perf.run(server.port, query_file, load)
        after, client1, wall = cpu_by_pid(server.proc.pid), _children_cpu(), time.monotonic() - start
        used = {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items()}
        return result, used, (client1 - client0) / wall

    (result, used, client_cores), seen = least_disturbed(measure, pid=server.proc.pid, ours=ours, args=args)
    total = sum(used.values())
    split = sorted((u / total for u in used.values()), reverse=True) if total > 0 else []
    main_share = used.get(server.proc.pid, 0.0) / total if total > 0 else math.nan
    return Run(result, total, split, main_share, client_cores, seen.foreign)


def start_servers(stack: contextlib.ExitStack, data: gen.Dataset, args: argparse.Namespace,
                  notes: list[str]) -> dict[tuple[str, int], tuple[Running, int | None, float]]:
    """Every (server, N), stopped when ``stack`` closes: (the server, mcsdns's --http port, ready s)."""
    probe_svc = next(s for s in data.services if not s.headless)
    probe = (probe_svc.fqdn(data.zone), probe_svc.vip or "")
    files = Data(data.zone, args.ttl, data.manifests, data.zone_file)
    running: dict[tuple[str, int], tuple[Running, int | None, float]] = {}
    for n in args.ns:
        for name in SERVERS:
            print(f"... starting {name} with {n} serving process(es)", file=sys.stderr, flush=True)
            http: int | None = None
            if name == "mcsdns":
                http = free_port()
                argv = mcsdns_n(files, n, http)
            elif name == "floor":
                argv = floor_n(n, probe)
            else:
                argv = nsd_n(files, n)
            try:
                server, ready_s = stack.enter_context(
                    started(f"{name}-{n}", argv, None, probe, args.ready_timeout))
            except ServerError as exc:
                notes.append(f"{name} N={n} failed to start: {exc}")
                continue
            if http is not None and n > 1:
                seen = wait_metrics(http, workers_serving(n - 1), args.ready_timeout)
                if seen is None:
                    notes.append(f"mcsdns N={n}: /metrics never showed {n - 1} workers serving; not measured")
                    notes.extend(log_problems(server))
                    continue
                ready_s = time.monotonic() - server.started
            running[name, n] = (server, http, ready_s)
    return running


def mcsdns_n(files: Data, n: int, http: int) -> Callable[[int, Path], list[str]]:
    return lambda port, wd: [*mcsdns_argv(files, port, wd), "--workers", str(n),
                             "--http", f"{LOCALHOST}:{http}"]


def floor_n(n: int, probe: tuple[str, str]) -> Callable[[int, Path], list[str]]:
    script = Path(__file__).resolve().parent / "floor_server.py"
    return lambda port, wd: [sys.executable, str(script), "--listen", f"{LOCALHOST}:{port}",
                             "--processes", str(n), "--probe", f"{probe[0]}={probe[1]}"]


def nsd_n(files: Data, n: int) -> Callable[[int, Path], list[str]]:
    return lambda port, wd: nsd_argv(files, port, wd, server_count=n)


def throughput(data: gen.Dataset, args: argparse.Namespace, notes: list[str]) -> dict[tuple[str, int], Row]:
    rows: dict[tuple[str, int], Row] = {}
    with contextlib.ExitStack() as stack:  # stops every server, whatever happens
        running = start_servers(stack, data, args, notes)
        rows = {key: Row(key[0], key[1], ready_s) for key, (_, _, ready_s) in running.items()}
        load = perf.Load(args.duration, args.clients, args.outstanding)
        warmup = perf.Load(args.warmup, args.clients, args.outstanding)
        # Servers lead their own process groups; kernel threads (group 0) work for us too.
        ours = {0, os.getpgid(0), *(server.proc.pid for server, _, _ in running.values())}
        planned = args.rounds * len(running) * (args.duration + 2.0)
        args.deadline = time.monotonic() + planned + args.budget
        failed: set[tuple[str, int]] = set()
        for rnd in range(args.rounds):
            for key, (server, _, _) in running.items():
                if key in failed:
                    continue
                print(f"... round {rnd + 1}/{args.rounds}: {key[0]} N={key[1]}", file=sys.stderr, flush=True)
                try:
                    if rnd == 0 and args.warmup > 0:
                        perf.run(server.port, data.query_file, warmup)
                    rows[key].runs.append(measured_run(server, data.query_file, load, ours, args))
                except (RuntimeError, OSError, ValueError) as exc:
                    failed.add(key)
                    notes.append(f"{key[0]} N={key[1]}: load failed: {exc}")
                    notes.extend(log_problems(server))
        for (name, n), (server, http, _) in running.items():
            if server.proc.poll() is not None:
                notes.append(f"{name} N={n} exited during the run ({server.proc.returncode})")
            if name != "mcsdns":
                continue
            notes.extend(log_problems(server))
            if http is not None and (restarts := metrics(http).get("mcsdns_worker_restarts_total")):
                notes.append(f"mcsdns N={n}: {restarts:.0f} worker restart(s) (mcsdns_worker_restarts_total)")
    return rows


@dataclass
class Scale:
    services: int
    records: int
    single_ready_s: float = math.nan
    single_rss: tuple[int, int] = (0, 0)  # at ready, after the sample
    pair_ready_s: float = math.nan  # until /metrics shows the worker serving
    main_rss: tuple[int, int] = (0, 0)
    worker_rss: tuple[int, int] = (0, 0)
    publish_s: list[float] = field(default_factory=list)  # mcsdns_workers_publish_seconds
    change_s: list[float] = field(default_factory=list)  # file replaced -> worker on the new serial
    wrong_answers: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def scale(args: argparse.Namespace, notes: list[str]) -> Scale:
    print(f"... generating {args.scale_services:,} services", file=sys.stderr, flush=True)
    data = gen.build(args.out / f"data-{args.scale_services}", args.scale_services, args.seed, 20_000,
                     ttl=args.ttl)
    out = Scale(args.scale_services, len(gen.records(data.services, data.zone, args.ttl)))
    probe_svc = next(s for s in reversed(data.services) if not s.headless)  # the last: all of it loaded
    probe = (probe_svc.fqdn(data.zone), probe_svc.vip or "")
    files = Data(data.zone, args.ttl, data.manifests, data.zone_file)
    sample = compare.sample(data.query_file, args.sample)
    timeout = args.scale_timeout

    print("... scale: mcsdns --workers 1", file=sys.stderr, flush=True)
    with started("mcsdns-1", mcsdns_n(files, 1, free_port()), None, probe, timeout) as (server, ready_s):
        out.single_ready_s = ready_s
        single_ready = _vm_rss(server.proc.pid)
        compare.collect(server.port, sample)
        out.single_rss = (single_ready, _vm_rss(server.proc.pid))
        notes.extend(log_problems(server))

    print("... scale: mcsdns --workers 2", file=sys.stderr, flush=True)
    http = free_port()
    with started("mcsdns-2", mcsdns_n(files, 2, http), None, probe, timeout) as (server, _):
        if wait_metrics(http, workers_serving(1), timeout) is None:
            notes.append("scale: /metrics never showed the worker serving")
            notes.extend(log_problems(server))
            return out
        out.pair_ready_s = time.monotonic() - server.started
        main = server.proc.pid
        workers = [pid for pid in group_pids(main) if pid != main]
        if len(workers) != 1:
            notes.append(f"scale: expected 1 worker process in the group, found {len(workers)}")
        ready_rss = (_vm_rss(main), max(map(_vm_rss, workers), default=0))
        compare.collect(server.port, sample)  # a new source port per query: both processes answer some
        out.main_rss = (ready_rss[0], _vm_rss(main))
        out.worker_rss = (ready_rss[1], max(map(_vm_rss, workers), default=0))
        publish(data, server, http, args, out, notes)
        if restarts := metrics(http).get("mcsdns_worker_restarts_total"):
            notes.append(f"scale: {restarts:.0f} worker restart(s) (mcsdns_worker_restarts_total)")
        notes.extend(log_problems(server))
    return out


def publish(data: gen.Dataset, server: Running, http: int, args: argparse.Namespace, out: Scale,
            notes: list[str]) -> None:
    """Replace one manifest file ``--publishes`` times; time each publish to the worker."""
    path = data.manifests / PUBLISH_FILE
    tmp = data.manifests / f".{PUBLISH_FILE}.tmp"  # dot files are not read: the change lands at once
    namespace, name = PUBLISH_NAME
    qname = f"{name}.{namespace}.svc.{data.zone}."
    try:
        for i in range(args.publishes):
            print(f"... scale: publish {i + 1}/{args.publishes}", file=sys.stderr, flush=True)
            before = metrics(http)
            serial = before.get("mcsdns_zone_serial")
            if serial is None:
                notes.append(f"publish {i + 1}: /metrics has no mcsdns_zone_serial; not measured")
                continue
            vip = f"198.18.{i // 250}.{i % 250 + 1}"  # the benchmarking range, unlike gen.py's addresses
            svc = gen.Service(namespace, name, False, vip, (gen.Port("http", 80, "TCP"),), ())
            tmp.write_text(yaml.safe_dump_all(list(gen.manifest_objects(svc)), sort_keys=False))
            changed = time.monotonic()
            os.replace(tmp, path)
            seen = wait_metrics(http, workers_serving(1, old_serial=serial), args.publish_timeout, every=0.01)
            if seen is None:
                notes.append(f"publish {i + 1}: no new serial served by the worker within "
                             f"{args.publish_timeout:g} s")
                continue
            out.change_s.append(time.monotonic() - changed)
            out.publish_s.append(seen["mcsdns_workers_publish_seconds"])
            wrong = sum(not answers_a(server.port, qname, vip, timeout=1.0) for _ in range(8))
            if wrong:
                out.wrong_answers += wrong
                notes.append(f"publish {i + 1}: {wrong} of 8 queries for {qname} did not answer {vip}")
            time.sleep(0.3)  # past the next directory poll, so each change is its own publish
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- printing


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def table(rows: dict[tuple[str, int], Row]) -> list[str]:
    head = (f"{'server':<7} {'N':>2} {'qps':>9} {'range':>12} {'lost':>5} {'CPU us/ans':>10} "
            f"{'busiest proc/round':>18} {'qps/NSD':>8} {'CPU/NSD':>8} {'client':>6} {'ready s':>7} "
            f"{'other':>5}")
    lines = [head, "-" * len(head)]
    for (name, n), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "nsd")):
        nsd = rows.get(("nsd", n))
        ratio = r.qps / nsd.qps if nsd and nsd.runs and r.runs else math.nan
        cpu_ratio = r.cpu_us / nsd.cpu_us if nsd and nsd.runs and r.runs else math.nan
        lost = "-" if math.isnan(r.lost) else f"{r.lost:.1%}"
        cpu = "-" if math.isnan(r.cpu_us) else f"{r.cpu_us:.1f}"
        lines.append(f"{name:<7} {n:>2} {r.qps:>9,.0f} {r.qps_range():>12} {lost:>5} {cpu:>10} "
                     f"{r.busiest():>18} {_x(ratio):>8} {_x(cpu_ratio):>8} {r.client_cores:>6.2f} "
                     f"{r.ready_s:>7.2f} {r.foreign:>5.2f}")
    return lines


def scale_lines(s: Scale | None, sample: int) -> list[str]:
    if s is None:
        return ["scale: not measured"]

    def mib(pair: tuple[int, int]) -> str:
        return f"{pair[0] / 2**20:.1f} / {pair[1] / 2**20:.1f} MiB"

    lines = [
        f"scale: {s.services:,} services ({s.records:,} records), mcsdns idle and unpinned; RSS = VmRSS once "
        f"it answers / after answering {sample:,} queries once",
        f"  --workers 1: ready in {s.single_ready_s:.2f} s; RSS {mib(s.single_rss)}",
        f"  --workers 2: worker serving {s.pair_ready_s:.2f} s after start; RSS main process "
        f"{mib(s.main_rss)}, worker {mib(s.worker_rss)}",
    ]
    if s.publish_s:
        ms = [x * 1000 for x in s.publish_s]
        change = [x * 1000 for x in s.change_s]
        lines.append(
            f"  publish to the worker ({len(ms)} changes of one manifest file): "
            f"mcsdns_workers_publish_seconds median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms "
            f"(each: {', '.join(f'{x:.1f}' for x in ms)}); "
            f"file replaced -> worker on the new serial, seen by polling /metrics every 10 ms (includes the "
            f"250 ms directory poll and the zone build): median {statistics.median(change):.0f} ms, "
            f"max {max(change):.0f} ms")
    else:
        lines.append("  publish: not measured")
    return lines


def targets(rows: dict[tuple[str, int], Row], s: Scale | None) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = []
    mine, nsd = rows.get(("mcsdns", AT_N)), rows.get(("nsd", AT_N))
    if mine and nsd and mine.runs and nsd.runs:
        ratio = mine.qps / nsd.qps
        lines.append(f"  qps, mcsdns --workers {AT_N} / NSD server-count {AT_N} = {ratio:.2f}x   "
                     f"target >= {QPS_TARGET:g}x   {verdict(ratio >= QPS_TARGET)}")
        cpu = mine.cpu_us / nsd.cpu_us
        lines.append(f"  CPU per answered query at N={AT_N}, mcsdns / NSD = {mine.cpu_us:.1f} / "
                     f"{nsd.cpu_us:.1f} us = {cpu:.2f}x   target <= {CPU_TARGET:g}x   "
                     f"{verdict(cpu <= CPU_TARGET)}")
        floor = rows.get(("floor", AT_N))
        if floor and floor.runs:
            lines.append(f"  (floor: mcsdns's listeners with a responder that returns each query's own "
                         f"bytes, {floor.qps / nsd.qps:.2f}x NSD's qps at {floor.cpu_us / nsd.cpu_us:.2f}x "
                         f"its CPU per answer: the ceiling of mcsdns's ratios here)")
    else:
        lines.append(f"  qps and CPU per answer at N={AT_N}: n/a (not measured)   "
                     f"targets >= {QPS_TARGET:g}x NSD, <= {CPU_TARGET:g}x NSD's CPU")
    if s is not None and s.single_rss[1] and s.worker_rss[1]:
        share = s.worker_rss[1] / s.single_rss[1]
        lines.append(f"  worker RSS / --workers 1 RSS at {s.services:,} services = {share:.0%}   "
                     f"target <= {RSS_TARGET:.0%}   {verdict(share <= RSS_TARGET)}")
    else:
        lines.append(f"  worker RSS / single process RSS: n/a (not measured)   target <= {RSS_TARGET:.0%}")
    if s is not None and s.publish_s:
        median = statistics.median(s.publish_s)
        lines.append(f"  publish to all workers at {s.services:,} services: median {median * 1000:.1f} ms "
                     f"(max {max(s.publish_s) * 1000:.1f} ms)   target < {PUBLISH_TARGET_S * 1000:g} ms   "
                     f"{verdict(median < PUBLISH_TARGET_S)}")
    else:
        lines.append(f"  publish to all workers: n/a (not measured)   "
                     f"target < {PUBLISH_TARGET_S * 1000:g} ms")
    return lines


def environment(args: argparse.Namespace, data: gen.Dataset, n_records: int, mcsdns_from: str) -> list[str]:
    cpus = sorted(os.sched_getaffinity(0))
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {_cpu_model()}, {len(cpus)} cores for this run (CPUs {','.join(map(str, cpus))} of "
        f"{os.cpu_count()}), Linux {platform.release()}; servers not pinned (they need all the cores) and "
        f"the client shares the {len(cpus)} cores: dnsperf and this script run on the servers' cores; "
        f"load average before the run {args.loadavg}",
        f"other work: each run waits (<= {args.quiet_wait:g} s; <= {args.budget:g} s beyond the planned run "
        f"time for all waits and repeats) until other processes use < 0.1 core, and is repeated "
        f"(<= {args.retries}x) if they used > {args.max_foreign:g} core during it; 'other' = the most in a "
        f"kept run",
        f"tools: {_version(['dnsperf', '-h'], 'Version')}, {_version(['nsd', '-v'], 'NSD version')} "
        f"(server-count N, reuse-port off), Python {platform.python_version()}, {mcsdns_from} "
        f"(--workers N: the main process + N-1 workers, SO_REUSEPORT)",
        f"data: {len(data.services):,} services, {n_records:,} records, {data.query_file.name} of "
        f"{args.queries:,} queries, seed {args.seed}",
        f"qps: dnsperf closed loop, {args.duration:g} s, {args.clients} clients, {args.outstanding} in "
        f"flight, no EDNS: replies per second; median (and range) of {args.rounds} interleaved rounds; "
        f"CPU us/ans = utime+stime of the server's process group during the run / replies (median of "
        f"rounds); busiest proc = the busiest process's share of that CPU, per round; client = cores "
        f"dnsperf used (median); lost = no reply within 2 s",
    ]


# ---------------------------------------------------------------- main


def default_ns(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    ns, n = [], 1
    while n <= cores:
        ns.append(n)
        n *= 2
    return ns if ns[-1] == cores else [*ns, cores]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 3 s runs")
    ap.add_argument("--cores", type=int, default=None,
                    help="cores to use (the first C of this process's CPUs; default: all of them)")
    ap.add_argument("--workers-list", default=None,
                    help="comma-separated N values (default: 1,2,4,... up to --cores)")
    ap.add_argument("--services", type=int, default=1000, help="services for the throughput part")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queries", type=int, default=100_000, help="lines in the dnsperf query file")
    ap.add_argument("--ttl", type=int, default=gen.DEFAULT_TTL)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of closed-loop load per run")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c: client sockets")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q: queries in flight")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all servers")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="seconds to wait, before each run, for other work on the machine to stop")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="cores other processes may use during a run before it is repeated")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds beyond the planned run time for waiting for quiet and repeating runs")
    ap.add_argument("--scale-services", type=int, default=10_000, help="services for RSS and publish latency")
    ap.add_argument("--sample", type=int, default=2000, help="queries asked once before the second RSS")
    ap.add_argument("--publishes", type=int, default=5, help="manifest changes timed")
    ap.add_argument("--publish-timeout", type=float, default=20.0, help="seconds one publish may take")
    ap.add_argument("--scale-timeout", type=float, default=180.0, help="seconds mcsdns may take to start")
    ap.add_argument("--no-scale", action="store_true", help="skip the scale part")
    ap.add_argument("--out", type=Path, default=OUT)
    if ap.parse_args(argv).quick:
        ap.set_defaults(rounds=1, duration=3.0)  # options given explicitly still win
    args = ap.parse_args(argv)
    available = sorted(os.sched_getaffinity(0))
    if args.cores is None:
        args.cores = len(available)
    if not 1 <= args.cores <= len(available):
        ap.error(f"--cores must be 1-{len(available)} (the CPUs this process may use)")
    try:
        args.ns = ([int(x) for x in args.workers_list.split(",") if x.strip()] if args.workers_list
                   else default_ns(args.cores))
    except ValueError:
        ap.error("--workers-list: comma-separated integers")
    if not args.ns or any(not 1 <= n <= 64 for n in args.ns):
        ap.error("--workers-list: N from 1 to 64")
    args.available = available
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    # A plain SIGTERM would end Python without running `finally`, leaving the servers running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.cores < len(args.available):
        os.sched_setaffinity(0, args.available[: args.cores])  # the servers and dnsperf inherit it
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if why := mcsdns_runnable():
        print(f"mcsdns cannot run: `python -m mcsdns serve --help` fails: {why}", file=sys.stderr)
        return 1
    mcsdns_from = mcsdns_origin()
    data = gen.build(args.out / f"data-{args.services}", args.services, args.seed, args.queries, ttl=args.ttl)
    n_records = len(gen.records(data.services, data.zone, args.ttl))
    notes: list[str] = []
    if any(n > args.cores for n in args.ns):
        notes.append(f"N above --cores ({args.cores}): those servers share cores among their own processes")
    rows = throughput(data, args, notes)
    sc = None
    if not args.no_scale:
        try:
            sc = scale(args, notes)
        except ServerError as exc:
            notes.append(f"scale: mcsdns failed to start: {exc}")
    elapsed = time.monotonic() - began
    out = [*environment(args, data, n_records, mcsdns_from), "", *table(rows), "",
           *scale_lines(sc, args.sample), "", "targets:", *targets(rows, sc), "",
           f"the run took {elapsed:.0f} s", *(f"note: {n}" for n in notes)]
    print("\n".join(out))
    write_json(args, rows, sc, notes, out, elapsed)
    return 0 if rows else 1


def write_json(args: argparse.Namespace, rows: dict[tuple[str, int], Row], sc: Scale | None,
               notes: list[str], printed: list[str], elapsed: float) -> None:
    save_raw(args, "workers", {
        "rows": [{"server": r.server, "n": r.n, "ready_s": r.ready_s, "runs": [x.as_json() for x in r.runs]}
                 for r in rows.values()],
        "scale": sc.as_json() if sc is not None else None,
        "elapsed_s": elapsed,
        "notes": notes,
        "printed": printed,
    })

if __name__ == "__main__":
    raise SystemExit(main())

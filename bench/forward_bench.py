"""Forwarding benchmark: mcsdns as a pod's resolver for names outside its zone, against Unbound.

When mcsdns runs as a pod's sidecar resolver it answers ``clusterset.local`` itself and forwards every other
name to an upstream resolver, with a cache. This measures that forwarding path, in one run, for mcsdns and
for Unbound forwarding to the same upstream, with cache hits and cache misses reported apart, and mcsdns's
own zone path (the same process) for scale.

Servers, each on a free port of 127.0.0.1 only:

* **upstream**: NSD (``nsd -d``, the config of servers.py: one serving process, RRL off), authoritative for
  ``fwd.test.``: 1,000 names ``h1`` ... ``h1000.fwd.test.`` (A 198.18.x.y, TTL 300: the hit set) and a
  wildcard ``*.miss.fwd.test.`` (A 198.19.0.1, TTL 300), so every unique name below ``miss.fwd.test.`` is a
  cache miss that the upstream still answers. Addresses are from 198.18.0.0/15, the benchmarking range.
* **mcsdns**: ``python -m mcsdns serve --manifests DIR --listen 127.0.0.1:PORT --zone clusterset.local
  --ttl 5 --log-level warning --forward 127.0.0.1:UPSTREAM --forward-cache-size 100000 --http
  127.0.0.1:PORT2``, with gen.py's manifests (1,000 services) so the zone path runs in the same process.
  ``--forward-allow`` keeps its default (loopback). ``--http`` serves /metrics, read before and after each
  forwarding run for the share of cache hits mcsdns itself counted ("cache hits" column; ``-`` when the
  metric is not there).
* **Unbound** (``unbound -d -c unbound.conf``), with this config, generated in a temporary directory::

      server:
        num-threads: 1                  # one thread, to compare one core with one core
        interface: 127.0.0.1
        port: PORT
        do-ip4: yes
        do-ip6: no
        do-daemonize: no
        chroot: ""
        username: ""
        directory: "TMPDIR"
        pidfile: ""
        use-syslog: no
        logfile: ""
        verbosity: 1
        module-config: "iterator"       # no DNSSEC validation: mcsdns does not validate either
        do-not-query-localhost: no      # else Unbound never sends to an upstream on 127.0.0.1
        access-control: 127.0.0.0/8 allow
        local-zone: "test." nodefault   # Unbound answers the special-use TLD test. itself (NXDOMAIN)
        msg-cache-size: 64m
        rrset-cache-size: 128m
      remote-control:
        control-enable: no
      forward-zone:
        name: "."
        forward-addr: 127.0.0.1@UPSTREAM

  No trust anchor, no remote control. Everything else is stock, e.g. ``minimal-responses: yes``: Unbound
  drops the upstream's NS RRset from the authority section of a positive answer, as mcsdns does.
* **floor** (misses only; ``--no-floor`` leaves it out): ``floor_server.py --forward 127.0.0.1:UPSTREAM``,
  mcsdns's own listener and the upstream I/O of its forwarder relaying every query with no work at all (no
  cache, no checks). Its miss rate is the most any forwarder built on mcsdns's I/O answers on this machine
  in this placement: the gap to mcsdns's row is what mcsdns does per miss, and a target above this row
  cannot be met here by any change to that work.

Placement on the 2-core machine (the client shares it): the server under test (mcsdns or Unbound) alone on
core 1 (``--server-cpu``), dnsperf and this script on core 0 (``--client-cpu``), as dns_bench.py does. The
upstream NSD goes on core 0 too (``--upstream-cpu``): it only works during the miss runs, and there it is
the network's resolver, not the server's own work, so it must not take the server's core; at high miss
rates it competes with dnsperf, so a server's miss figure may be a lower bound.

Each round, the servers interleaved, every load run bounded in time (``dnsperf -l``, reply timeout 2 s):

1. zone path: mcsdns with gen.py's query file, closed loop (``-c 4 -q 100``), the maximum rate;
2. hits: one pass over the 1,000 names (A, RD set) warms both caches and checks every answer; then a closed
   loop over those names for each server, then a fixed offered rate (``--latency-qps``, one socket, ``-v``)
   for p50/p99 from the per-query lines (perf.py: a lost query counts as slower than any answer), and
   that fixed rate once more with guest halt polling (``--halt-poll-ns``, 200 us) where the machine
   halts idle vCPUs sooner and lets it be set: on such a VM a halted vCPU takes milliseconds to wake, and
   the first pass's p99 is the machine's (machine.py, ``HALT_POLL``); the setting is restored after the
   run. The p99 target is read on the polled pass when there is one;
3. misses: a closed loop over unique names ``<random prefix>-<n>.miss.fwd.test.``, ``--duration`` x
   ``--miss-rate`` of them per server per round, so no name repeats within a run nor across runs (a file
   that ran out and wrapped is flagged). Such a run is never repeated with the same file; a disturbed
   run is repeated with new names.

The warm-up pass runs every round: the miss runs may evict hit names (Unbound's cache is bounded in bytes,
mcsdns's in entries), and the upstream TTL of 300 s is not much longer than a run.

Before the load, one hit name and one miss name must answer NOERROR with the right address through both
mcsdns and Unbound. Before each run the script waits (bounded, ``--settle``) until the servers have stopped
working off the previous run's backlog, and (machine.py, through dns_bench.py) until other people's work on
the shared machine is quiet; disturbed runs are repeated as in dns_bench.py, within ``--budget`` seconds
beyond the planned run time. A default run takes about 5 minutes (6 when the machine is busy),
``--quick`` about 45 s.

The mcsdns measured is whichever ``python -m mcsdns`` imports (the environment line says which): this
repository's, or e.g. a ``git archive`` of another commit put first on ``PYTHONPATH``.

Printed: the table (median over rounds), the targets with PASS/FAIL, machine information; the raw results
go to ``bench/out/forward-<time>.json``. Targets (mcsdns's forwarding issue): cache hits >= 0.5x Unbound's
qps and >= 0.8x mcsdns's own zone path; hits p99 <= 1 ms at 5,000 qps offered; misses against the local
upstream >= 20,000 answered qps.

    .venv/bin/python bench/forward_bench.py [--duration 10] [--rounds 3] [--latency-qps 5000] [--quick]

"qps" is answered queries per second: replies with NOERROR or NXDOMAIN, per dnsperf's run time; a timeout
or a SERVFAIL is not an answer. "answered" is their share of the queries sent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import dns.rdatatype
import gen
import perf
from dns_bench import _cpu_model, _mcsdns_commit, _ms, _version, add_load_options, undisturbed_run
from machine import HALT_POLL_NS, TICK, Disturbance, halt_poll_ns, halt_polling, least_disturbed
from servers import (
    LOCALHOST,
    REPO,
    Data,
    Running,
    ServerError,
    ask,
    free_port,
    group_pids,
    mcsdns_argv,
    mcsdns_runnable,
    nsd_argv,
    spawn,
)

OUT = Path(__file__).resolve().parent / "out"
FWD_ZONE = "fwd.test"
UPSTREAM_TTL = 300
HIT_NAMES = 1000
MISS_ADDRESS = "198.19.0.1"
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
GOOD_RCODES = ("NOERROR", "NXDOMAIN")  # answers; SERVFAIL and timeouts are not

# (path, server): the rows of the table, in order.
ROWS = (
    ("zone", "mcsdns"),
    ("hits", "mcsdns"),
    ("hits", "unbound"),
    ("misses", "mcsdns"),
    ("misses", "unbound"),
    ("misses", "floor"),
)
HITS_VS_UNBOUND = 0.5
HITS_VS_ZONE = 0.8
P99_TARGET_S = 0.001
MISS_TARGET_QPS = 20_000


def hit_name(n: int) -> str:
    return f"h{n}.{FWD_ZONE}."


def hit_address(n: int) -> str:
    return f"198.18.{n // 256}.{n % 256}"  # n = 1 .. 1000: 198.18.0.1 .. 198.18.3.232


UNBOUND_CONF = """\
server:
  num-threads: 1
  interface: {addr}
  port: {port}
  do-ip4: yes
  do-ip6: no
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  module-config: "iterator"
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  local-zone: "test." nodefault
  msg-cache-size: 64m
  rrset-cache-size: 128m
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: {addr}@{upstream}
"""


def write_upstream_zone(path: Path) -> None:
    lines = [
        f"$ORIGIN {FWD_ZONE}.",
        f"$TTL {UPSTREAM_TTL}",
        f"@ SOA ns.{FWD_ZONE}. hostmaster.{FWD_ZONE}. 1 7200 1800 86400 {UPSTREAM_TTL}",
        f"@ NS ns.{FWD_ZONE}.",
        "ns A 198.19.255.254",
        f"*.miss A {MISS_ADDRESS}",
        *(f"h{n} A {hit_address(n)}" for n in range(1, HIT_NAMES + 1)),
    ]
    path.write_text("\n".join(lines) + "\n")


def write_hit_queries(path: Path, seed: int) -> None:
    order = list(range(1, HIT_NAMES + 1))
    random.Random(seed).shuffle(order)
    path.write_text("".join(f"{hit_name(n)} A\n" for n in order))


def write_miss_queries(path: Path, count: int) -> str:
    """``count`` names never asked before (a fresh random prefix); return the prefix."""
    prefix = secrets.token_hex(4)
    with path.open("w") as fh:
        for start in range(0, count, 100_000):
            fh.write(
                "".join(
                    f"{prefix}-{i}.miss.{FWD_ZONE}. A\n" for i in range(start, min(count, start + 100_000))
                )
            )
    return prefix


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """A server under test, and where mcsdns serves its metrics."""

    name: str
    running: Running
    ready_s: float
    http_port: int | None = None
    paths: tuple[str, ...] = ("hits", "misses")  # which forwarding runs it takes part in


@contextlib.contextmanager
def started(
    name: str,
    argv: Callable[[int, Path], list[str]],
    cpu: int | None,
    probe: tuple[str, str],
    timeout: float,
    *,
    rd: bool = False,
) -> Iterator[tuple[Running, float]]:
    """servers.serving for a server that is not one of its three: run ``argv(port, workdir)`` until the block
    ends, once it answers ``probe``; stop its whole process group in any case."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        server = spawn(name, port, argv(port, workdir), workdir, cpu)
        try:
            yield server, server.wait_ready(probe[0], probe[1], timeout, rd=rd)
        finally:
            server.stop()


def unbound_argv(upstream: int) -> Callable[[int, Path], list[str]]:
    def argv(port: int, workdir: Path) -> list[str]:
        conf = workdir / "unbound.conf"
        conf.write_text(UNBOUND_CONF.format(addr=LOCALHOST, port=port, dir=workdir, upstream=upstream))
        return [UNBOUND, "-d", "-c", str(conf)]

    return argv


def floor_argv(upstream: int) -> Callable[[int, Path], list[str]]:
    script = Path(__file__).resolve().parent / "floor_server.py"

    def argv(port: int, workdir: Path) -> list[str]:
        return [
            sys.executable,
            str(script),
            "--listen",
            f"{LOCALHOST}:{port}",
            "--forward",
            f"{LOCALHOST}:{upstream}",
        ]

    return argv


def forwarding_mcsdns_argv(
    data: Data, upstream: int, cache_size: int, http_port: int
) -> Callable[[int, Path], list[str]]:
    def argv(port: int, workdir: Path) -> list[str]:
        return [
            *mcsdns_argv(data, port, workdir),
            "--forward",
            f"{LOCALHOST}:{upstream}",
            "--forward-cache-size",
            str(cache_size),
            "--http",
            f"{LOCALHOST}:{http_port}",
        ]

    return argv


def forward_counts(http_port: int | None) -> dict[str, float] | None:
    """mcsdns's forwarded-query counters by outcome (cache_hit, cache_miss, ...), or None if not there."""
    if http_port is None:
        return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(f"http://{LOCALHOST}:{http_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    found = re.finditer(r'^mcsdns_forward_queries(?:_total)?\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE)
    counts = {m.group(1): float(m.group(2)) for m in found}
    return counts or None


def hit_share(before: dict[str, float] | None, after: dict[str, float] | None) -> float:
    if not before or not after:
        return math.nan
    hits = after.get("cache_hit", 0.0) - before.get("cache_hit", 0.0)
    misses = after.get("cache_miss", 0.0) - before.get("cache_miss", 0.0)
    return hits / (hits + misses) if hits + misses else math.nan


def check_answer(port: int, qname: str, expected_ip: str) -> str | None:
    """None if ``qname`` A answers NOERROR with ``expected_ip`` (recursion desired), else what went wrong."""
    try:
        reply = ask(port, qname, "A", timeout=2.0, rd=True)
    except (dns.exception.DNSException, OSError) as exc:
        return f"{qname} A: no reply ({type(exc).__name__})"
    addresses = [rd.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    if reply.rcode() != dns.rcode.NOERROR or expected_ip not in addresses:
        return f"{qname} A: {dns.rcode.to_text(reply.rcode())} {addresses}, expected NOERROR [{expected_ip}]"
    return None


def warm(server: Server, limit_s: float) -> list[str]:
    """One pass over the hit names, each checked; bounded by ``limit_s``; return the problems."""
    problems: list[str] = []
    deadline = time.monotonic() + limit_s
    for n in range(1, HIT_NAMES + 1):
        if time.monotonic() > deadline:
            problems.append(f"warm-up pass stopped after {limit_s:g} s at name {n} of {HIT_NAMES}")
            break
        if (problem := check_answer(server.running.port, hit_name(n), hit_address(n))) is not None:
            problems.append(problem)
            if len(problems) >= 5:
                problems.append("warm-up pass abandoned after 5 wrong answers")
                break
    return problems


def group_cpu(pgid: int) -> float:
    """CPU seconds the process group has used so far."""
    total = 0.0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) * TICK
    return total


def settle(servers: Sequence[Server], limit_s: float) -> float:
    """Wait (bounded) until no server under test works any more (< 0.05 core over 0.5 s): a server that
    fell behind keeps answering queries dnsperf gave up on, on the core the next run needs. Return the
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = [group_cpu(s.running.proc.pid) for s in servers]
        time.sleep(0.5)
        after = [group_cpu(s.running.proc.pid) for s in servers]
        if all(b - a < 0.025 for a, b in zip(before, after, strict=True)):
            break
    return time.monotonic() - start


# ---------------------------------------------------------------- results


@dataclass
class Run:
    """One kept dnsperf run, and what else was seen around it."""

    result: perf.PerfResult
    seen: Disturbance
    hit_share: float = math.nan  # mcsdns's own cache-hit counters during the run
    file_lines: int = 0  # miss runs: names in the query file
    settled_s: float = 0.0  # waited before the run for the servers to go idle

    @property
    def good(self) -> int:
        return sum(self.result.rcodes.get(r, 0) for r in GOOD_RCODES)

    @property
    def qps(self) -> float:
        r = self.result
        return r.qps * self.good / r.completed if r.completed else 0.0

    @property
    def wrapped(self) -> bool:
        return bool(self.file_lines) and self.result.sent > self.file_lines

    def as_json(self) -> dict[str, Any]:
        r = self.result
        out: dict[str, Any] = {
            "sent": r.sent,
            "completed": r.completed,
            "lost": r.lost,
            "dnsperf_qps": r.qps,
            "answered_qps": self.qps,
            "avg_s": r.avg_s,
            "stddev_s": r.stddev_s,
            "rcodes": r.rcodes,
            "other_cores": self.seen.foreign,
            "waited": _num(self.seen.waited),
            "hit_share": _num(self.hit_share),
            "settled_s": self.settled_s,
        }
        if r.latencies:  # fixed-rate runs (dnsperf -v)
            out |= {f"p{q}_s": _num(r.percentile(q / 100)) for q in (50, 90, 99)}
            out["max_s"] = _num(r.percentile(1.0))
        if self.file_lines:
            out |= {"file_lines": self.file_lines, "wrapped": self.wrapped}
        return out


def _num(x: float) -> float | str | None:
    """JSON has no NaN or infinity."""
    if math.isnan(x):
        return None
    return "inf" if math.isinf(x) else x


@dataclass
class Row:
    path: str
    server: str
    peak: list[Run] = field(default_factory=list)
    fixed: list[Run] = field(default_factory=list)  # as the machine idles
    polled: list[Run] = field(default_factory=list)  # the same, with guest halt polling (``machine.py``)

    @property
    def qps(self) -> float:
        return statistics.median(r.qps for r in self.peak) if self.peak else math.nan

    def qps_range(self) -> str:
        if not self.peak:
            return "-"
        return f"{min(r.qps for r in self.peak) / 1000:.1f}-{max(r.qps for r in self.peak) / 1000:.1f}k"

    @staticmethod
    def _answered(runs: Sequence[Run]) -> float:
        sent = sum(r.result.sent for r in runs)
        return sum(r.good for r in runs) / sent if sent else math.nan

    @property
    def answered(self) -> float:
        return self._answered(self.peak)

    @property
    def fixed_answered(self) -> float:
        return self._answered(self.fixed)

    @property
    def avg_s(self) -> float:
        return statistics.median(r.result.avg_s for r in self.peak) if self.peak else math.nan

    @property
    def fixed_qps(self) -> float:
        return statistics.median(r.qps for r in self.fixed) if self.fixed else math.nan

    def latency(self, q: float, polled: bool = False) -> float:
        runs = self.polled if polled else self.fixed
        return statistics.median(r.result.percentile(q) for r in runs) if runs else math.nan

    def worst(self, q: float, polled: bool = False) -> float:
        return max(
            (r.result.percentile(q) for r in (self.polled if polled else self.fixed)), default=math.nan
        )

    @property
    def hit_share(self) -> float:
        """mcsdns's own cache-hit share: the lowest round's for hits, the highest round's for misses."""
        shares = [r.hit_share for r in (*self.peak, *self.fixed, *self.polled) if not math.isnan(r.hit_share)]
        if not shares:
            return math.nan
        return min(shares) if self.path == "hits" else max(shares)

    @property
    def other(self) -> float:
        return max((r.seen.foreign for r in (*self.peak, *self.fixed, *self.polled)), default=math.nan)


# ---------------------------------------------------------------- measuring


def _cpus(args: argparse.Namespace) -> tuple[int | None, int | None, int | None]:
    """(client, server, upstream) cores; no pinning at all on one core or with --no-pin."""
    if args.no_pin or (os.cpu_count() or 1) < 2:
        return None, None, None
    upstream = args.client_cpu if args.upstream_cpu is None else args.upstream_cpu
    return args.client_cpu, args.server_cpu, upstream


def measure(
    servers: dict[str, Server],
    data: gen.Dataset,
    hit_file: Path,
    tmp: Path,
    ours: set[int],
    args: argparse.Namespace,
    notes: list[str],
) -> dict[tuple[str, str], Row]:
    client_cpu = _cpus(args)[0]
    peak = perf.Load(args.duration, args.clients, args.outstanding, cpu=client_cpu)
    warmup = perf.Load(args.warmup, args.clients, args.outstanding, cpu=client_cpu)
    fixed = perf.Load(
        args.latency_duration, 1, args.outstanding, qps=args.latency_qps, verbose=True, cpu=client_cpu
    )
    rows = {key: Row(*key) for key in ROWS if key[1] in servers}
    failed: set[str] = set()
    all_servers = list(servers.values())

    def one(key: tuple[str, str], label: str, go: Callable[[], Run]) -> Run | None:
        server = servers[key[1]]
        if key[1] in failed:
            return None
        print(f"... {label}", file=sys.stderr, flush=True)
        settled = settle(all_servers, args.settle)
        if settled >= args.settle:
            notes.append(f"{label}: the servers were still busy after {args.settle:g} s of waiting")
        before = forward_counts(server.http_port) if key[0] != "zone" else None
        try:
            run = go()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            notes.append(f"{label}: load failed: {exc}")
            run = None
        if server.running.proc.poll() is not None:
            failed.add(key[1])
            notes.append(
                f"{key[1]} exited ({server.running.proc.returncode}) during {label}:\n"
                f"{server.running.log_tail()}"
            )
            return None
        if run is None:
            return None
        run.settled_s = settled
        if before is not None:
            run.hit_share = hit_share(before, forward_counts(server.http_port))
        return run

    for n in range(args.rounds):
        tag = f"round {n + 1}/{args.rounds}"
        # 1. The zone path, for scale.
        if ("zone", "mcsdns") in rows:
            mcsdns = servers["mcsdns"].running
            if n == 0 and args.warmup > 0:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    perf.run(mcsdns.port, data.query_file, warmup)
            run = one(
                ("zone", "mcsdns"),
                f"{tag}: zone path, mcsdns",
                functools.partial(kept_run, servers["mcsdns"], data.query_file, peak, ours, args),
            )
            if run:
                rows["zone", "mcsdns"].peak.append(run)
        # 2. Hits: warm (and check) both caches, then the closed loop, then the fixed rate.
        cached = {name: server for name, server in servers.items() if "hits" in server.paths}
        for name, server in cached.items():
            if name in failed:
                continue
            print(f"... {tag}: warming {name}'s cache ({HIT_NAMES:,} names)", file=sys.stderr, flush=True)
            start = time.monotonic()
            if problems := warm(server, args.warm_limit):
                notes.append(f"{tag}: warming {name}: " + "; ".join(problems))
            print(f"    {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        offered = f"{args.latency_qps:,} qps offered"
        passes = [(peak, "closed loop", "peak", 0), (fixed, offered, "fixed", 0)]
        if args.halt_poll:
            # The fixed rate again with the machine's idle vCPUs polling before they halt: what the
            # servers' latency is where waking a vCPU is not milliseconds (machine.py, HALT_POLL).
            passes.append((fixed, f"{offered}, halt polling", "polled", args.halt_poll))
        for load, kind, kept_in, poll in passes:
            for name, server in cached.items():
                with halt_polling(poll) if poll else contextlib.nullcontext():
                    run = one(
                        ("hits", name),
                        f"{tag}: hits, {kind}, {name}",
                        functools.partial(kept_run, server, hit_file, load, ours, args),
                    )
                if run:
                    getattr(rows["hits", name], kept_in).append(run)
        # 3. Misses: names nobody asked before.
        for name, server in servers.items():
            run = one(
                ("misses", name),
                f"{tag}: misses, closed loop, {name}",
                functools.partial(miss_run, server, peak, tmp, ours, args),
            )
            if run:
                rows["misses", name].peak.append(run)
                if run.wrapped:
                    notes.append(
                        f"{tag}: misses, {name}: dnsperf sent {run.result.sent:,} queries but the file "
                        f"had {run.file_lines:,} names, so some were hits (raise --miss-rate)"
                    )
    return rows


def kept_run(
    server: Server, query_file: Path, load: perf.Load, ours: set[int], args: argparse.Namespace
) -> Run:
    """The least disturbed of at most 1 + --retries runs (dns_bench.undisturbed_run)."""
    return Run(*undisturbed_run(server.running, query_file, load, ours, args))


def miss_run(server: Server, load: perf.Load, tmp: Path, ours: set[int], args: argparse.Namespace) -> Run:
    """A closed-loop run of misses on a quiet machine (machine.least_disturbed): every attempt asks names
    never asked before (repeating a run with the same file would measure cache hits)."""
    count = max(1000, math.ceil(load.duration * args.miss_rate))
    path = tmp / f"misses-{server.name}.txt"
    try:
        result, seen = least_disturbed(
            lambda: perf.run(server.running.port, path, load),
            pid=server.running.proc.pid,
            ours=ours,
            args=args,
            prepare=lambda: write_miss_queries(path, count),
        )
    finally:
        path.unlink(missing_ok=True)
    return Run(result, seen, file_lines=count)


# ---------------------------------------------------------------- printing


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share:.1%}"


def table(rows: Sequence[Row], offered: int) -> list[str]:
    head = (
        f"{'path':<6} {'server':<7} {'qps':>8} {'range':>13} {'answered':>8} {'avg ms':>7} | "
        f"{'@' + f'{offered:,}' + ':':>7} {'qps':>6} {'p50 ms':>7} {'p99 ms':>7} {'worst p99':>9} "
        f"{'answered':>8} | {'polled:':>7} {'p50 ms':>7} {'p99 ms':>7} {'worst p99':>9} | "
        f"{'cache hits':>10} {'other':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        fixed = (
            f"{'':>7} {r.fixed_qps:>6,.0f} {_ms(r.latency(0.5)):>7} {_ms(r.latency(0.99)):>7} "
            f"{_ms(r.worst(0.99)):>9} {_pct(r.fixed_answered):>8}"
            if r.fixed
            else f"{'':>7} {'-':>6} {'-':>7} {'-':>7} {'-':>9} {'-':>8}"
        )
        polled = (
            f"{'':>7} {_ms(r.latency(0.5, True)):>7} {_ms(r.latency(0.99, True)):>7} "
            f"{_ms(r.worst(0.99, True)):>9}"
            if r.polled
            else f"{'':>7} {'-':>7} {'-':>7} {'-':>9}"
        )
        lines.append(
            f"{r.path:<6} {r.server:<7} {r.qps:>8,.0f} {r.qps_range():>13} {_pct(r.answered):>8} "
            f"{_ms(r.avg_s):>7} | {fixed} | {polled} | {_pct(r.hit_share):>10} {r.other:>5.2f}"
        )
    return lines


def targets(rows: dict[tuple[str, str], Row], offered: int) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def measured(*keys: tuple[str, str]) -> bool:
        return all(k in rows and rows[k].peak for k in keys)

    hits, unbound, zone, misses = (
        ("hits", "mcsdns"),
        ("hits", "unbound"),
        ("zone", "mcsdns"),
        ("misses", "mcsdns"),
    )
    lines = []
    if measured(hits, unbound):
        ratio = rows[hits].qps / rows[unbound].qps
        lines.append(
            f"  hits: mcsdns/unbound qps = {ratio:.3f}x   target >= {HITS_VS_UNBOUND:g}x   "
            f"{verdict(ratio >= HITS_VS_UNBOUND)}"
        )
    else:
        lines.append(f"  hits: mcsdns/unbound qps: n/a (not measured)   target >= {HITS_VS_UNBOUND:g}x")
    if measured(hits, zone):
        ratio = rows[hits].qps / rows[zone].qps
        lines.append(
            f"  hits: mcsdns hits / mcsdns zone path qps = {ratio:.3f}x   target >= {HITS_VS_ZONE:g}x   "
            f"{verdict(ratio >= HITS_VS_ZONE)}"
        )
    else:
        lines.append(
            f"  hits: mcsdns hits / mcsdns zone path qps: n/a (not measured)   target >= {HITS_VS_ZONE:g}x"
        )
    if hits in rows and rows[hits].polled:
        # Where the machine's vCPUs halt at once, the figure with halt polling is the server's; the one
        # as the machine idles is printed beside it, with Unbound's, which shows the same wake-ups.
        p99 = rows[hits].latency(0.99, True)
        lines.append(
            f"  hits: mcsdns p99 at {offered:,} qps offered, with halt polling = {_ms(p99)} ms   target <= "
            f"{P99_TARGET_S * 1000:g} ms   {verdict(p99 <= P99_TARGET_S)}"
        )
        idle = f"    as the machine idles (vCPUs halt at once): mcsdns {_ms(rows[hits].latency(0.99))} ms"
        if unbound in rows and rows[unbound].fixed:
            idle += (
                f", Unbound {_ms(rows[unbound].latency(0.99))} ms (with halt polling "
                f"{_ms(rows[unbound].latency(0.99, True))} ms)"
            )
        lines.append(idle)
    elif hits in rows and rows[hits].fixed:
        p99 = rows[hits].latency(0.99)
        lines.append(
            f"  hits: mcsdns p99 at {offered:,} qps offered = {_ms(p99)} ms   target <= "
            f"{P99_TARGET_S * 1000:g} ms   {verdict(p99 <= P99_TARGET_S)}"
        )
    else:
        lines.append(f"  hits: mcsdns p99 at {offered:,} qps offered: n/a (not measured)   target <= 1 ms")
    if measured(misses):
        qps = rows[misses].qps
        lines.append(
            f"  misses: mcsdns = {qps:,.0f} answered qps   target >= {MISS_TARGET_QPS:,} qps   "
            f"{verdict(qps >= MISS_TARGET_QPS)}"
        )
        for other, what in (
            ("unbound", "Unbound"),
            ("floor", "the floor, mcsdns's I/O relaying with no work"),
        ):
            if measured(("misses", other)):
                theirs = rows["misses", other].qps
                lines.append(f"    against {what}: {theirs:,.0f} qps, mcsdns {qps / theirs:.2f}x")
    else:
        lines.append(f"  misses: mcsdns: n/a (not measured)   target >= {MISS_TARGET_QPS:,} qps")
    return lines


def environment(args: argparse.Namespace, data: gen.Dataset, mcsdns_from: str) -> list[str]:
    client, server, upstream = _cpus(args)
    pinning = (
        f"servers under test on CPU {server}; dnsperf and this script on CPU {client}; upstream NSD on CPU "
        f"{upstream} (taskset)"
        if server is not None
        else "none"
    )
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}; the client (dnsperf) "
        f"and the upstream share the machine with the servers; pinning: {pinning}; load average before the "
        f"run {args.loadavg}",
        f"other work: each run waits (<= {args.quiet_wait:g} s; <= {args.budget:g} s beyond the planned "
        f"run time for all waits and repeats) until other processes use < 0.1 core and is repeated "
        f"(<= {args.retries}x) if they used > {args.max_foreign:g} core during it (fixed-rate runs kept up "
        f"with: or the server waited > {args.max_wait:.0%} for its core); 'other' = the most in a kept run",
        f"tools: {_version(['dnsperf', '-h'], 'Version')}, {_version([UNBOUND, '-V'], 'Version')} "
        f"(num-threads 1, iterator only), {_version(['nsd', '-v'], 'NSD version')} (upstream), "
        f"Python {platform.python_version()}, {mcsdns_from}",
        f"zone path: {len(data.services):,} services, gen.py's {data.query_file.name}, seed {args.seed}",
        f"upstream: NSD for {FWD_ZONE}., {HIT_NAMES:,} hit names + *.miss wildcard, TTL {UPSTREAM_TTL}; "
        f"mcsdns --forward-cache-size {args.cache_size:,}; Unbound msg/rrset cache 64m/128m",
        f"max qps: dnsperf closed loop, {args.duration:g} s, {args.clients} clients, {args.outstanding} in "
        f"flight, no EDNS; qps = NOERROR/NXDOMAIN replies per second; median (and range) of {args.rounds} "
        f"interleaved rounds",
        f"latency: {args.latency_qps:,} qps offered from one socket for {args.latency_duration:g} s per "
        f"round, per-query times from dnsperf -v; p50/p99 = median over rounds, worst p99 = worst round; "
        f"a lost query counts as slower than any answer; {args.halt_poll_note}",
        f"misses: {args.duration:g} s x {args.miss_rate:,} unique names per server per round; 'cache hits' = "
        f"mcsdns's own cache_hit/(cache_hit+cache_miss) counters over its runs (hits: the lowest round, "
        f"misses: the highest)",
    ]


def mcsdns_origin() -> str:
    """Which mcsdns the server runs: this repository's (at which commit), or another copy on PYTHONPATH."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import mcsdns; print(mcsdns.__file__)"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tempfile.gettempdir(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    if out.returncode != 0:
        return "mcsdns from ?"
    path = Path(out.stdout.strip()).parent
    if path == REPO / "mcsdns":
        return f"mcsdns at {_mcsdns_commit()}"
    return f"mcsdns imported from {path} (not this repository's mcsdns/)"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 5 s runs, 3 s latency runs")
    add_load_options(
        ap,
        latency_qps=5_000,
        budget=45.0,
        budget_help="seconds beyond the planned run time to spend waiting for quiet and repeating "
        "disturbed runs",
    )
    ap.add_argument(
        "--miss-rate",
        type=int,
        default=100_000,
        help="unique names per second of a miss run (more than any server answers)",
    )
    ap.add_argument("--cache-size", type=int, default=100_000, help="mcsdns --forward-cache-size")
    ap.add_argument("--no-unbound", action="store_true", help="leave Unbound out")
    ap.add_argument("--no-floor", action="store_true", help="leave the floor (floor_server.py) out")
    ap.add_argument(
        "--halt-poll-ns",
        type=int,
        default=HALT_POLL_NS,
        help="guest halt polling for a second pass of the fixed-rate runs, where the machine polls less "
        "and lets it be set (machine.py); 0: one pass, the machine as it is",
    )
    ap.add_argument("--upstream-cpu", type=int, default=None, help="default: the client's core")
    ap.add_argument("--warm-limit", type=float, default=60.0, help="seconds a cache warm-up pass may take")
    ap.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait, before each run, for the servers to go idle",
    )
    if ap.parse_args(argv).quick:
        ap.set_defaults(rounds=1, duration=5.0, latency_duration=3.0)  # options given explicitly still win
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    # A plain SIGTERM would end Python without running `finally`, leaving the servers running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    polling = halt_poll_ns()
    args.halt_poll = args.halt_poll_ns if polling is not None and polling < args.halt_poll_ns else 0
    args.halt_poll_note = (
        f"each fixed-rate run made twice: as the machine idles (guest halt polling {polling:,} ns) and "
        f"with {args.halt_poll:,} ns ('polled:')"
        if args.halt_poll
        else f"guest halt polling {'not settable' if polling is None else f'{polling:,} ns'}, left as it is"
    )
    client_cpu, server_cpu, upstream_cpu = _cpus(args)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # this process reads dnsperf's -v lines: keep it off the server
    if why := mcsdns_runnable():
        print(f"mcsdns cannot run: `python -m mcsdns serve --help` fails: {why}", file=sys.stderr)
        return 1
    mcsdns_from = mcsdns_origin()
    data = gen.build(args.out / f"data-{args.services}", args.services, args.seed, args.queries, ttl=args.ttl)
    probe_svc = next(s for s in data.services if not s.headless)
    zone_probe = (probe_svc.fqdn(data.zone), probe_svc.vip or "")
    notes: list[str] = []
    rows: dict[tuple[str, str], Row] = {}
    rss: dict[str, int] = {}
    ready: dict[str, float] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp_name:
        tmp = Path(tmp_name)
        write_upstream_zone(tmp / f"{FWD_ZONE}.zone")
        hit_file = tmp / "hits.txt"
        write_hit_queries(hit_file, args.seed)
        upstream_data = Data(FWD_ZONE, UPSTREAM_TTL, tmp, tmp / f"{FWD_ZONE}.zone")
        try:
            print("... starting the upstream NSD", file=sys.stderr, flush=True)
            upstream, _ = stack.enter_context(
                started(
                    "upstream-nsd",
                    lambda port, wd: nsd_argv(upstream_data, port, wd),
                    upstream_cpu,
                    (hit_name(1), hit_address(1)),
                    args.ready_timeout,
                )
            )
            servers: dict[str, Server] = {}
            print("... starting mcsdns", file=sys.stderr, flush=True)
            http_port = free_port()
            zone_data = Data(data.zone, args.ttl, data.manifests, data.zone_file)
            running, ready_s = stack.enter_context(
                started(
                    "mcsdns",
                    forwarding_mcsdns_argv(zone_data, upstream.port, args.cache_size, http_port),
                    server_cpu,
                    zone_probe,
                    args.ready_timeout,
                )
            )
            servers["mcsdns"] = Server("mcsdns", running, ready_s, http_port)
            # The other resolvers, asked for a hit name through the upstream (RD set) before they count.
            others = (
                ("unbound", unbound_argv(upstream.port), not args.no_unbound, ("hits", "misses")),
                ("floor", floor_argv(upstream.port), not args.no_floor, ("misses",)),
            )
            hit_probe = (hit_name(1), hit_address(1))
            for name, argv, wanted, paths in others:
                if not wanted:
                    continue
                print(f"... starting {name}", file=sys.stderr, flush=True)
                running, ready_s = stack.enter_context(
                    started(name, argv, server_cpu, hit_probe, args.ready_timeout, rd=True)
                )
                servers[name] = Server(name, running, ready_s, paths=paths)
        except ServerError as exc:
            print(f"a server did not start: {exc}", file=sys.stderr)
            return 1
        ready = {name: s.ready_s for name, s in servers.items()}
        # Correctness first: a hit name and a miss name through each server.
        miss_probe = f"check-{secrets.token_hex(4)}.miss.{FWD_ZONE}."
        for name, server in servers.items():
            for qname, ip in ((hit_name(1), hit_address(1)), (miss_probe, MISS_ADDRESS)):
                if (problem := check_answer(server.running.port, qname, ip)) is not None:
                    print(f"{name} answers wrongly: {problem}", file=sys.stderr)
                    return 1
        # Servers lead their own process groups; kernel threads (group 0) work for us too.
        ours = {0, os.getpgid(0), upstream.proc.pid, *(s.running.proc.pid for s in servers.values())}
        # dns_bench.undisturbed_run stops waiting and repeating at args.deadline; here --budget is the time
        # allowed beyond the planned runs (about 3 s of waiting and start-up per run), not the whole run.
        planned = args.rounds * (
            5 * args.duration + (4 if args.halt_poll else 2) * args.latency_duration + 7 * 3.0
        )
        args.deadline = time.monotonic() + planned + args.budget
        rows = measure(servers, data, hit_file, tmp, ours, args, notes)
        rss = {name: s.running.rss_bytes() for name, s in servers.items()}
    elapsed = time.monotonic() - began
    out = [*environment(args, data, mcsdns_from), ""]
    out += [*table(list(rows.values()), args.latency_qps), ""]
    out += ["targets:", *targets(rows, args.latency_qps), ""]
    out.append(
        "RSS after the run: "
        + ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in rss.items())
        + "; ready after start: "
        + ", ".join(f"{n} {s:.2f} s" for n, s in ready.items())
        + f"; the run took {elapsed:.0f} s"
    )
    out += [f"note: {n}" for n in notes]
    print("\n".join(out))
    write_json(args, rows, rss, ready, notes, out, elapsed)
    return 0 if rows else 1


def save_raw(args: argparse.Namespace, kind: str, fields: dict[str, Any]) -> None:
    """Write a run's raw results, with the options it ran with, to ``--out``/<kind>-<UTC time>.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{kind}-{stamp}.json"
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "deadline"}
    path.write_text(json.dumps({"options": options, **fields}, indent=1) + "\n")
    print(f"raw results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)


def write_json(
    args: argparse.Namespace,
    rows: dict[tuple[str, str], Row],
    rss: dict[str, int],
    ready: dict[str, float],
    notes: list[str],
    printed: list[str],
    elapsed: float,
) -> None:
    save_raw(
        args,
        "forward",
        {
            "rows": [
                {
                    "path": r.path,
                    "server": r.server,
                    "closed_loop": [run.as_json() for run in r.peak],
                    "fixed_rate": [run.as_json() for run in r.fixed],
                    "fixed_rate_polled": [run.as_json() for run in r.polled],
                }
                for r in rows.values()
            ],
            "rss_bytes": rss,
            "ready_s": ready,
            "elapsed_s": elapsed,
            "notes": notes,
            "printed": printed,
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""DNS benchmark: mcsdns against NSD and against a naive dnslib server, on the same generated data.

Start every server on its own free 127.0.0.1 port, pinned to one core, and wait until each gives the
expected answer; record their replies to the same sample of queries; then, in rounds, load each server in
turn with dnsperf on the other core: closed loop for the maximum throughput, then a fixed offered rate for
per-query latency percentiles. Rounds interleave the servers so that a busy moment on the (shared) machine
hits all of them, and the table shows the median over rounds. Finally print the ratios, PASS/FAIL per
target, and how the answers differ from NSD's.

    .venv/bin/python bench/dns_bench.py [--services 1000] [--duration 10] [--clients 4] [--rounds 3] ...

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import compare
import gen
import perf
from machine import Disturbance, least_disturbed
from servers import REPO, Data, Running, ServerError, mcsdns_runnable, serving

SERVERS = ("mcsdns", "nsd", "dnslib")
OUT = Path(__file__).resolve().parent / "out"
TARGETS = (("nsd", 0.5), ("dnslib", 20.0))  # mcsdns max qps at least this multiple of the other's
P99_TARGET_S = 0.001


@dataclass
class Row:
    """Everything measured for one server; one entry per round in ``peak`` and ``fixed``."""

    name: str
    ready_s: float
    replies: dict[compare.Query, compare.Reply]
    peak: list[perf.PerfResult] = field(default_factory=list)
    fixed: list[perf.PerfResult] = field(default_factory=list)
    rss: int = 0
    foreign: float = 0.0  # most CPU (cores) other processes used during a kept run
    waited: float = math.nan  # worst run-queue delay of the server in a kept fixed-rate run it kept up with

    @property
    def qps(self) -> float:
        return statistics.median(r.qps for r in self.peak) if self.peak else math.nan

    def qps_range(self) -> str:
        if not self.peak:
            return "-"
        return f"{min(r.qps for r in self.peak) / 1000:.0f}-{max(r.qps for r in self.peak) / 1000:.0f}k"

    @property
    def peak_lost(self) -> float:
        return _lost_share(self.peak)

    @property
    def peak_avg_s(self) -> float:
        return statistics.median(r.avg_s for r in self.peak) if self.peak else math.nan

    def latency(self, q: float) -> float:
        """The median over rounds of each fixed-rate run's latency at quantile ``q``."""
        return statistics.median(r.percentile(q) for r in self.fixed) if self.fixed else math.nan

    def worst(self, q: float) -> float:
        return max((r.percentile(q) for r in self.fixed), default=math.nan)

    @property
    def fixed_qps(self) -> float:
        return statistics.median(r.qps for r in self.fixed) if self.fixed else math.nan

    @property
    def fixed_lost(self) -> float:
        return _lost_share(self.fixed)


def _lost_share(runs: Sequence[perf.PerfResult]) -> float:
    sent = sum(r.sent for r in runs)
    return sum(r.lost for r in runs) / sent if sent else math.nan


# ---------------------------------------------------------------- measuring


def _cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(client core, server core): separate cores when there are two, else no pinning at all."""
    if args.no_pin or (os.cpu_count() or 1) < 2:
        return None, None
    return args.client_cpu, args.server_cpu


def start_all(stack: contextlib.ExitStack, data: gen.Dataset, args: argparse.Namespace,
              rows: dict[str, Row], notes: list[str]) -> dict[str, Running]:
    """Start every server (stopped when ``stack`` closes) and record its answers before any load."""
    probe_svc = next(s for s in data.services if not s.headless)
    probe = (probe_svc.fqdn(data.zone), probe_svc.vip or "")
    files = Data(data.zone, args.ttl, data.manifests, data.zone_file)
    running = {}
    for name in args.names:
        print(f"... starting {name}", file=sys.stderr, flush=True)
        try:
            server, ready_s = stack.enter_context(
                serving(name, files, _cpus(args)[1], probe, args.ready_timeout))
        except ServerError as exc:
            notes.append(f"{name} failed to start: {exc}")
            continue
        rows[name] = Row(name, ready_s, compare.collect(server.port, args.compare_queries))
        running[name] = server
    return running


def load_rounds(running: dict[str, Running], rows: dict[str, Row], data: gen.Dataset,
                args: argparse.Namespace, notes: list[str]) -> None:
    client_cpu = _cpus(args)[0]
    peak = perf.Load(args.duration, args.clients, args.outstanding, edns=args.edns, cpu=client_cpu)
    warmup = perf.Load(args.warmup, args.clients, args.outstanding, edns=args.edns, cpu=client_cpu)
    # The fixed-rate run uses one client socket: the offered rate, not concurrency, is the variable.
    fixed = perf.Load(args.latency_duration, 1, args.outstanding, qps=args.latency_qps, edns=args.edns,
                      verbose=True, cpu=client_cpu)
    failed: set[str] = set()
    # Servers lead their own process groups; kernel threads (group 0, e.g. ksoftirqd moving our packets)
    # work for us too.
    ours = {0, os.getpgid(0), *(s.proc.pid for s in running.values())}
    for n in range(args.rounds):
        for name, server in running.items():
            if name in failed:
                continue
            print(f"... round {n + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            row = rows[name]
            try:
                if n == 0 and args.warmup > 0:
                    perf.run(server.port, data.query_file, warmup)
                for runs, load in ((row.peak, peak), (row.fixed, fixed)):
                    result, seen = undisturbed_run(server, data.query_file, load, ours, args)
                    runs.append(result)
                    row.foreign = max(row.foreign, seen.foreign)
                    if not math.isnan(seen.waited):
                        row.waited = seen.waited if math.isnan(row.waited) else max(row.waited, seen.waited)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failed.add(name)
                notes.append(f"{name}: load failed: {exc}")
    for name, server in running.items():
        rows[name].rss = server.rss_bytes()


def undisturbed_run(server: Running, query_file: Path, load: perf.Load, ours: set[int],
                    args: argparse.Namespace) -> tuple[perf.PerfResult, Disturbance]:
    """One dnsperf run on a quiet machine, repeated while disturbed (machine.least_disturbed)."""

    def score(result: perf.PerfResult, seen: Disturbance) -> float:
        # Run-queue delay only says "disturbed" when the server had time to spare: a fixed-rate run it
        # kept up with. Saturated, it delays itself.
        if not (load.qps and result.qps >= 0.95 * load.qps):
            seen.waited = math.nan
        return float(max(seen.foreign / args.max_foreign,
                         0.0 if math.isnan(seen.waited) else seen.waited / args.max_wait))

    return least_disturbed(lambda: perf.run(server.port, query_file, load),
                           pid=server.proc.pid, ours=ours, args=args, score=score)


# ---------------------------------------------------------------- printing


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return "lost" if math.isinf(seconds) else f"{seconds * 1000:.3f}"


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share:.1%}"


def table(rows: Sequence[Row], offered: int) -> list[str]:
    head = (f"{'server':<8} {'max qps':>9} {'range':>9} {'lost':>5} {'avg ms':>7} | "
            f"{'@' + f'{offered:,}' + ' qps:':>12} {'p50 ms':>7} {'p99 ms':>7} {'worst p99':>9} "
            f"{'max ms':>7} {'lost':>5} | {'RSS MiB':>7} {'ready s':>7} {'other':>5} {'waited':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<8} {r.qps:>9,.0f} {r.qps_range():>9} {r.peak_lost:>5.1%} {_ms(r.peak_avg_s):>7} | "
            f"{r.fixed_qps:>12,.0f} {_ms(r.latency(0.5)):>7} {_ms(r.latency(0.99)):>7} "
            f"{_ms(r.worst(0.99)):>9} {_ms(r.worst(1.0)):>7} {r.fixed_lost:>5.1%} | "
            f"{r.rss / 2**20:>7.1f} {r.ready_s:>7.2f} {r.foreign:>5.2f} {_pct(r.waited):>6}")
    return lines


def targets(rows: dict[str, Row], offered: int) -> list[str]:
    """The project's goals as PASS/FAIL lines; a target needing a server that did not run is n/a."""
    lines = []
    mine = rows.get("mcsdns")
    for other, goal in TARGETS:
        if mine and mine.peak and other in rows and rows[other].peak:
            ratio = mine.qps / rows[other].qps
            verdict = "PASS" if ratio >= goal else "FAIL"
            lines.append(f"  mcsdns/{other} max qps = {ratio:6.2f}x   target >= {goal:g}x   {verdict}")
        else:
            lines.append(f"  mcsdns/{other} max qps: n/a (not measured)   target >= {goal:g}x")
    if mine and mine.fixed:
        p99 = mine.latency(0.99)
        verdict = "PASS" if p99 < P99_TARGET_S else "FAIL"
        lines.append(f"  mcsdns p99 at {offered:,} qps offered = {_ms(p99)} ms   "
                     f"target < {P99_TARGET_S * 1000:g} ms   {verdict}")
    else:
        lines.append(f"  mcsdns p99 at {offered:,} qps offered: n/a (not measured)   target < 1 ms")
    return lines


def answer_report(rows: dict[str, Row]) -> list[str]:
    if "nsd" not in rows:
        return ["answers not compared: NSD, the reference, did not run"]
    out = []
    for name, row in rows.items():
        if name != "nsd":
            diffs = compare.diff(rows["nsd"].replies, row.replies)
            out += compare.report(name, "nsd", diffs, len(row.replies))
    return out


def environment(args: argparse.Namespace, data: gen.Dataset, n_records: int) -> list[str]:
    client_cpu, server_cpu = _cpus(args)
    pinning = (f"servers on CPU {server_cpu}, dnsperf on CPU {client_cpu} (taskset)"
               if server_cpu is not None else "none")
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}; client and servers "
        f"share it; pinning: {pinning}; load average before the run {args.loadavg}",
        f"other work: each run waits (<= {args.quiet_wait:g} s; <= {args.budget:g} s for all waits and "
        f"repeats) until other processes use < 0.1 core, and "
        f"is repeated (<= {args.retries}x) if they used > {args.max_foreign:g} core during it or, in a "
        f"fixed-rate run it keeps up with, the server waited > {args.max_wait:.0%} of it for its core; "
        f"'other' / 'waited' = the worst of these in the kept runs",
        f"tools: {_version(['dnsperf', '-h'], 'Version')}, {_version(['nsd', '-v'], 'NSD version')} "
        f"(server-count 1), Python {platform.python_version()}, mcsdns at {_mcsdns_commit()}",
        f"data: {len(data.services):,} services ({sum(s.headless for s in data.services):,} headless), "
        f"{n_records:,} records, {data.query_file.name} of {_lines(data.query_file):,} queries, "
        f"seed {args.seed}",
        f"max qps: dnsperf closed loop, {args.duration:g} s, {args.clients} clients, {args.outstanding} "
        f"in flight{', EDNS' if args.edns else ''}; median (and range) of {args.rounds} interleaved rounds",
        f"latency: {args.latency_qps:,} qps offered for {args.latency_duration:g} s per round, per-query "
        f"times from dnsperf -v; p50/p99 = median over rounds, worst p99 and max = worst round; "
        f"a lost query counts as slower than any answer",
    ]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _version(argv: list[str], marker: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return f"{argv[0]} ?"
    for line in (out.stdout + out.stderr).splitlines():
        if marker in line:
            return f"{argv[0]} {line.split()[-1]}"
    return f"{argv[0]} ?"


def _mcsdns_commit() -> str:
    """The commit the measured mcsdns came from, and whether mcsdns/ had uncommitted changes."""
    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", *argv], capture_output=True, text=True, timeout=10, cwd=REPO,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + (" + uncommitted changes in mcsdns/" if git("status", "--porcelain", "mcsdns") else "")


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


# ---------------------------------------------------------------- main


def add_load_options(
    ap: argparse.ArgumentParser, *, latency_qps: int, budget: float, budget_help: str
) -> None:
    """The options every DNS load benchmark here shares: the data, dnsperf's load, pinning, and how runs that
    other work disturbed are detected and repeated (``undisturbed_run``)."""
    ap.add_argument("--services", type=int, default=1000, help="services to generate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queries", type=int, default=100_000, help="lines in the dnsperf query file")
    ap.add_argument("--ttl", type=int, default=gen.DEFAULT_TTL)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of closed-loop load per run")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c: client sockets")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q: queries in flight")
    ap.add_argument("--latency-qps", type=int, default=latency_qps, help="offered rate of the latency runs")
    ap.add_argument("--latency-duration", type=float, default=5.0, help="seconds per fixed-rate run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all servers")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="seconds to wait, before each run, for other work on the machine to stop")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="cores other processes may use during a run before it is repeated")
    ap.add_argument("--max-wait", type=float, default=0.02,
                    help="share of a fixed-rate run the server may wait for its core before it is repeated")
    ap.add_argument("--retries", type=int, default=3, help="repeats of a disturbed run")
    ap.add_argument("--budget", type=float, default=budget, help=budget_help)
    ap.add_argument("--out", type=Path, default=OUT)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_options(ap, latency_qps=10_000, budget=300.0,
                     budget_help="seconds, in all, to spend waiting for quiet and repeating disturbed runs")
    ap.add_argument("--edns", action="store_true", help="send EDNS0 in the dnsperf queries (dnsperf -e)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of the default")
    ap.add_argument("--compare", type=int, default=300, help="sampled queries whose answers are diffed")
    ap.add_argument("--answers-only", action="store_true", help="only diff the answers, no load")
    args = ap.parse_args(argv)
    args.names = [n for n in args.servers.split(",") if n]
    if unknown := set(args.names) - set(SERVERS):
        ap.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain SIGTERM would end Python without running `finally`, leaving the servers running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.deadline = time.monotonic() + args.budget
    # Other work on this machine skews results; record how busy it was before we added load.
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    client_cpu = _cpus(args)[0]
    if client_cpu is not None:
        # This process reads dnsperf's per-query output (10k lines/s); left unpinned, the scheduler
        # sometimes runs it on the server's core, which shows up as millisecond stalls in the server's p99.
        os.sched_setaffinity(0, {client_cpu})
    data = gen.build(args.out / f"data-{args.services}", args.services, args.seed, args.queries,
                     ttl=args.ttl)
    n_records = len(gen.records(data.services, data.zone, args.ttl))
    args.compare_queries = [*compare.edge_cases(data.services, data.zone),
                            *compare.sample(data.query_file, args.compare)]
    notes: list[str] = []
    if "mcsdns" in args.names and (why := mcsdns_runnable()):
        args.names.remove("mcsdns")
        notes.append(f"mcsdns skipped: `python -m mcsdns serve --help` fails: {why}")
    rows: dict[str, Row] = {}
    with contextlib.ExitStack() as stack:  # stops every server, whatever happens
        running = start_all(stack, data, args, rows, notes)
        if not args.answers_only:
            load_rounds(running, rows, data, args, notes)
    out = [*environment(args, data, n_records), ""]
    if not args.answers_only:
        offered = args.latency_qps
        out += [*table(list(rows.values()), offered), "", "targets:", *targets(rows, offered), ""]
    out += [*answer_report(rows), *(f"note: {n}" for n in notes)]
    print("\n".join(out))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Run dnsperf (2.10) for a bounded time and parse what it prints.

dnsperf 2.10 reports only the mean, min, max and standard deviation of latency; it has no percentile or
histogram option. With ``-v`` it prints one line per answered query, ``> NOERROR <name> <type> <seconds>``,
and ``PerfResult.percentile`` computes p50/p99 from those lines, counting every lost query as slower than
any answered one (a percentile that lands on a loss is reported as infinite, never silently dropped).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from servers import LOCALHOST, pin

DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"


@dataclass
class PerfResult:
    sent: int
    completed: int
    lost: int
    qps: float
    avg_s: float
    stddev_s: float
    rcodes: dict[str, int]
    latencies: list[float] = field(default_factory=list)  # sorted seconds; only from verbose runs

    @property
    def lost_share(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float:
        """Latency at quantile ``q`` over all sent queries, a lost query counting as infinitely slow."""
        total = len(self.latencies) + self.lost
        if not total:
            return math.nan
        rank = max(1, math.ceil(q * total))  # nearest-rank definition
        return self.latencies[rank - 1] if rank <= len(self.latencies) else math.inf


@dataclass(frozen=True)
class Load:
    """One dnsperf invocation: closed loop when ``qps`` is None, else rate-limited at ``qps``."""

    duration: float
    clients: int
    outstanding: int
    qps: int | None = None
    timeout: float = 2.0  # seconds dnsperf waits for a reply; also bounds the run's tail
    edns: bool = False
    verbose: bool = False
    cpu: int | None = None


def command(port: int, query_file: Path, load: Load) -> list[str]:
    argv = [*pin(load.cpu), DNSPERF, "-s", LOCALHOST, "-p", str(port), "-d", str(query_file),
            "-l", f"{load.duration:g}", "-c", str(load.clients), "-q", str(load.outstanding),
            "-t", f"{load.timeout:g}", "-O", "suppress=timeouts,unexpected"]
    if load.qps:
        argv += ["-Q", str(load.qps)]
    if load.edns:
        argv.append("-e")
    if load.verbose:
        argv.append("-v")
    return argv


def run(port: int, query_file: Path, load: Load) -> PerfResult:
    """Run dnsperf; the subprocess timeout covers the time limit, the reply timeout and start-up."""
    argv = command(port, query_file, load)
    out = subprocess.run(argv, capture_output=True, text=True, check=False,
                         timeout=load.duration + load.timeout + 30)
    if out.returncode != 0 or "Queries per second" not in out.stdout:
        raise RuntimeError(f"dnsperf failed ({out.returncode}): {' '.join(argv)}\n{out.stderr[-2000:]}")
    result = parse_summary(out.stdout)
    if load.verbose:
        result.latencies = parse_verbose(out.stdout)
    return result


_NUM = r"([0-9.]+)"


def _field(text: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}:\s+{_NUM}", text, re.MULTILINE)
    if not match:
        raise ValueError(f"dnsperf output has no {label!r}")
    return float(match.group(1))


def parse_summary(text: str) -> PerfResult:
    rcodes_line = re.search(r"^\s*Response codes:\s*(.*)$", text, re.MULTILINE)
    rcodes = {m.group(1): int(m.group(2))
              for m in re.finditer(r"([A-Z]+) (\d+) \(", rcodes_line.group(1) if rcodes_line else "")}
    return PerfResult(
        sent=int(_field(text, "Queries sent")),
        completed=int(_field(text, "Queries completed")),
        lost=int(_field(text, "Queries lost")),
        qps=_field(text, "Queries per second"),
        avg_s=_field(text, "Average Latency (s)"),
        stddev_s=_field(text, "Latency StdDev (s)") if "Latency StdDev" in text else math.nan,
        rcodes=rcodes,
    )


def parse_verbose(text: str) -> list[float]:
    """Sorted per-query latencies (seconds) of the answered queries in ``dnsperf -v`` output."""
    latencies = []
    for line in text.splitlines():
        parts = line.split()
        # "> RCODE name type seconds"; timeouts ("> T name type") are suppressed and counted as lost.
        if len(parts) == 5 and parts[0] == ">":
            latencies.append(float(parts[4]))
    latencies.sort()
    return latencies

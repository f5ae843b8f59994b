"""A/B on the zone path: this tree's mcsdns against another revision's, in one run, alternating.

For changes that must not cost the packet path (issue "Operate it ...": request histograms must keep
>= 0.97x of the throughput before them). Exports ``--base``'s ``mcsdns/`` with ``git archive`` into a
temporary directory and runs both servers side by side on the same data (gen.py's 1,000 services and
queries), pinned to the server core, with ``--http`` on (metrics as in production); dnsperf runs closed
loop on the client core, the two servers' rounds alternating in order so drift on the machine falls on
both. Prints each round and the median ratio new/base. Loopback only; every run is bounded in time.

    .venv/bin/python bench/ab_bench.py --base HEAD~1 [--rounds 6] [--duration 8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import forward_bench
import gen
import perf
from servers import Data, free_port, mcsdns_argv

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare with (e.g. HEAD~1)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    args = ap.parse_args()
    git = ["git", "-C", str(REPO)]
    revision = subprocess.run(
        [*git, "rev-parse", "--short", args.base], check=True, capture_output=True, text=True
    ).stdout.strip()
    data = gen.build(REPO / "bench" / "out" / "data-1000", 1000, 1, 100_000, ttl=5)
    zone = Data(data.zone, 5, data.manifests, data.zone_file)
    probe_service = next(s for s in data.services if not s.headless)
    probe = (probe_service.fqdn(data.zone), probe_service.vip or "")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        archive = subprocess.run(
            [*git, "archive", revision, "mcsdns"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        servers = {}
        for name, path in ((f"base {revision}", tmp), ("this tree", "")):
            os.environ["PYTHONPATH"] = path  # the exported tree shadows the installed package
            argv = lambda port, wd: [*mcsdns_argv(zone, port, wd), "--http", f"127.0.0.1:{free_port()}"]  # noqa: E731
            started = forward_bench.started(name, argv, args.server_cpu, probe, 60)
            servers[name], _ = stack.enter_context(started)
        os.environ.pop("PYTHONPATH", None)
        load = perf.Load(args.duration, 4, 100, cpu=args.client_cpu)
        qps: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(args.rounds):
            order = list(servers.items()) if round_ % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                result = perf.run(server.port, data.query_file, load)
                qps[name].append(result.qps)
                print(f"round {round_ + 1}: {name:<14} {result.qps:>10,.0f} q/s", flush=True)
    base, new = (statistics.median(values) for values in qps.values())
    print(f"median: base {revision} {base:,.0f} q/s, this tree {new:,.0f} q/s, ratio {new / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

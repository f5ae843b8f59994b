"""Memory and start-up time at 10,000 services.

Generates N services (default 10,000), starts each server on a free 127.0.0.1 port, and reports:

* ready s: seconds from exec to the first correct answer for a known name (the last generated
  ClusterSetIP service, so the whole set must have been loaded);
* RSS MiB: VmRSS from /proc/<pid>/status of the server's process group, read once it answers and again
  after it has answered every query of the sample once (NSD forks, so its figure is the sum of its
  processes; the Python servers are one process).

    .venv/bin/python bench/rss.py [--rss-services 10000] [--servers mcsdns,nsd,dnslib]
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import compare
import gen
from servers import Data, ServerError, mcsdns_runnable, serving

OUT = Path(__file__).resolve().parent / "out"


def measure(name: str, data: gen.Dataset, ttl: int, timeout: float, sample: int) -> str:
    probe_svc = next(s for s in reversed(data.services) if not s.headless)
    probe = (probe_svc.fqdn(data.zone), probe_svc.vip or "")
    files = Data(data.zone, ttl, data.manifests, data.zone_file)
    with serving(name, files, None, probe, timeout) as (server, ready_s):
        rss_ready = server.rss_bytes()
        # Touch a spread of names once so lazily built state (if any) is counted too.
        compare.collect(server.port, compare.sample(data.query_file, sample))
        rss_used = server.rss_bytes()
    return f"{name:<8} {ready_s:>8.2f} {rss_ready / 2**20:>14.1f} {rss_used / 2**20:>14.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rss-services", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ttl", type=int, default=gen.DEFAULT_TTL)
    ap.add_argument("--servers", default="mcsdns,nsd,dnslib")
    ap.add_argument("--sample", type=int, default=2000, help="queries asked once before the second RSS")
    ap.add_argument("--ready-timeout", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    # A plain SIGTERM would end Python without running `finally`, leaving a server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    data = gen.build(args.out / f"data-{args.rss_services}", args.rss_services, args.seed, 20_000,
                     ttl=args.ttl)
    n_records = len(gen.records(data.services, data.zone, args.ttl))
    print(f"{len(data.services):,} services, {n_records:,} records; no load, servers not pinned")
    print(f"{'server':<8} {'ready s':>8} {'RSS MiB ready':>14} {'RSS MiB used':>14}")
    status = 0
    for name in [n for n in args.servers.split(",") if n]:
        if name == "mcsdns" and (why := mcsdns_runnable()):
            print(f"mcsdns skipped: `python -m mcsdns serve --help` fails: {why}")
            status = 1
            continue
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            print(measure(name, data, args.ttl, args.ready_timeout, args.sample), flush=True)
        except ServerError as exc:
            print(f"{name} failed: {exc}")
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())

"""Watch connections and list requests of one all-in-one replica at start, at clusterset scale.

Seeds the Kubernetes API emulator with N ServiceImports and their EndpointSlices (3 clusters x 10 endpoints,
``k8s_bench.generate``), runs ``mcsdns serve --kubeconfig ... --cloudmap true`` against it and an embedded
Cloud Map (DNS, export and import in one process), and counts, from the requests the emulator receives,
the list pages and watches per resource until the replica answers and has been up for a few seconds.
Prints one line per resource and the totals. Loopback only; bounded by --timeout.

    .venv/bin/python bench/watch_bench.py [--services 10000] [--settle 5] [--timeout 300]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support, as pytest sees it

import dns.message
import dns.query
import k8s_bench

from tests.support import ApiRequests

try:
    from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
    from mcsdns_sandbox.kubeapi import KubeApiEmulator
except ImportError:  # the layout before the sandbox became a package of its own, to measure "before"
    from mcsdns.sandbox.cloudmap import EmbeddedCloudMap  # type: ignore[no-redef]
    from mcsdns.sandbox.kubeapi import KubeApiEmulator  # type: ignore[no-redef]

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to keep counting after the first answer")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    counter = ApiRequests()

    services = k8s_bench.generate(args.services, 1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedCloudMap() as cloudmap,
        KubeApiEmulator(cluster_name="cls1", cluster_id="cls1", clusterset_id="set1",
                        auto_create_namespaces=True) as api,
    ):
        for svc in services:
            for obj in k8s_bench.objects(svc):
                api.store.create(obj)
        kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
        stop = api.observe_requests(counter)
        port = k8s_bench.free_port()
        env = {**os.environ, **cloudmap.env()}
        argv = [sys.executable, "-m", "mcsdns", "serve", "--kubeconfig", str(kubeconfig), "--cloudmap", "true",
                "--listen", f"127.0.0.1:{port}", "--log-level", "warning", "--workers", "1"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            first = services[0]
            name = f"{first.name}.{first.namespace}.svc.clusterset.local."
            answered = None
            while time.monotonic() - started < args.timeout and proc.poll() is None:
                try:
                    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=1)
                    if reply.answer:
                        answered = time.monotonic() - started
                        break
                except (dns.exception.Timeout, OSError):
                    pass
                time.sleep(0.2)
            if answered is None:
                print(f"no answer within {args.timeout:.0f} s: {proc.stderr.read() if proc.stderr else ''}")
                return 1
            time.sleep(args.settle)
        finally:
            stop()
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.services} services, {sum(1 for _ in api.store.list('endpointslices'))} slices; "
          f"first answer after {answered:.1f} s, counted until {args.settle:.0f} s later")
    watches, lists, pages = (collections.Counter(c) for c in counter.snapshot())
    print(f"{'resource':<20} {'watches':>8} {'lists':>6} {'list pages':>11}")
    for resource in sorted(watches.keys() | pages.keys()):
        print(f"{resource:<20} {watches[resource]:>8} {lists[resource]:>6} {pages[resource]:>11}")
    print(f"{'total':<20} {sum(watches.values()):>8} {sum(lists.values()):>6} {sum(pages.values()):>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

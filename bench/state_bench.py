"""Start to first answer from the state file (``--state-dir``), with the Kubernetes API unreachable.

Builds a zone of ``--services`` services (bench/hotpath.py's mix: 4 in 5 ClusterSetIP, 1 in 5 headless
with 6 endpoints), saves it as mcsdns does, then starts ``mcsdns serve --kubeconfig K --state-dir D`` with
K pointing at a closed loopback port, and times the first NOERROR answer over UDP. Also prints the file's
size and the in-process cost of encoding and decoding it. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

import hotpath
from mcsdns.settings import ZoneSettings
from mcsdns.statefile import StateFile
from mcsdns.zone import codec

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_answer(workdir: Path, timeout: float) -> float:
    port, closed = free_port(), free_port()
    (workdir / "kubeconfig").write_text(KUBECONFIG.format(port=closed))
    argv = [sys.executable, "-m", "mcsdns", "serve", "--kubeconfig", str(workdir / "kubeconfig"),
            "--state-dir", str(workdir), "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    query = dns.message.make_query("svc1.ns1.svc.clusterset.local", "A")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < timeout:
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.05)
                if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                    return time.monotonic() - started
            except (dns.exception.Timeout, OSError):
                pass
        raise RuntimeError(f"no answer within {timeout}s")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    snapshot = hotpath.build(args.services).current
    assert snapshot is not None
    t0 = time.perf_counter()
    data = codec.encode_full(snapshot, saved_at=time.time())
    t1 = time.perf_counter()
    codec.snapshot_from(codec.decode(data))
    t2 = time.perf_counter()
    print(f"zone: {args.services:,} services, {len(snapshot.answers):,} answers, {len(snapshot.names):,} names")
    print(f"state file: {len(data) / 1e6:.1f} MB; encode {1e3 * (t1 - t0):.0f} ms, decode {1e3 * (t2 - t1):.0f} ms")
    times = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
            StateFile(tmp, ZoneSettings().wire, 3600).write(snapshot)
            times.append(first_answer(Path(tmp), args.timeout))
    print(f"start to first answer from the state file, API unreachable: median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); target < 1 s: "
          f"{'PASS' if statistics.median(times) < 1 else 'FAIL'}")


if __name__ == "__main__":
    main()

"""``python -m mcsdns_sandbox.kubeapi``: run the emulator until SIGINT or SIGTERM.

Prints the URL on the first line of stdout (then flushes, so a parent process can read it), optionally writes
a kubeconfig and loads YAML manifests. Only the command-line shell around ``KubeApiEmulator``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .emulator import KubeApiEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcsdns_sandbox.kubeapi", description="Emulated Kubernetes API server on loopback."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the emulator to this file")
    parser.add_argument("--context", default="emulator", help="cluster/context name in the kubeconfig")
    parser.add_argument(
        "--service-cidr",
        default="10.96.0.0/16",
        help="ClusterIP range; two comma-separated ranges make it dual-stack",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=100_000,
        help="events kept for watches; older resourceVersions answer 410 Gone",
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds between watch bookmarks"
    )
    parser.add_argument(
        "--cluster-id", help="create ClusterProperty cluster.clusterset.k8s.io with this value"
    )
    parser.add_argument("--clusterset-id", help="create ClusterProperty clusterset.k8s.io with this value")
    parser.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        help="YAML/JSON manifest file or folder to create at start (repeatable)",
    )
    parser.add_argument(
        "--auto-create-namespaces",
        action="store_true",
        help="create missing namespaces on first use instead of answering 404",
    )
    parser.add_argument("--seed", type=int, help="make names, UIDs and ClusterIPs reproducible")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = KubeApiEmulator(
        host=args.host,
        port=args.port,
        service_cidr=args.service_cidr,
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        auto_create_namespaces=args.auto_create_namespaces,
        cluster_name=args.context,
        cluster_id=args.cluster_id,
        clusterset_id=args.clusterset_id,
        seed=args.seed,
    )
    with emulator:
        for source in args.load:
            emulator.store.load_yaml(source)
        if args.kubeconfig:
            emulator.write_kubeconfig(args.kubeconfig)
        print(emulator.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

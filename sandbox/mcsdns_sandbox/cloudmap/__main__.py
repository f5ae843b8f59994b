"""``python -m mcsdns_sandbox.cloudmap``: run an embedded Cloud Map until SIGINT or SIGTERM.

Prints the endpoint URL on the first line, then one ``KEY=value`` line per environment variable a client
process needs (``set -a; . file`` loads them), then ``ready``. Faults are driven over HTTP at
``<endpoint>/_mcsdns/...`` (see ``mcsdns_sandbox.cloudmap.wsgi``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .server import DEFAULT_REGION, EmbeddedCloudMap


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcsdns_sandbox.cloudmap", description="Run an embedded AWS Cloud Map."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument(
        "--region", default=DEFAULT_REGION, help=f"region to advertise (default {DEFAULT_REGION})"
    )
    parser.add_argument("--account-id", default=None, help="12-digit account id (default: random)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--enforce-quotas",
        action="store_true",
        help='throttle as AWS does, per account (also: POST /_mcsdns/quotas {"enabled": true})',
    )
    parser.add_argument(
        "--quota-scale",
        type=float,
        default=1.0,
        help="multiply every quota rate and burst, e.g. 0.01 (default 1)",
    )
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cloudmap = EmbeddedCloudMap(
            host=args.host,
            port=args.port,
            region=args.region,
            account_id=args.account_id,
            verbose=args.verbose,
            enforce_quotas=args.enforce_quotas,
            quota_scale=args.quota_scale,
        )
        cloudmap.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with cloudmap:
        print(cloudmap.endpoint_url)
        for key, value in cloudmap.env().items():
            print(f"{key}={value}")
        print("ready", flush=True)
        # Event.wait with a timeout in a loop: a bare wait() can miss signals on some platforms.
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

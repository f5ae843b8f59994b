"""EmbeddedCloudMap: the Cloud Map API answered from moto's servicediscovery state, served over HTTP on
loopback in a background thread, plus fault hooks and an outage switch. Composes ``motoapi`` (behaviour, and
the only import of moto), ``faults`` (what fails next) and ``wsgi`` (the request path).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server

from . import motoapi
from .faults import Faults
from .wsgi import CloudMapWsgi

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-west-2"
# Fake, but shaped like real keys: botocore signs every request and moto does not check signatures.
FAKE_ACCESS_KEY_ID = "AKIAMCSDNSSANDBOX000"
FAKE_SECRET_ACCESS_KEY = "mcsdns-sandbox-not-a-secret"


class _QuietHandler(motoapi.RequestHandler):
    """moto's request handler without the access log line werkzeug writes to stderr for every request."""

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            super().log(type, message, *args)


class EmbeddedCloudMap:
    """An AWS Cloud Map (servicediscovery) endpoint on ``http://127.0.0.1:<port>``.

    Ready to take requests when ``start()`` (or ``__enter__``) returns: the socket is bound and listening
    before the serving thread starts, so nothing has to wait or poll. Each instance has its own moto account
    (``account_id``), so two emulators in one process never see each other's namespaces; ``close()`` wipes it.

        with EmbeddedCloudMap() as cloudmap:
            client = boto3.client("servicediscovery", endpoint_url=cloudmap.endpoint_url,
                                  region_name=cloudmap.region, ...)   # see env() for the full set
            cloudmap.throttle_next(2, operations=["ListNamespaces"])

    ``stop()``/``start()`` take the endpoint down and up again on the same port (connections are refused in
    between) while keeping every namespace, service and instance.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        account_id: str | None = None,
        seed: int | None = None,
        verbose: bool = False,
    ) -> None:
        motoapi.check_moto()
        if seed is not None:
            motoapi.seed(seed)
        self.host = host
        self.region = region
        self.account_id = account_id or f"{secrets.randbelow(10**12):012d}"
        self.faults = Faults()
        self._port = port
        self._verbose = verbose
        self._state_lock = threading.Lock()
        self._lifecycle_lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._app = CloudMapWsgi(
            motoapi.moto_app(),
            faults=self.faults,
            account_id=self.account_id,
            region=self.region,
            state_lock=self._state_lock,
            reset=self.reset,
            outage=self.outage,
        )

    # --- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Listen (again). The first start fixes the port; later starts reuse it."""
        with self._lifecycle_lock:
            if self._closed.is_set():
                raise RuntimeError("this EmbeddedCloudMap is closed")
            if self._server is not None:
                return
            # Bind here rather than in werkzeug: on a busy port werkzeug prints and calls sys.exit(1), where a
            # library should raise OSError. socket.create_server sets SO_REUSEADDR, so a restart can rebind
            # the port straight away; werkzeug serves a duplicate of this socket, so ours is closed after.
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            with socket.create_server((self.host, self._port), family=family, backlog=128) as listener:
                server = make_server(
                    self.host,
                    self._port,
                    self._app,
                    threaded=True,
                    request_handler=motoapi.RequestHandler if self._verbose else _QuietHandler,
                    fd=listener.fileno(),
                )
            self._port = server.port
            # A short poll interval makes stop() (and so an outage) take effect within ~50 ms.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"cloudmap-{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop listening; new connections are refused until start(). State is kept."""
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join()

    def outage(self, seconds: float) -> threading.Thread:
        """Stop now and start again after ``seconds`` in the background; returns that thread."""
        self.stop()

        def restart() -> None:
            if self._closed.wait(seconds):
                return
            try:
                self.start()
            except RuntimeError:
                pass  # closed in the meantime: staying down is right
            except OSError as exc:  # the port was taken meanwhile; no caller to raise to from this thread
                log.error("cloud map emulator cannot listen again on %s:%s: %s", self.host, self._port, exc)

        thread = threading.Thread(target=restart, name=f"cloudmap-outage-{self._port}", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop for good and forget this emulator's account."""
        self._closed.set()
        self.stop()
        self.reset()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def internal_error(self) -> str | None:
        """The first API call this emulator failed on by a bug of its own or moto's (it answered 500)."""
        return self._app.internal_error

    # --- addresses ------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("not started yet: the port is chosen on the first start()")
        return self._port

    @property
    def endpoint_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a boto3/botocore client in another process needs in its environment to use this endpoint.

        AWS_DISABLE_HOST_PREFIX_INJECTION: DiscoverInstances and DiscoverInstancesRevision are modeled with
        the host prefix ``data-``, so botocore would send them to ``data-127.0.0.1``; the variable turns the
        prefix off (in-process: ``botocore.config.Config(inject_host_prefix=False)``).
        """
        return {
            "AWS_ENDPOINT_URL_SERVICEDISCOVERY": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        }

    # --- state ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every namespace, service, instance and operation of this emulator's account."""
        with self._state_lock:
            motoapi.forget_account(self.account_id)

    # --- faults ---------------------------------------------------------------------------------------------
    def throttle_next(self, n: int, operations: Iterable[str] | None = None, code: str | None = None) -> None:
        """Throttle the next ``n`` matching calls. See :meth:`Faults.throttle_next` for the error codes."""
        self.faults.throttle_next(n, operations, code)

    def fail_next(
        self, n: int, status: int = 500, operations: Iterable[str] | None = None, code: str | None = None
    ) -> None:
        """Answer the next ``n`` matching calls with HTTP ``status``."""
        self.faults.fail_next(n, status, operations, code)

    def clear_faults(self) -> None:
        self.faults.clear()

    def calls(self) -> dict[str, int]:
        """API calls per operation (e.g. ``{"DiscoverInstances": 4}``), counting failed attempts too."""
        return self.faults.calls()

    def reset_calls(self) -> None:
        self.faults.reset_calls()

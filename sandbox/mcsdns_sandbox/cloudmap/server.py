"""EmbeddedCloudMap: the Cloud Map API answered from moto's servicediscovery state, served over HTTP on
loopback in a background thread, plus fault hooks and an outage switch. Composes ``motoapi`` (behaviour, and
the only import of moto), ``faults`` (what fails next), ``quotas`` (token buckets), ``accounts`` (who calls),
``locks`` (reads together, writes alone) and ``wsgi`` (the request path).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server

from . import motoapi
from .accounts import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, Accounts, check_account_id, new_account_id
from .faults import Faults, Hold
from .locks import RWLock
from .quotas import QuotaLimit, Quotas, ThrottledCounter
from .wsgi import CloudMapWsgi

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_REGION", "FAKE_ACCESS_KEY_ID", "FAKE_SECRET_ACCESS_KEY", "EmbeddedCloudMap"]

DEFAULT_REGION = "us-west-2"


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

    Scale features (all off or neutral by default, so existing users see no change):

    - Concurrency: reads (Discover*, List*, Get*) are answered together, writes alone (``locks.RWLock``);
      :meth:`hold_next` and :meth:`delay_next` keep calls inside the lock, to test what waits for what.
    - Quotas: ``enforce_quotas=True`` throttles as AWS does, with token buckets per account shared by every
      client (``quotas.DEFAULT_LIMITS``: DiscoverInstances 1,000/s burst 2,000 and RequestLimitExceeded as
      documented; the rest partly assumed, see ``quotas``). ``quota_scale`` multiplies every rate and burst
      (0.01: DiscoverInstances 10/s burst 20); ``quota_limits`` overrides buckets; ``quota_clock`` (integer
      nanoseconds) replaces the monotonic clock. :meth:`set_quotas` changes them later,
      :meth:`throttled` counts the calls answered with throttling.
    - Operations: every one is kept for GetOperation/ListOperations unless ``operation_retention`` (seconds)
      is given; then older ones are forgotten, oldest first.
    - Accounts: :meth:`add_account` adds an account, told apart by the access key of :meth:`env` for it;
      :meth:`share_namespace` shares a namespace with another account as AWS RAM does. moto keeps state per
      account id for the whole process, so two emulators in one process must not use the same account id
      (the default ids are random).
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
        enforce_quotas: bool = False,
        quota_scale: float = 1.0,
        quota_limits: Mapping[str, QuotaLimit] | None = None,
        quota_clock: Callable[[], int] | None = None,
        operation_retention: float | None = None,
    ) -> None:
        motoapi.check_moto()
        if seed is not None:
            motoapi.seed(seed)
        self.host = host
        self.region = region
        self.account_id = check_account_id(account_id) if account_id else new_account_id()
        self.faults = Faults()
        quota_args: dict[str, Any] = {} if quota_clock is None else {"clock": quota_clock}
        self.quotas = Quotas(enabled=enforce_quotas, scale=quota_scale, limits=quota_limits, **quota_args)
        self._throttled = ThrottledCounter()
        self._accounts = Accounts(self.account_id)
        self._tenancy = motoapi.Tenancy(region, operation_retention)
        self._port = port
        self._verbose = verbose
        self._state_lock = RWLock()
        with self._state_lock.write():
            self._tenancy.add_account(self.account_id)
        self._lifecycle_lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._app = CloudMapWsgi(
            motoapi.moto_app(),
            faults=self.faults,
            accounts=self._accounts,
            tenancy=self._tenancy,
            quotas=self.quotas,
            throttled=self._throttled,
            region=self.region,
            state_lock=self._state_lock,
            reset=self.reset,
            outage=self.outage,
            add_account=self.add_account,
            env=self.env,
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
        """Stop for good and forget this emulator's accounts."""
        self._closed.set()
        self.faults.clear()  # a call still held would keep the state lock, and reset() waits for it
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

    def env(self, account_id: str | None = None) -> dict[str, str]:
        """What a boto3/botocore client in another process needs in its environment to use this endpoint, as
        ``account_id`` (default: the first account, :attr:`account_id`).

        AWS_DISABLE_HOST_PREFIX_INJECTION: DiscoverInstances and DiscoverInstancesRevision are modeled with
        the host prefix ``data-``, so botocore would send them to ``data-127.0.0.1``; the variable turns the
        prefix off (in-process: ``botocore.config.Config(inject_host_prefix=False)``).
        """
        return {
            "AWS_ENDPOINT_URL_SERVICEDISCOVERY": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self._accounts.access_key(account_id or self.account_id),
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        }

    # --- accounts -------------------------------------------------------------------------------------------
    @property
    def accounts(self) -> list[str]:
        """This emulator's account ids, the first (:attr:`account_id`) first."""
        return self._accounts.ids()

    def add_account(self, account_id: str | None = None) -> str:
        """Serve another account (12 digits; random when None) and return its id. Its clients sign with the
        access key of ``env(account_id)``; any key the emulator did not hand out is the first account's."""
        account_id = check_account_id(account_id) if account_id else new_account_id()
        with self._state_lock.write():
            self._accounts.add(account_id)
            self._tenancy.add_account(account_id)
        return account_id

    def share_namespace(self, namespace_id: str, with_account: str, owner_account: str | None = None) -> str:
        """Share a namespace with another account of this emulator, as an AWS RAM resource share does, and
        return its ARN. ``namespace_id`` is an ID of ``owner_account`` (default: the first account) or an
        ARN. The consumer then sees it in ListNamespaces (ResourceOwner: the owner), creates services in it by
        its ARN, registers instances by service ARN and discovers with OwnerAccount."""
        with self._state_lock.write():
            return self._tenancy.share(namespace_id, with_account, owner_account)

    def unshare_namespace(self, namespace_arn: str, with_account: str) -> None:
        """Stop sharing; what the consumer created in the namespace stays (with the namespace)."""
        with self._state_lock.write():
            self._tenancy.unshare(namespace_arn, with_account)

    # --- state ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every namespace, service, instance, operation and share of this emulator's accounts."""
        with self._state_lock.write():
            self._tenancy.forget()

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

    def delay_next(self, n: int, seconds: float, operations: Iterable[str] | None = None) -> None:
        """Make the next ``n`` matching calls ``seconds`` slower, inside the state lock."""
        self.faults.delay_next(n, seconds, operations)

    def hold_next(self, n: int = 1, operations: Iterable[str] | None = None, timeout: float = 30.0) -> Hold:
        """Hold the next ``n`` matching calls inside the state lock until ``.release()`` on the result."""
        return self.faults.hold_next(n, operations, timeout)

    def calls(self) -> dict[str, int]:
        """API calls per operation (e.g. ``{"DiscoverInstances": 4}``), counting failed attempts too."""
        return self.faults.calls()

    def throttled(self) -> dict[str, int]:
        """Calls per operation answered with a throttling error, by a quota or an injected fault."""
        return self._throttled.counts()

    def reset_calls(self) -> None:
        """Zero the call and throttled counters."""
        self.faults.reset_calls()
        self._throttled.reset()

    # --- quotas ---------------------------------------------------------------------------------------------
    def set_quotas(
        self,
        enabled: bool | None = None,
        *,
        scale: float | None = None,
        limits: Mapping[str, QuotaLimit] | None = None,
    ) -> None:
        """Turn quota enforcement on or off, rescale it or override buckets (None keeps a setting); every
        bucket starts full again."""
        self.quotas.configure(enabled=enabled, scale=scale, limits=limits)

"""The WSGI layer in front of moto's servicediscovery state: tells which account a request is from (its
access key id, see ``accounts``), counts and fails API calls, charges quotas, answers the operations
``motoapi`` implements (every one mcsdns calls), passes any other to moto's own app, guards moto's state
with a readers-writer lock, and serves the admin paths under ``/_mcsdns/``.

Per API call, in order: count it; an injected fault answers it if one is queued; a quota throttles it if its
account's bucket is empty (both counted as throttled when they throttle); then the state lock, shared for
reads (``motoapi.READ_OPERATIONS``: Discover*, List*, Get*), exclusive for everything else (writes, and
operations passed to moto, whose handlers we do not know to be read-only); a queued pause runs inside it.

Admin paths (JSON in and out), so that a separate process can drive the emulator:

    GET  /_mcsdns/health                         {"ok": true}
    GET  /_mcsdns/calls                          {"DiscoverInstances": 3, ...}
    GET  /_mcsdns/throttled                      {"DiscoverInstances": 2, ...} calls answered with throttling
    POST /_mcsdns/calls/reset                    zero both counters
    POST /_mcsdns/throttle   {"n": 2, "operations": ["ListNamespaces"], "code": "ThrottlingException"}
    POST /_mcsdns/fail       {"n": 1, "status": 503, "operations": null}
    POST /_mcsdns/delay      {"n": 1, "seconds": 0.5, "operations": null}   slow calls, inside the state lock
    POST /_mcsdns/faults/clear
    POST /_mcsdns/outage     {"seconds": 1.5}    stop listening now, listen again on the same port later
    POST /_mcsdns/reset                          forget every namespace, service and instance
    GET  /_mcsdns/quotas                         {"enabled": ..., "scale": ..., "limits": ..., "tokens": ...}
    POST /_mcsdns/quotas     {"enabled": true, "scale": 0.01, "limits": {"DiscoverInstances": {"rate": 5}}}
    GET  /_mcsdns/accounts                       {"accounts": ["111122223333", ...]} (the first is env()'s)
    POST /_mcsdns/accounts   {"account_id": "222233334444"}  (omit for a random one) -> {"account_id", "env"}
    POST /_mcsdns/share      {"namespace_id": "<id or ARN>", "with_account": "...", "owner_account": null}
    POST /_mcsdns/unshare    {"namespace_arn": "...", "with_account": "..."}
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import motoapi
from .accounts import Accounts
from .faults import ErrorReply, Faults, server_error_reply
from .locks import RWLock
from .quotas import Quotas, ThrottledCounter, limits_from_json

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_mcsdns/"
_JSON = "application/x-amz-json-1.1"


class CloudMapWsgi:
    """The embedded Cloud Map's WSGI application."""

    def __init__(
        self,
        backend: WSGIApplication,
        *,
        faults: Faults,
        accounts: Accounts,
        tenancy: motoapi.Tenancy,
        quotas: Quotas,
        throttled: ThrottledCounter,
        region: str,
        state_lock: RWLock,
        reset: Callable[[], None],
        outage: Callable[[float], object],
        add_account: Callable[[str | None], str],
        env: Callable[[str], dict[str, str]],
    ) -> None:
        self._backend = backend
        self._faults = faults
        self._accounts = accounts
        self._tenancy = tenancy
        self._quotas = quotas
        self._throttled = throttled
        self._region = region
        self._state_lock = state_lock
        self._reset = reset
        self._outage = outage
        self._add_account = add_account
        self._env = env
        self.internal_error: str | None = None
        """The first API call that failed by a bug in this emulator or in moto (answered 500
        InternalFailure), as ``"<operation>: <exception>"``; None while there is none."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(ADMIN_PREFIX):
            return self._admin(path[len(ADMIN_PREFIX) :].strip("/"), environ, start_response)
        # "X-Amz-Target: Route53AutoNaming_v20170314.DiscoverInstances" names the operation (awsJson1.1).
        operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2] or "Unknown"
        account = self._accounts.of_request(str(environ.get("HTTP_AUTHORIZATION", "")))
        # The quota is charged to the caller's account, also for calls on a namespace another account shared
        # with it: AWS counts requests per calling account ("throttles DiscoverInstances API requests for each
        # AWS account on a per-Region basis").
        reply = self._faults.take(operation) or self._quotas.take(account, operation)
        if reply is not None:
            return self._reply(operation, reply, start_response)
        try:
            if motoapi.handles(operation):
                return self._answer(operation, account, environ, start_response)
            # moto keeps state per account; this header (moto's documented override) picks the caller's.
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = account
            return self._call_moto(operation, environ, start_response)
        except Exception as exc:  # a bug here or in moto: answer as the service would, and remember it
            log.exception("the embedded Cloud Map failed on %s", operation)
            if self.internal_error is None:
                self.internal_error = f"{operation}: {exc.__class__.__name__}: {exc}"
            reply = server_error_reply(500)
            start_response(reply.status_line, list(reply.headers))
            return [reply.body]

    def _reply(self, operation: str, reply: ErrorReply, start_response: StartResponse) -> list[bytes]:
        if reply.throttle:
            self._throttled.add(operation)
        start_response(reply.status_line, list(reply.headers))
        return [reply.body]

    def _answer(
        self, operation: str, account: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> list[bytes]:
        body = Request(environ).get_data()
        call = motoapi.Call(account, self._region, self._tenancy)
        pause = self._faults.pause(operation)
        side = self._state_lock.read if operation in motoapi.READ_OPERATIONS else self._state_lock.write
        with side():
            if pause is not None:
                pause()
            result = motoapi.answer(operation, call, body)
        if isinstance(result, bytes):
            start_response(
                "200 OK",
                [
                    ("Content-Type", _JSON),
                    ("x-amzn-RequestId", str(uuid.uuid4())),
                    ("Content-Length", str(len(result))),
                ],
            )
            return [result]
        start_response(result.status_line, list(result.headers))
        return [result.body]

    def _call_moto(
        self, operation: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> list[bytes]:
        def json_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("5") and self.internal_error is None:  # moto's app caught its own bug
                self.internal_error = f"{operation}: moto answered {status}"
            # moto labels its JSON "text/html"; the service sends the awsJson 1.1 media type.
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"] + [("Content-Type", _JSON)]
            return start_response(status, headers, exc_info)

        # moto's models are not thread-safe and the server answers in one thread per request. What moto's own
        # handlers change is not ours to know, so they run alone, each call atomic.
        pause = self._faults.pause(operation)
        with self._state_lock.write():
            if pause is not None:
                pause()
            result = self._backend(environ, json_start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    def _admin(self, action: str, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            # Any content type: curl and urllib send form types by default.
            raw = request.get_data() if request.method == "POST" else b""
            args = json.loads(raw) if raw.strip() else {}
            if not isinstance(args, dict):
                raise TypeError("the body must be a JSON object")
            status, payload = self._dispatch_admin(request.method, action, args)
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = 400, {"error": str(exc)}
        response = Response(json.dumps(payload), status=status, mimetype="application/json")
        return response(environ, start_response)

    def _dispatch_admin(self, method: str, action: str, args: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET" and action == "health":
            return 200, {"ok": True}
        if method == "GET" and action == "calls":
            return 200, self._faults.calls()
        if method == "GET" and action == "throttled":
            return 200, self._throttled.counts()
        if method == "GET" and action == "quotas":
            return 200, self._quotas.snapshot()
        if method == "GET" and action == "accounts":
            return 200, {"accounts": self._accounts.ids()}
        if method != "POST":
            return 404, {"error": f"no admin action {method} {action}"}
        if action == "calls/reset":
            self._faults.reset_calls()
            self._throttled.reset()
        elif action == "delay":
            self._faults.delay_next(
                int(args.get("n", 1)), float(args.get("seconds", 0.1)), args.get("operations")
            )
        elif action == "quotas":
            enabled = args.get("enabled")
            scale = args.get("scale")
            self._quotas.configure(
                enabled=None if enabled is None else bool(enabled),
                scale=None if scale is None else float(scale),
                limits=limits_from_json(args.get("limits")),
            )
            return 200, self._quotas.snapshot()
        elif action == "accounts":
            account_id = self._add_account(args.get("account_id"))
            return 200, {"account_id": account_id, "env": self._env(account_id)}
        elif action == "share":
            with self._state_lock.write():
                arn = self._tenancy.share(
                    str(args["namespace_id"]), str(args["with_account"]), args.get("owner_account")
                )
            return 200, {"ok": True, "namespace_arn": arn}
        elif action == "unshare":
            with self._state_lock.write():
                self._tenancy.unshare(str(args["namespace_arn"]), str(args["with_account"]))
        elif action == "throttle":
            self._faults.throttle_next(int(args.get("n", 1)), args.get("operations"), args.get("code"))
        elif action == "fail":
            self._faults.fail_next(
                int(args.get("n", 1)), int(args.get("status", 500)), args.get("operations"), args.get("code")
            )
        elif action == "faults/clear":
            self._faults.clear()
        elif action == "outage":
            seconds = float(args.get("seconds", 1.0))
            if not 0 <= seconds <= 3600:
                raise ValueError("seconds must be between 0 and 3600")
            self._outage(seconds)
            return 202, {"ok": True, "seconds": seconds}
        elif action == "reset":
            self._reset()
        else:
            return 404, {"error": f"no admin action POST {action}"}
        return 200, {"ok": True}

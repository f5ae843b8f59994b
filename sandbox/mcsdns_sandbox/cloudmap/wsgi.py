"""The WSGI layer in front of moto's servicediscovery state: counts and fails API calls, answers the
operations ``motoapi`` implements (every one mcsdns calls) for the emulator's own account, passes any other to
moto's own app, serialises access to moto's state, and serves the admin paths under ``/_mcsdns/``.

Admin paths (JSON in and out), so that a separate process can drive the faults:

    GET  /_mcsdns/health                         {"ok": true}
    GET  /_mcsdns/calls                          {"DiscoverInstances": 3, ...}
    POST /_mcsdns/calls/reset
    POST /_mcsdns/throttle   {"n": 2, "operations": ["ListNamespaces"], "code": "ThrottlingException"}
    POST /_mcsdns/fail       {"n": 1, "status": 503, "operations": null}
    POST /_mcsdns/faults/clear
    POST /_mcsdns/outage     {"seconds": 1.5}    stop listening now, listen again on the same port later
    POST /_mcsdns/reset                          forget every namespace, service and instance
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import motoapi
from .faults import Faults, server_error_reply

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
        account_id: str,
        region: str,
        state_lock: threading.Lock,
        reset: Callable[[], None],
        outage: Callable[[float], object],
    ) -> None:
        self._backend = backend
        self._faults = faults
        self._account_id = account_id
        self._region = region
        self._state_lock = state_lock
        self._reset = reset
        self._outage = outage
        self.internal_error: str | None = None
        """The first API call that failed by a bug in this emulator or in moto (answered 500
        InternalFailure), as ``"<operation>: <exception>"``; None while there is none."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(ADMIN_PREFIX):
            return self._admin(path[len(ADMIN_PREFIX) :].strip("/"), environ, start_response)
        # "X-Amz-Target: Route53AutoNaming_v20170314.DiscoverInstances" names the operation (awsJson1.1).
        operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2] or "Unknown"
        reply = self._faults.take(operation)
        if reply is not None:
            start_response(reply.status_line, list(reply.headers))
            return [reply.body]
        try:
            if motoapi.handles(operation):
                return self._answer(operation, environ, start_response)
            # moto keeps state per account; this header (moto's documented override) gives each emulator its
            # own.
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = self._account_id
            return self._call_moto(operation, environ, start_response)
        except Exception as exc:  # a bug here or in moto: answer as the service would, and remember it
            log.exception("the embedded Cloud Map failed on %s", operation)
            if self.internal_error is None:
                self.internal_error = f"{operation}: {exc.__class__.__name__}: {exc}"
            reply = server_error_reply(500)
            start_response(reply.status_line, list(reply.headers))
            return [reply.body]

    def _answer(self, operation: str, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = Request(environ).get_data()
        with self._state_lock:
            result = motoapi.answer(operation, self._account_id, self._region, body)
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

        # moto's models are not thread-safe and the server answers in one thread per request: one at a time
        # also makes every call atomic, as the real API's single-item writes are.
        with self._state_lock:
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
        except (ValueError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
        response = Response(json.dumps(payload), status=status, mimetype="application/json")
        return response(environ, start_response)

    def _dispatch_admin(self, method: str, action: str, args: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET" and action == "health":
            return 200, {"ok": True}
        if method == "GET" and action == "calls":
            return 200, self._faults.calls()
        if method != "POST":
            return 404, {"error": f"no admin action {method} {action}"}
        if action == "calls/reset":
            self._faults.reset_calls()
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

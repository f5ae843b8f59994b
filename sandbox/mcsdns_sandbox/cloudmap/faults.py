"""Fault injection and call counting for the embedded Cloud Map: which calls fail next, and how each failure
looks on the wire.

Pure standard library and thread-safe (the HTTP server answers each request in its own thread). The
middleware in ``wsgi`` asks :meth:`Faults.take` once per API call; a returned :class:`ErrorReply` is sent
instead of letting moto answer. Failures are shaped like the real service's so botocore classifies them as
it would in production (throttling vs. server error), which is what retry and backoff code is tested against.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

# The data-plane operations. Their documented throttling error is RequestLimitExceeded with HTTP 429
# (botocore's service-2.json: DiscoverInstances and DiscoverInstancesRevision list RequestLimitExceeded,
# "httpStatusCode": 429; Developer Guide, "Cloud Map API request throttling": "If you exceed an API throttling
# quota, you get the RequestLimitExceeded error code."). Every other operation is throttled with the common
# AWS error ThrottlingException, HTTP 400, "Rate exceeded".
DATA_PLANE_OPERATIONS = frozenset({"DiscoverInstances", "DiscoverInstancesRevision"})

THROTTLING_EXCEPTION = "ThrottlingException"
REQUEST_LIMIT_EXCEEDED = "RequestLimitExceeded"
THROTTLE_CODES = (THROTTLING_EXCEPTION, REQUEST_LIMIT_EXCEEDED)

# Coral (the framework behind Cloud Map's JSON API) qualifies common errors with their namespace in both the
# body and the X-Amzn-ErrorType header; botocore keeps only the part after '#' / before ':'.
_CORAL_AVAILABILITY = "com.amazon.coral.availability"
_CORAL_SERVICE = "com.amazon.coral.service"

_JSON = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class ErrorReply:
    """One HTTP error response, ready for a WSGI ``start_response``."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    throttle: bool = False  # a throttling error (counted by the emulator's throttled-calls counter)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def throttling_reply(code: str) -> ErrorReply:
    """The throttling response AWS sends for ``code`` (ThrottlingException or RequestLimitExceeded)."""
    if code == REQUEST_LIMIT_EXCEEDED:
        # A modeled Cloud Map error: plain __type, member "Message" (capital M, as in the model).
        reply = json_reply(429, REQUEST_LIMIT_EXCEEDED, {"__type": code, "Message": "Rate exceeded"})
        return dataclasses.replace(reply, throttle=True)
    if code == THROTTLING_EXCEPTION:
        reply = json_reply(
            400,
            f"{code}:http://internal.amazon.com/coral/{_CORAL_AVAILABILITY}/",
            {"__type": f"{_CORAL_AVAILABILITY}#{code}", "message": "Rate exceeded"},
        )
        return dataclasses.replace(reply, throttle=True)
    raise ValueError(f"not a throttling code: {code!r} (use one of {THROTTLE_CODES})")


def server_error_reply(status: int, code: str | None = None) -> ErrorReply:
    """A server-side failure with HTTP ``status``.

    500 and 503 come from the service itself as JSON (InternalFailure / ServiceUnavailable); any other status
    is answered the way a load balancer in front of it would, with a non-JSON body, so botocore falls back to
    the status code as the error code.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status, not {status}")
    if code is None and status in (500, 503):
        code = "InternalFailure" if status == 500 else "ServiceUnavailable"
    if code is None:
        phrase = HTTPStatus(status).phrase
        return ErrorReply(
            status,
            (("Content-Type", "text/plain"), ("x-amzn-RequestId", str(uuid.uuid4()))),
            f"{status} {phrase}".encode(),
        )
    return json_reply(
        status,
        f"{code}:http://internal.amazon.com/coral/{_CORAL_SERVICE}/",
        {
            "__type": f"{_CORAL_SERVICE}#{code}",
            "message": "We encountered an internal error. Please try again.",
        },
    )


def json_reply(status: int, error_type_header: str, body: dict[str, str]) -> ErrorReply:
    return ErrorReply(
        status,
        (
            ("Content-Type", _JSON),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("X-Amzn-ErrorType", error_type_header),
        ),
        json.dumps(body).encode(),
    )


@dataclass
class _Rule:
    remaining: int
    operations: frozenset[str] | None  # None: every operation
    throttle_code: str | None  # throttle rules: None picks the documented code per operation
    status: int | None  # server-error rules: the HTTP status
    error_code: str | None

    def matches(self, operation: str) -> bool:
        return self.remaining > 0 and (self.operations is None or operation in self.operations)

    def reply(self, operation: str) -> ErrorReply:
        if self.status is not None:
            return server_error_reply(self.status, self.error_code)
        code = self.throttle_code
        if code is None:
            code = REQUEST_LIMIT_EXCEEDED if operation in DATA_PLANE_OPERATIONS else THROTTLING_EXCEPTION
        return throttling_reply(code)


class Hold:
    """A call held inside the state lock until :meth:`release` (or ``timeout`` seconds, so a forgotten hold
    cannot hang the emulator). ``entered`` is set once a held call is inside the lock."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.entered = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait_entered(self, timeout: float = 5.0) -> bool:
        return self.entered.wait(timeout)

    def _pause(self) -> None:
        self.entered.set()
        self._released.wait(self.timeout)


@dataclass
class _Pause:
    remaining: int
    operations: frozenset[str] | None
    pause: Callable[[], None]

    def matches(self, operation: str) -> bool:
        return self.remaining > 0 and (self.operations is None or operation in self.operations)


class Faults:
    """Queued failures plus a per-operation call counter.

    Rules are kept in the order they were added; a call is answered by the first rule that matches its
    operation and still has calls left, and a call that matches no rule goes to moto. Every API call is
    counted, also the ones answered with an injected failure, because a client that retries pays for each
    attempt.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._pauses: list[_Pause] = []
        self._holds: list[Hold] = []
        self._calls: Counter[str] = Counter()

    def throttle_next(self, n: int, operations: Iterable[str] | None = None, code: str | None = None) -> None:
        """Throttle the next ``n`` calls of ``operations`` (all operations when None).

        ``code`` None answers as AWS documents per operation (RequestLimitExceeded/429 for DiscoverInstances
        and DiscoverInstancesRevision, ThrottlingException/400 otherwise); pass one of :data:`THROTTLE_CODES`
        to force one.
        """
        if code is not None:
            throttling_reply(code)  # validates the code now rather than at request time
        self._add(_Rule(_count(n), _ops(operations), code, None, None))

    def fail_next(
        self, n: int, status: int = 500, operations: Iterable[str] | None = None, code: str | None = None
    ) -> None:
        """Answer the next ``n`` calls of ``operations`` (all when None) with HTTP ``status``."""
        server_error_reply(status, code)
        self._add(_Rule(_count(n), _ops(operations), None, status, code))

    def delay_next(self, n: int, seconds: float, operations: Iterable[str] | None = None) -> None:
        """Make the next ``n`` calls of ``operations`` (all when None) take ``seconds`` longer, spent inside
        the state lock as a slow backend would: a slow read delays writers, a slow write delays everyone."""
        if not 0 <= seconds <= 60:
            raise ValueError(f"seconds must be between 0 and 60, not {seconds}")
        self._add_pause(_Pause(_count(n), _ops(operations), lambda: time.sleep(seconds)))

    def hold_next(self, n: int = 1, operations: Iterable[str] | None = None, timeout: float = 30.0) -> Hold:
        """Hold the next ``n`` calls of ``operations`` inside the state lock until the returned
        :class:`Hold` is released: a deterministic way to have a call in flight while others arrive."""
        hold = Hold(timeout)
        self._add_pause(_Pause(_count(n), _ops(operations), hold._pause))
        with self._lock:
            self._holds.append(hold)
        return hold

    def pause(self, operation: str) -> Callable[[], None] | None:
        """The pause queued for this call of ``operation``, if any (to run inside the state lock)."""
        with self._lock:
            for rule in self._pauses:
                if rule.matches(operation):
                    rule.remaining -= 1
                    self._pauses = [r for r in self._pauses if r.remaining > 0]
                    return rule.pause
        return None

    def clear(self) -> None:
        """Drop every queued failure and pause, and let every held call go on."""
        with self._lock:
            self._rules.clear()
            self._pauses.clear()
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    def pending(self) -> int:
        """How many injected failures and pauses are still queued."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules) + sum(p.remaining for p in self._pauses)

    def take(self, operation: str) -> ErrorReply | None:
        """Count one call of ``operation`` and return the failure to send instead, if one is queued."""
        with self._lock:
            self._calls[operation] += 1
            for rule in self._rules:
                if rule.matches(operation):
                    rule.remaining -= 1
                    reply = rule.reply(operation)
                    self._rules = [r for r in self._rules if r.remaining > 0]
                    return reply
        return None

    def calls(self) -> dict[str, int]:
        """API calls per operation name since the start or the last :meth:`reset_calls`."""
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _add(self, rule: _Rule) -> None:
        if rule.remaining:
            with self._lock:
                self._rules.append(rule)

    def _add_pause(self, rule: _Pause) -> None:
        if rule.remaining:
            with self._lock:
                self._pauses.append(rule)


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, not {n!r}")
    return n


def _ops(operations: Iterable[str] | None) -> frozenset[str] | None:
    if operations is None:
        return None
    if isinstance(operations, str):
        # A bare string would otherwise be read as a set of one-letter operation names.
        return frozenset({operations})
    return frozenset(operations)

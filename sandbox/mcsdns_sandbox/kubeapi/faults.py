"""Injected faults the HTTP layer consults on every API request: queued failures, held replies and the
pause gate.

Failing requests answer with the real server's Status for that code (429 carries ``Retry-After``). Pausing in
``hang`` mode holds every request and every watch event until ``resume`` (a blackholed server: nothing is
refused, nothing arrives); ``refuse`` mode is carried out by the emulator, which closes its listener and all
connections. A held reply is sent ``seconds`` after its request was carried out, so the watch delivers the
change, and whatever follows it, before the writer hears back. Thread-safe; no I/O. Imports only errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ApiError, injected


@dataclass
class _Rule:
    remaining: int
    code: int
    retry_after: int | None
    methods: frozenset[str] | None
    path_contains: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and (
            self.path_contains is None or self.path_contains in path
        )


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._holds: list[tuple[_Rule, float]] = []
        self.holding = 0  # replies being held now
        self._running = threading.Event()
        self._running.set()
        self.pause_mode: str | None = None

    def fail_next(
        self,
        count: int,
        *,
        code: int = 500,
        retry_after: int | None = None,
        methods: list[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Fail the next ``count`` API requests (optionally only those with one of ``methods`` or whose path
        contains ``path_contains``) with ``code``. Rules queue up; the oldest matching one is used first."""
        if count < 1:
            return
        if code == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._rules.append(
                _Rule(
                    count,
                    code,
                    retry_after,
                    frozenset(m.upper() for m in methods) if methods else None,
                    path_contains,
                )
            )

    def take_failure(self, method: str, path: str) -> ApiError | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return injected(rule.code, rule.retry_after)
        return None

    def hold_next(
        self,
        count: int,
        seconds: float,
        *,
        methods: list[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Carry out the next ``count`` matching requests at once but send each reply ``seconds`` later."""
        if count < 1:
            return
        with self._lock:
            rule = _Rule(
                count, 0, None, frozenset(m.upper() for m in methods) if methods else None, path_contains
            )
            self._holds.append((rule, seconds))

    def take_hold(self, method: str, path: str) -> float:
        with self._lock:
            for rule, seconds in self._holds:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._holds.remove((rule, seconds))
                    return seconds
        return 0.0

    @contextmanager
    def holding_reply(self) -> Iterator[None]:
        with self._lock:
            self.holding += 1
        try:
            yield
        finally:
            with self._lock:
                self.holding -= 1

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._holds.clear()

    def pause(self, mode: str) -> None:
        self.pause_mode = mode
        self._running.clear()

    def resume(self) -> None:
        self.pause_mode = None
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_running(self, timeout: float | None = None) -> bool:
        return self._running.wait(timeout)

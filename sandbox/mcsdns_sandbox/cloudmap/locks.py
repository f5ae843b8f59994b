"""A readers-writer lock for the embedded Cloud Map's state: reads run together, a write runs alone.

Why not one plain lock: at clusterset scale many engines poll DiscoverInstances(Revision) and List* at once,
and with one lock every poll queued behind every other (and behind any slow call). moto's models are plain
dicts and lists, not thread-safe against a writer, but safe to read from many threads while nobody writes;
so reads (Discover*, List*, Get*, which only read) share the lock and writes (Create*, Register*, ...) hold
it alone, which also keeps each write atomic, as the real API's single-item writes are.

Writer-preferring: once a writer waits, new readers wait behind it, so a steady stream of polls cannot
starve a RegisterInstance. The price: a reader already inside delays that writer, and the readers arriving
after the writer. Pure standard library.

Honest limits: threads here share CPython's GIL, so the CPU work of answering (JSON, moto's objects) is not
parallel; what runs together is everything that waits (sockets, a slow client, a fault hook's pause).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Many readers or one writer; not re-entrant (a holder must not take it again)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def state(self) -> tuple[int, bool, int]:
        """(readers inside, a writer inside, writers waiting), for tests and diagnostics."""
        with self._cond:
            return self._readers, self._writing, self._writers_waiting

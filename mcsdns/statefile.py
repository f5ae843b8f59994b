"""The last known zone on disk (``--state-dir``): written after publishes, read back at start.

A replica that restarts while the Kubernetes API or Cloud Map is unreachable would otherwise answer
SERVFAIL for the whole clusterset zone until every source has listed, in an outage, exactly when pods
restart and DNS matters most. With a state directory it serves the zone it last published, if that is
younger than ``--max-stale``, as RFC 8767 serves stale data: answers carry a TTL of at most 30 s, /readyz
and ``mcsdns_zone_stale`` say so, and the first zone built from live sources replaces it.

Writes are atomic (a temporary file, ``fsync``, ``rename``, ``fsync`` of the directory: a crash leaves
the old file or the new one, never half of one) and at most one a second, encoded off the event loop's
turn (``zone/codec.py``). Whatever is wrong with the file (unreadable, truncated, corrupt, another zone,
another format, too old, from the future) is one warning in the log and a start without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import time
from pathlib import Path

from mcsdns.errors import StartupError
from mcsdns.wire import HEADER, Malformed, scan_reply
from mcsdns.zone import codec
from mcsdns.zone.snapshot import Answer, ZoneSnapshot

logger = logging.getLogger(__name__)

FILE_NAME = "zone.mcsdns"
STALE_TTL = 30  # RFC 8767 §4: the TTL of an answer served stale
WRITE_EVERY = 1.0  # seconds: at most one write per second, the last publish of the second wins
CLOCK_SKEW = 300.0  # a file "saved" this far in the future is not trusted


class StateFile:
    def __init__(self, directory: str, zone_wire: bytes, max_stale: float) -> None:
        """Raises ``StartupError`` when ``directory`` cannot be made or written."""
        try:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable")
        except OSError as exc:
            raise StartupError(
                f"cannot use {directory}: {exc.strerror or exc}", setting="--state-dir"
            ) from None
        self.path = Path(directory) / FILE_NAME
        self._zone_wire = zone_wire
        self._max_stale = max_stale
        self._pending: ZoneSnapshot | None = None
        self._writing: asyncio.Task[None] | None = None
        self.writes = 0
        self.write_errors = 0

    # -- reading, at start -------------------------------------------------------------------------------

    def load(self, now: float | None = None) -> ZoneSnapshot | None:
        """The saved zone, made ready to serve stale; None (and one warning) when there is none to use."""
        now = time.time() if now is None else now
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            logger.info("no saved zone in %s yet", self.path.parent)
            return None
        except OSError as exc:
            logger.warning("ignoring the saved zone %s: cannot read it: %s", self.path, exc.strerror or exc)
            return None
        try:
            decoded = codec.decode(data)
            if decoded.base is not None:
                raise codec.ZoneDataError("a change, not a whole zone")
            if decoded.zone_wire != self._zone_wire:
                raise codec.ZoneDataError("it is another zone's (--zone changed)")
            age = now - decoded.saved_at
            if age < -CLOCK_SKEW:
                raise codec.ZoneDataError(f"saved {-age:.0f}s in the future")
            if age > self._max_stale:
                raise codec.ZoneDataError(f"saved {age:.0f}s ago, longer than --max-stale")
            snapshot = codec.snapshot_from(stale(decoded))
        except codec.ZoneDataError as exc:
            logger.warning("ignoring the saved zone %s: %s", self.path, exc)
            return None
        logger.warning(
            "serving the zone saved %.0fs ago (%d services) until every source has listed",
            max(age, 0.0),
            snapshot.services,
        )
        return snapshot

    # -- writing, after publishes ------------------------------------------------------------------------

    def published(self, snapshot: ZoneSnapshot) -> None:
        """A store listener: save ``snapshot`` soon (the saved zone itself is not written back)."""
        if snapshot.saved_at:
            return
        self._pending = snapshot
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._write_soon())

    async def _write_soon(self) -> None:
        while self._pending is not None:
            snapshot, self._pending = self._pending, None
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.write, snapshot)
            except OSError as exc:
                self.write_errors += 1
                logger.warning("cannot save the zone to %s: %s", self.path, exc.strerror or exc)
            await asyncio.sleep(max(0.0, WRITE_EVERY - (time.monotonic() - started)))

    async def flush(self) -> None:
        """Wait for the pending write (at shutdown, and in tests)."""
        if self._writing is not None:
            await asyncio.shield(self._writing)

    def write(self, snapshot: ZoneSnapshot) -> None:
        data = codec.encode_full(snapshot, saved_at=time.time())
        temporary = self.path.with_name(f".{FILE_NAME}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        with contextlib.suppress(OSError):  # not every file system lets a directory be opened and synced
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self.writes += 1


def stale(decoded: codec.Decoded) -> codec.Decoded:
    """``decoded`` with every TTL at most ``STALE_TTL`` (its ``saved_at`` marks it stale): RFC 8767 §4
    answers stale data with a short TTL, so clients come back for the live zone soon."""
    # Scanning costs ~10 us an answer: when the zone's TTL is short already, only dns-version's TXT
    # (28800 s, spec §2.2) is longer, so only its answers are scanned.
    longer = b"" if decoded.ttl > STALE_TTL else b"\x0bdns-version" + decoded.zone_wire
    capped = {
        key: _capped(key, answer) if key.startswith(longer) else answer
        for key, answer in decoded.answers.items()
    }
    mname, rname, serial, refresh, retry, expire, minimum = decoded.soa
    soa = (mname, rname, serial, refresh, retry, expire, min(int(minimum), STALE_TTL))  # type: ignore[call-overload]
    return dataclasses.replace(decoded, answers=capped, ttl=min(decoded.ttl, STALE_TTL), soa=soa)


def _capped(question: bytes, answer: Answer) -> Answer:
    """``answer`` with its records' TTLs at most ``STALE_TTL``: its TTL fields are found by scanning it as
    the reply it is (header, ``question``, body), the way the forwarding cache finds an upstream's."""
    reply = HEADER.pack(0, answer.flags, 1, answer.ancount, answer.nscount, answer.arcount) + question
    try:
        scan = scan_reply(reply + answer.body)
    except Malformed:  # not one of ours; served as saved rather than not at all
        return answer
    if all(ttl <= STALE_TTL for _, ttl in scan.ttls):
        return answer
    body = bytearray(answer.body)
    for at, ttl in scan.ttls:
        body[at : at + 4] = min(ttl, STALE_TTL).to_bytes(4, "big")
    return answer._replace(body=bytes(body))

"""``--workers N``: N processes answer DNS on every listen address, one of them runs everything else.

One Python process answers on one core (the GIL: threads cannot help), so a node's other cores would idle.
The main process binds each address with SO_REUSEPORT and starts N-1 workers that bind the same addresses;
the kernel spreads clients over the N sockets by their address and port. Only the main process runs the
sync engine, the controller and /metrics; a worker holds a zone store, a responder and its own forwarding
cache, nothing else, so it is small.

The main process hands every published snapshot to every worker over a socket pair, without rendering it
again: the first one whole, then what each publish changed (``zone/codec.py``'s delta), so a publish costs
a worker what changed, not the zone's size. A worker binds its sockets only once it holds a whole zone, so
the kernel never sends a client to a process with nothing to answer from, and it acknowledges each serial,
which gives /metrics the publish latency and /readyz whether every worker serves. A worker that dies is
started again and sent the current zone; one that loses its main process (EOF on the pair) exits, so
none outlives it. SIGTERM to the main process stops every worker before it exits.

Frames on the pair: length (u32), kind (one byte), payload. Main to worker: ``S`` the settings (pickle,
to its own child: at start, and again after a reload, applied by ``reconfigure_serving``), ``Z`` a zone
frame. Worker to main: ``R`` serving, ``A`` a serial applied (u64), ``M``
its additive metric samples (marshal), every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcsdns.dns.cache import ForwardCache
from mcsdns.dns.forward import Forwarder
from mcsdns.dns.responder import Responder
from mcsdns.dns.server import Listener, close_listeners, start_listeners
from mcsdns.errors import StartupError, named_setting
from mcsdns.health import Samples, additive_samples, serving_metrics
from mcsdns.settings import SETTINGS, Setting, replaced
from mcsdns.zone import codec
from mcsdns.zone.snapshot import ZoneSnapshot
from mcsdns.zone.store import ZoneStore

if TYPE_CHECKING:
    from mcsdns.settings import Settings

logger = logging.getLogger(__name__)

_FRAME = struct.Struct(">IB")
_SERIAL = struct.Struct(">Q")
METRICS_EVERY = 1.0
RESTART_MIN, RESTART_MAX = 0.5, 30.0  # seconds before a dead worker is started again, doubling
STOP_GRACE = 5.0


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), kind[0]) + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next frame; ``asyncio.IncompleteReadError`` at EOF."""
    length, kind = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return bytes((kind,)), await reader.readexactly(length)


# -- what answers DNS, in every serving process


async def serving(
    settings: Settings, store: ZoneStore, stack: contextlib.AsyncExitStack, *, reuse_port: bool = False
) -> tuple[Responder, Forwarder | None, list[Listener]]:
    """What answers DNS from ``store``: the responder, the forwarder if any, the bound listeners (closed by
    ``stack``). The main process and every worker (workers.py) build theirs here."""
    forwarder = cache = None
    if settings.forward.upstreams:
        cache = ForwardCache(
            max_entries=settings.forward.cache_size,
            max_bytes=settings.forward.cache_bytes,
            stale_for=settings.forward.serve_stale,
        )
    responder = Responder(store, settings.zone, cache=cache)
    if cache is not None:
        forwarder = Forwarder(
            [(a.host, a.port) for a in settings.forward.upstreams],
            allow=settings.forward.allow,
            cache=cache,
            render=responder.render_cached,
        )
        stack.callback(forwarder.close)
        try:
            await forwarder.start()
        except OSError as exc:
            raise StartupError(
                f"cannot open the upstream sockets: {exc.strerror or exc}", setting="--forward"
            ) from exc
        logger.info(
            "forwarding other names to %s for %s",
            ", ".join(map(str, settings.forward.upstreams)),
            ", ".join(map(str, settings.forward.allow)),
        )
    with named_setting("--listen"):
        listeners = await start_listeners(
            settings.server, responder.respond, responder.servfail, forwarder, reuse_port=reuse_port
        )
    stack.callback(close_listeners, listeners)
    return responder, forwarder, listeners


def reconfigure_serving(
    old: Settings, new: Settings, forwarder: Forwarder | None, retune: Callable[[int], None] | None = None
) -> tuple[Settings, list[str]]:
    """Apply what a serving process can change live (SIGHUP, or --config FILE changed): the settings it
    runs with from now on (``old`` with the changes taken), and one line per setting that changed, saying
    whether it took effect or needs a restart. ``forwarder``: this process's, if it has one yet.
    ``retune``: the main process's engine, which renders the zone again for a new TTL (workers get the
    zone it publishes)."""
    lines = []
    taken: list[Setting] = []
    for declared in SETTINGS:
        after = _value(new, declared)
        if _value(old, declared) == after:
            continue
        if not declared.reloadable:
            lines.append(f"{declared.flag} changed; it takes effect at the next start")
        elif declared.group == "forward" and not old.forward.upstreams:
            lines.append(f"{declared.flag} changed, but forwarding was off at start; it needs a restart")
        else:
            taken.append(declared)
            lines.append(f"{declared.flag} is now {_shown(after)}")
    current = replaced(old, {declared.key: _value(new, declared) for declared in taken})
    groups = {declared.group for declared in taken}
    if "log" in groups:
        logging.getLogger().setLevel(current.log.level.upper())
    if "zone" in groups and retune is not None:
        retune(current.zone.ttl)
    if "forward" in groups and forwarder is not None:  # upstreams and clients together, once
        forwarder.reconfigure([(a.host, a.port) for a in current.forward.upstreams], current.forward.allow)
    return current, lines


def _value(settings: Settings, declared: Setting) -> Any:
    group = settings if declared.group is None else getattr(settings, declared.group)
    return getattr(group, declared.attr)


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


# -- the main process's side ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    sent: int | None = None  # serial of the last zone frame sent
    acked: int | None = None  # serial the worker last applied
    serving: bool = False
    samples: Samples = field(default_factory=dict)
    sent_at: float = 0.0  # when the last zone frame was written
    latency: float = 0.0  # seconds from sending a zone to this worker's acknowledgement of it
    restarts: int = 0
    task: asyncio.Task[None] | None = None


class Workers:
    def __init__(self, settings: Settings, store: ZoneStore, count: int) -> None:
        self._settings = settings
        self._store = store
        self.processes = [_Worker(index) for index in range(1, count + 1)]
        self._stopping = False

    async def start(self) -> None:
        """Start every worker; they bind once they have the zone (now, if there is one)."""
        self._store.subscribe(self.published)
        for worker in self.processes:
            worker.task = asyncio.create_task(self._supervise(worker), name=f"mcsdns-worker-{worker.index}")

    async def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a grace) and wait for them."""
        self._stopping = True
        for worker in self.processes:
            if worker.task is not None:
                worker.task.cancel()
        for worker in self.processes:
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.task

    # -- zone -----------------------------------------------------------------------------------------

    def published(self, snapshot: ZoneSnapshot) -> None:
        """A store listener: send ``snapshot`` to every running worker, as a delta where it can."""
        # Encoded once for every worker, and kept by none: a whole zone is 13 MB at 10,000 services.
        frames: dict[str, bytes] = {}
        for worker in self.processes:
            self._send_zone(worker, snapshot, frames)

    def _send_zone(self, worker: _Worker, snapshot: ZoneSnapshot, frames: dict[str, bytes]) -> None:
        if worker.writer is None or worker.writer.is_closing():
            return
        touched = snapshot.touched
        kind = "delta" if touched is not None and worker.sent == touched[0] else "full"
        data = frames.get(kind)
        if data is None:
            encoded = codec.encode_delta(snapshot) if kind == "delta" else None
            data = frames[kind] = encoded or codec.encode_full(snapshot, saved_at=snapshot.saved_at)
        worker.writer.write(_frame(b"Z", data))
        worker.sent, worker.sent_at = snapshot.serial, time.monotonic()

    def reconfigure(self, settings: Settings) -> None:
        """Send every running worker the settings after a reload (each applies the live part)."""
        self._settings = replace(settings, server=self._settings.server)  # the ports the workers bound
        for worker in self.processes:
            if worker.writer is not None and not worker.writer.is_closing():
                worker.writer.write(_frame(b"S", pickle.dumps(self._settings)))

    # -- supervision ----------------------------------------------------------------------------------

    async def _supervise(self, worker: _Worker) -> None:
        delay = RESTART_MIN
        try:
            while not self._stopping:
                started = time.monotonic()
                try:
                    await self._run(worker)
                except OSError as exc:
                    logger.error("worker %d could not start: %s", worker.index, exc)
                if self._stopping:
                    return
                worker.restarts += 1
                delay = (
                    RESTART_MIN if time.monotonic() - started > RESTART_MAX else min(delay * 2, RESTART_MAX)
                )
                logger.warning("worker %d exited; starting it again in %.1fs", worker.index, delay)
                await asyncio.sleep(delay)
        finally:
            await self._stop(worker)

    async def _run(self, worker: _Worker) -> None:
        mine, theirs = socket.socketpair()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mcsdns", "worker", str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        reader, worker.writer = await asyncio.open_connection(sock=mine)
        worker.sent = worker.acked = None
        worker.serving = False
        worker.writer.write(_frame(b"S", pickle.dumps(self._settings)))
        if self._store.current is not None:
            self._send_zone(worker, self._store.current, {})
        try:
            while True:
                kind, payload = await _read_frame(reader)
                if kind == b"R":
                    worker.serving = True
                    logger.info("worker %d (pid %d) serving", worker.index, worker.process.pid)
                elif kind == b"A":
                    (worker.acked,) = _SERIAL.unpack(payload)
                    if worker.acked == worker.sent:
                        worker.latency = time.monotonic() - worker.sent_at
                elif kind == b"M":
                    worker.samples = marshal.loads(payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker is gone
        finally:
            worker.serving = False
            worker.samples = {}
            worker.writer.close()
            await worker.process.wait()

    async def _stop(self, worker: _Worker) -> None:
        process = worker.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # -- what health reports --------------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        current = self._store.current
        return [
            f"worker {worker.index} is not serving" + (" the current zone" if worker.serving else "")
            for worker in self.processes
            if not worker.serving or (current is not None and worker.acked != current.serial)
        ]

    def samples(self) -> Samples:
        """Every worker's additive samples, summed."""
        total: Samples = {}
        for worker in self.processes:
            for key, value in worker.samples.items():
                total[key] = total.get(key, 0.0) + value
        return total

    def metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mcsdns_workers_serving",
            "Worker processes serving the current zone (the main process not counted)",
            value=len(self.processes) - len(self.not_ready()),
        )
        yield CounterMetricFamily(
            "mcsdns_worker_restarts",
            "Workers started again after they exited",
            value=sum(worker.restarts for worker in self.processes),
        )
        yield GaugeMetricFamily(
            "mcsdns_workers_publish_seconds",
            "Seconds from sending the last zone until the slowest worker applied it",
            value=max((worker.latency for worker in self.processes), default=0.0),
        )


# -- a worker's side --------------------------------------------------------------------------------------


def read_settings(fd: int) -> tuple[Settings, socket.socket]:
    """The worker's first step, before logging is set up: its settings from the main process."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    header = _recv_exactly(sock, _FRAME.size)
    length, kind = _FRAME.unpack(header)
    if kind != ord("S"):
        raise RuntimeError("the main process did not send the settings first")
    settings: Settings = pickle.loads(_recv_exactly(sock, length))  # from our own parent
    return settings, sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise EOFError("the main process closed the pair")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes into a buffer of exactly that size, freed once the frame is decoded: a
    stream reader's buffer would keep a whole zone's capacity (13 MB at 10,000 services) for good."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        received = await loop.sock_recv_into(sock, view[got:])
        if not received:
            raise EOFError("the main process closed the pair")
        got += received
    return buffer


async def serve_worker(settings: Settings, sock: socket.socket) -> None:
    """Serve DNS from the zones the main process sends, until it goes away or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sock.setblocking(False)
    store = ZoneStore()
    sending = asyncio.Lock()

    async def send(kind: bytes, payload: bytes) -> None:
        async with sending:
            await loop.sock_sendall(sock, _frame(kind, payload))

    async with contextlib.AsyncExitStack() as stack:
        parts: dict[str, Any] = {}

        async def follow() -> None:
            nonlocal settings
            while True:
                length, kind = _FRAME.unpack(await _receive(loop, sock, _FRAME.size))
                payload = await _receive(loop, sock, length)
                if kind == ord("S"):  # settings reloaded in the main process
                    new: Settings = pickle.loads(payload)
                    settings, lines = reconfigure_serving(settings, new, parts.get("forwarder"))
                    for line in lines:
                        logger.debug("worker %d: %s", os.getpid(), line)
                    continue
                if kind != ord("Z"):
                    continue
                snapshot = codec.snapshot_from(codec.decode(payload), store.current)
                del payload
                store.publish(snapshot)
                if not parts:
                    responder, forwarder, listeners = await serving(settings, store, stack, reuse_port=True)
                    parts.update(responder=responder, forwarder=forwarder, listeners=listeners)
                    await send(b"R", b"")
                await send(b"A", _SERIAL.pack(snapshot.serial))

        async def report() -> None:
            while True:
                await asyncio.sleep(METRICS_EVERY)
                if parts:
                    families = serving_metrics(
                        parts["responder"], parts["listeners"], parts["forwarder"], settings.metrics_names
                    )
                    await send(b"M", marshal.dumps(additive_samples(families)))

        tasks = [
            asyncio.create_task(follow()),
            asyncio.create_task(report()),
            asyncio.create_task(stop.wait()),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            exc = task.exception()
            if isinstance(exc, (EOFError, ConnectionError)):
                logger.info("worker %d: the main process is gone; exiting", os.getpid())
            elif exc is not None:
                raise exc

"""The composition root: builds the store, sources, engine and listeners from ``Settings`` and runs them.

``running(settings)`` is an async context manager that yields once every socket is bound (tests use it
with port 0); ``run(settings)`` is what ``mcsdns serve`` calls: uvloop, signals, exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from mcsdns.errors import ConfigError
from mcsdns.responder import Responder
from mcsdns.server import Listener, close_listeners, start_listeners
from mcsdns.settings import ListenAddress, Settings
from mcsdns.sync.engine import SyncEngine
from mcsdns.sync.events import Source
from mcsdns.sync.manifests import ManifestSource
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.store import ZoneStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class App:
    settings: Settings
    store: ZoneStore
    engine: SyncEngine
    listeners: tuple[Listener, ...]
    engine_task: asyncio.Task[None]

    @property
    def addresses(self) -> tuple[ListenAddress, ...]:
        """The bound addresses, ports resolved (UDP and TCP share each)."""
        return tuple(listener.address for listener in self.listeners)


def make_sources(settings: Settings) -> list[Source]:
    sources: list[Source] = []
    if settings.sources.manifests:
        sources.append(
            ManifestSource(settings.sources.manifests, poll_interval=settings.sources.manifests_poll)
        )
    if not sources:
        raise ConfigError("no zone source: give --manifests DIR")
    return sources


@contextlib.asynccontextmanager
async def running(settings: Settings, *, sources: Sequence[Source] | None = None) -> AsyncIterator[App]:
    """Bind every listener, start the engine, yield; ``sources`` replaces those the settings name."""
    store = ZoneStore()
    chosen = list(sources) if sources is not None else make_sources(settings)
    engine = SyncEngine(store=store, builder=ZoneBuilder(settings.zone), sources=chosen)
    responder = Responder(store, settings.zone)
    listeners = await start_listeners(settings.server, responder.respond, responder.servfail)
    for listener in listeners:
        logger.info("listening on %s (udp+tcp)", listener.address)
    engine_task = asyncio.create_task(engine.run(), name="sync engine")
    app = App(settings, store, engine, tuple(listeners), engine_task)
    try:
        yield app
    finally:
        close_listeners(listeners)
        engine_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine_task


async def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, or until the engine fails (then the error propagates)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings) as app:
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, app.engine_task}, return_when=asyncio.FIRST_COMPLETED)
        if app.engine_task in done:
            app.engine_task.result()  # re-raise why the engine stopped
        logger.info("stopping (%d listeners)", len(app.listeners))
        stopping.cancel()


def loop_factory() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is a dependency on Linux and macOS), else the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(settings: Settings) -> int:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))
    return 0

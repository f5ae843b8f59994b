"""The composition root: builds the store, sources, engine and listeners from ``Settings`` and runs them.

``running(settings)`` is an async context manager that yields once every socket is bound (tests use it
with port 0); ``run(settings)`` is what ``mcsdns serve`` calls: uvloop, signals, exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mcsdns.dns.responder import Responder
from mcsdns.errors import ConfigError, McsDnsError, named_setting
from mcsdns.health import HealthServer, Observed
from mcsdns.mcs.identity import ClusterIdentity, cluster_properties
from mcsdns.mcs.leader import LeaderElector
from mcsdns.settings import (
    IN_CLUSTER,
    CloudMapSettings,
    LeaseSettings,
    ListenAddress,
    Settings,
    available_cpus,
)
from mcsdns.sources.engine import SyncEngine
from mcsdns.sources.events import Source
from mcsdns.sources.manifests import ManifestSource
from mcsdns.statefile import StateFile
from mcsdns.workers import Workers, reconfigure_serving, serve_worker, serving
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.snapshot import ZoneSnapshot
from mcsdns.zone.store import ZoneStore

if TYPE_CHECKING:
    from mcsdns.clients.cloudmap import CloudMapClient

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class App(Observed):
    """Everything running, as the health endpoint and tests see it (``Observed``), plus the settings."""

    settings: Settings

    @property
    def addresses(self) -> tuple[ListenAddress, ...]:
        """The bound addresses, ports resolved (UDP and TCP share each)."""
        return tuple(listener.address for listener in self.listeners)


def check_sources(settings: Settings) -> None:
    """A missing zone source is a usage error, found before any socket is bound."""
    if (
        not settings.sources.manifests
        and not settings.kubernetes.kubeconfig
        and not settings.cloudmap.enabled
    ):
        raise ConfigError("no zone source: give --manifests DIR, --kubeconfig PATH or --cloudmap")
    if not settings.server.dns and not (settings.kubernetes.kubeconfig and settings.cloudmap.enabled):
        raise ConfigError(
            "--dns=false leaves only the controller, which needs --kubeconfig PATH and --cloudmap"
        )


def cloudmap_client(settings: CloudMapSettings) -> CloudMapClient:
    """The process's one Cloud Map client: its rate budget is shared by export, import and the zone source."""
    from mcsdns.clients.budget import RateBudget
    from mcsdns.clients.cloudmap import CloudMapClient

    with named_setting("--cloudmap"):
        return CloudMapClient(
            region=settings.region,
            budget=RateBudget(settings.rate),
            owner_account=settings.owner_account,
        )


def leader_id(settings: LeaseSettings) -> str:
    """This replica's name in the Lease: ``--leader-id``, else the host name and a per-process suffix."""
    return settings.leader_id or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(settings: Settings, *, sources: Sequence[Source] | None = None) -> AsyncIterator[App]:
    """Bind every listener, start the engine, yield; ``sources`` replaces those the settings name."""
    async with contextlib.AsyncExitStack() as stack:
        chosen: list[Source] = list(sources) if sources is not None else []
        # The background loops, made into coroutines only once they start: a start-up failure in between
        # (a port in use) would otherwise leave them never awaited.
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = []
        identity = elector = None
        cloudmap: CloudMapClient | None = None
        controllers: tuple[Any, ...] = ()
        if sources is None:
            check_sources(settings)
        # The store, the saved zone and the listeners come first: a restart during an API outage answers from
        # the state file while the sources below are still being set up (RFC 8767 serve-stale).
        store = ZoneStore()
        if settings.sources.state_dir:
            state = StateFile(settings.sources.state_dir, settings.zone.wire, settings.sources.max_stale)
            saved = state.load()
            if saved is not None:
                store.publish(saved)
            store.subscribe(state.published)
            stack.push_async_callback(state.flush)
        if settings.server.dns:
            responder, forwarder, listeners = await serving(
                settings, store, stack, reuse_port=settings.server.workers > 1
            )
        else:  # the controller alone: the zone is still built, for /metrics and a later --dns
            responder, forwarder, listeners = Responder(store, settings.zone), None, []
            logger.info("not serving DNS (--dns=false): the MCS controller only")
        if sources is None:
            if settings.sources.manifests:
                chosen.append(
                    ManifestSource(settings.sources.manifests, poll_interval=settings.sources.manifests_poll)
                )
            if settings.kubernetes.kubeconfig:
                # Deferred import: only this path loads the Kubernetes client. It takes about half a second,
                # so it runs in a thread while the loop answers from the saved zone (statefile.py).
                await asyncio.to_thread(importlib.import_module, "mcsdns.sources.kube")
                from mcsdns.clients import kube as k8s
                from mcsdns.sources.kube import zone_sources

                kube = settings.kubernetes
                with named_setting("--kubeconfig"):
                    api = await k8s.KubeApi.connect(
                        None if kube.kubeconfig == IN_CLUSTER else kube.kubeconfig
                    )
                stack.push_async_callback(api.close)
                logger.info("watching Kubernetes API %s", api.host)
                # One informer per resource for the whole process: every part below takes a view of it.
                informers = k8s.Informers(api)
                chosen.extend(zone_sources(informers))
                identity = ClusterIdentity(
                    cluster_id=settings.identity.cluster_id, clusterset_id=settings.identity.clusterset_id
                )
                if identity.missing:
                    ids = identity

                    def follow(*_: object) -> None:
                        before = ids.cluster_id
                        ids.update(cluster_properties(properties.objects))
                        if settings.zone.prefer_local_cluster and ids.cluster_id and ids.cluster_id != before:
                            engine.retune(local_cluster=ids.cluster_id)  # learnt after the first zone

                    properties = informers.view(k8s.CLUSTER_PROPERTIES, on_list=follow, on_event=follow)
                if settings.lease.elect:
                    elector = LeaderElector(
                        k8s.KubeLeases(api), settings.lease, identity=leader_id(settings.lease)
                    )
                    loops.append(elector.run)
                if settings.cloudmap.enabled:
                    # With a cluster, Cloud Map feeds the cluster (the MCS controller), not the zone directly:
                    # the zone follows the ServiceImports and EndpointSlices the controller writes.
                    from mcsdns.mcs.export import ExportController
                    from mcsdns.mcs.import_ import ImportController

                    cloudmap = cloudmap_client(settings.cloudmap)
                    logger.info("exporting to and importing from Cloud Map at %s", cloudmap.endpoint)
                    from mcsdns.mcs import heartbeat

                    exporter = ExportController(
                        api=api,
                        informers=informers,
                        cloudmap=cloudmap,
                        identity=identity,
                        elector=elector,
                        heartbeat_every=heartbeat.interval(settings.cloudmap.stale_after),
                        resync=settings.cloudmap.max_staleness,
                    )
                    importer = ImportController(
                        api=api,
                        informers=informers,
                        cloudmap=cloudmap,
                        identity=identity,
                        elector=elector,
                        poll_interval=settings.cloudmap.poll,
                        on_change=exporter.clusterset_changed,
                        stale_after=settings.cloudmap.stale_after,
                        stale_grace=settings.cloudmap.stale_grace,
                        evict_stale=settings.cloudmap.evict_stale,
                        max_staleness=settings.cloudmap.max_staleness,
                    )
                    controllers = (exporter, importer)
                    loops.extend(controller.run for controller in controllers)
                loops.append(informers.run)
            elif settings.cloudmap.enabled:
                from mcsdns.sources.cloudmap import CloudMapZoneSource

                cloudmap = cloudmap_client(settings.cloudmap)
                logger.info("reading Cloud Map at %s", cloudmap.endpoint)
                chosen.append(
                    CloudMapZoneSource(
                        cloudmap,
                        clusterset_id=settings.identity.clusterset_id,
                        poll_interval=settings.cloudmap.poll,
                        max_staleness=settings.cloudmap.max_staleness,
                    )
                )
        workers = None
        if settings.server.dns and settings.server.workers > 1:
            # The other serving processes bind the ports this one got (port 0 resolved) and follow its store.
            # Started after the sources: sending them the saved zone holds the loop for a moment, which
            # would come before the first answer otherwise.
            bound = replace(settings.server, listen=tuple(listener.address for listener in listeners))
            workers = Workers(replace(settings, server=bound), store, settings.server.workers - 1)
            await workers.start()
            stack.push_async_callback(workers.close)
        prefer = settings.identity.cluster_id if settings.zone.prefer_local_cluster else None
        builder = ZoneBuilder(settings.zone, local_cluster=prefer)
        engine = SyncEngine(store=store, builder=builder, sources=chosen)
        app = App(
            settings=settings,
            store=store,
            engine=engine,
            responder=responder,
            listeners=tuple(listeners),
            identity=identity,
            identity_required=bool(controllers),
            elector=elector,
            cloudmap=cloudmap,
            forwarder=forwarder,
            metrics_names=settings.metrics_names,
            rejected=_rejected_objects(chosen),
            controllers=controllers,
            workers=workers,
            ptr_addresses=(lambda: builder.ptr_addresses) if settings.zone.ptr else None,
        )
        if settings.http is not None:
            with named_setting("--http"):
                http = await HealthServer(app).start(settings.http)
            stack.callback(http.close)
        # Every socket is bound: only now is anything said to listen, and do the loops start, so that a
        # start-up failure above is the one line the command prints.
        for listener in listeners:
            logger.info("listening on %s (udp+tcp)", listener.address)
        if settings.http is not None:
            logger.info("serving /healthz, /readyz and /metrics on http://%s", settings.http)
        app.task = asyncio.create_task(_run_all([engine.run, *loops]), name="mcsdns")
        stack.push_async_callback(_cancel, app.task)
        yield app


def _rejected_objects(sources: Sequence[Source]) -> Callable[[], tuple[str, ...]] | None:
    """What /readyz and /metrics report as rejected: the manifest objects not served as written."""
    manifests = [source for source in sources if isinstance(source, ManifestSource)]
    return (lambda: tuple(line for source in manifests for line in source.rejected)) if manifests else None


async def _run_all(loops: list[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    # One failure cancels the rest: the process exits non-zero and its supervisor restarts it, while
    # until then the last good snapshot keeps serving.
    async with asyncio.TaskGroup() as group:
        for loop in loops:
            group.create_task(loop())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(
    settings: Settings, load: Callable[[], Settings] | None = None, config_path: str | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, or until a background loop fails (then the error propagates).
    ``load`` reads the settings again (flags, environment, --config FILE) for SIGHUP and a changed file."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def received(signum: int) -> None:
        signals.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, received, signum)
    async with running(settings) as app:
        assert app.task is not None
        app.store.subscribe(_freeze_after_first_zone())
        watching: asyncio.Task[None] | None = None
        if load is not None:
            reload = Reloader(app, load)
            loop.add_signal_handler(signal.SIGHUP, reload.now)
            if config_path:
                watching = asyncio.create_task(reload.watch(config_path))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, app.task}, return_when=asyncio.FIRST_COMPLETED)
        if app.task in done:
            app.task.result()  # re-raise why it stopped
        stopping.cancel()
        # SIGTERM is how Kubernetes stops a pod: lame duck. SIGINT is a person at a terminal: at once.
        if settings.lameduck > 0 and signals[-1:] == [signal.SIGTERM]:
            await _lame_duck(app, settings.lameduck, stop)
        if watching is not None:
            watching.cancel()
        logger.info("stopping (%d listeners)", len(app.listeners))


async def _lame_duck(app: App, seconds: float, stop: asyncio.Event) -> None:
    """CoreDNS's ``lameduck``: /readyz fails at once, so the endpoints controller takes this replica out of
    the Service, while DNS keeps answering what kube-proxy still sends here; the Lease is released so
    another replica writes at once. A SIGINT or another SIGTERM ends it early."""
    app.stopping_at = time.monotonic() + seconds
    logger.info("SIGTERM: answering for %gs more (lame duck), /readyz failing", seconds)
    if app.elector is not None:
        app.elector.resign()
    stop.clear()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class Reloader:
    """CoreDNS's ``reload``, and SIGHUP as daemons take it: read the settings again and apply what can
    change live (workers.reconfigure_serving); a setting that cannot is named in the log, and settings
    that do not load (a bad file, a bad value) leave the running ones as they are."""

    WATCH_EVERY = 2.0  # seconds between looks at --config FILE

    def __init__(self, app: App, load: Callable[[], Settings]) -> None:
        self._app = app
        self._load = load

    def now(self) -> None:
        app = self._app
        try:
            new = self._load()
        except McsDnsError as exc:
            logger.error("reload: %s; the running settings stay", exc)
            return
        app.settings, lines = reconfigure_serving(
            app.settings, new, app.forwarder, lambda ttl: app.engine.retune(ttl=ttl)
        )
        if app.workers is not None:
            app.workers.reconfigure(app.settings)
        for line in lines or ["nothing changed"]:
            logger.info("reload: %s", line)

    async def watch(self, path: str) -> None:
        """Reload when ``path`` changes (its modification time, size or inode)."""
        seen = _stat(path)
        while True:
            await asyncio.sleep(self.WATCH_EVERY)
            current = _stat(path)
            if current != seen:
                seen = current
                logger.info("reload: %s changed", path)
                self.now()


def _stat(path: str) -> tuple[float, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size, st.st_ino)


def loop_factory() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is a dependency on Linux and macOS), else the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# CPython runs a young collection every 700 new container objects and, every tenth of those, rescans the
# older ones. A large clusterset makes ~10^6 long-lived objects that hold no cycles (decoded pages, records,
# rendered answers), so the default thresholds spent about a third of the CPU before the first answer at
# 10,000 services (bench/RESULTS-kubernetes.md). Collect less often: reference counting still frees at once
# everything that is not part of a cycle.
GC_THRESHOLDS = (50_000, 20, 20)


def _freeze_after_first_zone() -> Callable[[ZoneSnapshot], None]:
    """A store listener that, at the first publish, moves every live object out of the collector's sight.

    What is alive then is the clusterset's state and zone, which live long and hold no cycles: a full
    collection that walks them stalled the packet loop for 0.8 s at 10,000 services (830,000 objects),
    and found 20 unreachable. ``gc.freeze`` costs nothing and keeps such pauses from ever happening;
    reference counting still frees frozen objects when they are replaced. The few cycles alive at that
    moment stay, a one-time cost of a few kilobytes.
    """
    done = False

    def listener(_snapshot: ZoneSnapshot) -> None:
        nonlocal done
        if not done:
            done = True
            gc.freeze()
            logger.debug("zone published: %d objects left out of garbage collection", gc.get_freeze_count())

    return listener


def run(
    settings: Settings, load: Callable[[], Settings] | None = None, config_path: str | None = None
) -> int:
    if settings.server.workers == 0:  # auto
        settings = replace(settings, server=replace(settings.server, workers=available_cpus()))
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings, load, config_path))
    return 0


def run_worker(settings: Settings, channel: socket.socket) -> int:
    """A serving process of ``--workers`` (workers.py), until its main process goes or SIGTERM."""
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_worker(settings, channel))
    return 0

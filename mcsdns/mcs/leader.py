"""Leader election on a ``coordination.k8s.io/v1`` Lease: every replica serves DNS, one writes.

The rules are client-go's ``leaderelection``: a candidate takes a lease that does not exist, or whose
holder has not renewed it for the lease duration as measured on *our* clock from when we last saw the
record change (so clock skew between nodes does not matter); the holder renews every retry period.
A leader that has not renewed for the renew deadline (shorter than the duration) steps down, so it
stops writing before anyone else may take the lease. Writers ask ``may_write()`` right before each write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from mcsdns.errors import SourceError, WriteConflict
from mcsdns.settings import LeaseSettings

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


class LeaseStore(Protocol):
    """get/create/replace of one Lease as a JSON object (``clients.kube.KubeLeases``)."""

    async def get(self, namespace: str, name: str) -> Obj | None: ...
    async def create(self, namespace: str, body: Obj) -> Obj: ...
    async def replace(self, namespace: str, name: str, body: Obj) -> Obj: ...


def micro_time(at: float) -> str:
    """RFC 3339 with microseconds, the form of Lease ``acquireTime``/``renewTime`` (MicroTime)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Elects on the Lease that ``settings`` names, as ``identity`` (this replica's name in the Lease)."""

    def __init__(
        self,
        store: LeaseStore,
        settings: LeaseSettings,
        *,
        identity: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not settings.renew_deadline < settings.duration:
            raise ValueError("need renew deadline < lease duration")
        # client-go's 2 s between attempts, shorter for short deadlines so several fit in one.
        self._retry = min(2.0, settings.renew_deadline / 4)
        self._store = store
        self._settings = settings
        self._identity = identity
        self._clock = clock
        self._wall = wall
        self._leader = False
        self._last_renew = float("-inf")
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, transitions) last seen
        self._observed_at = float("-inf")
        self._listeners: list[Callable[[bool], None]] = []
        self._resigned = asyncio.Event()
        self.holder: str | None = None

    @property
    def leading(self) -> bool:
        """Holding the Lease as last seen, even while a late renewal keeps ``may_write`` false."""
        return self._leader

    @property
    def lease_name(self) -> str:
        return self._settings.name

    @property
    def identity(self) -> str:
        return self._identity

    def may_write(self) -> bool:
        """True only while we hold the lease and renewed it within the renew deadline."""
        return self._leader and self._clock() - self._last_renew < self._settings.renew_deadline

    def resign(self) -> None:
        """Stop running for leader and release the Lease if held (the lame-duck period after SIGTERM), so
        another replica takes over at once rather than after the Lease expires (client-go's
        ReleaseOnCancel)."""
        self._resigned.set()

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(is_leader)`` on every change of leadership."""
        self._listeners.append(listener)

    async def run(self) -> None:
        settings = self._settings
        try:
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as
                # the call fails (gh-86296), and then SIGTERM never stopped this loop during an API outage.
                try:
                    async with asyncio.timeout(self._retry):
                        renewed = await self._try_acquire_or_renew()
                except (SourceError, TimeoutError) as exc:
                    logger.warning("lease %s/%s: %s", settings.namespace, settings.name, exc or "timed out")
                    renewed = False
                if renewed:
                    self._last_renew = self._clock()
                    self._set_leader(True)
                elif self._leader and not self.may_write():
                    self._set_leader(False)
                # Jitter (client-go: JitterFactor 1.2) keeps candidates from colliding every period.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._retry * random.uniform(0.8, 1.0)):
                        await self._resigned.wait()
                if self._resigned.is_set():
                    return
        finally:
            if self._leader:
                self._set_leader(False)
                await self._release()

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        logger.info(
            "%s leadership of lease %s/%s as %s",
            "acquired" if leader else "lost",
            self._settings.namespace,
            self._settings.name,
            self._identity,
        )
        for listener in self._listeners:
            listener(leader)

    async def _try_acquire_or_renew(self) -> bool:
        settings = self._settings
        now = micro_time(self._wall())
        lease = await self._store.get(settings.namespace, settings.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": settings.name, "namespace": settings.namespace},
                "spec": self._spec(acquire=now, renew=now, transitions=0),
            }
            return await self._write(lambda: self._store.create(settings.namespace, body))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        self.holder = holder
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or settings.duration)
        if holder not in (None, self._identity) and self._clock() - self._observed_at < duration:
            return False  # someone else holds a lease that has not expired by our clock
        mine = holder == self._identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(
            acquire=spec.get("acquireTime") if mine else now, renew=now, transitions=transitions
        )
        return await self._write(lambda: self._store.replace(settings.namespace, settings.name, lease))

    def _spec(self, *, acquire: str | None, renew: str, transitions: int) -> Obj:
        return {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": max(1, round(self._settings.duration)),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    async def _write(self, write: Callable[[], Any]) -> bool:
        try:
            await write()
        except WriteConflict:
            return False  # another candidate wrote first: we lost this round
        self.holder = self._identity
        return True

    async def _release(self) -> None:
        """Give the lease up on shutdown so another replica takes over at once (ReleaseOnCancel)."""
        settings = self._settings
        try:
            async with asyncio.timeout(self._retry):
                lease = await self._store.get(settings.namespace, settings.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self._identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(self._wall()),
            }
            async with asyncio.timeout(self._retry):
                await self._store.replace(settings.namespace, settings.name, lease)
            logger.info("released lease %s/%s", settings.namespace, settings.name)
        except (SourceError, TimeoutError) as exc:
            logger.warning("could not release lease %s/%s: %s", settings.namespace, settings.name, exc)

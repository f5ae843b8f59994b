"""Leader election on a ``coordination.k8s.io/v1`` Lease: every replica serves DNS, one writes.

The rules are client-go's ``leaderelection``: a candidate takes a lease that does not exist, or whose
holder has not renewed it for ``lease_duration`` as measured on *our* clock from when we last saw the
record change (so clock skew between nodes does not matter); the holder renews every ``retry_period``.
A leader that has not renewed for ``renew_deadline`` (shorter than ``lease_duration``) steps down, so it
stops writing before anyone else may take the lease. Writers ask ``may_write()`` right before each write.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcsdns.errors import SourceError, WriteConflict

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


class LeaseStore(Protocol):
    """get/create/replace of one Lease as a JSON object (``sync.k8s.KubeLeases``)."""

    async def get(self, namespace: str, name: str) -> Obj | None: ...
    async def create(self, namespace: str, body: Obj) -> Obj: ...
    async def replace(self, namespace: str, name: str, body: Obj) -> Obj: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def micro_time(at: float) -> str:
    """RFC 3339 with microseconds, the form of Lease ``acquireTime``/``renewTime`` (MicroTime)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        store: LeaseStore,
        config: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not config.retry_period < config.renew_deadline < config.lease_duration:
            raise ValueError("need retry period < renew deadline < lease duration")
        self._store = store
        self._config = config
        self._clock = clock
        self._wall = wall
        self._leader = False
        self._last_renew = float("-inf")
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, transitions) last seen
        self._observed_at = float("-inf")
        self._listeners: list[Callable[[bool], None]] = []
        self.holder: str | None = None

    @property
    def identity(self) -> str:
        return self._config.identity

    def may_write(self) -> bool:
        """True only while we hold the lease and renewed it within the renew deadline."""
        return self._leader and self._clock() - self._last_renew < self._config.renew_deadline

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(is_leader)`` on every change of leadership."""
        self._listeners.append(listener)

    async def run(self) -> None:
        config = self._config
        try:
            while True:
                try:
                    renewed = await asyncio.wait_for(self._try_acquire_or_renew(), config.retry_period)
                except (SourceError, TimeoutError) as exc:
                    logger.warning("lease %s/%s: %s", config.namespace, config.name, exc or "timed out")
                    renewed = False
                if renewed:
                    self._last_renew = self._clock()
                    self._set_leader(True)
                elif self._leader and not self.may_write():
                    self._set_leader(False)
                # Jitter (client-go: JitterFactor 1.2) keeps candidates from colliding every period.
                await asyncio.sleep(config.retry_period * random.uniform(0.8, 1.0))
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
            self._config.namespace,
            self._config.name,
            self._config.identity,
        )
        for listener in self._listeners:
            listener(leader)

    async def _try_acquire_or_renew(self) -> bool:
        config = self._config
        now = micro_time(self._wall())
        lease = await self._store.get(config.namespace, config.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.name, "namespace": config.namespace},
                "spec": self._spec(acquire=now, renew=now, transitions=0),
            }
            return await self._write(lambda: self._store.create(config.namespace, body))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        self.holder = holder
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
        if holder not in (None, config.identity) and self._clock() - self._observed_at < duration:
            return False  # someone else holds a lease that has not expired by our clock
        mine = holder == config.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(
            acquire=spec.get("acquireTime") if mine else now, renew=now, transitions=transitions
        )
        return await self._write(lambda: self._store.replace(config.namespace, config.name, lease))

    def _spec(self, *, acquire: str | None, renew: str, transitions: int) -> Obj:
        return {
            "holderIdentity": self._config.identity,
            "leaseDurationSeconds": max(1, round(self._config.lease_duration)),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    async def _write(self, write: Callable[[], Any]) -> bool:
        try:
            await write()
        except WriteConflict:
            return False  # another candidate wrote first: we lost this round
        self.holder = self._config.identity
        return True

    async def _release(self) -> None:
        """Give the lease up on shutdown so another replica takes over at once (ReleaseOnCancel)."""
        config = self._config
        try:
            lease = await asyncio.wait_for(
                self._store.get(config.namespace, config.name), config.retry_period
            )
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != config.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(self._wall()),
            }
            await asyncio.wait_for(
                self._store.replace(config.namespace, config.name, lease), config.retry_period
            )
            logger.info("released lease %s/%s", config.namespace, config.name)
        except (SourceError, TimeoutError) as exc:
            logger.warning("could not release lease %s/%s: %s", config.namespace, config.name, exc)

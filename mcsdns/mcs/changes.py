"""How an importer learns what changed in Cloud Map without asking every service: change beacons, and a
slow sweep as the safety net. Pure: encoding, decoding and choosing; the controllers do the calls.

Cloud Map has no watch. Asking every imported service for its revision every poll costs clusters x services
calls per poll against account-wide quotas (docs/cloudmap-scale.md). So:

- **Beacons.** After an export changes anything (instances registered or deregistered), the exporting
  leader re-registers its own instance of the service ``changes`` in namespace ``mcsdns.heartbeats`` (the
  heartbeats' namespace, which nothing imports: a dot is in its name). The instance lists the services that
  changed, each batch under a sequence number, newest first, as many as fit Cloud Map's attribute limits
  ("up to 30 custom attributes", a value "up to 1,024 characters", keys and values "a total of 5,000
  characters", API reference, RegisterInstance Attributes), and ``FROM``: every change after ``FROM`` is
  listed. An importer asks one revision per poll (DiscoverInstancesRevision of ``changes``: the revision
  moves when an instance is registered, API reference), reads the instances only when it moved, and reads
  only the services named since the sequence it saw last. If it saw nothing since before ``FROM`` (it was
  away, or a burst overflowed the list) it checks every service's revision once instead. The cost of an
  idle poll is one call, whatever the number of services; the cost of a change is a few calls.
- **The sweep.** Clusters run by the AWS controller do not write beacons, another account may write to a
  shared namespace, state can be lost: every import's revision is also checked at least once per
  ``--cloudmap-max-staleness``, oldest first, paced evenly so that the sweep costs services / staleness
  calls per second and never comes in bursts.

Only documented behaviour is used: RegisterInstance of an existing instance id updates it, and a
registration moves the service's InstancesRevision. ListOperations was weighed and not used: it returns
only ids and statuses (GetOperation per change gives the targets), it pages over the account's whole
operation history before filtering ("Cloud Map gets MaxResults operations and then filters them"), and
neither its order nor how long operations are kept is documented, so its cost is not bounded.

Everything here is pure but ``BeaconReader``, which makes the two calls of a poll's beacon check.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from mcsdns.clients.budget import Priority
from mcsdns.clients.cloudmap import CloudMapClient, CloudMapError
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.heartbeat import NAMESPACE
from mcsdns.mcs.workqueue import FairQueue

Key = tuple[str, str]

SERVICE = "changes"  # in the heartbeats' namespace, which nothing imports
SEQ = "MCSDNS_SEQ"
FROM = "MCSDNS_FROM"
CHANGED = "MCSDNS_CHANGED_"  # + 0, 1, ...: "seq=ns/name,ns/name;seq=..." newest first
MAX_VALUE = 1024  # characters of one attribute value
MAX_LISTED = 4000  # characters of the changed lists together, under the 5,000 of every attribute
SWEEP_SHARE = 0.8  # the sweep aims to check each import within this share of the staleness bound
FOLLOW_FIRST = 1.0  # seconds: a service that just moved is checked again this soon, then twice as late...


@dataclass(frozen=True, slots=True)
class Beacon:
    cluster: str
    seq: int
    since: int  # FROM: every change with a sequence after this is listed
    changes: tuple[tuple[int, Key], ...]  # (sequence, service), newest first


class BeaconLog:
    """A writer's beacon: its sequence, its recent changes (what fits), and ``since``. A leader that finds
    its cluster's beacon already in Cloud Map adopts it, so importers see one unbroken log across restarts
    and leader changes; a cluster's first beacon starts at 0 (everything it ever announced is listed)."""

    def __init__(self) -> None:
        self.seq = 0
        self.since = 0
        self.history: list[tuple[int, Key]] = []  # newest first

    def adopt(self, beacon: Beacon) -> None:
        if beacon.seq > self.seq:
            self.seq, self.since, self.history = beacon.seq, beacon.since, list(beacon.changes)

    def announce(self, keys: Iterable[Key], now_ms: int) -> None:
        """One batch of changed services, under the next sequence; the oldest batches that no longer fit
        drop out, and ``since`` moves past them."""
        self.seq = next_seq(self.seq, now_ms)
        self.history[:0] = [(self.seq, key) for key in sorted(set(keys))]
        kept, _ = _fit(self.history)
        if len(kept) < len(self.history):
            self.since = self.history[len(kept)][0]  # the newest batch left out
            self.history = kept

    def attributes(self, cluster_id: str, clusterset_id: str) -> dict[str, str]:
        _, values = _fit(self.history)
        out = {
            attrs.CLUSTER_ID: cluster_id,
            attrs.CLUSTERSET_ID: clusterset_id,
            SEQ: str(self.seq),
            FROM: str(self.since),
        }
        out.update({f"{CHANGED}{index}": value for index, value in enumerate(values)})
        return out


def _fit(history: list[tuple[int, Key]]) -> tuple[list[tuple[int, Key]], list[str]]:
    """The newest whole batches of ``history`` that fit the attribute limits, and their attribute values
    (a batch may continue in the next value under the same sequence)."""
    batches: dict[int, list[Key]] = {}
    for number, key in history:
        batches.setdefault(number, []).append(key)
    values: list[str] = []
    used = 0
    kept: list[tuple[int, Key]] = []
    for number in sorted(batches, reverse=True):
        pieces: list[str] = []
        for ns, name in sorted(set(batches[number])):
            entry = f"{ns}/{name}"
            if pieces and len(pieces[-1]) + 1 + len(entry) <= MAX_VALUE:
                pieces[-1] += "," + entry
            else:
                pieces.append(f"{number}={entry}")
        cost = sum(len(piece) + 1 for piece in pieces)
        if used + cost > MAX_LISTED:
            break
        used += cost
        for piece in pieces:
            if values and len(values[-1]) + 1 + len(piece) <= MAX_VALUE:
                values[-1] += ";" + piece
            else:
                values.append(piece)
        kept.extend((number, key) for key in batches[number])
    return kept, values


def read_beacon(attributes: Mapping[str, str], clusterset_id: str) -> Beacon | None:
    """A beacon of ``clusterset_id`` from its instance's attributes; None when it is not one (or is torn)."""
    cluster = attributes.get(attrs.CLUSTER_ID)
    if not cluster or attributes.get(attrs.CLUSTERSET_ID) != clusterset_id:
        return None
    try:
        seq, since = int(attributes[SEQ]), int(attributes[FROM])
        changes: list[tuple[int, Key]] = []
        index = 0
        while f"{CHANGED}{index}" in attributes:
            for batch in attributes[f"{CHANGED}{index}"].split(";"):
                number, _, keys = batch.partition("=")
                for text in keys.split(","):
                    namespace, _, name = text.partition("/")
                    if namespace and name:
                        changes.append((int(number), (namespace, name)))
            index += 1
    except (KeyError, ValueError):
        return None
    return Beacon(cluster, seq, since, tuple(changes))


def named_since(beacon: Beacon, seen: int | None) -> set[Key] | None:
    """The services ``beacon`` says changed after sequence ``seen``; None when it cannot say (``seen`` is
    before what it lists, or unknown): then every service must be checked."""
    if seen is None or seen < beacon.since:
        return None
    return {key for number, key in beacon.changes if number > seen}


def next_seq(previous: int, now_ms: int) -> int:
    """Sequences grow across restarts and leader changes: the writer's clock in ms, or one more."""
    return max(previous + 1, now_ms)


class Sweep:
    """Which imports' revisions a poll checks: the overdue ones, and enough of the oldest others that each
    is checked within ``SWEEP_SHARE`` of ``max_staleness`` at an even pace. The pace is kept as a credit of
    checks (services x seconds since the last poll / window) so that a handful of services costs a check
    now and then, not one every poll, and a clusterset read all at once is not checked all at once again.
    Never-checked keys count as the oldest; ``most`` caps a pick (the budget's share of one poll).

    A service seen moving without a beacon (a check found a new revision) or seen made but empty is
    followed: checked again after ``FOLLOW_FIRST``, then at doubling intervals until the window, and from
    the start again when it moves. A writer that bumps no beacon (the AWS controller) creates a service and
    registers its instances one by one in later calls, so the first read often sees part of what follows;
    without this the rest would wait for the sweep (up to the staleness bound). Each move costs about
    log2(window / FOLLOW_FIRST) checks, so the cost still grows with changes, not with services."""

    def __init__(self, max_staleness: float) -> None:
        self.window = max(max_staleness * SWEEP_SHARE, 1e-9)
        self._credit = 0.0
        self._following: dict[Key, tuple[float, float]] = {}  # key → (check again at, interval)

    def moved(self, key: Key, now: float) -> None:
        """``key`` changed (or was made, empty) in a way no beacon announced: follow it."""
        self._following[key] = (now + FOLLOW_FIRST, FOLLOW_FIRST)

    def checked(self, key: Key, now: float, *, changed: bool) -> None:
        """A revision check of ``key`` ran: follow it from the start if it moved, else wait twice as long
        (and stop following past the window, where the sweep's pace takes over)."""
        if changed:
            self.moved(key, now)
        elif (following := self._following.get(key)) is not None:
            interval = following[1] * 2
            if interval >= self.window:
                del self._following[key]
            else:
                self._following[key] = (now + interval, interval)

    def forget(self, key: Key) -> None:
        self._following.pop(key, None)

    def _follow_ups(self, keys: Collection[Key], now: float, most: int) -> list[Key]:
        due = sorted((at, key) for key, (at, _) in self._following.items() if at <= now and key in keys)
        return [key for _, key in due[: max(0, most)]]

    def pick(
        self,
        verified: Mapping[Key, float],
        keys: Iterable[Key],
        *,
        now: float,
        period: float,
        most: int | None = None,
    ) -> list[Key]:
        keys = list(keys)
        return self._take(verified, keys, self.wanted(verified, keys, now=now, period=period), period, most)

    def _take(
        self,
        verified: Mapping[Key, float],
        keys: Collection[Key],
        count: int,
        period: float,
        most: int | None,
    ) -> list[Key]:
        """The oldest ``count`` of ``keys`` (``wanted``'s answer for them), at most ``most``; the credit
        pays for them."""
        ordered = sorted(keys, key=lambda k: verified.get(k, -math.inf))
        if not ordered:
            self._credit = 0.0
            return []
        self._credit = self._earned(len(ordered), period)
        if most is not None:
            count = max(0, min(count, most))  # the rest stay due: picked first next time
        self._credit = max(0.0, self._credit - count)
        return ordered[:count]

    def plan(
        self,
        pending: FairQueue[Key],
        known: set[Key],
        verified: Mapping[Key, float],
        *,
        now: float,
        period: float,
        limit: int,
        in_flight: int = 0,
    ) -> tuple[list[Key], list[Key]]:
        """One poll's reads, at most ``limit``: first reads and changes taken from ``pending`` (those still
        ``known``), and the revision checks this sweep asks for among the other known keys, fewer by the
        ``in_flight`` checks an earlier poll started and the budget has not served yet.

        The sweep's pace holds while new services queue (a cold start, a burst): up to half the poll is kept
        for the checks it asks for, so every import stays within the staleness bound however long the
        queue of first reads is; what the sweep does not ask for goes to the queue."""
        swept = known - set(pending)
        wanted = self.wanted(verified, swept, now=now, period=period)
        held = min(wanted, limit // 2)
        direct: list[Key] = []
        while len(direct) < limit - held and (turn := pending.get_nowait()) is not None:
            if turn in known:
                direct.append(turn)
        checks = self._take(verified, swept, wanted, period, most=limit - len(direct) - in_flight)
        # Follow-ups come last, within the limit; one the sweep picked already is checked once.
        room = limit - len(direct) - in_flight - len(checks)
        follow_ups = self._follow_ups(swept.difference(checks), now, room)
        return direct, checks + follow_ups

    def wanted(
        self, verified: Mapping[Key, float], keys: Collection[Key], *, now: float, period: float
    ) -> int:
        """How many checks ``pick`` would take now without ``most``; nothing is taken."""
        if not keys:
            return 0
        return max(int(self._earned(len(keys), period)), self._overdue(verified, keys, now))

    def overdue(self, verified: Mapping[Key, float], key: Key, now: float) -> bool:
        """Whether ``key`` was last checked a whole window ago (or never): its check cannot wait its turn."""
        return now - verified.get(key, -math.inf) >= self.window

    def _earned(self, keys: int, period: float) -> float:
        return min(self._credit + keys * min(period, self.window) / self.window, keys)

    def _overdue(self, verified: Mapping[Key, float], keys: Iterable[Key], now: float) -> int:
        return sum(1 for k in keys if self.overdue(verified, k, now))


class BeaconReader:
    """What the clusterset's beacons named since the last ``changed()``: one revision call when nothing
    moved, one DiscoverInstances more when something did."""

    def __init__(self, cloudmap: CloudMapClient) -> None:
        self._cloudmap = cloudmap
        self._revision: int | None = None
        self._seen: dict[str, int] = {}  # cluster → the beacon sequence read last

    async def changed(self, clusterset_id: str) -> set[Key] | None:
        """The services named since the last call, or None when every revision must be checked (a beacon's
        list does not reach back to what was read last)."""
        try:
            revision = await self._cloudmap.revision(NAMESPACE, SERVICE, Priority.CHANGE)
        except CloudMapError as exc:
            if exc.code in ("NamespaceNotFound", "ServiceNotFound"):
                return set()  # no mcsdns cluster announced anything yet: the sweep covers the others
            raise
        if revision == self._revision:
            return set()
        _, found = await self._cloudmap.discover(NAMESPACE, SERVICE, clusterset_id, Priority.CHANGE)
        named: set[Key] | None = set()
        for instance in found:
            beacon = read_beacon(instance.attributes, clusterset_id)
            if beacon is None:
                continue
            # A cluster read for the first time is read from 0: its whole log if it still lists it, else
            # every revision is checked. Not "from now": this reader may have read services before the
            # beacons existed, and what was announced in between would wait for the sweep.
            since = named_since(beacon, self._seen.get(beacon.cluster, 0))
            if since is None:
                named = None
            elif named is not None:
                named |= since
            self._seen[beacon.cluster] = beacon.seq
        self._revision = revision
        return named

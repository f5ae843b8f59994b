"""Versioned object storage: the emulator's etcd plus the API server's generic registry logic.

One lock guards every object, one global ``resourceVersion`` counter (etcd's revision) orders every write, and
a bounded event history (etcd's watch window) serves watches and consistent paginated lists. Holds the
semantics clients depend on: optimistic concurrency (409), generation, finalizers and ``deletionTimestamp``,
status subresources, no-op updates that write nothing, 410 once history is compacted. Stored objects are never
mutated after commit (copy-on-write), so readers may hold them without the lock; callers must treat returned
objects as read-only. No HTTP here: the server module translates requests into these calls.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import builtins
import copy
import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from . import errors, patch, validation
from .errors import ApiError, FieldError, Obj, bad_request
from .resources import ResourceRegistry, ResourceType
from .selectors import FieldSelector, LabelSelector
from .strategies import ServiceNetwork, WriteContext, spec_of

ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"
BOOKMARK: Final = "BOOKMARK"
INITIAL_EVENTS_END: Final = "k8s.io/initial-events-end"
"""The annotation of the BOOKMARK that ends a streaming list's initial events (KEP-3157)."""

MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
PATCH_TYPES: Final = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

ORPHAN_FINALIZER: Final = "orphan"
FOREGROUND_FINALIZER: Final = "foregroundDeletion"
_POLICIES: Final = ("Orphan", "Background", "Foreground")

# utilrand.String's alphabet: no vowels (no accidental words), no confusable 0/1/3.
_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"

Key = tuple[str, str]
"""(namespace or "", name)."""

Clock = Callable[[], datetime]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as ``metav1.Time`` serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _sort_key(key: Key) -> str:
    # etcd keys are "<prefix>/<namespace>/<name>": lists come back in that byte order.
    return f"{key[0]}/{key[1]}"


class Event:
    """One committed change. ``prev`` is the object before it (None for ADDED) so that a watch with a
    selector can turn a change that leaves its selection into DELETED, as the watch cache does."""

    __slots__ = ("_encoded", "obj", "prev", "resource", "rv", "type")

    def __init__(self, type_: str, rv: int, resource: ResourceType, obj: Obj, prev: Obj | None) -> None:
        self.type = type_
        self.rv = rv
        self.resource = resource
        self.obj = obj
        self.prev = prev
        self._encoded: dict[tuple[str, str], bytes] = {}

    def encoded(self, type_: str, obj: Obj, api_version: str) -> bytes:
        """The watch line for ``obj`` (this event's object or, for a selection change, its previous state)
        as ``api_version``. Lines for the event's own object are computed once and shared by all watchers."""
        shared = obj is self.obj
        cache_key = (type_, api_version)
        if shared and cache_key in self._encoded:
            return self._encoded[cache_key]
        line = (
            json.dumps(
                {"type": type_, "object": {**obj, "apiVersion": api_version}}, separators=(",", ":")
            ).encode()
            + b"\n"
        )
        if shared:
            self._encoded[cache_key] = line
        return line


class Watcher:
    """The queue of one open watch. Storage pushes events under its lock, in commit order, so a watch
    sees every event of its resource type after its start version exactly once and in order."""

    def __init__(
        self,
        resource: ResourceType,
        *,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        version: str,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.version = version
        self._cond = threading.Condition()
        self._events: deque[Event] = deque()
        self._closed = False

    def push(self, event: Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def has_pending(self) -> bool:
        with self._cond:
            return bool(self._events)

    def next(self, timeout: float) -> Event | None:
        """The next event, or None when ``timeout`` passes or the watch is closed."""
        with self._cond:
            if not self._events and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._events:
                return None
            return self._events.popleft()

    def _selected(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(
            obj, self.resource.field_getters
        )

    def visible(self, event: Event) -> tuple[str, Obj] | None:
        """What this watch sends for ``event`` (cacheWatcher.convertToWatchEvent): a change that enters the
        selection is ADDED, one that leaves it is DELETED (old content at the new version). A BOOKMARK is
        for every watcher it was pushed to."""
        if event.type == BOOKMARK:
            return BOOKMARK, event.obj
        now = event.type != DELETED and self._selected(event.obj)
        before = event.prev is not None and self._selected(event.prev)
        if now and before:
            return MODIFIED, event.obj
        if now:
            return ADDED, event.obj
        if before:
            if event.type == DELETED:
                return DELETED, event.obj
            assert event.prev is not None
            meta = {**event.prev["metadata"], "resourceVersion": event.obj["metadata"]["resourceVersion"]}
            return DELETED, {**event.prev, "metadata": meta}
        return None


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    obj: Obj
    deleted: bool
    """True when the object left storage now; False when it waits for finalizers (deletionTimestamp set)."""


def encode_continue(rv: int, last_key: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": last_key + "\x00"}
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rv, start = int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ) from None
    if data.get("v") != "meta.k8s.io/v1" or not start.endswith("\x00"):
        raise bad_request("continue key is not valid: server does not recognize this encoded version")
    return rv, start[:-1]


Listener = Callable[[Event], None]


class Storage:
    """All objects of all served types. Thread-safe; every public method takes the lock."""

    def __init__(
        self,
        registry: ResourceRegistry,
        network: ServiceNetwork,
        *,
        history_size: int = 100_000,
        clock: Clock = _utc_now,
        auto_create_namespaces: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.registry = registry
        self.network = network
        self._history_size = history_size
        self._clock = clock
        self._auto_create_namespaces = auto_create_namespaces
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._rv = 0
        self._compacted = 0
        self._objects: dict[ResourceType, dict[Key, Obj]] = {rt: {} for rt in registry}
        # Every type's sort keys in etcd key order, so a page of a list starts with a bisection instead of
        # sorting the whole type (the real API server reads a key range from etcd or its watch cache).
        self._order: dict[ResourceType, list[str]] = {rt: [] for rt in registry}
        self._history: deque[Event] = deque()
        self._watchers: dict[ResourceType, set[Watcher]] = {rt: set() for rt in registry}
        self._by_uid: dict[str, tuple[ResourceType, Key]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._listeners: list[Listener] = []
        self._applied: dict[str, dict[str, Obj]] = {}
        """uid -> field manager -> the configuration it last applied (server-side apply bookkeeping)."""
        namespaces = registry.by_name("namespaces")
        assert namespaces is not None
        self._namespaces = namespaces

    # --- versions and history ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    @property
    def compacted_version(self) -> int:
        """Watches and consistent reads need versions at or after this one."""
        with self._lock:
            return self._compacted

    def compact(self) -> int:
        """Forget all history: every version older than the current one now answers 410 Gone."""
        with self._lock:
            self._history.clear()
            self._compacted = self._rv
            return self._rv

    def add_listener(self, listener: Listener) -> None:
        """``listener`` runs under the storage lock after every commit, in commit order: keep it short."""
        with self._lock:
            self._listeners.append(listener)

    def _commit(self, type_: str, rt: ResourceType, key: Key, obj: Obj | None, prev: Obj | None) -> Obj:
        self._rv += 1
        bucket = self._objects[rt]
        if type_ == DELETED:
            assert prev is not None
            # A DELETED event carries the last stored state at the deletion's version (etcd3 watcher).
            stored = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(self._rv)}}
            del bucket[key]
            order = self._order[rt]
            del order[bisect.bisect_left(order, _sort_key(key))]
        else:
            assert obj is not None
            obj["metadata"]["resourceVersion"] = str(self._rv)
            stored = obj
            if key not in bucket:
                bisect.insort(self._order[rt], _sort_key(key))
            bucket[key] = obj
        event = Event(type_, self._rv, rt, stored, prev)
        self._history.append(event)
        if len(self._history) > self._history_size:
            self._compacted = self._history.popleft().rv
        self._index(rt, key, None if type_ == DELETED else stored, prev)
        for watcher in self._watchers[rt]:
            watcher.push(event)
        for listener in self._listeners:
            listener(event)
        return stored

    def _index(self, rt: ResourceType, key: Key, obj: Obj | None, prev: Obj | None) -> None:
        old_meta = prev["metadata"] if prev else {}
        new_meta = obj["metadata"] if obj else {}
        uid = str(new_meta.get("uid") or old_meta.get("uid"))
        if obj is None:
            self._by_uid.pop(uid, None)
            self._applied.pop(uid, None)
        else:
            self._by_uid[uid] = (rt, key)
        old_owners = {str(r.get("uid")) for r in old_meta.get("ownerReferences") or []}
        new_owners = {str(r.get("uid")) for r in new_meta.get("ownerReferences") or []}
        for owner in old_owners - new_owners:
            dependents = self._dependents.get(owner)
            if dependents is not None:
                dependents.discard(uid)
                if not dependents:
                    del self._dependents[owner]
        for owner in new_owners - old_owners:
            self._dependents.setdefault(owner, set()).add(uid)

    # --- reads ------------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            return self._get(rt, namespace, name)

    def _get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._objects[rt].get(((namespace or "") if rt.namespaced else "", name))
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            return self._objects[rt].get(((namespace or "") if rt.namespaced else "", name))

    def get_by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        with self._lock:
            found = self._by_uid.get(uid)
            if found is None:
                return None
            rt, key = found
            return rt, self._objects[rt][key]

    def dependents(self, owner_uid: str) -> list[tuple[ResourceType, Obj]]:
        """Objects whose ownerReferences name ``owner_uid`` (the garbage collector's graph)."""
        with self._lock:
            found = (self._by_uid.get(uid) for uid in self._dependents.get(owner_uid, ()))
            return [(rt, self._objects[rt][key]) for rt, key in (f for f in found if f is not None)]

    def count(self, rt: ResourceType, namespace: str | None = None) -> int:
        with self._lock:
            if namespace is None:
                return len(self._objects[rt])
            return sum(1 for key in self._objects[rt] if key[0] == namespace)

    def _in_order(self, rt: ResourceType, after: str) -> Iterable[tuple[str, Obj]]:
        """The type's current objects with sort keys after ``after``, in key order (hold the lock)."""
        order, objects = self._order[rt], self._objects[rt]
        for index in range(bisect.bisect_right(order, after), len(order)):
            sort_key = order[index]
            namespace, _, name = sort_key.partition("/")
            yield sort_key, objects[namespace, name]

    def _count_after(self, rt: ResourceType, at: int, after: str, prefix: str) -> int:
        """How many objects of the type, in ``prefix``'s range, sort after ``after`` (hold the lock)."""
        if at == self._rv:
            order = self._order[rt]
            end = bisect.bisect_left(order, prefix + "\U0010ffff") if prefix else len(order)
            return max(0, end - bisect.bisect_right(order, after))
        return sum(
            1
            for key in self._snapshot(rt, at)
            if _sort_key(key) > after and _sort_key(key).startswith(prefix)
        )

    def _snapshot(self, rt: ResourceType, at: int) -> dict[Key, Obj]:
        """The type's objects as of version ``at`` (>= compacted): the current state, later events undone."""
        objects = dict(self._objects[rt])
        for event in reversed(self._history):
            if event.rv <= at:
                break
            if event.resource is rt:
                key = key_of(event.obj)
                if event.type == ADDED:
                    objects.pop(key, None)
                else:
                    assert event.prev is not None
                    objects[key] = event.prev
        return objects

    def _parse_rv(self, text: str, field: str = "resourceVersion") -> int:
        try:
            value = int(text)
        except ValueError:
            raise errors.invalid_object(
                "ListOptions",
                "meta.k8s.io",
                "",
                [errors.invalid(field, text, "must be a non-negative integer")],
            ) from None
        if value < 0:
            raise bad_request(f"invalid {field} {text!r}")
        return value

    def list(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> ListResult:
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        start = ""
        with self._lock:
            if continue_token:
                if resource_version not in (None, "", "0"):
                    raise bad_request("specifying resource version is not allowed when using continue")
                at, start = decode_continue(continue_token)
                if at == -1:
                    at = self._rv  # an "inconsistent" token handed out with a 410
                elif at < self._compacted:
                    raise ApiError(
                        410, "Expired", _CONTINUE_EXPIRED, metadata={"continue": encode_continue(-1, start)}
                    )
            elif resource_version_match == "Exact":
                if not resource_version:
                    raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
                at = self._parse_rv(resource_version)
                if at < self._compacted:
                    raise errors.expired(f"too old resource version: {at} ({self._compacted})")
                if at > self._rv:
                    raise errors.resource_version_too_large(at, self._rv)
            else:
                if resource_version_match not in (None, "", "NotOlderThan"):
                    raise bad_request(f"unsupported resourceVersionMatch {resource_version_match!r}")
                if resource_version not in (None, "", "0"):
                    wanted = self._parse_rv(resource_version)
                    if wanted > self._rv:
                        raise errors.resource_version_too_large(wanted, self._rv)
                at = self._rv
            exact = fields.exact_name()
            prefix = "" if namespace is None else f"{namespace}/"
            candidates: Iterable[tuple[str, Obj]]
            if at == self._rv:
                if exact is not None and rt.namespaced and namespace is not None:
                    found = self._objects[rt].get((namespace, exact))
                    candidates = [] if found is None else [(_sort_key((namespace, exact)), found)]
                else:
                    candidates = self._in_order(rt, max(start, prefix))
            else:
                candidates = sorted(
                    ((_sort_key(key), obj) for key, obj in self._snapshot(rt, at).items()),
                    key=lambda item: item[0],
                )
            # Under the lock, because ``_in_order`` walks the live index; stored objects are immutable.
            selected: list[tuple[str, Obj]] = []
            for sort_key, obj in candidates:
                if not sort_key.startswith(prefix):
                    if sort_key > prefix:
                        break  # past the namespace's key range
                    continue
                if start and sort_key <= start:
                    continue
                meta = obj["metadata"]
                if labels.matches(meta.get("labels")) and fields.matches(obj, rt.field_getters):
                    selected.append((sort_key, obj))
                    if limit and len(selected) > limit:
                        break  # one more than the page: enough to know a continue token is due
        token = remaining = None
        if limit and limit > 0 and len(selected) > limit:
            token = encode_continue(at, selected[limit - 1][0])
            # remainingItemCount is only exact without selectors, so the real server omits it otherwise.
            if labels.empty and not fields.requirements:
                with self._lock:
                    remaining = self._count_after(rt, at, selected[limit - 1][0], prefix)
            selected = selected[:limit]
        return ListResult([obj for _, obj in selected], str(at), token, remaining)

    def watch(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        resource_version: str | None = None,
        version: str | None = None,
        send_initial_events: bool | None = None,
    ) -> Watcher:
        """Open a watch. Without a version (or "0") it starts with a synthetic ADDED per current object;
        with one it replays every later event still in history, or raises 410 Expired.

        ``send_initial_events`` is a streaming list (KEP-3157, the handler checks its preconditions): True
        starts with the current objects whatever the version, then a BOOKMARK annotated
        ``k8s.io/initial-events-end`` at the version they were read at; False starts after the current
        version (or the given one) with no synthetic events. None keeps the classic rules above."""
        watcher = Watcher(
            rt,
            namespace=namespace,
            labels=labels or LabelSelector(),
            fields=fields or FieldSelector(),
            version=version or rt.preferred_version,
        )
        with self._lock:
            if send_initial_events is not None and resource_version not in (None, "", "0"):
                # NotOlderThan: the state served must be at least as new as the version asked for.
                wanted = self._parse_rv(resource_version)
                if wanted > self._rv:
                    raise errors.resource_version_too_large(wanted, self._rv)
            if send_initial_events is False:
                pass  # from now on: nothing to replay, nothing synthetic
            elif send_initial_events or resource_version in (None, "", "0"):
                exact = watcher.fields.exact_name()
                objects = self._objects[rt]
                if exact is not None and namespace is not None and rt.namespaced:
                    found = objects.get((namespace, exact))
                    initial = [] if found is None else [found]
                else:
                    initial = [
                        obj
                        for key, obj in sorted(objects.items(), key=lambda kv: _sort_key(kv[0]))
                        if namespace is None or key[0] == namespace
                    ]
                for obj in initial:
                    watcher.push(Event(ADDED, int(obj["metadata"]["resourceVersion"]), rt, obj, None))
                if send_initial_events:
                    end = {
                        "metadata": {
                            "resourceVersion": str(self._rv),
                            "annotations": {INITIAL_EVENTS_END: "true"},
                        }
                    }
                    watcher.push(Event(BOOKMARK, self._rv, rt, end, None))
            else:
                since = self._parse_rv(resource_version)
                if since < self._compacted:
                    raise errors.expired(f"too old resource version: {since} ({self._compacted})")
                if since > self._rv:
                    raise errors.resource_version_too_large(since, self._rv)
                replay: list[Event] = []
                for event in reversed(self._history):
                    if event.rv <= since:
                        break
                    if event.resource is rt:
                        replay.append(event)
                for event in reversed(replay):
                    watcher.push(event)
            self._watchers[rt].add(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[watcher.resource].discard(watcher)
        watcher.close()

    def close_watchers(self) -> int:
        """Close every open watch (clients then re-watch from their last version)."""
        with self._lock:
            watchers = [w for group in self._watchers.values() for w in group]
            for group in self._watchers.values():
                group.clear()
        for watcher in watchers:
            watcher.close()
        return len(watchers)

    @property
    def open_watches(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._watchers.values())

    def progress_version(self, watcher: Watcher) -> int | None:
        """A version a BOOKMARK may carry for ``watcher``: the current one if the watcher has nothing queued
        (every earlier event was already delivered), else None (deliver first)."""
        with self._lock:
            return None if watcher.has_pending() else self._rv

    # --- writes -----------------------------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, obj: Any, version: str) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        api_version = obj.get("apiVersion")
        if api_version and api_version != rt.api_version(version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version(version)})"
            )
        kind = obj.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        # Stored in the storage (preferred) version; readers get the version they ask for. The versions of
        # one kind share one schema here, so this is a relabelling, not a conversion.
        obj["apiVersion"] = rt.api_version()
        obj["kind"] = rt.kind
        return obj

    def _now(self) -> str:
        return format_time(self._clock())

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self._objects[self._namespaces].get(("", namespace))
        if ns is None:
            if not self._auto_create_namespaces:
                raise errors.not_found("namespaces", "", namespace)
            self.create(self._namespaces, {"metadata": {"name": namespace}}, namespace=None, version="v1")
        elif ns["metadata"].get("deletionTimestamp"):
            # NamespaceLifecycle admission.
            raise errors.forbidden_request(
                f'{rt.key} "{name}" is forbidden: unable to create new content in namespace {namespace} '
                "because it is being terminated",
                resource=rt.plural,
                group=rt.group,
                name=name,
            )

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        prefix = prefix[:58]  # generated names stay within 63 characters
        for _ in range(100):
            name = prefix + "".join(self._rng.choice(_NAME_ALPHABET) for _ in range(5))
            if (namespace, name) not in self._objects[rt]:
                return name
        raise errors.already_exists(rt.plural, rt.group, prefix)

    def _invalid(self, rt: ResourceType, name: str, errs: builtins.list[FieldError]) -> ApiError:
        return errors.invalid_object(rt.kind, rt.group, name, errs)

    def create(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        namespace: str | None,
        version: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """POST. Takes ownership of ``obj``."""
        version = version or rt.preferred_version
        obj = self._check_body(rt, obj, version)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace") or ""
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        for server_field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
            "resourceVersion",
        ):
            meta.pop(server_field, None)
        strategy = rt.strategy
        with self._lock:
            if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
                meta["name"] = self._generate_name(rt, namespace, meta["generateName"])
            name = meta.get("name") if isinstance(meta.get("name"), str) else ""
            strategy.prepare_for_create(obj, rt.has_status)
            errs = validation.object_meta(
                meta, namespaced=rt.namespaced, name_validator=strategy.validate_name
            )
            errs += strategy.validate(obj, version)
            if errs:
                raise self._invalid(rt, name, errs)
            if rt.namespaced:
                self._check_namespace(rt, namespace, name)
            key = (namespace, name)
            if key in self._objects[rt]:
                raise errors.already_exists(rt.plural, rt.group, name)
            ctx = WriteContext(self.network)
            errs = strategy.admit(obj, None, ctx)
            if errs:
                ctx.rollback()
                raise self._invalid(rt, name, errs)
            meta["uid"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            meta["creationTimestamp"] = self._now()
            if strategy.tracks_generation:
                meta["generation"] = 1
            if dry_run:
                ctx.rollback()
                return obj
            ctx.commit()

            return self._commit(ADDED, rt, key, obj, None)

    def update(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        namespace: str | None,
        name: str,
        version: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT on the object or on its ``status`` (or a namespace's ``finalize``) subresource."""
        version = version or rt.preferred_version
        obj = self._check_body(rt, obj, version)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self._lock:
            old = self._get(rt, namespace, name)
            return self._update(rt, obj, old, version=version, subresource=subresource, dry_run=dry_run)

    def _update(
        self,
        rt: ResourceType,
        body: Obj,
        old: Obj,
        *,
        version: str,
        subresource: str | None,
        dry_run: bool,
        from_patch: bool = False,
    ) -> Obj:
        strategy = rt.strategy
        old_meta = old["metadata"]
        name = old_meta["name"]
        if subresource is not None and subresource not in rt.subresources:
            raise errors.path_not_found()
        wanted_rv = body["metadata"].get("resourceVersion")

        if wanted_rv:
            if wanted_rv != old_meta["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, errors.STALE_OBJECT)
        elif not strategy.allow_unconditional_update and not from_patch:
            raise self._invalid(
                rt, name, [errors.invalid("metadata.resourceVersion", 0, "must be specified for an update")]
            )
        if subresource == "status":
            # Status writes copy only .status onto the stored object (customResourceStatusStrategy and the
            # built-in status strategies alike); metadata and spec changes in the body are ignored.
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
        elif subresource == "finalize":
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["finalizers"] = (body.get("spec") or {}).get("finalizers") or []
        else:
            new = body
            meta = new["metadata"]
            if meta.get("uid") and meta["uid"] != old_meta["uid"]:
                raise self._invalid(
                    rt, name, [errors.invalid("metadata.uid", meta["uid"], "field is immutable")]
                )
            meta["uid"] = old_meta["uid"]
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = old_meta["namespace"]
            for managed in (
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if managed in old_meta:
                    meta[managed] = old_meta[managed]
                else:
                    meta.pop(managed, None)
            for dropped in ("selfLink", "managedFields"):
                meta.pop(dropped, None)
            strategy.prepare_for_update(new, old, rt.has_status)
        new["apiVersion"] = rt.api_version()
        new["kind"] = rt.kind

        meta = new["metadata"]
        errs = validation.object_meta(meta, namespaced=rt.namespaced, name_validator=lambda _: [])
        errs += strategy.validate_update(new, old, version)
        if old_meta.get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if added:
                errs.append(
                    errors.forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object "
                        f"is being deleted, found new finalizers {json.dumps(added)}",
                    )
                )
        if errs:
            raise self._invalid(rt, name, errs)
        ctx = WriteContext(self.network)
        errs = strategy.admit(new, old, ctx)
        if errs:
            ctx.rollback()
            raise self._invalid(rt, name, errs)
        if strategy.tracks_generation and spec_of(new) != spec_of(old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if new == old:
            # GuaranteedUpdate writes nothing when the object is unchanged: no new version, no event.
            ctx.rollback()
            return old
        if dry_run:
            ctx.rollback()
            return new
        ctx.commit()
        key = key_of(old)
        if meta.get("deletionTimestamp") and strategy.ready_to_remove(new):
            # The last finalizer is gone: the update completes the deletion.
            self._remove(rt, key, old)
            return new
        return self._commit(MODIFIED, rt, key, new, old)

    def _remove(self, rt: ResourceType, key: Key, current: Obj) -> Obj:
        ctx = WriteContext(self.network)
        rt.strategy.on_removed(current, ctx)
        ctx.commit()
        return self._commit(DELETED, rt, key, None, current)

    def patch(
        self,
        rt: ResourceType,
        *,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        version: str | None = None,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """PATCH with one of ``PATCH_TYPES``; returns (object, created). Only apply patches create."""
        version = version or rt.preferred_version
        strategy = rt.strategy
        if patch_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(patch_type, list(PATCH_TYPES))
        if patch_type == STRATEGIC_MERGE_PATCH and strategy.custom_resource:
            # Custom resources have no Go struct tags to drive a strategic merge.
            raise errors.unsupported_media_type(patch_type, [JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
        if patch_type == APPLY_PATCH:
            if not field_manager:
                raise self._invalid(
                    rt, name, [errors.required("fieldManager", "is required for apply patch")]
                )
            if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
                raise bad_request("apply patches must set apiVersion and kind")
            applied_name = (body.get("metadata") or {}).get("name")
            if applied_name and applied_name != name:
                raise bad_request(
                    f"the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )
        with self._lock:
            try:
                old = self._get(rt, namespace, name)
            except ApiError:
                if patch_type != APPLY_PATCH or subresource is not None:
                    raise
                applied = copy.deepcopy(body)
                applied.setdefault("metadata", {})["name"] = name
                created = self.create(
                    rt, copy.deepcopy(applied), namespace=namespace, version=version, dry_run=dry_run
                )
                if not dry_run:
                    self._applied.setdefault(created["metadata"]["uid"], {})[str(field_manager)] = applied
                return created, True
            # Patches apply to the object as seen in the request's version.
            base = {**old, "apiVersion": rt.api_version(version)}
            if patch_type == MERGE_PATCH:
                new = patch.merge_patch(base, body)
            elif patch_type == JSON_PATCH:
                new = patch.json_patch(base, body)
            elif patch_type == STRATEGIC_MERGE_PATCH:
                new = patch.strategic_merge_patch(base, body, strategy.merge_keys)
            else:
                previous = self._applied.get(old["metadata"]["uid"], {}).get(str(field_manager))
                new = patch.apply_patch(base, body, previous, strategy.merge_keys)

            if not isinstance(new, dict):
                raise bad_request("the patch did not produce an object")
            new = self._check_body(rt, new, version)
            if new["metadata"].get("name") != name:
                raise bad_request("the patch may not change the object's name")
            result = self._update(
                rt, new, old, version=version, subresource=subresource, dry_run=dry_run, from_patch=True
            )
            uid = result["metadata"].get("uid")
            if patch_type == APPLY_PATCH and not dry_run and uid in self._by_uid:
                self._applied.setdefault(uid, {})[str(field_manager)] = copy.deepcopy(body)
            return result, False

    def delete(
        self,
        rt: ResourceType,
        *,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = None,
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> DeleteResult:
        if propagation_policy not in (None, *_POLICIES):
            raise self._invalid(
                rt, name, [errors.not_supported("propagationPolicy", propagation_policy, list(_POLICIES))]
            )
        with self._lock:
            old = self._get(rt, namespace, name)
            meta = old["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = (preconditions or {}).get(field)
                if wanted and wanted != meta.get(field):
                    raise errors.conflict(
                        rt.plural,
                        rt.group,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                        f"object meta: {meta.get(field)}",
                    )
            finalizers = list(meta.get("finalizers") or [])
            # deletionFinalizersForGarbageCollection: the policy becomes a GC finalizer on the object.
            if propagation_policy == "Orphan":
                finalizers = [f for f in finalizers if f != FOREGROUND_FINALIZER]
                finalizers += [] if ORPHAN_FINALIZER in finalizers else [ORPHAN_FINALIZER]
            elif propagation_policy == "Foreground":
                finalizers = [f for f in finalizers if f != ORPHAN_FINALIZER]
                finalizers += [] if FOREGROUND_FINALIZER in finalizers else [FOREGROUND_FINALIZER]
            elif propagation_policy == "Background":
                finalizers = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
            candidate = copy.deepcopy(old)
            if finalizers:
                candidate["metadata"]["finalizers"] = finalizers
            else:
                candidate["metadata"].pop("finalizers", None)
            if rt.strategy.ready_to_remove(candidate):
                if dry_run:
                    return DeleteResult(old, True)
                return DeleteResult(self._remove(rt, key_of(old), old), True)
            cmeta = candidate["metadata"]
            if not cmeta.get("deletionTimestamp"):
                cmeta["deletionTimestamp"] = self._now()
                cmeta["deletionGracePeriodSeconds"] = 0
            if rt is self._namespaces:
                candidate.setdefault("status", {})["phase"] = "Terminating"
            if candidate == old or dry_run:
                return DeleteResult(candidate if dry_run else old, False)
            return DeleteResult(self._commit(MODIFIED, rt, key_of(old), candidate, old), False)

    def delete_collection(
        self,
        rt: ResourceType,
        *,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
    ) -> builtins.list[Obj]:
        with self._lock:
            targets = self.list(rt, namespace=namespace, labels=labels, fields=fields).items
            results: builtins.list[Obj] = []
            for obj in targets:
                meta = obj["metadata"]
                try:
                    result = self.delete(
                        rt,
                        namespace=meta.get("namespace"),
                        name=meta["name"],
                        propagation_policy=propagation_policy,
                        dry_run=dry_run,
                    )
                except ApiError as exc:
                    if exc.code == 404:
                        continue
                    raise
                results.append(result.obj)
            return results

    def objects_in_namespace(self, namespace: str) -> Iterable[tuple[ResourceType, Obj]]:
        with self._lock:
            return [
                (rt, obj)
                for rt, bucket in self._objects.items()
                if rt.namespaced
                for key, obj in bucket.items()
                if key[0] == namespace
            ]


_CONTINUE_EXPIRED: Final = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)

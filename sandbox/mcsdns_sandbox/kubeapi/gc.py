"""Garbage collector and namespace controller: the background deletions a real control plane performs.

Like kube-controller-manager, it observes committed events and acts through ordinary storage writes, so
clients see the same event sequence as on a cluster: the owner's DELETED first, its dependents' later.
Implements ownerReference cascades (Background; Foreground via the ``foregroundDeletion`` finalizer and
``blockOwnerDeletion``; Orphan via the ``orphan`` finalizer), deletion of dependents whose owners never
existed, and namespace termination (delete the content, then drop the ``kubernetes`` finalizer).
Runs in one daemon thread; ``wait_idle`` lets tests wait for it without sleeping.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable
from typing import Final

from .errors import ApiError, Obj
from .resources import ResourceType
from .storage import DELETED, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Event, Storage

log = logging.getLogger(__name__)

_DEPENDENTS_OF: Final = "dependents-of"  # an owner is gone: look at its dependents
_DEPENDENT: Final = "dependent"  # an object's owners may be gone
_OWNER: Final = "owner"  # an owner being deleted with the orphan/foreground finalizer
_NAMESPACE: Final = "namespace"  # a terminating namespace
_MAX_RETRIES: Final = 20

WorkItem = tuple[str, str]


def _refs(obj: Obj) -> list[Obj]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return [r for r in refs if isinstance(r, dict)]


def _deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


class GarbageCollector:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._queue: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        namespaces = storage.registry.by_name("namespaces")
        assert namespaces is not None
        self._namespaces = namespaces
        storage.add_listener(self._observe)

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kubeapi-gc", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def wait_idle(self, timeout: float) -> bool:
        """Block until no cascade work is queued or running; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    # --- observing (runs under the storage lock: only enqueue) -------------------------------------------

    def _enqueue(self, kind: str, ident: str) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((kind, ident))

    def _observe(self, event: Event) -> None:
        obj = event.obj
        meta = obj.get("metadata", {})
        uid = meta.get("uid", "")
        if event.type == DELETED:
            if self._storage.dependents(uid):
                self._enqueue(_DEPENDENTS_OF, uid)
            for ref in _refs(obj):
                self._enqueue(_OWNER, str(ref.get("uid")))
            namespace = meta.get("namespace")
            if namespace:
                ns = self._storage.find(self._namespaces, None, namespace)
                if ns is not None and _deleting(ns):
                    self._enqueue(_NAMESPACE, namespace)
            return
        if _deleting(obj):
            if {ORPHAN_FINALIZER, FOREGROUND_FINALIZER} & set(meta.get("finalizers") or []):
                self._enqueue(_OWNER, uid)
            if event.resource is self._namespaces:
                self._enqueue(_NAMESPACE, meta["name"])
        previous_refs = _refs(event.prev) if event.prev is not None else []
        if _refs(obj) and _refs(obj) != previous_refs:
            self._enqueue(_DEPENDENT, uid)

    # --- processing -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._process(*item)
            except Exception:  # the collector must outlive one bad item, as the real one does
                log.exception("garbage collection of %s failed", item)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _process(self, kind: str, ident: str) -> None:
        if kind == _DEPENDENTS_OF:
            for _, dependent in self._storage.dependents(ident):
                self._attempt_to_delete(dependent["metadata"]["uid"])
        elif kind == _DEPENDENT:
            self._attempt_to_delete(ident)
        elif kind == _OWNER:
            self._process_owner(ident)
        elif kind == _NAMESPACE:
            self._process_namespace(ident)

    def _attempt_to_delete(self, uid: str) -> None:
        """attemptToDeleteItem: classify the owners as solid, dangling (gone) or waiting (foreground)."""
        found = self._storage.get_by_uid(uid)
        if found is None:
            return
        rt, obj = found
        if _deleting(obj):
            return
        solid, gone = [], []
        waiting = False
        for ref in _refs(obj):
            owner = self._storage.get_by_uid(str(ref.get("uid")))
            if owner is None:
                gone.append(ref)
            elif _deleting(owner[1]) and FOREGROUND_FINALIZER in (
                owner[1]["metadata"].get("finalizers") or []
            ):
                gone.append(ref)
                waiting = True
            else:
                solid.append(ref)
        if not gone:
            return
        meta = obj["metadata"]
        if solid:
            # Other owners remain: only drop the references to the absent ones.
            self._mutate(rt, obj, _without_owners({str(r.get("uid")) for r in gone}))
            return
        # Deleting for a foreground owner: go foreground too if this object has dependents of its own.
        policy = "Foreground" if waiting and self._storage.dependents(uid) else "Background"
        try:
            self._storage.delete(
                rt,
                namespace=meta.get("namespace"),
                name=meta["name"],
                propagation_policy=policy,
                preconditions={"uid": uid},
            )
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    def _process_owner(self, uid: str) -> None:
        found = self._storage.get_by_uid(uid)
        if found is None:
            return
        rt, owner = found
        finalizers = owner["metadata"].get("finalizers") or []
        if not _deleting(owner):
            return
        if ORPHAN_FINALIZER in finalizers:
            for dep_rt, dependent in self._storage.dependents(uid):
                self._mutate(dep_rt, dependent, _without_owners({uid}))
            self._remove_finalizer(rt, owner, ORPHAN_FINALIZER)
        elif FOREGROUND_FINALIZER in finalizers:
            for _, dependent in self._storage.dependents(uid):
                self._attempt_to_delete(dependent["metadata"]["uid"])
            blocking = [
                d
                for _, d in self._storage.dependents(uid)
                if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in _refs(d))
            ]
            if not blocking:
                self._remove_finalizer(rt, owner, FOREGROUND_FINALIZER)

    def _process_namespace(self, name: str) -> None:
        namespace = self._storage.find(self._namespaces, None, name)
        if namespace is None or not _deleting(namespace):
            return
        remaining = list(self._storage.objects_in_namespace(name))
        for rt, obj in remaining:
            if not _deleting(obj):
                try:
                    self._storage.delete(
                        rt, namespace=name, name=obj["metadata"]["name"], propagation_policy="Background"
                    )
                except ApiError as exc:
                    if exc.code != 404:
                        raise
        if any(True for _ in self._storage.objects_in_namespace(name)):
            return  # objects with finalizers remain; their DELETED events bring us back
        for _ in range(_MAX_RETRIES):
            current = self._storage.find(self._namespaces, None, name)
            if current is None:
                return
            finalizers = [f for f in current.get("spec", {}).get("finalizers") or [] if f != "kubernetes"]
            body = {
                "metadata": {"name": name, "resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"finalizers": finalizers},
            }
            try:
                self._storage.update(
                    self._namespaces, body, namespace=None, name=name, subresource="finalize"
                )
                return
            except ApiError as exc:
                if exc.code != 409:
                    return

    # --- writes with retry on conflict ------------------------------------------------------------------

    def _mutate(self, rt: ResourceType, obj: Obj, change: Callable[[Obj], None]) -> None:
        meta = obj["metadata"]
        for _ in range(_MAX_RETRIES):
            updated = copy.deepcopy(obj)
            change(updated)
            try:
                self._storage.update(
                    rt,
                    updated,
                    namespace=meta.get("namespace"),
                    name=meta["name"],
                    version=rt.preferred_version,
                )
                return
            except ApiError as exc:
                if exc.code != 409:
                    return
            try:
                obj = self._storage.get(rt, meta.get("namespace"), meta["name"])
            except ApiError:
                return

    def _remove_finalizer(self, rt: ResourceType, obj: Obj, finalizer: str) -> None:
        def change(target: Obj) -> None:
            meta = target["metadata"]
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]

        self._mutate(rt, obj, change)


def _without_owners(uids: set[str]) -> Callable[[Obj], None]:
    def change(target: Obj) -> None:
        refs = [r for r in _refs(target) if str(r.get("uid")) not in uids]
        if refs:
            target["metadata"]["ownerReferences"] = refs
        else:
            target["metadata"].pop("ownerReferences", None)

    return change

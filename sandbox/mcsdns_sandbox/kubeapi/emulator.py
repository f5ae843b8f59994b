"""``KubeApiEmulator``: composition root of the Kubernetes API emulator, and its fault hooks.

Wires storage, the garbage collector and the HTTP server, binds the socket before ``start`` returns (so the
server is ready with no sleep), writes kubeconfigs, and implements the fault hooks used by tests, benchmarks
and the demo: close all watches, fail the next N requests, hold replies, compact history, pause/resume.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

import yaml

from .errors import Obj
from .faults import Faults
from .gc import GarbageCollector
from .handlers import ApiApp, Request, WatchSettings
from .ipalloc import IPAllocator, PortAllocator, parse_cidrs
from .resources import DEFAULT_MCS_VERSIONS, ResourceRegistry, ResourceType, builtin_resources
from .server import ApiHTTPServer
from .storage import ADDED, DELETED, Event, Storage
from .store import Store
from .strategies import API_APPROVED, ServiceNetwork

PAUSE_MODES: Final = ("hang", "refuse")
_DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")


class KubeApiEmulator:
    """An emulated Kubernetes API server on loopback, for the official clients and kubectl.

    Use as a context manager (``with KubeApiEmulator() as api: api.url``) or call ``start``/``stop``.
    ``pause(mode="hang")`` holds every request and watch event until ``resume`` (a partitioned server:
    clients time out, nothing is refused); ``pause(mode="refuse")`` closes the listener and every
    connection (a stopped server: connection refused) and listens again on the same port on ``resume``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_cidr: str = "10.96.0.0/16",
        history_size: int = 100_000,
        bookmark_interval: float = 60.0,
        watch_timeout: float | None = None,
        mcs_versions: tuple[str, ...] = DEFAULT_MCS_VERSIONS,
        auto_create_namespaces: bool = False,
        default_objects: bool = True,
        cluster_name: str = "emulator",
        cluster_id: str | None = None,
        clusterset_id: str | None = None,
        crds: bool = False,
        seed: int | None = None,
    ) -> None:
        """
        :param service_cidr: Service ClusterIP range; two comma-separated ranges make a dual-stack cluster.
        :param history_size: events kept for watches and paginated lists; older versions answer 410 Gone.
        :param bookmark_interval: seconds between BOOKMARK events (watches with allowWatchBookmarks).
        :param watch_timeout: server-side end of watches without timeoutSeconds (default: 30-60 min).
        :param auto_create_namespaces: create a missing namespace on first use instead of answering 404.
        :param default_objects: create what a new cluster has: the four default namespaces and the
            ``default/kubernetes`` Service (first IP of the range) with its EndpointSlice.
        :param cluster_id: if set, create the ClusterProperty ``cluster.clusterset.k8s.io`` with this value
            (and ``clusterset.k8s.io`` from ``clusterset_id``), as an MCS cluster is expected to have.
        :param crds: create the CustomResourceDefinitions of the CRD-backed kinds (ServiceExport,
            ServiceImport, ClusterProperty) at start, and serve each kind only while its CRD exists: ``kubectl
            delete crd`` makes it vanish from discovery and answer 404, as on a cluster, and applying the CRD
            again brings it back. Its objects are kept meanwhile (a real API server deletes them). Off: the
            kinds are served whatever CRDs say.
        :param seed: makes generated names, UIDs and allocated IPs reproducible.
        """
        rng = random.Random(seed)
        self._host = host
        self.cluster_name = cluster_name
        networks = parse_cidrs(service_cidr)
        self.network = ServiceNetwork(
            [IPAllocator(n, random.Random(rng.random())) for n in networks],
            PortAllocator(rng=random.Random(rng.random())),
        )
        self.registry = ResourceRegistry(builtin_resources(mcs_versions))
        self.storage = Storage(
            self.registry,
            self.network,
            history_size=history_size,
            auto_create_namespaces=auto_create_namespaces,
            rng=random.Random(rng.random()),
        )
        self.store = Store(self.storage)
        self.faults = Faults()
        self._gc = GarbageCollector(self.storage)
        self._stopping = threading.Event()
        settings = WatchSettings(
            bookmark_interval=bookmark_interval,
            default_timeout=(watch_timeout, watch_timeout) if watch_timeout else (1800.0, 3600.0),
        )
        self._app = ApiApp(
            self.storage,
            self.faults,
            self,
            watch_settings=settings,
            server_address=lambda: f"{self._host}:{self.port}",
            stopping=self._stopping,
        )
        self._server: ApiHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = port
        self._state_lock = threading.RLock()
        self._resume_timer: threading.Timer | None = None
        self._default_objects = default_objects
        self._cluster_id = cluster_id
        self._clusterset_id = clusterset_id
        self._crds = crds
        if crds:
            self.storage.add_listener(self._follow_crds)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> KubeApiEmulator:
        with self._state_lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            self._gc.start()
            self._listen()
            if self._default_objects and self.storage.count(self.store.resource("namespaces")) == 0:
                self._create_default_objects()
            if self._crds:
                self._create_crds()
            if self._cluster_id:
                self._create_cluster_property("cluster.clusterset.k8s.io", self._cluster_id)
            if self._clusterset_id:
                self._create_cluster_property("clusterset.k8s.io", self._clusterset_id)
        return self

    def _listen(self) -> None:
        # Binding happens in the constructor: once it returns, connections queue in the backlog, so the
        # server is ready before serve_forever's thread is even scheduled.
        server = ApiHTTPServer((self._host, self._port), self._app)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kubeapi-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    def stop(self) -> None:
        with self._state_lock:
            self._stopping.set()
            self._cancel_resume_timer()
            self.faults.resume()
            self.storage.close_watchers()
            self._unlisten()
            self._gc.stop()

    def __enter__(self) -> KubeApiEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal needs brackets
        return f"http://{host}:{self._port}"

    @property
    def internal_error(self) -> str | None:
        """The first request this emulator failed on by a bug of its own (it answered 500), or None."""
        return self._app.internal_error

    # --- kubeconfig ---------------------------------------------------------------------------------------

    def kubeconfig(self, *, context: str | None = None, namespace: str = "default") -> Obj:
        name = context or self.cluster_name
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, *, context: str | None = None, namespace: str = "default"
    ) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            yaml.safe_dump(self.kubeconfig(context=context, namespace=namespace), sort_keys=False)
        )
        return target

    # --- request hook -------------------------------------------------------------------------------------

    def observe_requests(self, observer: Callable[[Request], None]) -> Callable[[], None]:
        """Call ``observer(request)`` with every API request from now on (not the ``/_emulator/`` admin
        paths), on the server's threads, before injected faults; returns the function that stops it. Tests
        record with it which verbs and resources a client uses (to check RBAC rules against real calls)."""
        self._app.observers.append(observer)
        return lambda: self._app.observers.remove(observer)

    # --- fault hooks --------------------------------------------------------------------------------------

    def close_watches(self) -> int:
        """End every open watch now (clients see the stream end and re-watch from their last version)."""
        return self.storage.close_watchers()

    def fail_next(
        self,
        count: int,
        *,
        code: int = 500,
        retry_after: int | None = None,
        methods: list[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``code`` (429 gets ``Retry-After``, default 1 s)."""
        self.faults.fail_next(
            count, code=code, retry_after=retry_after, methods=methods, path_contains=path_contains
        )

    def hold_replies(
        self,
        count: int,
        seconds: float,
        *,
        methods: list[str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Carry out the next ``count`` matching requests at once (their watch events go out) but send each
        reply ``seconds`` later: a writer then sees the watch move past its write before hearing of it."""
        self.faults.hold_next(count, seconds, methods=methods, path_contains=path_contains)

    @property
    def holding(self) -> int:
        """How many replies are being held now."""
        return self.faults.holding

    def compact(self) -> str:
        """Drop the event history: watches and continue tokens from older versions get 410 Gone."""
        return str(self.storage.compact())

    def validate_pause_mode(self, mode: str) -> None:
        if mode not in PAUSE_MODES:
            raise ValueError(f"pause mode must be one of {', '.join(PAUSE_MODES)}, not {mode!r}")

    def pause(self, mode: str = "hang", *, seconds: float | None = None) -> None:
        """Make the API server unreachable until ``resume`` (or for ``seconds``); see the class docstring."""
        self.validate_pause_mode(mode)
        with self._state_lock:
            self._cancel_resume_timer()
            if self.faults.paused and self.faults.pause_mode != mode:
                self._resume_now()
            self.faults.pause(mode)
            if mode == "refuse" and self._server is not None:
                self.storage.close_watchers()
                self._unlisten()
            if seconds is not None:
                self._resume_timer = threading.Timer(seconds, self.resume)
                self._resume_timer.daemon = True
                self._resume_timer.start()

    def resume(self) -> None:
        with self._state_lock:
            self._cancel_resume_timer()
            self._resume_now()

    def _resume_now(self) -> None:
        if self._server is None and not self._stopping.is_set():
            self._listen()
        self.faults.resume()

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def state(self) -> Obj:
        return {
            "url": self.url,
            "resourceVersion": self.storage.resource_version,
            "compactedResourceVersion": str(self.storage.compacted_version),
            "openWatches": self.storage.open_watches,
            "pendingFailures": self.faults.pending_failures,
            "paused": self.faults.pause_mode,
        }

    @property
    def open_watches(self) -> int:
        return self.storage.open_watches

    def wait_for_gc(self, timeout: float = 10.0) -> bool:
        """Wait until cascading deletions (ownerReferences, namespaces) queued so far are done."""
        return self._gc.wait_idle(timeout)

    # --- initial objects ----------------------------------------------------------------------------------

    def _create_default_objects(self) -> None:
        try:
            parsed = ipaddress.ip_address(self._host)
            address, family = str(parsed), f"IPv{parsed.version}"
        except ValueError:  # a host name such as "localhost"
            address, family = "127.0.0.1", "IPv4"
        for name in _DEFAULT_NAMESPACES:
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        first_ip = str(next(self.network.primary.network.hosts()))
        self.store.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": first_ip,
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}],
                },
            }
        )
        self.store.create(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": family,
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
            }
        )

    def _crd_kinds(self) -> dict[str, ResourceType]:
        return {rt.key: rt for rt in self.registry if rt.strategy.custom_resource}

    def _create_crds(self) -> None:
        for name, rt in self._crd_kinds().items():
            self.store.create_or_replace(
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {
                        "name": name,
                        "annotations": {API_APPROVED: "https://github.com/kubernetes/enhancements/pull/1645"},
                    },
                    "spec": {
                        "group": rt.group,
                        "scope": "Namespaced" if rt.namespaced else "Cluster",
                        "names": {
                            "plural": rt.plural,
                            "singular": rt.singular,
                            "kind": rt.kind,
                            "listKind": rt.list_kind,
                            "shortNames": list(rt.short_names),
                        },
                        "versions": [
                            {
                                "name": version,
                                "served": True,
                                "storage": version == rt.preferred_version,
                                "schema": {
                                    "openAPIV3Schema": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    }
                                },
                                **({"subresources": {"status": {}}} if rt.has_status else {}),
                            }
                            for version in rt.versions
                        ],
                    },
                }
            )

    def _follow_crds(self, event: Event) -> None:
        """A CRD-backed kind is served while its CRD exists (runs under the storage lock, on commit)."""
        if event.resource.kind != "CustomResourceDefinition" or event.type not in (ADDED, DELETED):
            return
        rt = self._crd_kinds().get(str(event.obj.get("metadata", {}).get("name")))
        if rt is not None:
            self.registry.serve(rt, event.type == ADDED)

    def _create_cluster_property(self, name: str, value: str) -> None:
        self.store.create_or_replace(
            {
                "apiVersion": "about.k8s.io/v1alpha1",
                "kind": "ClusterProperty",
                "metadata": {"name": name},
                "spec": {"value": value},
            }
        )

"""Kubernetes API adapter: the only module that imports ``kubernetes``.

Reads and writes plain JSON objects through the official asyncio client (``kubernetes.aio``), so the same
``sources.objects`` conversion serves manifests and the cluster. ``Reflector`` is the list+watch loop:
list (paginated), then watch from the list's resourceVersion with bookmarks; on 410 Gone it lists again,
which replaces everything the watcher reported (deletions missed while disconnected are not lost); any
other failure is retried with the shared backoff while everything already reported stays as it is.
``Informers`` holds one ``Informer`` (one Reflector) per resource for the whole process, as
controller-runtime shares one informer per type: the zone sources and both controllers each get a ``View``
(the objects their label selector matches), so a replica lists and watches each resource once. Client
errors never leave this module: they become ``SourceError``, or ``StartupError`` for a configuration that
cannot be loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from mcsdns.clients.backoff import Backoff
from mcsdns.errors import SourceError, StartupError, WriteConflict
from mcsdns.settings import read_yaml

logger = logging.getLogger(__name__)

LIST_PAGE = 500  # objects per list page, as client-go's reflector pages
WATCH_SECONDS = 300  # the server ends each watch after this; we resume from the last resourceVersion
BACKOFF_START = 0.2
BACKOFF_CAP = 30.0
CONTACT_INTERVAL = 1.0  # seconds between reports that the API still answers

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource type: ``/api/v1/<plural>`` for the core group, ``/apis/<group>/<version>/<plural>`` else."""

    group: str
    version: str
    plural: str
    label_selector: str | None = None
    namespaced: bool = True

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}" if self.group else f"{self.plural}/{self.version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if namespace is not None and self.namespaced:
            parts.append(f"/namespaces/{quote(namespace, safe='')}")
        parts.append(f"/{self.plural}")
        if name is not None:
            parts.append(f"/{quote(name, safe='')}")
        if subresource:
            parts.append(f"/{subresource}")
        return "".join(parts)


# The MCS and About API kinds in the versions mcsdns speaks, preferred first: v1beta1, the stored version
# since mcs-api v0.5.0 (and about-api's newest), then v1alpha1 for clusters whose CRDs predate it. Discovery
# (``Informers.run``) puts the versions the server serves first; a 404 later (a CRD replaced) moves on to the
# next. Reads and writes of a kind use the version its informer settled on.
SERVICE_IMPORTS = (
    Resource("multicluster.x-k8s.io", "v1beta1", "serviceimports"),
    Resource("multicluster.x-k8s.io", "v1alpha1", "serviceimports"),
)
SERVICE_EXPORTS = (
    Resource("multicluster.x-k8s.io", "v1beta1", "serviceexports"),
    Resource("multicluster.x-k8s.io", "v1alpha1", "serviceexports"),
)
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices")
SERVICES = Resource("", "v1", "services")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
CLUSTER_PROPERTIES = (
    Resource("about.k8s.io", "v1beta1", "clusterproperties", namespaced=False),
    Resource("about.k8s.io", "v1alpha1", "clusterproperties", namespaced=False),
)
LEASES = Resource("coordination.k8s.io", "v1", "leases")


class KubeApi:
    """An authenticated connection to one API server, speaking JSON objects on resource paths."""

    def __init__(self, api_client: kclient.ApiClient) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls, kubeconfig: str | None) -> KubeApi:
        """From a kubeconfig file, or the pod's service account when ``kubeconfig`` is None.

        A configuration that cannot be used raises ``StartupError``: the file (or ``in-cluster``), then what
        in it is wrong. Nothing is sent to the API server yet.
        """
        configuration = kclient.Configuration()
        where = kubeconfig or "in-cluster"
        cluster: Obj = {}
        user: Obj = {}
        try:
            if kubeconfig:
                # The library's loader fails on a file of the wrong shape with a TypeError deep inside it:
                # check what it reads first, so every problem is one line that says what to fix.
                cluster, user = _current_entries(kubeconfig)
                await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            else:
                kconfig.load_incluster_config(client_configuration=configuration)
        except (kconfig.ConfigException, OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartupError(f"{where}: {reason}") from exc
        _check_tls(where, configuration, cluster, user)
        if not _environment_matters():
            # The library asks aiohttp to trust the environment, which then reads the proxy variables and
            # stats ~/.netrc on every request: a few percent of a busy controller's CPU, for nothing when
            # neither is there. Where either is, the library's behaviour is kept.
            configuration.client_session_kwargs = {"trust_env": False}
        return cls(kclient.ApiClient(configuration))

    async def close(self) -> None:
        await self._client.close()

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        what: str = "",
    ) -> aiohttp.ClientResponse:
        """One API request; a status of 400 or more raises (``NotFound``, ``Conflict``, ``Gone`` ...)."""
        what = what or f"{method} {path}"
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        try:
            serialized = await self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            result = await self._client.call_api(
                *serialized, _preload_content=False, _request_timeout=timeout
            )
            response: aiohttp.ClientResponse = result.response
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceError(f"{what}: {exc.__class__.__name__}: {exc}", source="kubernetes") from None
        if response.status >= 400:
            raise await _status_error(what, response)
        return response

    async def served_versions(self, group: str) -> list[str] | None:
        """The versions the server serves of an API group (discovery, ``/apis/<group>``), preferred first;
        an empty list when the group is not served, None when discovery did not answer."""
        try:
            response = await self.request("GET", f"/apis/{quote(group, safe='')}", what=f"discover {group}")
        except NotFound:
            return []
        except SourceError as exc:
            logger.warning("%s; trying the versions in mcsdns's order", exc)
            return None
        document = await _json(response)
        return [str(v.get("version")) for v in document.get("versions") or [] if isinstance(v, Mapping)]

    async def list(self, resource: Resource, *, continue_token: str | None = None) -> Obj:
        response = await self.request(
            "GET",
            resource.path(),
            what=f"list {resource}",
            query={"labelSelector": resource.label_selector, "limit": LIST_PAGE, "continue": continue_token},
        )
        return await _json(response)

    async def watch(
        self, resource: Resource, resource_version: str, *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[Obj]:
        """Watch events from ``resource_version`` until the server ends the watch; ``on_open`` is called once
        the server has accepted it (a quiet watch sends nothing else to tell it works)."""
        response = await self.request(
            "GET",
            resource.path(),
            what=f"watch {resource}",
            timeout=WATCH_SECONDS + 30,
            query={
                "labelSelector": resource.label_selector,
                "watch": True,
                "allowWatchBookmarks": True,
                "resourceVersion": resource_version,
                "timeoutSeconds": WATCH_SECONDS,
            },
        )
        if on_open is not None:
            on_open()
        try:
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise SourceError(
                f"watch {resource}: {exc.__class__.__name__}: {exc}", source="kubernetes"
            ) from None
        finally:
            response.release()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            response = await self.request(
                "GET", resource.path(namespace, name), what=f"get {resource} {name}"
            )
        except NotFound:
            return None
        return await _json(response)

    async def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        response = await self.request(
            "POST", resource.path(namespace), body=body, what=f"create {resource} in {namespace}"
        )
        return await _json(response)

    async def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PUT ``body``; its resourceVersion makes a stale write fail with ``Conflict``."""
        response = await self.request(
            "PUT",
            resource.path(namespace, name, subresource),
            body=body,
            what=f"replace {resource} {namespace}/{name}{'/' + subresource if subresource else ''}",
        )
        return await _json(response)

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Obj) -> Obj:
        """A JSON merge patch (RFC 7386)."""
        response = await self.request(
            "PATCH",
            resource.path(namespace, name),
            body=body,
            content_type="application/merge-patch+json",
            what=f"patch {resource} {namespace}/{name}",
        )
        return await _json(response)

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        """Delete; already gone counts as done."""
        try:
            response = await self.request(
                "DELETE",
                resource.path(namespace, name),
                what=f"delete {resource} {namespace}/{name}",
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except NotFound:
            return
        response.release()


def _current_entries(path: str) -> tuple[Obj, Obj]:
    """The current context's cluster and user of a kubeconfig, checked as far as the client library relies
    on them without checking; ``StartupError`` naming the file and the problem otherwise."""
    try:
        document = read_yaml(path)
    except ValueError as exc:
        raise StartupError(f"{path}: {exc}") from None
    if not isinstance(document, dict):
        what = "it is empty" if document is None else f"a YAML {type(document).__name__}"
        raise StartupError(
            f"{path}: not a kubeconfig ({what}, not a mapping of clusters, contexts and users)"
        )
    named: dict[str, dict[str, Obj]] = {}
    for key, inner in (("clusters", "cluster"), ("contexts", "context"), ("users", "user")):
        items = document.get(key) or []
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get(inner), dict)
            for item in items
        ):
            raise StartupError(f"{path}: {key} must be a list of entries with a name and a {inner} mapping")
        named[key] = {item["name"]: item[inner] for item in items}
    current = document.get("current-context")
    if not current:
        raise StartupError(
            f"{path}: no current-context (its contexts: {', '.join(named['contexts']) or 'none'})"
        )
    context = named["contexts"].get(str(current))
    if context is None:
        known = ", ".join(named["contexts"]) or "none"
        raise StartupError(f"{path}: current-context {current!r} is not one of its contexts ({known})")
    cluster = named["clusters"].get(str(context.get("cluster")))
    if cluster is None:
        raise StartupError(
            f"{path}: context {current!r}: cluster {context.get('cluster')!r} is not in clusters"
        )
    if not cluster.get("server"):
        raise StartupError(f"{path}: cluster {context['cluster']!r} has no server")
    user = named["users"].get(str(context.get("user")), None if context.get("user") else {})
    if user is None:
        raise StartupError(f"{path}: context {current!r}: user {context['user']!r} is not in users")
    return cluster, user


def _environment_matters() -> bool:
    """Whether aiohttp's ``trust_env`` would change a request: a proxy variable, or a netrc file (for
    credentials), as ``aiohttp.helpers.proxies_from_env`` and ``netrc_from_env`` look for them."""
    if urllib.request.getproxies():
        return True
    netrc = os.environ.get("NETRC")
    try:
        return Path(netrc).exists() if netrc is not None else (Path.home() / ".netrc").exists()
    except RuntimeError:  # no home directory to look in
        return False


def _check_tls(where: str, configuration: kclient.Configuration, cluster: Obj, user: Obj) -> None:
    """Load the CA and client certificate as the client will, and say which of them fails and why."""

    def named(entry: Obj, key: str, path: str | None) -> str:
        if isinstance(entry.get(key), str):
            return f"{key} {entry[key]}"
        return f"{key}-data" if f"{key}-data" in entry else f"{key} {path}"

    try:
        context = ssl.create_default_context(
            cafile=configuration.ssl_ca_cert, cadata=getattr(configuration, "ca_cert_data", None)
        )
    except OSError as exc:  # ssl.SSLError included
        what = named(cluster, "certificate-authority", configuration.ssl_ca_cert)
        raise StartupError(f"{where}: {what}: {_tls_problem(exc, 'a PEM CA certificate')}") from exc
    if configuration.cert_file:
        try:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
        except OSError as exc:
            certificate = named(user, "client-certificate", configuration.cert_file)
            key = named(user, "client-key", configuration.key_file)
            problem = _tls_problem(exc, "a PEM certificate and its key")
            raise StartupError(f"{where}: {certificate}, {key}: {problem}") from exc


def _tls_problem(exc: OSError, expected: str) -> str:
    if isinstance(exc, ssl.SSLError):  # OpenSSL's words, without the C source line
        return f"not {expected}: " + re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return f"cannot read it: {exc.strerror or exc}"


def _query_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class ApiStatusError(SourceError):
    def __init__(self, message: str, *, code: int, reason: str) -> None:
        super().__init__(message, source="kubernetes")
        self.code, self.reason = code, reason


class NotFound(ApiStatusError):
    pass


class Conflict(ApiStatusError, WriteConflict):
    """409: the object exists already, or we wrote from a stale resourceVersion."""


class Gone(ApiStatusError):
    """410: the resourceVersion we hold is too old to watch from; list again."""


async def _json(response: aiohttp.ClientResponse) -> Obj:
    try:
        data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SourceError(f"unreadable response: {exc}", source="kubernetes") from None
    if not isinstance(data, dict):
        raise SourceError("response is not a JSON object", source="kubernetes")
    return data


async def _status_error(what: str, response: aiohttp.ClientResponse) -> ApiStatusError:
    try:
        status = json.loads(await response.text())
        message = status.get("message") or response.reason
        reason = status.get("reason") or ""
    except (aiohttp.ClientError, ValueError, AttributeError):
        message, reason = response.reason, ""
    finally:
        response.release()
    text = f"{what}: {response.status} {message}"
    kind = {404: NotFound, 409: Conflict, 410: Gone}.get(response.status, ApiStatusError)
    return kind(text, code=response.status, reason=str(reason))


class Reflector:
    """List, then watch; relist after 410; retry other failures with backoff. Runs until cancelled."""

    def __init__(
        self,
        api: KubeApi,
        resources: tuple[Resource, ...],
        *,
        on_list: Callable[[list[Any]], None],
        on_event: Callable[[str, Obj], None],
        page: Callable[[list[Obj]], list[Any]] | None = None,
        on_contact: Callable[[str], None] | None = None,
    ) -> None:
        self._api = api
        self._candidates = resources  # versions to try, preferred first (a CRD may serve only some)
        # Told "" when the API answered (a list, a watch event; at most once a second while it works) and
        # the error when it did not, so an outage shows in /readyz and /metrics while the last data serves.
        self._on_contact = on_contact
        self._reported: tuple[str, float] = ("", -CONTACT_INTERVAL)
        self._resource = resources[0]
        self._on_list = on_list
        self._on_event = on_event
        # Applied to each list page as it arrives, so a 30,000-object list never holds all of its JSON at
        # once (the peak would stay in the process's memory for good).
        self._page = page

    @property
    def resource(self) -> Resource:
        return self._resource

    async def run(self) -> None:
        backoff = Backoff(BACKOFF_START, BACKOFF_CAP)
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list()
                    backoff.reset()
                resource_version = await self._watch(resource_version, backoff)
            except Gone:
                # The history we would resume from is compacted: only a full list is exact again.
                logger.info("%s: resourceVersion %s expired, listing again", self._resource, resource_version)
                resource_version = None
            except NotFound as exc:
                # This version is not served (CRD missing, or only another version installed): try the next.
                index = self._candidates.index(self._resource)
                self._resource = self._candidates[(index + 1) % len(self._candidates)]
                logger.warning("%s; trying %s", exc, self._resource)
                self._contact(str(exc))
                resource_version = None
                await backoff.sleep()
            except SourceError as exc:
                # The API is unreachable or failing: what we reported keeps serving; try again later.
                logger.warning("%s: %s; retrying", self._resource, exc)
                self._contact(str(exc))
                await backoff.sleep()

    def _contact(self, failure: str = "") -> None:
        if self._on_contact is None:
            return
        now = time.monotonic()
        last_failure, last_time = self._reported
        if failure or last_failure or now - last_time >= CONTACT_INTERVAL:
            self._reported = (failure, now)
            self._on_contact(failure)

    async def _list(self) -> str:
        items: list[Any] = []
        pending: asyncio.Future[Obj] | None = asyncio.ensure_future(self._api.list(self._resource))
        try:
            while pending is not None:
                page = await pending
                metadata = page.get("metadata") or {}
                token = metadata.get("continue") or None
                # Ask for the next page before working on this one, and work on it in a thread, so the
                # API server prepares a page while we convert the last: they no longer take turns.
                pending = (
                    asyncio.ensure_future(self._api.list(self._resource, continue_token=token))
                    if token
                    else None
                )
                objects = page.get("items") or []
                items.extend(
                    await asyncio.to_thread(self._page, objects) if self._page is not None else objects
                )
        finally:
            if pending is not None and not pending.cancel() and not pending.cancelled():
                pending.exception()  # it failed too, after what stopped us: nothing more to say about it
        self._on_list(items)
        self._contact()
        logger.info(
            "%s: listed %d objects at resourceVersion %s",
            self._resource,
            len(items),
            metadata.get("resourceVersion"),
        )
        return str(metadata.get("resourceVersion") or "0")

    async def _watch(self, resource_version: str, backoff: Backoff) -> str:
        async for event in self._api.watch(self._resource, resource_version, on_open=self._contact):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise Gone(f"watch {self._resource}: {obj.get('message')}", code=410, reason="Expired")
                raise SourceError(f"watch {self._resource}: {code} {obj.get('message')}", source="kubernetes")
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._on_event(kind, obj)
            if version:
                resource_version = str(version)
            backoff.reset()
            self._contact()
        return resource_version


class KubeLeases:
    """``LeaseStore`` for ``mcs.leader`` on the API server."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    async def get(self, namespace: str, name: str) -> Obj | None:
        return await self._api.get(LEASES, namespace, name)

    async def create(self, namespace: str, body: Obj) -> Obj:
        return await self._api.create(LEASES, namespace, body)

    async def replace(self, namespace: str, name: str, body: Obj) -> Obj:
        return await self._api.replace(LEASES, namespace, name, body)


Key = tuple[str, str]  # namespace, name


def key_of(obj: Obj) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _labels(obj: Obj) -> Mapping[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _version(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class Selector:
    """A label selector of the equality-based forms (``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, joined by
    commas: all must hold), evaluated here as the API server would, for the views of a shared informer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._terms: list[tuple[str, str, str | None]] = []  # (op, key, value)
        for raw in filter(None, (part.strip() for part in text.split(","))):
            if "!=" in raw:
                key, _, value = raw.partition("!=")
                self._terms.append(("!=", key.strip(), value.strip()))
            elif "=" in raw:
                key, _, value = raw.partition("==" if "==" in raw else "=")
                self._terms.append(("=", key.strip(), value.strip()))
            elif raw.startswith("!"):
                self._terms.append(("!", raw[1:].strip(), None))
            else:
                self._terms.append(("exists", raw, None))

    def __str__(self) -> str:
        return self.text

    def matches(self, labels: Mapping[str, Any]) -> bool:
        for op, key, value in self._terms:
            present = key in labels
            if op == "exists" and not present:
                return False
            if op == "!" and present:
                return False
            if op == "=" and (not present or str(labels[key]) != value):
                return False
            if op == "!=" and present and str(labels[key]) == value:
                return False
        return True


class Objects(dict[Key, Obj]):
    """A view's objects by (namespace, name), plus an index by (namespace, label value) for the labels the
    view asked for, kept up to date on every write (the controllers also put what they wrote here, through
    ``wrote``), so "the slices of this service" costs a lookup, not a scan of every slice (client-go's
    Indexer)."""

    def __init__(self, items: Mapping[Key, Obj] | None = None, *, indexed: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._indexed = indexed
        self._index: dict[str, dict[Key, set[Key]]] = {label: {} for label in indexed}
        for key, obj in (items or {}).items():
            self[key] = obj

    def _entries(self, key: Key, obj: Obj) -> Iterator[tuple[dict[Key, set[Key]], Key]]:
        labels = _labels(obj)
        for label in self._indexed:
            value = labels.get(label)
            if value is not None:
                yield self._index[label], (key[0], str(value))

    def __setitem__(self, key: Key, obj: Obj) -> None:
        old = self.get(key)
        if old is not None:
            self._forget(key, old)
        super().__setitem__(key, obj)
        for index, entry in self._entries(key, obj):
            index.setdefault(entry, set()).add(key)

    def _forget(self, key: Key, obj: Obj) -> None:
        for index, entry in self._entries(key, obj):
            keys = index.get(entry)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[entry]

    def __delitem__(self, key: Key) -> None:
        self._forget(key, self[key])
        super().__delitem__(key)

    def pop(self, key: Key, *default: Any) -> Any:
        if key in self:
            obj = self[key]
            del self[key]
            return obj
        if default:
            return default[0]
        raise KeyError(key)

    def wrote(self, key: Key, obj: Obj, *, over: Obj | None) -> None:
        """Keep ``obj``, what a write of ours returned, if the watch has not moved ``key`` on since ``over``,
        the version the write replaced (None: a create, kept if the key is still absent).

        The reply can arrive after the watch delivered a newer version (the user deleted the ServiceExport
        while its status was written): kept, it would take the view back in time and lose that change
        until the next list. Otherwise the watch delivers the written version itself, or already did. Only
        equality is asked of resourceVersions, which the API conventions leave opaque."""
        current = self.get(key)
        unmoved = (
            current is None if over is None else current is not None and _version(current) == _version(over)
        )
        if unmoved:
            self[key] = obj

    def labelled(self, label: str, namespace: str, value: str) -> dict[Key, Obj]:
        """The objects of ``namespace`` whose ``label`` is ``value`` (an indexed label)."""
        return {key: self[key] for key in self._index[label].get((namespace, value), ())}


class View:
    """What one consumer sees of a shared ``Informer``: the objects its selector matches.

    ``keep`` holds them in ``objects`` (keyed (namespace, name)); ``on_change`` is told which keys changed;
    ``on_list``/``on_event`` get the list and every event, with ``page`` applied to each list page in a worker
    thread (the zone source converts pages as they arrive and never holds a whole list's JSON). An object
    whose labels stop matching is reported DELETED to this view, as client-go's filtering handlers do.
    """

    def __init__(
        self,
        informer: Informer,
        selector: Selector | None,
        *,
        keep: bool,
        on_list: Callable[[list[Any]], None] | None,
        on_event: Callable[[str, Obj], None] | None,
        on_change: Callable[[set[Key]], None] | None,
        page: Callable[[list[Obj]], list[Any]] | None,
        indexed: tuple[str, ...] = (),
    ) -> None:
        self._informer = informer
        self.selector = selector
        self._indexed = indexed
        self.objects = Objects(indexed=indexed)
        self.synced = asyncio.Event()
        self._keep = keep
        self._keys: set[Key] = set()
        self._on_list, self._on_event, self._on_change, self._page = on_list, on_event, on_change, page
        self.on_contact: Callable[[str], None] | None = None  # whether the API answers ("" yes, else why)

    @property
    def resource(self) -> Resource:
        """The resource version being served (a CRD may serve another than the first choice)."""
        return self._informer.resource

    def matches(self, obj: Obj) -> bool:
        return self.selector is None or self.selector.matches(_labels(obj))

    def page_of(self, objects: list[Obj]) -> tuple[list[Key], list[Any]]:
        matched = [obj for obj in objects if self.matches(obj)]
        return [key_of(obj) for obj in matched], (self._page(matched) if self._page else matched)

    def listed(self, keys: list[Key], items: list[Any]) -> None:
        previous = self._keys
        self._keys = set(keys)
        changed: set[Key] = set()
        if self._keep:
            fresh = dict(zip(keys, items, strict=True))
            changed = {k for k in self.objects.keys() | fresh.keys() if self.objects.get(k) != fresh.get(k)}
            self.objects = Objects(fresh, indexed=self._indexed)
        else:
            changed = previous ^ self._keys
        self.synced.set()
        if self._on_list is not None:
            self._on_list(items)
        if changed and self._on_change is not None:
            self._on_change(changed)

    def event(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        was = key in self._keys
        if kind != "DELETED" and self.matches(obj):
            self._keys.add(key)
            kind = "MODIFIED" if was else "ADDED"
        elif was:
            self._keys.discard(key)
            kind = "DELETED"  # deleted, or its labels no longer match: gone from this view either way
        else:
            return
        if self._keep:
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
        if self._on_event is not None:
            self._on_event(kind, obj)
        if self._on_change is not None:
            self._on_change({key})


class Informer:
    """One list+watch of one resource for the whole process, fanned out to its views.

    The server-side label selector is the views' own when they all share one (a DNS-only replica lists only
    the MCS EndpointSlices), and none when they differ: each view then filters for itself.
    """

    def __init__(self, api: KubeApi, resources: tuple[Resource, ...]) -> None:
        self._api = api
        self._resources = self._declared = resources
        self._views: list[View] = []
        self._reflector: Reflector | None = None

    @property
    def resource(self) -> Resource:
        return self._reflector.resource if self._reflector is not None else self._resources[0]

    def view(
        self,
        *,
        selector: str | None = None,
        keep: bool = True,  # pass False with ``page``
        on_list: Callable[[list[Any]], None] | None = None,
        on_event: Callable[[str, Obj], None] | None = None,
        on_change: Callable[[set[Key]], None] | None = None,
        page: Callable[[list[Obj]], list[Any]] | None = None,
        on_contact: Callable[[str], None] | None = None,
        indexed: tuple[str, ...] = (),
    ) -> View:
        if self._reflector is not None:
            raise RuntimeError(f"{self.resource}: every view must be made before the informer runs")
        if keep and page is not None:
            raise ValueError("a view keeps the objects or pages them into something else, not both")
        view = View(
            self,
            Selector(selector) if selector else None,
            keep=keep,
            on_list=on_list,
            on_event=on_event,
            on_change=on_change,
            page=page,
            indexed=indexed,
        )
        view.on_contact = on_contact
        self._views.append(view)
        return view

    async def discover(self) -> None:
        """Put the versions the server serves first, keeping mcsdns's preference among them."""
        if len(self._resources) < 2 or self._reflector is not None:
            return
        served = await self._api.served_versions(self._resources[0].group)
        if served:
            self._resources = tuple(sorted(self._resources, key=lambda r: r.version not in served))
            logger.info("%s: the server serves %s", self._resources[0].plural, ", ".join(served))

    async def run(self) -> None:
        selectors = {str(view.selector) if view.selector else None for view in self._views}
        shared = selectors.pop() if len(selectors) == 1 else None
        resources = tuple(replace(r, label_selector=shared) for r in self._resources)
        self._reflector = Reflector(
            self._api,
            resources,
            on_list=self._listed,
            on_event=self._event,
            page=self._page,
            on_contact=self._contact,
        )
        await self._reflector.run()

    def _page(self, objects: list[Obj]) -> list[Any]:
        # One entry per page: each view's (keys, items) of it, in view order.
        return [[view.page_of(objects) for view in self._views]]

    def _listed(self, pages: list[Any]) -> None:
        for index, view in enumerate(self._views):
            keys: list[Key] = []
            items: list[Any] = []
            for page in pages:
                page_keys, page_items = page[index]
                keys.extend(page_keys)
                items.extend(page_items)
            view.listed(keys, items)

    def _event(self, kind: str, obj: Obj) -> None:
        for view in self._views:
            view.event(kind, obj)

    def _contact(self, failure: str) -> None:
        for view in self._views:
            if view.on_contact is not None:
                view.on_contact(failure)


class Informers:
    """The process's informers: one per resource, shared by every consumer (controller-runtime's cache).

    Consumers ask for a ``view`` while the process is being put together; ``run`` then lists and watches
    every resource asked for, once each.
    """

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._informers: dict[tuple[str, str], Informer] = {}

    def informer(self, resources: Resource | tuple[Resource, ...]) -> Informer:
        candidates = resources if isinstance(resources, tuple) else (resources,)
        key = (candidates[0].group, candidates[0].plural)
        informer = self._informers.get(key)
        if informer is None:
            informer = self._informers[key] = Informer(self._api, candidates)
        elif informer._declared != candidates:
            raise ValueError(f"{key}: one informer serves {informer._declared}, not {candidates}")
        return informer

    def view(self, resources: Resource | tuple[Resource, ...], **options: Any) -> View:
        return self.informer(resources).view(**options)

    async def run(self) -> None:
        await asyncio.gather(*(informer.discover() for informer in self._informers.values()))
        async with asyncio.TaskGroup() as group:
            for informer in self._informers.values():
                group.create_task(informer.run())

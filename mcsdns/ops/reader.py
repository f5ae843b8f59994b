"""The I/O of ``mcsdns check`` and ``mcsdns status``: the cluster, Cloud Map and a running server, read once.

Everything goes through the product's adapters (``clients.kube.KubeApi``, ``clients.cloudmap.
CloudMapClient``); nothing here writes. What fails comes back as ``SourceError`` (the adapters' type) for
the caller to turn into a line of its own; a connection that cannot be made at all is ``StartupError``
naming the flag, as ``serve`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcsdns.errors import SourceError, named_setting
from mcsdns.mcs import heartbeat
from mcsdns.settings import IN_CLUSTER, ListenAddress

if TYPE_CHECKING:
    from mcsdns.clients.cloudmap import CloudMapClient, Instance, Namespace
    from mcsdns.clients.kube import KubeApi, Resource

Obj = dict[str, Any]
TIMEOUT = 10.0  # seconds for one API request: a check must end even against a hung server
CONCURRENCY = 16  # Cloud Map reads in flight (the client's token buckets pace them further)


@contextlib.asynccontextmanager
async def kube_api(kubeconfig: str) -> AsyncIterator[KubeApi]:
    """A connection to the cluster of ``--kubeconfig`` (``in-cluster``: the pod's ServiceAccount)."""
    from mcsdns.clients.kube import KubeApi  # deferred: only a command with a cluster loads the client

    with named_setting("--kubeconfig"):
        api = await KubeApi.connect(None if kubeconfig == IN_CLUSTER else kubeconfig)
    try:
        yield api
    finally:
        await api.close()


def cloudmap_client(region: str | None) -> CloudMapClient:
    from mcsdns.clients.cloudmap import CloudMapClient

    with named_setting("--cloudmap"):
        return CloudMapClient(region=region)


# --- the cluster -------------------------------------------------------------------------------------------


def resource(group: str, version: str, plural: str, *, namespaced: bool = True) -> Resource:
    from mcsdns.clients.kube import Resource

    return Resource(group, version, plural, namespaced=namespaced)


async def _json(response: Any) -> Obj:
    try:
        data = json.loads(await response.read())
    except ValueError as exc:
        raise SourceError(f"unreadable response: {exc}", source="kubernetes") from None
    finally:
        response.release()
    if not isinstance(data, dict):
        raise SourceError("response is not a JSON object", source="kubernetes")
    return data


class KubeReader:
    """Reads of one cluster, each bounded by ``TIMEOUT``."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        # Why the authorization API could not answer (not served, refused, failed), the first time it did
        # not: callers read anyway, and say so once.
        self.unanswered: str | None = None

    async def call(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> Obj:
        response = await self.api.request(method, path, query=query, body=body, timeout=TIMEOUT)
        return await _json(response)

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        from mcsdns.clients.kube import NotFound

        try:
            return await self.call("GET", res.path(namespace, name))
        except NotFound:
            return None

    async def list_all(
        self,
        candidates: Resource | tuple[Resource, ...],
        *,
        namespace: str | None = None,
        field_selector: str = "",
        label_selector: str = "",
    ) -> list[Obj]:
        """Every object (paged), from the first of ``candidates`` the server serves; ``NotFound`` if none."""
        from mcsdns.clients.kube import NotFound

        options = candidates if isinstance(candidates, tuple) else (candidates,)
        for index, res in enumerate(options):
            items: list[Obj] = []
            token: str | None = None
            try:
                while True:
                    page = await self.call(
                        "GET",
                        res.path(namespace),
                        query={
                            "limit": 500,
                            "continue": token,
                            "fieldSelector": field_selector or None,
                            "labelSelector": label_selector or None,
                        },
                    )
                    items.extend(page.get("items") or [])
                    token = (page.get("metadata") or {}).get("continue") or None
                    if not token:
                        return items
            except NotFound:
                if index + 1 == len(options):
                    raise
        raise AssertionError("unreachable")

    async def whoami(self) -> str | None:
        """The user the kubeconfig authenticates as (SelfSubjectReview, Kubernetes >= 1.28), or None."""
        from mcsdns.clients.kube import ApiStatusError

        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            found = await self.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review)
        except ApiStatusError:
            return None
        return str(((found.get("status") or {}).get("userInfo") or {}).get("username") or "") or None

    async def allowed(
        self,
        verb: str,
        group: str,
        plural: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subject: tuple[str, list[str]] | None = None,
    ) -> bool:
        """Whether the kubeconfig's user (SelfSubjectAccessReview) or ``subject`` (user, groups:
        SubjectAccessReview) may ``verb`` the resource (``plural`` or ``plural/subresource``)."""
        base, _, sub = plural.partition("/")
        attributes = {"verb": verb, "group": group, "resource": base, "subresource": sub or None}
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        attributes = {k: v for k, v in attributes.items() if v is not None}
        spec: dict[str, Any] = {"resourceAttributes": attributes}
        kind = "SelfSubjectAccessReview"
        if subject is not None:
            kind = "SubjectAccessReview"
            spec.update(user=subject[0], groups=subject[1])
        plural_kind = kind.lower() + "s"
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}
        found = await self.call("POST", f"/apis/authorization.k8s.io/v1/{plural_kind}", body=review)
        return bool((found.get("status") or {}).get("allowed"))

    async def may(
        self,
        verb: str,
        group: str,
        plural: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subject: tuple[str, list[str]] | None = None,
    ) -> bool | None:
        """``allowed``, or None when the authorization API does not answer: an API server without
        authorization.k8s.io (404), one that refuses the review (403), or a failed request. The question is
        a courtesy before a read, so the caller reads anyway; ``unanswered`` keeps the first reason."""
        try:
            return await self.allowed(verb, group, plural, namespace=namespace, name=name, subject=subject)
        except SourceError as exc:
            if self.unanswered is None:
                self.unanswered = " ".join(str(exc).split())
            return None

    async def served_versions(self, group: str) -> list[str]:
        from mcsdns.clients.kube import NotFound

        try:
            found = await self.call("GET", f"/apis/{group}")
        except NotFound:
            return []
        return [str(v.get("version")) for v in found.get("versions") or [] if isinstance(v, Mapping)]


# --- Cloud Map ---------------------------------------------------------------------------------------------


@dataclass
class CloudMapView:
    """What Cloud Map holds for one clusterset: its services' instances and the clusters' heartbeats."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    services: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, name) -> service id
    instances: dict[tuple[str, str], list[Instance]] = field(default_factory=dict)
    heartbeats: list[Instance] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # reads that failed (a namespace, a service)


async def read_cloudmap(client: CloudMapClient, clusterset_id: str | None) -> CloudMapView:
    """Every namespace, service and instance of the clusterset (``SourceError`` when the namespaces cannot be
    listed; a service that cannot be read is named in ``failures`` and the rest is still read)."""
    view = CloudMapView(namespaces=await client.namespaces())
    limit = asyncio.Semaphore(CONCURRENCY)

    async def services_of(namespace: Namespace) -> None:
        async with limit:
            try:
                found = await client.services(namespace)
            except SourceError as exc:
                view.failures.append(f"namespace {namespace.name}: {exc}")
                return
        for name, service_id in found.items():
            view.services[(namespace.name, name)] = service_id

    await asyncio.gather(*(services_of(ns) for ns in view.namespaces.values()))

    async def instances_of(key: tuple[str, str]) -> None:
        async with limit:
            try:
                _, found = await client.discover(key[0], key[1], clusterset_id)
            except SourceError as exc:
                view.failures.append(f"service {key[0]}/{key[1]}: {exc}")
                return
        if key[0] == heartbeat.NAMESPACE:
            view.heartbeats = found if key[1] == heartbeat.SERVICE else view.heartbeats
        else:
            view.instances[key] = found

    await asyncio.gather(*(instances_of(key) for key in sorted(view.services)))
    return view


# --- a running server --------------------------------------------------------------------------------------


async def http_get(address: ListenAddress, path: str) -> tuple[int, str]:
    """GET ``path`` from mcsdns's ``--http`` address: (status, body). ``OSError`` when it does not answer."""
    host = address.host if address.host not in ("0.0.0.0", "::") else "127.0.0.1"
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(host, address.port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer from {address}") from None
    return status, body.decode("utf-8", "replace")


async def dns_query(server: ListenAddress, name: str, rdtype: str) -> Any:
    """One query over UDP (TCP when truncated) to ``server``: the dnspython message. ``OSError`` or
    ``TimeoutError`` when it does not answer."""
    import dns.asyncquery
    import dns.exception
    import dns.flags
    import dns.message

    query = dns.message.make_query(name, rdtype)
    try:
        reply = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=3)
        if reply.flags & dns.flags.TC:
            reply = await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=3)
    except dns.exception.Timeout:
        raise TimeoutError(f"no answer from {server} in 3s") from None
    except dns.exception.DNSException as exc:
        raise OSError(f"{server}: {exc}") from None
    return reply

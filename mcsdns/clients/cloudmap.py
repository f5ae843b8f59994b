"""AWS Cloud Map adapter: the only module that imports ``boto3``/``botocore``.

Every call runs in a worker thread (boto3 is blocking), passes a client-side token bucket per operation
(so a large clusterset does not hit the account's API quotas), and retries throttling with capped,
jittered exponential backoff. botocore's own retries are off so that throttles are seen and counted here.
Errors become ``SourceError``: callers keep what they have and never delete anything because of one.
A client that cannot be made (no region, no credentials, an unreadable AWS profile) raises ``StartupError``.
Region and endpoint come from the standard variables (``AWS_REGION``, ``AWS_ENDPOINT_URL_SERVICEDISCOVERY``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import boto3.session
import botocore.config
import botocore.exceptions
import cachetools

from mcsdns.clients.backoff import Backoff
from mcsdns.errors import SourceError, StartupError
from mcsdns.histogram import CALL_BUCKETS, Histogram

logger = logging.getLogger(__name__)

SOURCE = "cloudmap"
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
THROTTLE_ATTEMPTS = 6
THROTTLE_START, THROTTLE_CAP = 0.1, 10.0  # seconds: the shared backoff (clients/backoff.py)
SERVICE_LIST_MAX_AGE = 60.0  # a namespace's service list is read again at least this often
OPERATION_POLL = 0.5
OPERATION_TIMEOUT = 60.0  # the AWS controller's poller gives operations one minute too
DISCOVER_MAX = 1000  # DiscoverInstances has no paging: 1000 is the most it returns (and a service's quota)

# Client-side limits (per second, burst): the AWS controller's values (reference §2.2) for writes and
# operations; DiscoverInstances and its revision a little under the published 1,000/s and 3,000/s account
# quotas. The lists run once per import cycle (every 2 s by default) instead of being cached for 10 s as
# the AWS controller does, so a new namespace or service is seen within one cycle.
RATE_LIMITS: Mapping[str, tuple[float, int]] = {
    "ListNamespaces": (1.0, 5),
    "ListServices": (25.0, 50),
    "DiscoverInstances": (500.0, 1000),
    "DiscoverInstancesRevision": (1000.0, 2000),
    "GetOperation": (100.0, 200),
    "CreateHttpNamespace": (0.5, 5),
    "CreateService": (5.0, 50),
    "RegisterInstance": (50.0, 100),
    "DeregisterInstance": (50.0, 100),
}


NO_CREDENTIALS = (
    "no AWS credentials found"
    " (set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a web identity token)"
)
NO_REGION = "no AWS region (give --aws-region, or set AWS_REGION or a region in the AWS profile)"


class CloudMapError(SourceError):
    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, source=SOURCE)
        self.code = code


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._stamp = float(burst), time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


@dataclass(frozen=True, slots=True)
class Namespace:
    id: str
    name: str
    type: str
    service_count: int | None = None  # NamespaceSummary.ServiceCount, when the service reports it


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    attributes: Mapping[str, str]


class CloudMapClient:
    def __init__(self, *, region: str | None = None, cache_ttl: float = 1.0) -> None:
        config = botocore.config.Config(
            retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=15
        )
        # boto3 resolves the credentials once, when the client is made, and never again: with none found
        # then, every call would fail until a restart. Say so at start-up instead of at the first call.
        try:
            session = boto3.session.Session(region_name=region)
            credentials = session.get_credentials()
            self._client = session.client("servicediscovery", config=config)
        except botocore.exceptions.NoRegionError as exc:
            raise StartupError(NO_REGION) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StartupError(f"cannot create a Cloud Map client: {exc}") from exc
        if credentials is None:
            raise StartupError(NO_CREDENTIALS)
        self._buckets = {op: TokenBucket(*limit) for op, limit in RATE_LIMITS.items()}
        self._cache_ttl = cache_ttl
        self._namespaces: cachetools.TTLCache[str, dict[str, Namespace]] = cachetools.TTLCache(1, cache_ttl)
        # Service lists per namespace, with the namespace's ServiceCount and when they were read. A filtered
        # ListServices pages over every service of the account ("Cloud Map gets MaxResults services and then
        # filters them"), so one namespace costs ceil(all services / 100) calls: a list is read again only
        # when the namespace's ServiceCount moved, or after SERVICE_LIST_MAX_AGE.
        self._services: dict[str, tuple[int | None, float, dict[str, str]]] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.throttles: collections.Counter[str] = collections.Counter()
        self.durations: dict[str, Histogram] = {}  # per operation: each call's time, answered or failed

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self._client, _snake(operation))
        backoff = Backoff(THROTTLE_START, THROTTLE_CAP)
        for attempt in range(THROTTLE_ATTEMPTS):
            await self._buckets[operation].take()
            self.calls[operation] += 1
            started = time.monotonic()
            try:
                result: dict[str, Any] = await asyncio.to_thread(method, **params)
                return result
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                if code in THROTTLE_CODES and attempt + 1 < THROTTLE_ATTEMPTS:
                    self.throttles[operation] += 1
                    await backoff.sleep()
                    continue
                raise CloudMapError(f"{operation}: {code}: {error.get('Message', '')}", code=code) from None
            except botocore.exceptions.NoCredentialsError:
                raise CloudMapError(f"{operation}: {NO_CREDENTIALS}") from None
            except botocore.exceptions.BotoCoreError as exc:
                raise CloudMapError(f"{operation}: {exc}") from None
            finally:
                self.durations.setdefault(operation, Histogram(CALL_BUCKETS)).observe(
                    time.monotonic() - started
                )
        raise AssertionError("unreachable")

    async def _paginate(self, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._call(operation, **params, **({"NextToken": token} if token else {}))
            items.extend(page.get(key) or [])
            token = page.get("NextToken")
            if not token:
                return items

    async def namespaces(self) -> dict[str, Namespace]:
        """HTTP and DNS_PRIVATE namespaces by name (the AWS controller skips DNS_PUBLIC too)."""
        cached = self._namespaces.get("all")
        if cached is not None:
            return cached
        found = {
            item["Name"]: Namespace(item["Id"], item["Name"], item.get("Type", ""), item.get("ServiceCount"))
            for item in await self._paginate("ListNamespaces", "Namespaces")
            if item.get("Type") in ("HTTP", "DNS_PRIVATE")
        }
        self._namespaces["all"] = found
        return found

    async def services(self, namespace: Namespace) -> dict[str, str]:
        """Service name → id in one namespace."""
        cached = self._services.get(namespace.id)
        now = time.monotonic()
        if cached is not None:
            count, read_at, found = cached
            fresh = now - read_at < self._cache_ttl
            unchanged = (
                count is not None
                and count == namespace.service_count
                and now - read_at < SERVICE_LIST_MAX_AGE
            )
            if fresh or unchanged:
                return found
        items = await self._paginate(
            "ListServices",
            "Services",
            Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace.id], "Condition": "EQ"}],
        )
        found = {item["Name"]: item["Id"] for item in items}
        self._services[namespace.id] = (namespace.service_count, now, found)
        return found

    async def revision(self, namespace: str, service: str) -> int:
        result = await self._call("DiscoverInstancesRevision", NamespaceName=namespace, ServiceName=service)
        return int(result.get("InstancesRevision") or 0)

    async def discover(
        self, namespace: str, service: str, clusterset_id: str | None
    ) -> tuple[int, list[Instance]]:
        """Every instance (healthy or not) of one service in the clusterset, and the revision seen."""
        params: dict[str, Any] = {
            "NamespaceName": namespace,
            "ServiceName": service,
            "HealthStatus": "ALL",
            "MaxResults": DISCOVER_MAX,
        }
        if clusterset_id:
            params["QueryParameters"] = {"CLUSTERSET_ID": clusterset_id}
        result = await self._call("DiscoverInstances", **params)
        instances = [
            Instance(item["InstanceId"], dict(item.get("Attributes") or {}))
            for item in result.get("Instances") or []
        ]
        return int(result.get("InstancesRevision") or 0), instances

    async def create_namespace(self, name: str) -> str:
        """Create an HTTP namespace (the AWS controller's choice) and return its id.

        Two clusters exporting into a new namespace race to create it: the loser (told at once, or by the
        operation) reads the winner's id instead of failing until its cache expires.
        """
        self._namespaces.clear()
        try:
            result = await self._call("CreateHttpNamespace", Name=name)
            operation = await self._wait(result["OperationId"])
            return str(operation.get("Targets", {}).get("NAMESPACE", ""))
        except CloudMapError as exc:
            if exc.code != "NamespaceAlreadyExists":
                raise
        finally:
            self._namespaces.clear()
        existing = (await self.namespaces()).get(name)
        if existing is None:
            raise CloudMapError(
                f"namespace {name} exists but is not HTTP or DNS_PRIVATE", code="InvalidInput"
            )
        return existing.id

    async def create_service(self, namespace_id: str, name: str) -> str:
        try:
            result = await self._call("CreateService", Name=name, NamespaceId=namespace_id)
        except CloudMapError as exc:
            if exc.code != "ServiceAlreadyExists":
                raise
        else:
            service_id = str(result["Service"]["Id"])
            # Add it to the namespace's list; with no ServiceCount to check the list against, it is read
            # again once its cache time is over.
            cached = self._services.get(namespace_id)
            known = cached[2] if cached else {}
            self._services[namespace_id] = (None, time.monotonic(), {**known, name: service_id})
            return service_id
        self._services.pop(namespace_id, None)
        existing = (await self.services(Namespace(namespace_id, "", ""))).get(name)
        if existing is None:
            raise CloudMapError(
                f"service {name} was reported to exist but is not listed", code="ServiceNotFound"
            )
        return existing

    async def register(self, service_id: str, instance_id: str, attributes: Mapping[str, str]) -> None:
        result = await self._call(
            "RegisterInstance", ServiceId=service_id, InstanceId=instance_id, Attributes=dict(attributes)
        )
        await self._wait(result["OperationId"])

    async def deregister(self, service_id: str, instance_id: str) -> None:
        try:
            result = await self._call("DeregisterInstance", ServiceId=service_id, InstanceId=instance_id)
        except CloudMapError as exc:
            if exc.code == "InstanceNotFound":
                return  # already gone: what we wanted
            raise
        await self._wait(result["OperationId"])

    async def _wait(self, operation_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + OPERATION_TIMEOUT
        while True:
            operation = (await self._call("GetOperation", OperationId=operation_id))["Operation"]
            status = operation.get("Status")
            if status == "SUCCESS":
                return dict(operation)
            if status == "FAIL":
                raise CloudMapError(
                    f"operation {operation_id} failed: {operation.get('ErrorMessage')}",
                    code=str(operation.get("ErrorCode", "")),
                )
            if time.monotonic() > deadline:
                raise CloudMapError(f"operation {operation_id} still {status} after {OPERATION_TIMEOUT:.0f}s")
            await asyncio.sleep(OPERATION_POLL)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")

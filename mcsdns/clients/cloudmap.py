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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import boto3.session
import botocore.config
import botocore.exceptions
import cachetools

from mcsdns.clients.backoff import Backoff
from mcsdns.clients.budget import Priority, RateBudget
from mcsdns.errors import SourceError, StartupError
from mcsdns.histogram import CALL_BUCKETS, Histogram

logger = logging.getLogger(__name__)

SOURCE = "cloudmap"
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
THROTTLE_ATTEMPTS = 6
THROTTLE_START, THROTTLE_CAP = 0.1, 10.0  # seconds: the shared backoff (clients/backoff.py)
DEFAULT_RATE = 50.0  # calls per second per process: docs/cloudmap-scale.md has the arithmetic
# A service list whose count moved is read again at most once per this many seconds per page it took: a
# namespace in a small account (one page) at every poll, one in an account of 5,000 services (50 pages)
# every 30 s. Each namespace's re-reads so cost at most about 1.7 calls/s, however large the account.
SERVICE_LIST_SECONDS_PER_PAGE = 0.6
SERVICE_LIST_MAX_AGE = 1800.0  # ... and at least this often when it does not
# All namespaces' re-reads together take at most this share of the budget, in pages, the oldest list first:
# with every namespace's count moving (a clusterset's cold start), 50 namespaces of an account of 5,000
# services would otherwise take 83 pages a second, more than the whole budget, and most of the account's
# control-plane reads, which the exports' GetOperation polls need.
SERVICE_LIST_SHARE = 0.1
SERVICE_LIST_DUE_FOR = 10.0  # seconds: a namespace no poll asked about since is no longer waiting its turn
OPERATION_POLL = 0.5
OPERATION_TIMEOUT = 60.0  # the AWS controller's poller gives operations one minute too
DISCOVER_MAX = 1000  # DiscoverInstances has no paging: 1000 is the most it returns (and a service's quota)

# Limits inside the process's budget (clients/budget.py) for the calls that create things, whose quotas AWS
# does not publish: a burst of new exports creates services at this pace, and namespaces far slower (there
# are 50 per Region by default). Every other call is limited by the budget alone.
OPERATION_LIMITS: Mapping[str, tuple[float, int]] = {
    "CreateHttpNamespace": (1.0, 5),
    "CreateService": (20.0, 50),
}
# Budget priorities by operation, unless the caller says otherwise: writes and their operation polls first.
WRITES = frozenset(
    {"CreateHttpNamespace", "CreateService", "RegisterInstance", "DeregisterInstance", "GetOperation"}
)
# AWS throttles per API: DiscoverInstances and DiscoverInstancesRevision each have a bucket of their own per
# account and Region, the control-plane calls theirs ("Cloud Map API request throttling"; the split of the
# control plane into reads and writes is ours, AWS does not publish it). A throttle slows only its own
# group here, so an account's writes running into their quota do not also slow this cluster's reads.
QUOTA_GROUPS = {
    "DiscoverInstances": "DiscoverInstances",
    "DiscoverInstancesRevision": "DiscoverInstancesRevision",
    **dict.fromkeys(sorted(WRITES - {"GetOperation"}), "writes"),
}
CONTROL_PLANE = "control-plane reads"  # List*, Get*
# botocore's "standard" retry mode treats these HTTP statuses as throttling or a service that sheds load,
# which is what they are when no error code says otherwise.
THROTTLE_STATUSES = frozenset({429, 503})


NO_CREDENTIALS = (
    "no AWS credentials found"
    " (set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a web identity token)"
)
NO_REGION = "no AWS region (give --aws-region, or set AWS_REGION or a region in the AWS profile)"


class CloudMapError(SourceError):
    def __init__(self, message: str, *, code: str = "", members: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, source=SOURCE)
        self.code = code
        self.members: Mapping[str, Any] = members or {}  # the error's other members (ServiceId, ...)


class TokenBucket:
    def __init__(self, rate: float, burst: float, *, full: bool = True) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._stamp = float(burst) if full else 0.0, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def take(self) -> None:
        while True:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)

    def spend(self, cost: float) -> bool:
        """Take ``cost`` tokens now, owing what the bucket does not hold; False, taking nothing, while a
        debt is still being paid off (for costs larger than the burst: a service list of 50 pages)."""
        self._refill()
        if self._tokens < 0:
            return False
        self._tokens -= cost
        return True


@dataclass(frozen=True, slots=True)
class Namespace:
    id: str
    name: str
    type: str
    service_count: int | None = None  # NamespaceSummary.ServiceCount, when the service reports it
    arn: str = ""
    owner: str = ""  # NamespaceSummary.ResourceOwner: another account's when it is shared with us (AWS RAM)

    @property
    def ref(self) -> str:
        """What CreateService takes as NamespaceId: the ARN when known ("For namespaces shared with your
        account, specify the namespace ARN", API reference; "the ID or ARN" for our own), else the id."""
        return self.arn or self.id


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    attributes: Mapping[str, str]


class CloudMapClient:
    def __init__(
        self,
        *,
        region: str | None = None,
        cache_ttl: float = 1.0,
        budget: RateBudget | None = None,
        owner_account: str | None = None,
    ) -> None:
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
        except ValueError as exc:
            # An empty AWS_REGION makes botocore build "servicediscovery..amazonaws.com" and refuse it.
            if not session.region_name:
                raise StartupError(NO_REGION) from exc
            raise StartupError(f"cannot create a Cloud Map client: {exc}") from exc
        if credentials is None:
            raise StartupError(NO_CREDENTIALS)
        self.budget = budget or RateBudget(DEFAULT_RATE)
        # Per quota group, the rate Cloud Map lets through lately: the budget's, halved while it throttles.
        self.quotas = {
            group: RateBudget(self.budget.limit) for group in {*QUOTA_GROUPS.values(), CONTROL_PLANE}
        }
        self._buckets = {op: TokenBucket(*limit) for op, limit in OPERATION_LIMITS.items()}
        # Namespaces shared with this account by another (AWS RAM): with an owner given, the clusterset's
        # namespaces are that account's; without, every one listed whose name no other account's has.
        self.owner_account = owner_account
        self._cache_ttl = cache_ttl
        self._namespaces: cachetools.TTLCache[str, dict[str, Namespace]] = cachetools.TTLCache(1, cache_ttl)
        # Service lists per namespace, with the namespace's ServiceCount and when they were read. A filtered
        # ListServices pages over every service of the account ("Cloud Map gets MaxResults services and then
        # filters them"), so one namespace costs ceil(all services / 100) calls: a list is read again only
        # when the namespace's ServiceCount moved (paced by its pages, ``SERVICE_LIST_SECONDS_PER_PAGE``), or
        # after ``SERVICE_LIST_MAX_AGE``.
        self._services: dict[str, tuple[int | None, float, dict[str, str]]] = {}
        self._list_pages: dict[str, int] = {}  # namespace id → pages its last list took
        self._relisting: dict[str, asyncio.Task[None]] = {}  # namespace id → its background list read
        self._noted: dict[str, dict[str, float]] = {}  # namespace id → names known since its list, and when
        # Re-reads take turns (SERVICE_LIST_SHARE): the pages they may take, and the namespaces waiting, by
        # when their list was read and when a poll last asked.
        list_rate = self.budget.limit * SERVICE_LIST_SHARE
        self._list_pages_allowed = TokenBucket(list_rate, list_rate, full=False)
        self._list_due: dict[str, tuple[float, float]] = {}
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.throttles: collections.Counter[str] = collections.Counter()
        self.durations: dict[str, Histogram] = {}  # per operation: each call's time, answered or failed

    def read_rate(self) -> float:
        """Discover* calls per second this process may make now: a poll plans its reads by it."""
        return min(
            self.budget.allowed,
            self.quotas["DiscoverInstances"].allowed,
            self.quotas["DiscoverInstancesRevision"].allowed,
        )

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    async def _call(self, operation: str, priority: Priority | None = None, **params: Any) -> dict[str, Any]:
        method = getattr(self._client, _snake(operation))
        backoff = Backoff(THROTTLE_START, THROTTLE_CAP)
        if priority is None:
            priority = Priority.WRITE if operation in WRITES else Priority.CHANGE
        for attempt in range(THROTTLE_ATTEMPTS):
            bucket = self._buckets.get(operation)
            if bucket is not None:
                await bucket.take()
            quota = self.quotas[QUOTA_GROUPS.get(operation, CONTROL_PLANE)]
            await quota.take(priority)
            await self.budget.take(priority)
            started = time.monotonic()
            outcome = "error"
            try:
                result: dict[str, Any] = await asyncio.to_thread(method, **params)
                outcome = "success"
                return result
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in THROTTLE_CODES or status in THROTTLE_STATUSES:
                    # Slow every call of this quota down, not only this one: the quota is the account's.
                    outcome = "throttled"
                    self.throttles[operation] += 1
                    quota.throttled()
                    if attempt + 1 < THROTTLE_ATTEMPTS:
                        await backoff.sleep()
                        continue
                raise CloudMapError(
                    f"{operation}: {code or status}: {error.get('Message', '')}",
                    code=code,
                    members={k: v for k, v in exc.response.items() if k not in ("Error", "ResponseMetadata")},
                ) from None
            except botocore.exceptions.NoCredentialsError:
                raise CloudMapError(f"{operation}: {NO_CREDENTIALS}") from None
            except botocore.exceptions.BotoCoreError as exc:
                raise CloudMapError(f"{operation}: {exc}") from None
            finally:
                self.outcomes[operation, outcome] += 1
                self.durations.setdefault(operation, Histogram(CALL_BUCKETS)).observe(
                    time.monotonic() - started
                )
        raise AssertionError("unreachable")

    async def _paginate(
        self, operation: str, key: str, priority: Priority | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        return [item for page in await self._pages(operation, key, priority, **params) for item in page]

    async def _pages(
        self, operation: str, key: str, priority: Priority | None = None, **params: Any
    ) -> list[list[dict[str, Any]]]:
        pages: list[list[dict[str, Any]]] = []
        token: str | None = None
        while True:
            page = await self._call(operation, priority, **params, **({"NextToken": token} if token else {}))
            pages.append(list(page.get(key) or []))
            token = page.get("NextToken")
            if not token:
                return pages

    async def namespaces(self) -> dict[str, Namespace]:
        """HTTP and DNS_PRIVATE namespaces by name (the AWS controller skips DNS_PUBLIC too): this account's
        own and those other accounts share with it (AWS RAM), or only ``owner_account``'s when it is given.
        Names are the clusterset's keys, so one namespace must hold each: a name two accounts' namespaces
        have is skipped, with a warning, until ``owner_account`` says whose."""
        cached = self._namespaces.get("all")
        if cached is not None:
            return cached
        found: dict[str, Namespace] = {}
        twice: set[str] = set()
        for item in await self._paginate("ListNamespaces", "Namespaces"):
            owner = str(item.get("ResourceOwner") or "")
            if item.get("Type") not in ("HTTP", "DNS_PRIVATE"):
                continue
            if self.owner_account and owner and owner != self.owner_account:
                continue
            if item["Name"] in found:
                twice.add(item["Name"])
            found[item["Name"]] = Namespace(
                item["Id"],
                item["Name"],
                item.get("Type", ""),
                item.get("ServiceCount"),
                str(item.get("Arn") or ""),
                owner,
            )
        for name in sorted(twice):
            logger.warning(
                "Cloud Map namespace %s exists in several accounts; give --cloudmap-owner-account to use one",
                name,
            )
            del found[name]
        self._namespaces["all"] = found
        return found

    def _owner(self, namespace: str) -> dict[str, str]:
        """``OwnerAccount`` for Discover* on ``namespace``: "For instances associated with namespaces that
        are shared with your account, you must specify an OwnerAccount" (API reference). Named whenever
        the namespace list reported its owner (our own account is the owner of our own namespaces)."""
        known = (self._namespaces.get("all") or {}).get(namespace)
        owner = (known.owner if known is not None else "") or self.owner_account
        return {"OwnerAccount": owner} if owner else {}

    async def services(self, namespace: Namespace, priority: Priority | None = None) -> dict[str, str]:
        """Service name → what instance calls take as ServiceId in one namespace: the ARN when listed
        ("For services created in a shared namespace, specify the service ARN"; ours take it too), else the
        id. A namespace never listed is listed now; a known list that is due again is returned as it is
        while it is read again in the background, so a poll never waits for a namespace's 50 pages."""
        cached = self._services.get(namespace.id)
        if cached is None:
            return await self._list_services(namespace, priority)  # once per namespace: not in the share
        count, read_at, found = cached
        age = time.monotonic() - read_at
        # Unchanged: the count is the one the list was read at, or the count of what we know is there (the
        # list plus the services beacons named, note_services): then nobody made a service that no beacon
        # announced, and paging the account's services again would tell nothing new.
        unchanged = namespace.service_count is not None and namespace.service_count in (count, len(found))
        moved_age = SERVICE_LIST_SECONDS_PER_PAGE * self._list_pages.get(namespace.id, 1)
        if age >= self._cache_ttl and age >= (SERVICE_LIST_MAX_AGE if unchanged else moved_age):
            running = self._relisting.get(namespace.id)
            if (running is None or running.done()) and self._relist_turn(namespace.id, read_at):
                self._relisting[namespace.id] = asyncio.get_running_loop().create_task(
                    self._relist(namespace, priority)
                )
        return found

    def _relist_turn(self, namespace_id: str, read_at: float) -> bool:
        """Whether the list of ``namespace_id`` (read at ``read_at``, due again) is read again now: when the
        re-reads' share of the budget (``SERVICE_LIST_SHARE``) has room, and no namespace still asked about
        waits with an older list."""
        now = time.monotonic()
        self._list_due[namespace_id] = (read_at, now)
        for other, (_, asked) in list(self._list_due.items()):
            if now - asked > SERVICE_LIST_DUE_FOR:
                del self._list_due[other]
        if min(self._list_due, key=self._list_due.__getitem__) != namespace_id:
            return False
        if not self._list_pages_allowed.spend(self._list_pages.get(namespace_id, 1)):
            return False
        del self._list_due[namespace_id]
        return True

    async def _relist(self, namespace: Namespace, priority: Priority | None) -> None:
        try:
            await self._list_services(namespace, priority)
        except CloudMapError as exc:
            logger.info(
                "Cloud Map namespace %s: its service list stays as read before: %s", namespace.name, exc
            )

    async def _list_services(self, namespace: Namespace, priority: Priority | None) -> dict[str, str]:
        started = time.monotonic()
        pages = await self._pages(
            "ListServices",
            "Services",
            priority,
            # "Specify the namespace ARN for namespaces that are shared with your account" (ServiceFilter).
            Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace.ref], "Condition": "EQ"}],
        )
        self._list_pages[namespace.id] = len(pages)
        found = {item["Name"]: str(item.get("Arn") or item["Id"]) for page in pages for item in page}
        # Names noted or created while the pages were read stay: the pages may predate them.
        noted = self._noted.pop(namespace.id, {})
        cached = self._services.get(namespace.id)
        for name, when in noted.items():
            if when >= started and name not in found:
                found[name] = cached[2].get(name, "") if cached is not None else ""
        self._services[namespace.id] = (namespace.service_count, started, found)
        return found

    def forget_services(self, namespace: Namespace) -> None:
        """Read ``namespace``'s service list at the next ``services()``."""
        self._services.pop(namespace.id, None)

    def note_services(self, namespace: Namespace, names: Iterable[str]) -> None:
        """Services known to exist (a change beacon named them) join the namespace's cached list until it is
        read again, so a list read before they were made does not hide them until it is.
        Their reference is unknown ("") until a list or CreateService gives it."""
        cached = self._services.get(namespace.id)
        if cached is not None:
            self._remember(namespace, {name: "" for name in names if name not in cached[2]})

    def _remember(self, namespace: Namespace, services: Mapping[str, str]) -> None:
        """Put services known to exist into the namespace's cached list (when it has one; the first
        ``services()`` lists it anyway), and remember when, so a list read meanwhile keeps them."""
        cached = self._services.get(namespace.id)
        if cached is None or not services:
            return
        self._services[namespace.id] = (cached[0], cached[1], {**cached[2], **services})
        self._noted.setdefault(namespace.id, {}).update(dict.fromkeys(services, time.monotonic()))

    def known_service(self, namespace: Namespace, name: str) -> str | None:
        """The service's reference from the cached list, without a call; None when not known."""
        cached = self._services.get(namespace.id)
        return (cached[2].get(name) or None) if cached is not None else None

    async def revision(self, namespace: str, service: str, priority: Priority | None = None) -> int:
        result = await self._call(
            "DiscoverInstancesRevision",
            priority,
            NamespaceName=namespace,
            ServiceName=service,
            **self._owner(namespace),
        )
        return int(result.get("InstancesRevision") or 0)

    async def discover(
        self, namespace: str, service: str, clusterset_id: str | None, priority: Priority | None = None
    ) -> tuple[int, list[Instance]]:
        """Every instance (healthy or not) of one service in the clusterset, and the revision seen."""
        params: dict[str, Any] = {
            "NamespaceName": namespace,
            "ServiceName": service,
            "HealthStatus": "ALL",
            "MaxResults": DISCOVER_MAX,
            **self._owner(namespace),
        }
        if clusterset_id:
            params["QueryParameters"] = {"CLUSTERSET_ID": clusterset_id}
        result = await self._call("DiscoverInstances", priority, **params)
        instances = [
            Instance(item["InstanceId"], dict(item.get("Attributes") or {}))
            for item in result.get("Instances") or []
        ]
        return int(result.get("InstancesRevision") or 0), instances

    async def create_namespace(self, name: str) -> Namespace:
        """Create an HTTP namespace (the AWS controller's choice) in this account and return it.

        Two clusters exporting into a new namespace race to create it: the loser (told at once, or by the
        operation) reads the winner's instead of failing until its cache expires.
        """
        if self.owner_account:
            raise CloudMapError(
                f"namespace {name} does not exist in account {self.owner_account}, or is not shared with"
                " this account: create it there and share it (AWS RAM), or export from that account",
                code="NamespaceNotFound",
            )
        self._namespaces.clear()
        try:
            result = await self._call("CreateHttpNamespace", Name=name)
            await self._wait(result["OperationId"])
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
        return existing

    async def create_service(self, namespace: Namespace, name: str) -> str:
        """Create a service and return what instance calls take as its ServiceId. An existing service's
        comes back too (ServiceAlreadyExists carries its id and ARN), so this is one call either way."""
        try:
            result = await self._call("CreateService", Name=name, NamespaceId=namespace.ref)
            created = result["Service"]
            service_ref = str(created.get("Arn") or created["Id"])
        except CloudMapError as exc:
            if exc.code != "ServiceAlreadyExists":
                raise
            found = exc.members.get("ServiceArn") or exc.members.get("ServiceId")
            if not found:  # an endpoint that does not say: its list does
                self.forget_services(namespace)
                listed = (await self.services(namespace)).get(name)
                if listed is None:
                    raise CloudMapError(
                        f"service {name} was reported to exist but is not listed", code="ServiceNotFound"
                    ) from None
                return listed
            service_ref = str(found)
        self._remember(namespace, {name: service_ref})
        return service_ref

    async def register(self, service_id: str, instance_id: str, attributes: Mapping[str, str]) -> None:
        result = await self._call(
            "RegisterInstance", ServiceId=service_id, InstanceId=instance_id, Attributes=dict(attributes)
        )
        await self._wait(result["OperationId"], _arn_account(service_id))

    async def deregister(self, service_id: str, instance_id: str) -> None:
        try:
            result = await self._call("DeregisterInstance", ServiceId=service_id, InstanceId=instance_id)
        except CloudMapError as exc:
            if exc.code == "InstanceNotFound":
                return  # already gone: what we wanted
            raise
        await self._wait(result["OperationId"], _arn_account(service_id))

    async def _wait(self, operation_id: str, owner: str = "") -> dict[str, Any]:
        """Poll an operation until it ends. ``owner``: the account owning its namespace, which GetOperation
        needs for a namespace shared with us ("For operations associated with namespaces that are shared
        with your account, you must specify an OwnerAccount", API reference)."""
        deadline = time.monotonic() + OPERATION_TIMEOUT
        extra = {"OwnerAccount": owner} if owner else {}
        while True:
            operation = (await self._call("GetOperation", None, OperationId=operation_id, **extra))[
                "Operation"
            ]
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


def _arn_account(reference: str) -> str:
    """The account of an ARN (arn:aws:servicediscovery:<region>:<account>:service/<id>); "" for an id."""
    parts = reference.split(":")
    return parts[4] if len(parts) >= 6 and parts[0] == "arn" else ""


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")

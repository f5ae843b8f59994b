"""The Cloud Map API as AWS documents it, answered from moto's servicediscovery state. The one module of the
embedded Cloud Map that imports moto.

Why a layer of our own instead of patching moto: moto 5.2.6 moved its responses to model-driven serialisers
and dropped the ``to_json`` methods that earlier patches of its response classes called, which broke the
demo and CI on a release nobody here had tried. So nothing in moto is replaced any more. Each operation that
mcsdns, its tests or its benchmarks call is answered by a handler below from moto's backend state (the
backend dict per account and region that moto's documentation shows for inspecting state, its public
``create_*`` methods, and the attributes of its model objects); only operations no handler claims (e.g.
CreatePrivateDnsNamespace) go through moto's own HTTP layer. Requests and responses are the awsJson 1.1
documents of botocore's service model, built here, so moto's serialiser changes cannot reach them.

What is still moto's internal surface (model attributes, the backend's ``namespaces``/``services``/
``operations`` dicts, ``_create_operation``) is touched only in this module, and only on moto versions listed
in :data:`PROVEN_MOTO_VERSIONS`; any other version stops the emulator at start with a message that says so
(:func:`check_moto`), not 30 s later with a timeout.

Each handler's docstring quotes the API reference sentence it implements; the quotes are from the
documentation strings of botocore's ``servicediscovery`` service model (``service-2.json``), which are the API
reference's text, and from the Cloud Map Developer Guide where noted. What moto itself does differently is
said under "moto:".

Locking: the WSGI layer holds the state lock (``locks.RWLock``) around every call: shared for the operations
in :data:`READ_OPERATIONS`, which must therefore never change moto's state or this module's (they only read),
exclusive for the rest. So no handler locks, and each write is atomic.

Accounts: one emulator serves several accounts (moto keeps a backend per account). Every handler gets a
:class:`Call`: who calls (the account the request was signed for), in which Region, and the emulator's
:class:`Tenancy` (its accounts, the namespaces shared between them, and what moto does not keep). A namespace
shared with another account (AWS RAM, "Cross-account Cloud Map namespace sharing") stays in its owner's
backend; its services, instances and operations live there too, whoever created them.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import itertools
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from moto.route53.models import route53_backends
from moto.servicediscovery.models import (
    Namespace,
    Service,
    ServiceDiscoveryBackend,
    ServiceInstance,
    servicediscovery_backends,
)

from .faults import ErrorReply, json_reply
from .quotas import READ_PREFIXES

T = TypeVar("T")
log = logging.getLogger(__name__)

# The moto releases this module was run against with the whole suite (tests/sandbox_cloudmap, the Cloud Map
# integration tests and `mcsdns demo`). Add a version here only after `ci/latest` passed with it.
PROVEN_MOTO_VERSIONS = ("5.2.5", "5.2.6")
# Set to 1 to run on an unlisted moto anyway (ci/latest does, to find out whether a new release works).
ALLOW_UNPROVEN_ENV = "MCSDNS_SANDBOX_ALLOW_UNPROVEN_MOTO"

# Page sizes from the model: "If you don't specify a value for MaxResults, Cloud Map returns up to 100 ..."
# (ListNamespaces, ListServices, ListInstances, DiscoverInstances); MaxResults is 1..100 for the List*
# operations and 1..1000 for DiscoverInstances (shapes MaxResults and DiscoverMaxResults).
DEFAULT_PAGE = 100
LIST_MAX = 100
DISCOVER_MAX = 1000

_HEALTH_FILTERS = ("HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL")

RequestHandler = MotoRequestHandler


class UnprovenMoto(RuntimeError):
    """The installed moto is not one this layer was proven on."""


def check_moto() -> str:
    """Return moto's version; raise :class:`UnprovenMoto` unless it is proven (or the override is set)."""
    version = importlib.metadata.version("moto")
    if version in PROVEN_MOTO_VERSIONS:
        return version
    message = (
        f"the embedded Cloud Map was proven on moto {', '.join(PROVEN_MOTO_VERSIONS)}, and moto {version} is "
        f"installed: install the locked versions (pip install --require-hashes -r requirements/demo.txt), "
        f"or set {ALLOW_UNPROVEN_ENV}=1 to try this one"
    )
    if os.environ.get(ALLOW_UNPROVEN_ENV) == "1":
        log.warning("%s (allowed by %s)", message, ALLOW_UNPROVEN_ENV)
        return version
    raise UnprovenMoto(message)


def moto_app() -> Any:
    """moto's own WSGI application for servicediscovery, for the operations no handler here claims."""
    return create_backend_app("servicediscovery")


class CloudMapError(Exception):
    """A modeled Cloud Map error: its code, HTTP status and the body members the model gives it."""

    def __init__(self, code: str, message: str, status: int = 400, **members: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.members = code, message, status, members

    def reply(self) -> ErrorReply:
        # Modeled Cloud Map errors carry "Message" plus their own members (e.g. NamespaceId).
        return json_reply(
            self.status, self.code, {"__type": self.code, "Message": self.message, **self.members}
        )


def invalid_input(message: str) -> CloudMapError:
    return CloudMapError("InvalidInput", message)


# --- InstancesRevision --------------------------------------------------------------------------------------
# One clock for the whole process: a service's revision is the clock value of its last instance change, so it
# only grows, also across a service deleted and created again under the same name (a client caching revisions
# by name must never see an old number come back).
_clock = itertools.count(1)
_revisions: dict[str, int] = {}  # service ARN -> InstancesRevision
_rng = random.Random()
_rng_lock = threading.Lock()


def _bump(service: Service) -> None:
    _revisions[service.arn] = next(_clock)


def revision_of(service: Service) -> int:
    return _revisions.get(service.arn, 0)


def forget_account(account_id: str) -> None:
    """Forget ``account_id``'s namespaces, services, instances, operations and revisions."""
    servicediscovery_backends.pop(account_id, None)
    # Private and public DNS namespaces also create hosted zones in moto's Route 53.
    route53_backends.pop(account_id, None)
    for arn in [arn for arn in _revisions if arn.split(":")[4] == account_id]:
        del _revisions[arn]


def seed(value: int | None) -> None:
    """Seed the shuffle of DiscoverInstances results (None: unpredictable)."""
    with _rng_lock:
        _rng.seed(value)


# --- request helpers ----------------------------------------------------------------------------------------
def _max_results(params: Mapping[str, Any], maximum: int) -> int:
    value = params.get("MaxResults")
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise invalid_input(f"MaxResults must be between 1 and {maximum}")
    return value


def _token(offset: int) -> str:
    # Opaque to clients, as AWS's tokens are: nothing should parse or fabricate them.
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: Any) -> int:
    if token is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(token).encode()))["offset"]
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_input("Invalid NextToken") from exc
    if not isinstance(offset, int) or offset < 0:
        raise invalid_input("Invalid NextToken")
    return offset


def _page(items: Sequence[T], params: Mapping[str, Any], maximum: int) -> tuple[list[T], str | None]:
    size = _max_results(params, maximum)
    start = _offset(params.get("NextToken"))
    end = start + size
    return list(items[start:end]), (_token(end) if end < len(items) else None)


def _required(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_input(f"{name} is required")
    return value


def _member(params: Mapping[str, Any], name: str) -> Any:
    return params.get(name)


def _filter_values(
    flt: dict[str, Any], supported: Mapping[str, tuple[str, ...]]
) -> tuple[str, str, list[str]]:
    name, condition, values = str(flt.get("Name")), str(flt.get("Condition") or "EQ"), flt.get("Values")
    if name not in supported:
        raise invalid_input(f"Unsupported filter name: {name}")
    if condition not in supported[name]:
        raise invalid_input(f"Condition {condition} is not supported for filter {name}")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise invalid_input(f"Filter {name} needs Values")
    if condition == "BETWEEN" and len(values) != 2:
        raise invalid_input(f"Condition BETWEEN takes exactly two values (start first) for filter {name}")
    if condition not in ("IN", "BETWEEN") and len(values) != 1:
        raise invalid_input(f"Condition {condition} takes exactly one value")
    return name, condition, [str(v) for v in values]


def _matches(actual: str, condition: str, values: list[str]) -> bool:
    if condition == "BEGINS_WITH":
        return actual.startswith(values[0])
    return actual in values  # EQ (one value) or IN


def _with_token(result: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token:
        result["NextToken"] = token
    return result


# --- accounts, sharing, and what moto does not keep ---------------------------------------------------------
class Tenancy:
    """One emulator's accounts and what it keeps beside moto's backends: which namespaces are shared with
    which accounts, who created each service and instance, which namespace each operation belongs to, and
    how long operations are kept. Changed only under the exclusive side of the state lock."""

    def __init__(self, region: str, operation_retention: float | None = None) -> None:
        if operation_retention is not None and not operation_retention > 0:
            raise ValueError(f"operation_retention must be positive seconds, not {operation_retention}")
        self.region = region
        self.operation_retention = operation_retention
        self.accounts: list[str] = []
        self.shares: dict[str, list[str]] = {}  # namespace ARN -> consumer accounts, in sharing order
        self.created_by: dict[str, str] = {}  # service ARN, or "<service ARN>/<instance id>" -> account
        self.op_namespace: dict[str, str] = {}  # operation id -> id of the namespace it belongs to
        self.ops_dropped: Counter[str] = Counter()  # account -> operations forgotten by the retention

    def add_account(self, account_id: str) -> None:
        if account_id not in self.accounts:
            self.accounts.append(account_id)
            _backend(account_id, self.region)  # created here, under the write lock, not by a reader

    def share(self, namespace_id: str, with_account: str, owner: str | None = None) -> str:
        """Share a namespace (ID of ``owner``'s, the first account's by default, or ARN) with an account of
        this emulator; returns the namespace ARN. Sharing twice is a no-op, as adding a principal to a
        resource share twice is."""
        if namespace_id.startswith("arn:"):
            try:
                owner = _arn_account(namespace_id)
            except CloudMapError as exc:
                raise ValueError(exc.message) from exc
        owner = owner or self.accounts[0]
        for account in (owner, with_account):
            if account not in self.accounts:
                raise ValueError(f"no account {account} in this emulator (add_account first)")
        if owner == with_account:
            raise ValueError("a namespace cannot be shared with the account that owns it")
        namespace = _backend(owner, self.region).namespaces.get(namespace_id.rsplit("/", 1)[-1])
        if namespace is None:
            raise ValueError(f"account {owner} has no namespace {namespace_id}")
        consumers = self.shares.setdefault(namespace.arn, [])
        if with_account not in consumers:
            consumers.append(with_account)
        return str(namespace.arn)

    def unshare(self, namespace_arn: str, with_account: str) -> None:
        consumers = self.shares.get(namespace_arn, [])
        if with_account in consumers:
            consumers.remove(with_account)

    def forget(self) -> None:
        """Forget every account's state (the accounts themselves stay, with empty backends)."""
        for account in self.accounts:
            forget_account(account)
        self.shares.clear()
        self.created_by.clear()
        self.op_namespace.clear()
        self.ops_dropped.clear()
        for account in self.accounts:
            _backend(account, self.region)  # see add_account

    def expired(self, operation: Any, now: float) -> bool:
        retention = self.operation_retention
        return retention is not None and now - _epoch(operation.created) > retention

    def drop_expired_operations(self) -> None:
        """Forget operations older than the retention, oldest first (writers only: it changes state)."""
        if self.operation_retention is None:
            return
        now = time.time()
        for account in self.accounts:
            operations = _backend(account, self.region).operations
            # Creation order is the dict's order, so the expired ones are a prefix of it; only a prefix is
            # dropped, which ListOperations' tokens (positions) count on.
            expired = []
            for op_id, op in operations.items():
                if not self.expired(op, now):
                    break
                expired.append(op_id)
            for op_id in expired:
                del operations[op_id]
                self.op_namespace.pop(op_id, None)
                self.ops_dropped[account] += 1


@dataclass
class Call:
    """Who is calling: ``account`` (from the request's signature) in ``region``, in ``tenancy``."""

    account: str
    region: str
    tenancy: Tenancy = field(repr=False)

    @property
    def own(self) -> ServiceDiscoveryBackend:
        return _backend(self.account, self.region)

    def may_use(self, namespace: Namespace) -> bool:
        """The caller owns ``namespace`` or it is shared with the caller."""
        return _arn_account(namespace.arn) == self.account or self.account in self.tenancy.shares.get(
            namespace.arn, ()
        )

    def owner_backend(self, owner: str) -> ServiceDiscoveryBackend | None:
        # Only accounts of this emulator: looking up any other would make moto create a backend for it.
        if owner != self.account and owner not in self.tenancy.accounts:
            return None
        return _backend(owner, self.region)

    def shared_namespaces(self) -> list[tuple[ServiceDiscoveryBackend, Namespace]]:
        """Namespaces other accounts shared with the caller, in sharing order."""
        out = []
        for arn, consumers in self.tenancy.shares.items():
            owner = _arn_account(arn)
            if self.account in consumers and owner != self.account:
                namespace = _backend(owner, self.region).namespaces.get(arn.rsplit("/", 1)[-1])
                if namespace is not None:
                    out.append((_backend(owner, self.region), namespace))
        return out

    def visible_namespaces(self) -> list[tuple[ServiceDiscoveryBackend, Namespace]]:
        """ListNamespaces: "Lists summary information about the namespaces that were created by the current
        Amazon Web Services account and shared with the current Amazon Web Services account." Own first, in
        creation order, then shared ones in sharing order."""
        own = self.own
        return [(own, namespace) for namespace in own.namespaces.values()] + self.shared_namespaces()


def _backend(account: str, region: str) -> ServiceDiscoveryBackend:
    return servicediscovery_backends[account][region]


def _arn_account(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        raise invalid_input(f"Invalid ARN: {arn}")
    return parts[4]


# --- reading moto's models ----------------------------------------------------------------------------------
def _epoch(value: Any) -> float:
    # awsJson timestamps are epoch seconds; moto keeps a float (<= 5.2.5) or an aware datetime (5.2.6).
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value or 0)


def _http_name(namespace: Namespace) -> str:
    # moto stores HttpName only for HTTP namespaces; AWS gives DNS namespaces one too (equal to Name unless
    # the name was reused).
    http_name = (namespace.http_properties or {}).get("HttpName")
    return str(http_name) if http_name else namespace.name


def _namespace_doc(backend: ServiceDiscoveryBackend, namespace: Namespace) -> dict[str, Any]:
    # NamespaceSummary.ServiceCount: "The number of services that are associated with the namespace."
    # moto leaves it out. ResourceOwner: "The ID of the Amazon Web Services account that created the
    # namespace. If this isn't your account ID, it's the ID of the account that shared the namespace with
    # your account."
    count = sum(1 for svc in backend.services.values() if svc.namespace_id == namespace.id)
    return {
        "Id": namespace.id,
        "Arn": namespace.arn,
        "ResourceOwner": backend.account_id,
        "Name": namespace.name,
        "Type": namespace.type,
        "Description": namespace.description or "",
        "ServiceCount": count,
        "Properties": {
            "DnsProperties": namespace.dns_properties or {},
            "HttpProperties": {"HttpName": _http_name(namespace)},
        },
        "CreateDate": _epoch(namespace.created),
        "CreatorRequestId": namespace.creator_request_id or "",
    }


def _service_doc(call: Call, backend: ServiceDiscoveryBackend, service: Service) -> dict[str, Any]:
    # ResourceOwner: "The ID of the Amazon Web Services account that created the namespace with which the
    # service is associated." CreatedByAccount: "The ID of the Amazon Web Services account that created the
    # service. If this isn't your account ID, it is the account ID of the namespace owner or of another
    # account with which the namespace has been shared."
    doc = {
        "Id": service.id,
        "Arn": service.arn,
        "ResourceOwner": backend.account_id,
        "CreatedByAccount": call.tenancy.created_by.get(service.arn, backend.account_id),
        "Name": service.name,
        "NamespaceId": service.namespace_id,
        "Description": service.description or "",
        "Type": service.service_type,
        "InstanceCount": len(service.instances),
        "CreateDate": _epoch(service.created),
        "CreatorRequestId": service.creator_request_id or "",
    }
    for key, value in (
        ("DnsConfig", service.dns_config),
        ("HealthCheckConfig", service.health_check_config),
        ("HealthCheckCustomConfig", service.health_check_custom_config),
    ):
        if value is not None:
            doc[key] = value
    return doc


def _has_health_check(service: Service) -> bool:
    # "HealthCheckCustomConfig": {} is a complete custom health check configuration, so test for presence.
    return service.health_check_config is not None or service.health_check_custom_config is not None


def _split_id(call: Call, given: str) -> tuple[str, str]:
    # Ids and ARNs name the same thing: "The ID or Amazon Resource Name (ARN) of the service" (ServiceId,
    # NamespaceId). A bare ID names one of the caller's own: "For namespaces shared with your Amazon Web
    # Services account, specify the namespace ARN." (CreateService, NamespaceId); "For services created in a
    # shared namespace, specify the service ARN." (RegisterInstance, ServiceId). moto looked up by ID only.
    if given.startswith("arn:"):
        return _arn_account(given), given.rsplit("/", 1)[-1]
    return call.account, given


def _namespace(call: Call, given: str, *, owned: bool = False) -> tuple[ServiceDiscoveryBackend, Namespace]:
    """The namespace ``given`` by ID or ARN, if the caller owns it or (unless ``owned``) it is shared with the
    caller; NamespaceNotFound otherwise, also for a namespace of another account that is not shared."""
    owner, namespace_id = _split_id(call, given)
    backend = None if owned and owner != call.account else call.owner_backend(owner)
    namespace = None if backend is None else backend.namespaces.get(namespace_id)
    if backend is None or namespace is None or not call.may_use(namespace):
        raise CloudMapError("NamespaceNotFound", f"Namespace not found: {given}")
    return backend, namespace


def _service(call: Call, given: str) -> tuple[ServiceDiscoveryBackend, Service]:
    """The service ``given`` by ID or ARN, in a namespace the caller owns or that is shared with it."""
    owner, service_id = _split_id(call, given)
    backend = call.owner_backend(owner)
    service = None if backend is None else backend.services.get(service_id)
    namespace = None if backend is None or service is None else backend.namespaces.get(service.namespace_id)
    if backend is None or service is None or namespace is None or not call.may_use(namespace):
        raise CloudMapError("ServiceNotFound", f"Service not found: {given}")
    return backend, service


def _instance_index(service: Service, instance_id: str) -> int:
    for index, existing in enumerate(service.instances):
        if existing.instance_id == instance_id:
            return index
    raise CloudMapError("InstanceNotFound", f"Instance not found: {instance_id}")


def _find_service(call: Call, params: Mapping[str, Any]) -> tuple[str, Service]:
    """The service DiscoverInstances(Revision) names, and the NamespaceName asked for. OwnerAccount: "The ID
    of the Amazon Web Services account that owns the namespace associated with the instance, as specified in
    the namespace ResourceOwner field. For instances associated with namespaces that are shared with your
    account, you must specify an OwnerAccount." So without it only the caller's own namespaces are searched,
    and with it only that account's (a consumer with a same-named namespace of its own picks by it)."""
    namespace_name, service_name = str(params.get("NamespaceName")), str(params.get("ServiceName"))
    owner = params.get("OwnerAccount") or call.account
    if not isinstance(owner, str):
        raise invalid_input("OwnerAccount must be an account ID")
    backend = call.owner_backend(owner)
    namespace = None
    if backend is not None:
        namespace = next(
            (
                ns
                for ns in backend.namespaces.values()
                if _http_name(ns) == namespace_name and call.may_use(ns)
            ),
            None,
        )
    if backend is None or namespace is None:
        raise CloudMapError("NamespaceNotFound", f"Namespace not found: {namespace_name}")
    for service in backend.services.values():
        if service.namespace_id == namespace.id and service.name == service_name:
            return namespace_name, service
    raise CloudMapError("ServiceNotFound", f"Service not found: {service_name}")


def _operation(
    call: Call, backend: ServiceDiscoveryBackend, op_type: str, targets: dict[str, str], namespace_id: str
) -> dict[str, Any]:
    # GetOperation: "Gets information about any operation that returns an operation ID in the response".
    # Operation.OwnerAccount: "The ID of the Amazon Web Services account that owns the namespace associated
    # with the operation." So an operation is kept by the namespace's owner, whoever called.
    operation_id = backend._create_operation(op_type, targets)
    call.tenancy.op_namespace[operation_id] = namespace_id
    return {"OperationId": operation_id}


# --- namespaces ---------------------------------------------------------------------------------------------
def create_http_namespace(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateHttpNamespace errors, NamespaceAlreadyExists: "The namespace that you're trying to create already
    exists." (members CreatorRequestId: "The CreatorRequestId that was used to create the namespace.",
    NamespaceId: "The ID of the existing namespace.")

    moto: created a second namespace with the same name.
    """
    backend = call.own
    name = _required(params, "Name")
    for namespace in backend.namespaces.values():
        if namespace.name == name or _http_name(namespace) == name:
            raise CloudMapError(
                "NamespaceAlreadyExists",
                f"Namespace already exists with name {name}",
                CreatorRequestId=namespace.creator_request_id or "",
                NamespaceId=namespace.id,
            )
    operation_id = backend.create_http_namespace(
        name=name,
        creator_request_id=str(params.get("CreatorRequestId") or ""),
        description=str(params.get("Description") or ""),
        tags=list(params.get("Tags") or []),
    )
    call.tenancy.op_namespace[operation_id] = backend.operations[operation_id].targets["NAMESPACE"]
    return {"OperationId": operation_id}


def get_namespace(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """GetNamespace, Id: "For namespaces shared with your Amazon Web Services account, specify the namespace
    ARN." """
    return {"Namespace": _namespace_doc(*_namespace(call, _required(params, "Id")))}


def delete_namespace(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteNamespace: "Deletes a namespace from the current account. If the namespace still contains one or
    more services, the request fails." (error ResourceInUse, HTTP 409). Only the owner's: a namespace shared
    with the caller is not "from the current account" (answered NamespaceNotFound).

    moto: deleted namespaces that still had services.
    """
    backend, namespace = _namespace(call, _required(params, "Id"), owned=True)
    if any(service.namespace_id == namespace.id for service in backend.services.values()):
        raise CloudMapError("ResourceInUse", "Namespace contains services", status=409)
    del backend.namespaces[namespace.id]
    call.tenancy.shares.pop(namespace.arn, None)
    return _operation(call, backend, "DELETE_NAMESPACE", {"NAMESPACE": namespace.id}, namespace.id)


def _owner_filter(owner: str, call: Call) -> str:
    # RESOURCE_OWNER: "Specify one of SELF or OTHER_ACCOUNTS. SELF can be used to filter namespaces created by
    # you and OTHER_ACCOUNTS can be used to filter namespaces shared with you that were created by other
    # accounts."
    return "SELF" if owner == call.account else "OTHER_ACCOUNTS"


def list_namespaces(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListNamespaces, NextToken: "Cloud Map gets MaxResults namespaces and then filters them based on the
    specified criteria. It's possible that no namespaces in the first MaxResults namespaces matched the
    specified criteria but that subsequent groups of MaxResults namespaces do contain namespaces that match
    the criteria." Filters: "If you specify more than one filter, a namespace must match all filters to be
    returned by ListNamespaces." NamespaceFilter, Condition: "EQ: When you specify EQ for Condition, you can
    specify only one value. EQ is supported for TYPE, NAME, RESOURCE_OWNER and HTTP_NAME. EQ is the default
    condition and can be omitted. BEGINS_WITH: When you specify BEGINS_WITH for Condition, you can specify
    only one value. BEGINS_WITH is supported for TYPE, NAME, and HTTP_NAME."

    moto: ignored Filters, MaxResults and NextToken and returned every namespace. IN on TYPE, which older
    references documented, is accepted as well.
    """
    supported = {
        "TYPE": ("EQ", "BEGINS_WITH", "IN"),
        "NAME": ("EQ", "BEGINS_WITH"),
        "HTTP_NAME": ("EQ", "BEGINS_WITH"),
        "RESOURCE_OWNER": ("EQ",),
    }
    filters = [_filter_values(flt, supported) for flt in params.get("Filters") or []]
    page, token = _page(call.visible_namespaces(), params, LIST_MAX)

    def keep(backend: ServiceDiscoveryBackend, namespace: Namespace) -> bool:
        fields = {
            "TYPE": namespace.type,
            "NAME": namespace.name,
            "HTTP_NAME": _http_name(namespace),
            "RESOURCE_OWNER": _owner_filter(backend.account_id, call),
        }
        return all(_matches(fields[name], cond, values) for name, cond, values in filters)

    docs = [_namespace_doc(backend, ns) for backend, ns in page if keep(backend, ns)]
    return _with_token({"Namespaces": docs}, token)


# --- services -----------------------------------------------------------------------------------------------
def create_service(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateService errors, NamespaceNotFound: "No namespace exists with the specified ID.";
    ServiceAlreadyExists: "The service can't be created because a service with the same name already exists."
    (members CreatorRequestId, ServiceId, ServiceArn). ServiceSummary, Type: "HTTP: The service instances can
    only be discovered using the DiscoverInstances API operation. DNS_HTTP: The service instances can be
    discovered using either DNS queries or the DiscoverInstances API operation." NamespaceId: "For namespaces
    shared with your Amazon Web Services account, specify the namespace ARN." A service created in a shared
    namespace is kept with the namespace (its ARN names the owner, its ResourceOwner is the owner) and
    remembers its CreatedByAccount.

    moto: accepted any namespace ID, allowed duplicate names, and left Type empty unless the request set it.
    """
    name = _required(params, "Name")
    backend, namespace = _namespace(call, _required(params, "NamespaceId"))
    for existing in backend.services.values():
        if existing.namespace_id == namespace.id and existing.name == name:
            raise CloudMapError(
                "ServiceAlreadyExists",
                f"Service already exists with name {name}",
                CreatorRequestId=existing.creator_request_id or "",
                ServiceId=existing.id,
                ServiceArn=existing.arn,
            )
    service = backend.create_service(
        name=name,
        namespace_id=namespace.id,
        creator_request_id=str(params.get("CreatorRequestId") or ""),
        description=str(params.get("Description") or ""),
        # moto annotates these as dicts but keeps None for "not configured", which is what AWS reports too.
        dns_config=_member(params, "DnsConfig"),
        health_check_config=_member(params, "HealthCheckConfig"),
        health_check_custom_config=_member(params, "HealthCheckCustomConfig"),
        tags=list(params.get("Tags") or []),
        service_type=str(params.get("Type") or ("HTTP" if namespace.type == "HTTP" else "DNS_HTTP")),
    )
    call.tenancy.created_by[service.arn] = call.account
    _bump(service)  # a new service starts with its own revision, above any that name had before
    return {"Service": _service_doc(call, backend, service)}


def get_service(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"Service": _service_doc(call, *_service(call, _required(params, "Id")))}


def delete_service(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteService errors, ServiceNotFound: "No service exists with the specified ID."; ResourceInUse: "The
    specified resource can't be deleted because it contains other resources. For example, you can't delete a
    service that contains any instances." (HTTP 409)

    moto: deleted silently, also unknown IDs and services with instances.
    """
    backend, service = _service(call, _required(params, "Id"))
    if service.instances:
        raise CloudMapError("ResourceInUse", "Service contains registered instances", status=409)
    del backend.services[service.id]
    _revisions.pop(service.arn, None)
    call.tenancy.created_by.pop(service.arn, None)
    return {}


def list_services(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListServices, NextToken: "Cloud Map gets MaxResults services and then filters them based on the
    specified criteria." Filters: "If you specify more than one filter, an operation must match all filters to
    be returned by ListServices." ServiceFilter, Values: "NAMESPACE_ID: Specify one namespace ID or ARN.
    Specify the namespace ARN for namespaces that are shared with your Amazon Web Services account."
    "RESOURCE_OWNER: Specify one of SELF or OTHER_ACCOUNTS." Condition: "EQ: When you specify EQ, specify one
    value. EQ is the default condition and can be omitted." Own services first, then those of namespaces
    shared with the caller.

    moto: ignored Filters, MaxResults and NextToken and returned every service of every namespace.
    """
    supported = {"NAMESPACE_ID": ("EQ",), "RESOURCE_OWNER": ("EQ",)}
    filters = [_filter_values(flt, supported) for flt in params.get("Filters") or []]
    own = call.own
    services = [(own, service) for service in own.services.values()]
    for backend, namespace in call.shared_namespaces():
        services += [(backend, svc) for svc in backend.services.values() if svc.namespace_id == namespace.id]
    page, token = _page(services, params, LIST_MAX)

    def keep(backend: ServiceDiscoveryBackend, service: Service) -> bool:
        namespace = backend.namespaces.get(service.namespace_id)
        for name, _, values in filters:
            if name == "NAMESPACE_ID":
                own_id = service.namespace_id if backend is own else None
                if values[0] not in (own_id, namespace.arn if namespace else None):
                    return False
            elif values[0] != _owner_filter(backend.account_id, call):
                return False
        return True

    docs = [_service_doc(call, backend, service) for backend, service in page if keep(backend, service)]
    return _with_token({"Services": docs}, token)


# --- instances ----------------------------------------------------------------------------------------------
def register_instance(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """RegisterInstance, InstanceId: "You can use this value to update an existing instance." "To register a
    new instance, you must specify a value that's unique among instances that you register by using the same
    service." DiscoverInstances, InstancesRevision: "If a new instance is registered or deregistered, the
    InstancesRevision updates." Attributes, AWS_INIT_HEALTH_STATUS: "If the service configuration includes
    HealthCheckCustomConfig, you can optionally use AWS_INIT_HEALTH_STATUS to specify the initial status of
    the custom health check, HEALTHY or UNHEALTHY. If you don't specify a value for AWS_INIT_HEALTH_STATUS,
    the initial status is HEALTHY." ServiceId: "For services created in a shared namespace, specify the
    service ARN." GetOperation, Targets: "SERVICE: The service ID is returned in the ResourceId property.
    INSTANCE: The instance ID is returned in the ResourceId property." (Both apply, so both are named; the
    namespace is not a target of an instance operation, but ListOperations' NAMESPACE_ID finds it.)

    moto: appended a second instance with the same ID (a twin), kept one revision counter per instance ID,
    named only the INSTANCE in Targets, and forgot the operation at the next ListOperations.
    Here the instance is replaced in place; the service's revision moves when an instance is added or its
    attributes change (re-registering identical attributes leaves it, which the reference does not rule on).
    """
    backend, service = _service(call, _required(params, "ServiceId"))
    instance_id = _required(params, "InstanceId")
    attributes = params.get("Attributes") or {}
    if not isinstance(attributes, dict):
        raise invalid_input("Attributes must be a map of strings")
    instance = ServiceInstance(
        service_id=service.id,
        instance_id=instance_id,
        creator_request_id=params.get("CreatorRequestId"),
        attributes={str(k): str(v) for k, v in attributes.items()},
    )
    custom_health = service.health_check_custom_config is not None
    if custom_health and instance.attributes.get("AWS_INIT_HEALTH_STATUS") == "UNHEALTHY":
        instance.health_status = "UNHEALTHY"
    try:
        index = _instance_index(service, instance_id)
    except CloudMapError:
        service.instances.append(instance)
        changed = True
    else:
        changed = service.instances[index].attributes != instance.attributes
        service.instances[index] = instance
    if changed:
        _bump(service)
    call.tenancy.created_by[f"{service.arn}/{instance_id}"] = call.account
    targets = {"INSTANCE": instance_id, "SERVICE": service.id}
    return _operation(call, backend, "REGISTER_INSTANCE", targets, service.namespace_id)


def deregister_instance(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeregisterInstance: "Deletes the Amazon Route 53 DNS records and health check, if any, that Cloud Map
    created for the specified instance." ServiceId: "If the namespace associated with the service is shared
    with your account, specify the service ARN." Targets as for RegisterInstance.

    moto: raised the per-instance revision (so the sum it reported could fall) and left SERVICE out of
    Targets.
    """
    backend, service = _service(call, _required(params, "ServiceId"))
    instance_id = _required(params, "InstanceId")
    del service.instances[_instance_index(service, instance_id)]
    call.tenancy.created_by.pop(f"{service.arn}/{instance_id}", None)
    _bump(service)
    targets = {"INSTANCE": instance_id, "SERVICE": service.id}
    return _operation(call, backend, "DEREGISTER_INSTANCE", targets, service.namespace_id)


def get_instance(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """GetInstanceResponse, ResourceOwner: "The ID of the Amazon Web Services account that created the
    namespace that contains the service that the instance is associated with." """
    backend, service = _service(call, _required(params, "ServiceId"))
    instance = service.instances[_instance_index(service, _required(params, "InstanceId"))]
    return {
        "ResourceOwner": backend.account_id,
        "Instance": {
            "Id": instance.instance_id,
            "CreatorRequestId": instance.creator_request_id,
            "Attributes": instance.attributes,
            "CreatedByAccount": _instance_creator(call, backend, service, instance.instance_id),
        },
    }


def _instance_creator(
    call: Call, backend: ServiceDiscoveryBackend, service: Service, instance_id: str
) -> str:
    return call.tenancy.created_by.get(f"{service.arn}/{instance_id}", backend.account_id)


def list_instances(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListInstances, MaxResults: "If you don't specify a value for MaxResults, Cloud Map returns up to 100
    instances." NextToken: "If more than MaxResults instances match the specified criteria, you can submit
    another ListInstances request to get the next group of results." InstanceSummary, CreatedByAccount: "The
    ID of the Amazon Web Services account that registered the instance."

    moto: returned every instance when MaxResults was absent and an empty page for a malformed NextToken.
    """
    backend, service = _service(call, _required(params, "ServiceId"))
    page, token = _page(service.instances, params, LIST_MAX)
    instances = [
        {
            "Id": instance.instance_id,
            "Attributes": instance.attributes,
            "CreatedByAccount": _instance_creator(call, backend, service, instance.instance_id),
        }
        for instance in page
    ]
    return _with_token({"ResourceOwner": backend.account_id, "Instances": instances}, token)


def update_instance_custom_health_status(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateInstanceCustomHealthStatus: "You can use UpdateInstanceCustomHealthStatus to change the status
    only for custom health checks, which you define using HealthCheckCustomConfig when you create a service."
    InstancesRevision: "The health status updates don't update InstancesRevision."

    moto: allowed it for services without a custom health check.
    """
    _, service = _service(call, _required(params, "ServiceId"))
    status = params.get("Status")
    if service.health_check_custom_config is None or status not in ("HEALTHY", "UNHEALTHY"):
        raise CloudMapError("CustomHealthNotFound", f"No custom health check for service {service.id}")
    service.instances[_instance_index(service, _required(params, "InstanceId"))].health_status = status
    return {}


def discover_instances(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """DiscoverInstances: "DiscoverInstances returns a randomized list of instances allowing customers to
    distribute traffic evenly across instances." NamespaceName: "The HttpName name of the namespace."
    QueryParameters: "Only instances that match all the specified key-value pairs are returned."
    OptionalParameters: "If there are instances that match both the filters specified in both the
    QueryParameters parameter and this parameter, all of these instances are returned. Otherwise, the filters
    are ignored, and only instances that match the filters that are specified in the QueryParameters parameter
    are returned." HealthStatus: "This parameter is ignored for services that don't have a health check
    configured, and all instances are returned." "HEALTHY_OR_ELSE_ALL: Returns healthy instances, unless none
    are reporting a healthy state. In that case, return all instances." MaxResults: "If you don't specify a
    value for MaxResults, Cloud Map returns up to 100 instances." (1..1000, and there is no NextToken).
    InstancesRevision: "The increasing revision associated to the response Instances list."
    HttpInstanceSummary, HealthStatus: "If you configured health checking in the service, the current health
    status of the service instance." (Real responses for services without health checks carry "UNKNOWN".)
    Developer Guide: "When you configure a health check, AWS Cloud Map returns healthy resources by default."
    OwnerAccount: see :func:`_find_service`.

    moto: summed per-instance counters of the returned instances as the revision (it fell on deregistration
    and depended on the filters), returned every instance without MaxResults, filtered by health for services
    without health checks, decided HEALTHY_OR_ELSE_ALL on instances the query had excluded, matched
    NamespaceName against Name, and kept registration order.
    """
    limit = _max_results(params, DISCOVER_MAX)
    health = params.get("HealthStatus") or "HEALTHY"
    if health not in _HEALTH_FILTERS:
        raise invalid_input(f"HealthStatus must be one of {', '.join(_HEALTH_FILTERS)}")
    namespace_name, service = _find_service(call, params)
    query: dict[str, str] = params.get("QueryParameters") or {}
    optional: dict[str, str] = params.get("OptionalParameters") or {}

    def has_all(instance: ServiceInstance, wanted: dict[str, str]) -> bool:
        return all(instance.attributes.get(key) == value for key, value in wanted.items())

    found = [i for i in service.instances if has_all(i, query)]
    checked = _has_health_check(service)
    if checked and health != "ALL":
        healthy = [i for i in found if i.health_status == "HEALTHY"]
        if health == "HEALTHY" or (health == "HEALTHY_OR_ELSE_ALL" and healthy):
            found = healthy
        elif health == "UNHEALTHY":
            found = [i for i in found if i.health_status == "UNHEALTHY"]
    if optional:
        found = [i for i in found if has_all(i, optional)] or found
    with _rng_lock:
        _rng.shuffle(found)
    instances = [
        {
            "InstanceId": instance.instance_id,
            "NamespaceName": namespace_name,
            "ServiceName": service.name,
            "HealthStatus": instance.health_status if checked else "UNKNOWN",
            "Attributes": instance.attributes,
        }
        for instance in found[:limit]
    ]
    return {"Instances": instances, "InstancesRevision": revision_of(service)}


def discover_instances_revision(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """DiscoverInstancesRevision: "Discovers the increasing revision associated with an instance."
    InstancesRevision: "If a new instance is registered or deregistered, the InstancesRevision updates. The
    health status updates don't update InstancesRevision." OwnerAccount: see :func:`_find_service`.

    moto: summed per-instance counters of the current instances, so deregistering made the number fall.
    """
    return {"InstancesRevision": revision_of(_find_service(call, params)[1])}


# --- operations ---------------------------------------------------------------------------------------------
_OPERATION_STATUSES = ("SUBMITTED", "PENDING", "SUCCESS", "FAIL")
# OperationFilter, Values: "STATUS: Specify one or more statuses: SUBMITTED, PENDING, SUCCEED, or FAIL." while
# the OperationStatus enum (what GetOperation answers) says SUCCESS; both are accepted and mean the same.
_STATUS_ALIASES = {"SUCCEED": "SUCCESS"}
_OPERATION_TYPES = (
    "CREATE_NAMESPACE",
    "DELETE_NAMESPACE",
    "UPDATE_NAMESPACE",
    "UPDATE_SERVICE",
    "REGISTER_INSTANCE",
    "DEREGISTER_INSTANCE",
)
_OPERATION_FILTERS = {
    # OperationFilter, Condition: "EQ is supported for NAMESPACE_ID, SERVICE_ID, STATUS, and TYPE." "IN is
    # supported for STATUS and TYPE." "BETWEEN is supported for UPDATE_DATE."
    "NAMESPACE_ID": ("EQ",),
    "SERVICE_ID": ("EQ",),
    "STATUS": ("EQ", "IN"),
    "TYPE": ("EQ", "IN"),
    "UPDATE_DATE": ("BETWEEN",),
}


def _operation_doc(call: Call, backend: ServiceDiscoveryBackend, operation: Any) -> dict[str, Any]:
    return {
        "Id": operation.id,
        "OwnerAccount": backend.account_id,
        "Type": operation.operation_type,
        "Status": operation.status,
        "CreateDate": _epoch(operation.created),
        "UpdateDate": _epoch(operation.updated),
        "Targets": dict(operation.targets),
    }


def get_operation(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """GetOperation: "Gets information about any operation that returns an operation ID in the response, such
    as a CreateHttpNamespace request." OwnerAccount: "The ID of the Amazon Web Services account that owns the
    namespace associated with the operation, as specified in the namespace ResourceOwner field. For
    operations associated with namespaces that are shared with your account, you must specify an
    OwnerAccount." Every operation is kept (instance ones too) unless the emulator has a retention.

    moto: forgot instance operations at the first ListOperations.
    """
    operation_id = _required(params, "OperationId")
    owner = params.get("OwnerAccount") or call.account
    backend = call.owner_backend(str(owner))
    operation = None if backend is None else backend.operations.get(operation_id)
    if backend is not None and operation is not None and owner != call.account:
        # A consumer sees the operations of namespaces shared with it, and no others of the owner.
        namespace = backend.namespaces.get(call.tenancy.op_namespace.get(operation_id, ""))
        if namespace is None or not call.may_use(namespace):
            operation = None
    if backend is None or operation is None or call.tenancy.expired(operation, time.time()):
        raise CloudMapError("OperationNotFound", f"Operation not found: {operation_id}")
    return {"Operation": _operation_doc(call, backend, operation)}


def _operation_filters(params: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    filters = []
    for flt in params.get("Filters") or []:
        name, condition, values = _filter_values(flt, _OPERATION_FILTERS)
        if name == "STATUS":
            values = [_STATUS_ALIASES.get(v, v) for v in values]
            bad = [v for v in values if v not in _OPERATION_STATUSES]
            if bad:
                raise invalid_input(f"Invalid STATUS {bad[0]}: one of SUBMITTED, PENDING, SUCCEED, FAIL")
        elif name == "TYPE":
            bad = [v for v in values if v not in _OPERATION_TYPES]
            if bad:
                raise invalid_input(f"Invalid TYPE {bad[0]}: one of {', '.join(_OPERATION_TYPES)}")
        elif name == "UPDATE_DATE":
            try:
                start, end = (float(v) for v in values)
            except ValueError as exc:
                raise invalid_input("UPDATE_DATE values must be Unix times in seconds") from exc
            # "Specify a start date and an end date [...]. The start date must be the first value."
            if start > end:
                raise invalid_input("UPDATE_DATE: the start date must be the first value")
        filters.append((name, condition, values))
    return filters


def _operation_matches(call: Call, operation: Any, filters: Iterable[tuple[str, str, list[str]]]) -> bool:
    for name, _, values in filters:
        if name == "NAMESPACE_ID":
            # "NAMESPACE_ID: Gets operations related to specified namespaces." An instance operation is
            # related to the namespace of its service, though its Targets do not name it.
            wanted = values[0].rsplit("/", 1)[-1]
            related = operation.targets.get("NAMESPACE") or call.tenancy.op_namespace.get(operation.id)
            if related != wanted:
                return False
        elif name == "SERVICE_ID":
            if operation.targets.get("SERVICE") != values[0].rsplit("/", 1)[-1]:
                return False
        elif name == "STATUS":
            if operation.status not in values:
                return False
        elif name == "TYPE":
            if operation.operation_type not in values:
                return False
        else:  # UPDATE_DATE: "Gets operations that changed status during a specified date/time range."
            if not float(values[0]) <= _epoch(operation.updated) <= float(values[1]):
                return False
    return True


def list_operations(call: Call, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListOperations: "Lists operations that match the criteria that you specify." Filters: "If you specify
    more than one filter, an operation must match all filters to be returned by ListOperations." MaxResults:
    "If you don't specify a value for MaxResults, Cloud Map returns up to 100 operations." NextToken: "Cloud
    Map gets MaxResults operations and then filters them based on the specified criteria. It's possible that
    no operations in the first MaxResults operations matched the specified criteria but that subsequent
    groups of MaxResults operations do contain operations that match the criteria." So a page holds the
    matches among the next MaxResults operations: fewer than asked, or none, with a NextToken while more
    operations follow.

    Order: the reference documents none; here it is creation order, oldest first. Operations of the caller's
    account, i.e. of namespaces it owns (including what consumers did in them); an operation a consumer
    started in a shared namespace is the owner's (GetOperation with OwnerAccount reaches it). The NextToken
    is a position in the account's operations counted from the first ever kept, so operations forgotten by
    the retention (oldest first) do not shift a listing in progress.

    moto: ignored every filter and MaxResults, and deleted each operation whose targets named no existing
    namespace (every instance operation) while listing.
    """
    filters = _operation_filters(params)
    size = _max_results(params, LIST_MAX)
    operations = list(call.own.operations.values())
    dropped = call.tenancy.ops_dropped[call.account]
    start = max(0, _offset(params.get("NextToken")) - dropped)
    page = operations[start : start + size]
    token = _token(dropped + start + size) if start + size < len(operations) else None
    now = time.time()
    summaries = [
        {"Id": op.id, "Status": op.status}
        for op in page
        if not call.tenancy.expired(op, now) and _operation_matches(call, op, filters)
    ]
    return _with_token({"Operations": summaries}, token)


# --- dispatch -----------------------------------------------------------------------------------------------
Handler = Callable[[Call, Mapping[str, Any]], dict[str, Any]]

_HANDLERS: tuple[Handler, ...] = (
    create_http_namespace,
    get_namespace,
    delete_namespace,
    list_namespaces,
    create_service,
    get_service,
    delete_service,
    list_services,
    register_instance,
    deregister_instance,
    get_instance,
    list_instances,
    update_instance_custom_health_status,
    discover_instances,
    discover_instances_revision,
    get_operation,
    list_operations,
)


def _operation_name(handler: Handler) -> str:
    return "".join(part.capitalize() for part in handler.__name__.split("_"))


# The operation names (X-Amz-Target's last part) this layer answers itself.
OPERATIONS: dict[str, Handler] = {_operation_name(handler): handler for handler in _HANDLERS}
# Those that only read, so may run together under the shared side of the state lock.
READ_OPERATIONS = frozenset(name for name in OPERATIONS if name.startswith(READ_PREFIXES))


def handles(operation: str) -> bool:
    return operation in OPERATIONS


def answer(operation: str, call: Call, body: bytes) -> bytes | ErrorReply:
    """Answer one awsJson 1.1 request for ``operation`` by ``call``. The caller holds the state lock: shared
    for :data:`READ_OPERATIONS`, exclusive otherwise."""
    try:
        params = json.loads(body) if body.strip() else {}
        if not isinstance(params, dict):
            raise invalid_input("request body must be a JSON object")
        if operation not in READ_OPERATIONS:
            call.tenancy.drop_expired_operations()
        return json.dumps(OPERATIONS[operation](call, params)).encode()
    except CloudMapError as exc:
        return exc.reply()
    except (ValueError, TypeError) as exc:  # a body that is not JSON, or members of the wrong type
        return invalid_input(f"malformed request: {exc}").reply()

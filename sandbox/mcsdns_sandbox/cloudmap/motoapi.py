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
said under "moto:". Requests reach handlers one at a time (the WSGI layer holds a lock), so none locks.
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
from collections.abc import Callable, Mapping, Sequence
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
    if condition != "IN" and len(values) != 1:
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
    # moto leaves it out.
    count = sum(1 for svc in backend.services.values() if svc.namespace_id == namespace.id)
    return {
        "Id": namespace.id,
        "Arn": namespace.arn,
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


def _service_doc(service: Service) -> dict[str, Any]:
    doc = {
        "Id": service.id,
        "Arn": service.arn,
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


def _by_id_or_arn(table: Mapping[str, T], given: str, missing: str, what: str) -> T:
    # Ids and ARNs name the same thing: "The ID or Amazon Resource Name (ARN) of the service" (ServiceId;
    # NamespaceId likewise since namespaces can be shared). moto looks up by id only.
    found = table.get(given.rsplit("/", 1)[-1] if given.startswith("arn:") else given)
    if found is None:
        raise CloudMapError(missing, f"{what} not found: {given}")
    return found


def _namespace(backend: ServiceDiscoveryBackend, namespace_id: str) -> Namespace:
    return _by_id_or_arn(backend.namespaces, namespace_id, "NamespaceNotFound", "Namespace")


def _service(backend: ServiceDiscoveryBackend, service_id: str) -> Service:
    return _by_id_or_arn(backend.services, service_id, "ServiceNotFound", "Service")


def _instance_index(service: Service, instance_id: str) -> int:
    for index, existing in enumerate(service.instances):
        if existing.instance_id == instance_id:
            return index
    raise CloudMapError("InstanceNotFound", f"Instance not found: {instance_id}")


def _find_service(backend: ServiceDiscoveryBackend, namespace_name: str, service_name: str) -> Service:
    namespace = next((ns for ns in backend.namespaces.values() if _http_name(ns) == namespace_name), None)
    if namespace is None:
        raise CloudMapError("NamespaceNotFound", f"Namespace not found: {namespace_name}")
    for service in backend.services.values():
        if service.namespace_id == namespace.id and service.name == service_name:
            return service
    raise CloudMapError("ServiceNotFound", f"Service not found: {service_name}")


def _operation(backend: ServiceDiscoveryBackend, op_type: str, targets: dict[str, str]) -> dict[str, Any]:
    # GetOperation: "Gets information about any operation that returns an operation ID in the response".
    return {"OperationId": backend._create_operation(op_type, targets)}


# --- namespaces ---------------------------------------------------------------------------------------------
def create_http_namespace(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateHttpNamespace errors, NamespaceAlreadyExists: "The namespace that you're trying to create already
    exists." (members CreatorRequestId: "The CreatorRequestId that was used to create the namespace.",
    NamespaceId: "The ID of the existing namespace.")

    moto: created a second namespace with the same name.
    """
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
    return {"OperationId": operation_id}


def get_namespace(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"Namespace": _namespace_doc(backend, _namespace(backend, _required(params, "Id")))}


def delete_namespace(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteNamespace: "Deletes a namespace from the current account. If the namespace still contains one or
    more services, the request fails." (error ResourceInUse, HTTP 409)

    moto: deleted namespaces that still had services.
    """
    namespace = _namespace(backend, _required(params, "Id"))
    if any(service.namespace_id == namespace.id for service in backend.services.values()):
        raise CloudMapError("ResourceInUse", "Namespace contains services", status=409)
    del backend.namespaces[namespace.id]
    return _operation(backend, "DELETE_NAMESPACE", {"NAMESPACE": namespace.id})


def list_namespaces(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
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
    page, token = _page(list(backend.namespaces.values()), params, LIST_MAX)

    def keep(namespace: Namespace) -> bool:
        fields = {
            "TYPE": namespace.type,
            "NAME": namespace.name,
            "HTTP_NAME": _http_name(namespace),
            "RESOURCE_OWNER": "SELF",  # no namespace is shared with the emulated account
        }
        return all(_matches(fields[name], cond, values) for name, cond, values in filters)

    return _with_token({"Namespaces": [_namespace_doc(backend, ns) for ns in page if keep(ns)]}, token)


# --- services -----------------------------------------------------------------------------------------------
def create_service(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateService errors, NamespaceNotFound: "No namespace exists with the specified ID.";
    ServiceAlreadyExists: "The service can't be created because a service with the same name already exists."
    (members CreatorRequestId, ServiceId, ServiceArn). ServiceSummary, Type: "HTTP: The service instances can
    only be discovered using the DiscoverInstances API operation. DNS_HTTP: The service instances can be
    discovered using either DNS queries or the DiscoverInstances API operation."

    moto: accepted any namespace ID, allowed duplicate names, and left Type empty unless the request set it.
    """
    name = _required(params, "Name")
    namespace = _namespace(backend, _required(params, "NamespaceId"))
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
    _bump(service)  # a new service starts with its own revision, above any that name had before
    return {"Service": _service_doc(service)}


def get_service(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"Service": _service_doc(_service(backend, _required(params, "Id")))}


def delete_service(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteService errors, ServiceNotFound: "No service exists with the specified ID."; ResourceInUse: "The
    specified resource can't be deleted because it contains other resources. For example, you can't delete a
    service that contains any instances." (HTTP 409)

    moto: deleted silently, also unknown IDs and services with instances.
    """
    service = _service(backend, _required(params, "Id"))
    if service.instances:
        raise CloudMapError("ResourceInUse", "Service contains registered instances", status=409)
    del backend.services[service.id]
    _revisions.pop(service.arn, None)
    return {}


def list_services(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListServices, NextToken: "Cloud Map gets MaxResults services and then filters them based on the
    specified criteria." Filters: "If you specify more than one filter, an operation must match all filters to
    be returned by ListServices." ServiceFilter, Values: "NAMESPACE_ID: Specify one namespace ID or ARN."
    Condition: "EQ: When you specify EQ, specify one value. EQ is the default condition and can be omitted."

    moto: ignored Filters, MaxResults and NextToken and returned every service of every namespace.
    """
    supported = {"NAMESPACE_ID": ("EQ",), "RESOURCE_OWNER": ("EQ",)}
    filters = [_filter_values(flt, supported) for flt in params.get("Filters") or []]
    page, token = _page(list(backend.services.values()), params, LIST_MAX)

    def keep(service: Service) -> bool:
        namespace = backend.namespaces.get(service.namespace_id)
        for name, _, values in filters:
            if name == "NAMESPACE_ID":
                if values[0] not in (service.namespace_id, namespace.arn if namespace else None):
                    return False
            elif values[0] != "SELF":
                return False
        return True

    return _with_token({"Services": [_service_doc(service) for service in page if keep(service)]}, token)


# --- instances ----------------------------------------------------------------------------------------------
def register_instance(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """RegisterInstance, InstanceId: "You can use this value to update an existing instance." "To register a
    new instance, you must specify a value that's unique among instances that you register by using the same
    service." DiscoverInstances, InstancesRevision: "If a new instance is registered or deregistered, the
    InstancesRevision updates." Attributes, AWS_INIT_HEALTH_STATUS: "If the service configuration includes
    HealthCheckCustomConfig, you can optionally use AWS_INIT_HEALTH_STATUS to specify the initial status of
    the custom health check, HEALTHY or UNHEALTHY. If you don't specify a value for AWS_INIT_HEALTH_STATUS,
    the initial status is HEALTHY."

    moto: appended a second instance with the same ID (a twin) and kept one revision counter per instance ID.
    Here the instance is replaced in place; the service's revision moves when an instance is added or its
    attributes change (re-registering identical attributes leaves it, which the reference does not rule on).
    """
    service = _service(backend, _required(params, "ServiceId"))
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
    return _operation(backend, "REGISTER_INSTANCE", {"INSTANCE": instance_id, "SERVICE": service.id})


def deregister_instance(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeregisterInstance: "Deletes the Amazon Route 53 DNS records and health check, if any, that Cloud Map
    created for the specified instance." GetOperation, Targets: "SERVICE: The service ID is returned in the
    ResourceId property. INSTANCE: The instance ID is returned in the ResourceId property."

    moto: raised the per-instance revision (so the sum it reported could fall) and left SERVICE out of
    Targets.
    """
    service = _service(backend, _required(params, "ServiceId"))
    instance_id = _required(params, "InstanceId")
    del service.instances[_instance_index(service, instance_id)]
    _bump(service)
    return _operation(backend, "DEREGISTER_INSTANCE", {"INSTANCE": instance_id, "SERVICE": service.id})


def get_instance(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    service = _service(backend, _required(params, "ServiceId"))
    instance = service.instances[_instance_index(service, _required(params, "InstanceId"))]
    return {
        "ResourceOwner": backend.account_id,
        "Instance": {
            "Id": instance.instance_id,
            "CreatorRequestId": instance.creator_request_id,
            "Attributes": instance.attributes,
        },
    }


def list_instances(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListInstances, MaxResults: "If you don't specify a value for MaxResults, Cloud Map returns up to 100
    instances." NextToken: "If more than MaxResults instances match the specified criteria, you can submit
    another ListInstances request to get the next group of results."

    moto: returned every instance when MaxResults was absent and an empty page for a malformed NextToken.
    """
    service = _service(backend, _required(params, "ServiceId"))
    page, token = _page(service.instances, params, LIST_MAX)
    instances = [{"Id": instance.instance_id, "Attributes": instance.attributes} for instance in page]
    return _with_token({"Instances": instances}, token)


def update_instance_custom_health_status(
    backend: ServiceDiscoveryBackend, params: Mapping[str, Any]
) -> dict[str, Any]:
    """UpdateInstanceCustomHealthStatus: "You can use UpdateInstanceCustomHealthStatus to change the status
    only for custom health checks, which you define using HealthCheckCustomConfig when you create a service."
    InstancesRevision: "The health status updates don't update InstancesRevision."

    moto: allowed it for services without a custom health check.
    """
    service = _service(backend, _required(params, "ServiceId"))
    status = params.get("Status")
    if service.health_check_custom_config is None or status not in ("HEALTHY", "UNHEALTHY"):
        raise CloudMapError("CustomHealthNotFound", f"No custom health check for service {service.id}")
    service.instances[_instance_index(service, _required(params, "InstanceId"))].health_status = status
    return {}


def discover_instances(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
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

    moto: summed per-instance counters of the returned instances as the revision (it fell on deregistration
    and depended on the filters), returned every instance without MaxResults, filtered by health for services
    without health checks, decided HEALTHY_OR_ELSE_ALL on instances the query had excluded, matched
    NamespaceName against Name, and kept registration order.
    """
    limit = _max_results(params, DISCOVER_MAX)
    health = params.get("HealthStatus") or "HEALTHY"
    if health not in _HEALTH_FILTERS:
        raise invalid_input(f"HealthStatus must be one of {', '.join(_HEALTH_FILTERS)}")
    namespace_name, service_name = str(params.get("NamespaceName")), str(params.get("ServiceName"))
    service = _find_service(backend, namespace_name, service_name)
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


def discover_instances_revision(
    backend: ServiceDiscoveryBackend, params: Mapping[str, Any]
) -> dict[str, Any]:
    """DiscoverInstancesRevision: "Discovers the increasing revision associated with an instance."
    InstancesRevision: "If a new instance is registered or deregistered, the InstancesRevision updates. The
    health status updates don't update InstancesRevision."

    moto: summed per-instance counters of the current instances, so deregistering made the number fall.
    """
    service = _find_service(backend, str(params.get("NamespaceName")), str(params.get("ServiceName")))
    return {"InstancesRevision": revision_of(service)}


# --- operations ---------------------------------------------------------------------------------------------
def get_operation(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    operation_id = _required(params, "OperationId")
    operation = backend.operations.get(operation_id)
    if operation is None:
        raise CloudMapError("OperationNotFound", f"Operation not found: {operation_id}")
    return {
        "Operation": {
            "Id": operation.id,
            "Type": operation.operation_type,
            "Status": operation.status,
            "CreateDate": _epoch(operation.created),
            "UpdateDate": _epoch(operation.updated),
            "Targets": dict(operation.targets),
        }
    }


def list_operations(backend: ServiceDiscoveryBackend, params: Mapping[str, Any]) -> dict[str, Any]:
    """GetOperation: "Gets information about any operation that returns an operation ID in the response, such
    as a CreateHttpNamespace request."

    moto: ListOperations deleted every operation whose targets named no existing namespace, so after one
    ListOperations call GetOperation failed with OperationNotFound for instance operations.
    """
    page, token = _page(list(backend.operations.values()), params, LIST_MAX)
    return _with_token({"Operations": [{"Id": op.id, "Status": op.status} for op in page]}, token)


# --- dispatch -----------------------------------------------------------------------------------------------
Handler = Callable[[ServiceDiscoveryBackend, Mapping[str, Any]], dict[str, Any]]

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


def handles(operation: str) -> bool:
    return operation in OPERATIONS


def answer(operation: str, account_id: str, region: str, body: bytes) -> bytes | ErrorReply:
    """Answer one awsJson 1.1 request for ``operation`` from the state of ``account_id`` in ``region``."""
    try:
        params = json.loads(body) if body.strip() else {}
        if not isinstance(params, dict):
            raise invalid_input("request body must be a JSON object")
        backend = servicediscovery_backends[account_id][region]
        return json.dumps(OPERATIONS[operation](backend, params)).encode()
    except CloudMapError as exc:
        return exc.reply()
    except (ValueError, TypeError) as exc:  # a body that is not JSON, or members of the wrong type
        return invalid_input(f"malformed request: {exc}").reply()

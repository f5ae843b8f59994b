"""Fidelity patches: where moto's servicediscovery (checked against moto 5.2.5) differs from the documented
AWS Cloud Map API, replace the one method that differs.

Each patch is a plain function installed on moto's backend or response class by :func:`apply_patches`
(idempotent, process-wide). Its docstring quotes the API reference sentence it implements; the quotes are
from the documentation strings of botocore's ``servicediscovery`` service model (``service-2.json``), which
are the API reference's text, and from the Cloud Map Developer Guide where noted. What moto did instead is
said under "moto:". Requests reach these methods one at a time (the embedded server's middleware holds a
lock around moto), so none of them locks.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from moto.core.exceptions import JsonRESTError
from moto.servicediscovery.exceptions import CustomHealthNotFound, InstanceNotFound
from moto.servicediscovery.models import Namespace, Service, ServiceDiscoveryBackend, ServiceInstance
from moto.servicediscovery.responses import ServiceDiscoveryResponse

T = TypeVar("T")

# Page sizes from the model: "If you don't specify a value for MaxResults, Cloud Map returns up to 100 ..."
# (ListNamespaces, ListServices, ListInstances, DiscoverInstances); MaxResults is 1..100 for the List*
# operations and 1..1000 for DiscoverInstances (shapes MaxResults and DiscoverMaxResults).
DEFAULT_PAGE = 100
LIST_MAX = 100
DISCOVER_MAX = 1000

_HEALTH_FILTERS = ("HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL")


class CloudMapError(JsonRESTError):
    """An error with the HTTP status and body members that the Cloud Map service model gives it."""

    def __init__(self, code: str, message: str, status: int = 400, **members: str) -> None:
        super().__init__(code, message)
        self.code = status
        # Modeled Cloud Map errors carry "Message" plus their own members (e.g. NamespaceId).
        self.description = json.dumps({"__type": code, "Message": message, **members})


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
    """Drop the revisions kept for ``account_id``'s services (its moto state is being wiped)."""
    for arn in [arn for arn in _revisions if arn.split(":")[4] == account_id]:
        del _revisions[arn]


def seed(value: int | None) -> None:
    """Seed the shuffle of DiscoverInstances results (None: unpredictable)."""
    with _rng_lock:
        _rng.seed(value)


# --- helpers ------------------------------------------------------------------------------------------------
def _params(response: ServiceDiscoveryResponse) -> dict[str, Any]:
    body = response.body
    if not body:
        return {}
    params = json.loads(body)
    if not isinstance(params, dict):
        raise invalid_input("request body must be a JSON object")
    return params


def _max_results(params: dict[str, Any], maximum: int) -> int:
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


def _page(items: Sequence[T], params: dict[str, Any], maximum: int) -> tuple[list[T], str | None]:
    size = _max_results(params, maximum)
    start = _offset(params.get("NextToken"))
    end = start + size
    return list(items[start:end]), (_token(end) if end < len(items) else None)


def _http_name(namespace: Namespace) -> str:
    # moto stores HttpName only for HTTP namespaces; AWS gives DNS namespaces one too (equal to Name unless
    # the name was reused).
    http_name = (namespace.http_properties or {}).get("HttpName")
    return str(http_name) if http_name else namespace.name


def _has_health_check(service: Service) -> bool:
    # "HealthCheckCustomConfig": {} is a complete custom health check configuration, so test for presence.
    return service.health_check_config is not None or service.health_check_custom_config is not None


def _find_service(backend: ServiceDiscoveryBackend, namespace_name: str, service_name: str) -> Service:
    namespace = next((ns for ns in backend.namespaces.values() if _http_name(ns) == namespace_name), None)
    if namespace is None:
        raise CloudMapError("NamespaceNotFound", f"Namespace not found: {namespace_name}")
    for service in backend.services.values():
        if service.namespace_id == namespace.id and service.name == service_name:
            return service
    raise CloudMapError("ServiceNotFound", f"Service not found: {service_name}")


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


# --- backend patches ----------------------------------------------------------------------------------------
def get_service(self: ServiceDiscoveryBackend, service_id: str) -> Service:
    """ServiceId: "The ID or Amazon Resource Name (ARN) of the service ..."

    moto: looked the service up by ID only.
    """
    key = service_id.rsplit("/", 1)[-1] if service_id.startswith("arn:") else service_id
    service = self.services.get(key)
    if service is None:
        raise CloudMapError("ServiceNotFound", f"Service not found: {service_id}")
    return service


def register_instance(
    self: ServiceDiscoveryBackend,
    service_id: str,
    instance_id: str,
    creator_request_id: str,
    attributes: dict[str, str],
) -> str:
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
    service = self.get_service(service_id)
    instance = ServiceInstance(
        service_id=service.id,
        instance_id=instance_id,
        creator_request_id=creator_request_id,
        attributes=dict(attributes or {}),
    )
    custom_health = service.health_check_custom_config is not None
    if custom_health and instance.attributes.get("AWS_INIT_HEALTH_STATUS") == "UNHEALTHY":
        instance.health_status = "UNHEALTHY"
    for index, existing in enumerate(service.instances):
        if existing.instance_id == instance_id:
            changed = existing.attributes != instance.attributes
            service.instances[index] = instance
            break
    else:
        service.instances.append(instance)
        changed = True
    if changed:
        _bump(service)
    return self._create_operation(
        "REGISTER_INSTANCE", targets={"INSTANCE": instance_id, "SERVICE": service.id}
    )


def deregister_instance(self: ServiceDiscoveryBackend, service_id: str, instance_id: str) -> str:
    """DeregisterInstance: "Deletes the Amazon Route 53 DNS records and health check, if any, that Cloud Map
    created for the specified instance." GetOperation, Targets: "SERVICE: The service ID is returned in the
    ResourceId property. INSTANCE: The instance ID is returned in the ResourceId property."

    moto: raised the per-instance revision (so the sum it reported could fall) and left SERVICE out of
    Targets.
    """
    service = self.get_service(service_id)
    for index, existing in enumerate(service.instances):
        if existing.instance_id == instance_id:
            del service.instances[index]
            _bump(service)
            return self._create_operation(
                "DEREGISTER_INSTANCE", targets={"INSTANCE": instance_id, "SERVICE": service.id}
            )
    raise InstanceNotFound(instance_id)


def create_http_namespace(
    self: ServiceDiscoveryBackend,
    name: str,
    creator_request_id: str,
    description: str,
    tags: list[dict[str, str]],
) -> str:
    """CreateHttpNamespace errors, NamespaceAlreadyExists: "The namespace that you're trying to create already
    exists." (members CreatorRequestId: "The CreatorRequestId that was used to create the namespace.",
    NamespaceId: "The ID of the existing namespace.")

    moto: created a second namespace with the same name.
    """
    for namespace in self.namespaces.values():
        if namespace.name == name or _http_name(namespace) == name:
            raise CloudMapError(
                "NamespaceAlreadyExists",
                f"Namespace already exists with name {name}",
                CreatorRequestId=namespace.creator_request_id or "",
                NamespaceId=namespace.id,
            )
    create = _original(ServiceDiscoveryBackend, "create_http_namespace")
    operation_id: str = create(self, name, creator_request_id, description, tags)
    return operation_id


def create_service(self: ServiceDiscoveryBackend, **kwargs: Any) -> Service:
    """CreateService errors, NamespaceNotFound: "No namespace exists with the specified ID.";
    ServiceAlreadyExists: "The service can't be created because a service with the same name already exists."
    (members CreatorRequestId, ServiceId, ServiceArn). ServiceSummary, Type: "HTTP: The service instances can
    only be discovered using the DiscoverInstances API operation. DNS_HTTP: The service instances can be
    discovered using either DNS queries or the DiscoverInstances API operation."

    moto: accepted any namespace ID, allowed duplicate names, and left Type empty unless the request set it.
    """
    namespace_id = kwargs["namespace_id"]
    namespace = self.namespaces.get(namespace_id)
    if namespace is None:
        raise CloudMapError("NamespaceNotFound", f"Namespace not found: {namespace_id}")
    for existing in self.services.values():
        if existing.namespace_id == namespace.id and existing.name == kwargs["name"]:
            raise CloudMapError(
                "ServiceAlreadyExists",
                f"Service already exists with name {kwargs['name']}",
                CreatorRequestId=existing.creator_request_id or "",
                ServiceId=existing.id,
                ServiceArn=existing.arn,
            )
    if not kwargs.get("service_type"):
        kwargs["service_type"] = "HTTP" if namespace.type == "HTTP" else "DNS_HTTP"
    service: Service = _original(ServiceDiscoveryBackend, "create_service")(self, **kwargs)
    _bump(service)  # a new service starts with its own revision, above any that name had before
    return service


def delete_service(self: ServiceDiscoveryBackend, service_id: str) -> None:
    """DeleteService errors, ServiceNotFound: "No service exists with the specified ID."; ResourceInUse: "The
    specified resource can't be deleted because it contains other resources. For example, you can't delete a
    service that contains any instances." (HTTP 409)

    moto: deleted silently, also unknown IDs and services with instances.
    """
    service = self.get_service(service_id)
    if service.instances:
        raise CloudMapError("ResourceInUse", "Service contains registered instances", status=409)
    del self.services[service.id]
    _revisions.pop(service.arn, None)


def delete_namespace(self: ServiceDiscoveryBackend, namespace_id: str) -> str:
    """DeleteNamespace: "Deletes a namespace from the current account. If the namespace still contains one or
    more services, the request fails." (error ResourceInUse, HTTP 409)

    moto: deleted namespaces that still had services.
    """
    if any(service.namespace_id == namespace_id for service in self.services.values()):
        raise CloudMapError("ResourceInUse", "Namespace contains services", status=409)
    operation_id: str = _original(ServiceDiscoveryBackend, "delete_namespace")(self, namespace_id)
    return operation_id


def list_operations(self: ServiceDiscoveryBackend) -> list[Any]:
    """GetOperation: "Gets information about any operation that returns an operation ID in the response, such
    as a CreateHttpNamespace request."

    moto: ListOperations deleted every operation whose targets named no existing namespace, so after one
    ListOperations call GetOperation failed with OperationNotFound for instance operations.
    """
    return list(self.operations.values())


def update_instance_custom_health_status(
    self: ServiceDiscoveryBackend, service_id: str, instance_id: str, status: str
) -> None:
    """UpdateInstanceCustomHealthStatus: "You can use UpdateInstanceCustomHealthStatus to change the status
    only for custom health checks, which you define using HealthCheckCustomConfig when you create a service."
    InstancesRevision: "The health status updates don't update InstancesRevision."

    moto: allowed it for services without a custom health check.
    """
    service = self.get_service(service_id)
    if service.health_check_custom_config is None:
        raise CustomHealthNotFound(service_id)
    update = _original(ServiceDiscoveryBackend, "update_instance_custom_health_status")
    update(self, service_id, instance_id, status)


# --- response patches ---------------------------------------------------------------------------------------
def list_namespaces(self: ServiceDiscoveryResponse) -> str:
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
    params = _params(self)
    supported = {
        "TYPE": ("EQ", "BEGINS_WITH", "IN"),
        "NAME": ("EQ", "BEGINS_WITH"),
        "HTTP_NAME": ("EQ", "BEGINS_WITH"),
        "RESOURCE_OWNER": ("EQ",),
    }
    filters = [_filter_values(flt, supported) for flt in params.get("Filters") or []]
    page, token = _page(list(self.servicediscovery_backend.namespaces.values()), params, LIST_MAX)

    def keep(namespace: Namespace) -> bool:
        fields = {
            "TYPE": namespace.type,
            "NAME": namespace.name,
            "HTTP_NAME": _http_name(namespace),
            "RESOURCE_OWNER": "SELF",  # no namespace is shared with the emulated account
        }
        return all(_matches(fields[name], cond, values) for name, cond, values in filters)

    def summary(namespace: Namespace) -> dict[str, Any]:
        # NamespaceSummary.ServiceCount: "The number of services that are associated with the namespace."
        # moto leaves it out.
        count = sum(
            1 for svc in self.servicediscovery_backend.services.values() if svc.namespace_id == namespace.id
        )
        return {**namespace.to_json(), "ServiceCount": count}

    result: dict[str, Any] = {"Namespaces": [summary(ns) for ns in page if keep(ns)]}
    if token:
        result["NextToken"] = token
    return json.dumps(result)


def list_services(self: ServiceDiscoveryResponse) -> str:
    """ListServices, NextToken: "Cloud Map gets MaxResults services and then filters them based on the
    specified criteria." Filters: "If you specify more than one filter, an operation must match all filters to
    be returned by ListServices." ServiceFilter, Values: "NAMESPACE_ID: Specify one namespace ID or ARN."
    Condition: "EQ: When you specify EQ, specify one value. EQ is the default condition and can be omitted."

    moto: ignored Filters, MaxResults and NextToken and returned every service of every namespace.
    """
    params = _params(self)
    supported = {"NAMESPACE_ID": ("EQ",), "RESOURCE_OWNER": ("EQ",)}
    filters = [_filter_values(flt, supported) for flt in params.get("Filters") or []]
    backend = self.servicediscovery_backend
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

    result: dict[str, Any] = {"Services": [service.to_json() for service in page if keep(service)]}
    if token:
        result["NextToken"] = token
    return json.dumps(result)


def list_instances(self: ServiceDiscoveryResponse) -> str:
    """ListInstances, MaxResults: "If you don't specify a value for MaxResults, Cloud Map returns up to 100
    instances." NextToken: "If more than MaxResults instances match the specified criteria, you can submit
    another ListInstances request to get the next group of results."

    moto: returned every instance when MaxResults was absent and an empty page for a malformed NextToken.
    """
    params = _params(self)
    service = self.servicediscovery_backend.get_service(str(params.get("ServiceId", "")))
    page, token = _page(service.instances, params, LIST_MAX)
    result: dict[str, Any] = {"Instances": [{"Id": i.instance_id, "Attributes": i.attributes} for i in page]}
    if token:
        result["NextToken"] = token
    return json.dumps(result)


def discover_instances(self: ServiceDiscoveryResponse) -> str:
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
    params = _params(self)
    limit = _max_results(params, DISCOVER_MAX)
    health = params.get("HealthStatus") or "HEALTHY"
    if health not in _HEALTH_FILTERS:
        raise invalid_input(f"HealthStatus must be one of {', '.join(_HEALTH_FILTERS)}")
    namespace_name, service_name = str(params.get("NamespaceName")), str(params.get("ServiceName"))
    service = _find_service(self.servicediscovery_backend, namespace_name, service_name)
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
    return json.dumps({"Instances": instances, "InstancesRevision": revision_of(service)})


def discover_instances_revision(self: ServiceDiscoveryResponse) -> str:
    """DiscoverInstancesRevision: "Discovers the increasing revision associated with an instance."
    InstancesRevision: "If a new instance is registered or deregistered, the InstancesRevision updates. The
    health status updates don't update InstancesRevision."

    moto: summed per-instance counters of the current instances, so deregistering made the number fall.
    """
    params = _params(self)
    service = _find_service(
        self.servicediscovery_backend, str(params.get("NamespaceName")), str(params.get("ServiceName"))
    )
    return json.dumps({"InstancesRevision": revision_of(service)})


# --- installation -------------------------------------------------------------------------------------------
_BACKEND_PATCHES: tuple[Callable[..., Any], ...] = (
    get_service,
    register_instance,
    deregister_instance,
    create_http_namespace,
    create_service,
    delete_service,
    delete_namespace,
    list_operations,
    update_instance_custom_health_status,
)
_RESPONSE_PATCHES: tuple[Callable[..., Any], ...] = (
    list_namespaces,
    list_services,
    list_instances,
    discover_instances,
    discover_instances_revision,
)
PATCHES: tuple[str, ...] = tuple(
    [f"ServiceDiscoveryBackend.{fn.__name__}" for fn in _BACKEND_PATCHES]
    + [f"ServiceDiscoveryResponse.{fn.__name__}" for fn in _RESPONSE_PATCHES]
)

_originals: dict[str, Callable[..., Any]] = {}  # "Class.method" -> moto's own implementation
_install_lock = threading.Lock()


def _original(cls: type, name: str) -> Callable[..., Any]:
    return _originals[f"{cls.__name__}.{name}"]


def apply_patches() -> None:
    """Install every patch on moto's classes, once per process; later calls do nothing."""
    with _install_lock:
        if _originals:
            return
        targets: tuple[tuple[type, tuple[Callable[..., Any], ...]], ...] = (
            (ServiceDiscoveryBackend, _BACKEND_PATCHES),
            (ServiceDiscoveryResponse, _RESPONSE_PATCHES),
        )
        for cls, patches in targets:
            for patch in patches:
                original = getattr(cls, patch.__name__, None)
                if original is None:
                    raise RuntimeError(
                        f"moto's {cls.__name__} has no {patch.__name__}; is moto 5.x installed?"
                    )
                _originals[f"{cls.__name__}.{patch.__name__}"] = original
                # setattr, not assignment: mypy rightly rejects assigning to a method, and this is a
                # deliberate process-wide replacement.
                setattr(cls, patch.__name__, patch)

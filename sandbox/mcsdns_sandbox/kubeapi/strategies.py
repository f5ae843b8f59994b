"""Per-kind write rules (the API server's "REST strategies"): defaulting, validation, allocation.

Storage calls, in order, ``prepare_for_create``/``prepare_for_update`` (defaults, fields the caller may not
set), ``validate``/``validate_update`` (422 causes), then ``admit`` (allocations that can still fail, made
through a ``WriteContext`` so a failed or dry-run write undoes them), and ``on_removed`` when the object
leaves storage. Kinds: Namespace, Service, EndpointSlice, Lease, and the CRD-backed ServiceExport,
ServiceImport, ClusterProperty and CustomResourceDefinition. Imports only errors, validation, ipalloc, patch.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from . import validation
from .errors import FieldError, Obj, duplicate, forbidden, invalid, not_supported, required, too_many
from .ipalloc import AllocationError, IPAllocator, PortAllocator
from .patch import MergeKeys

METADATA_MERGE_KEYS: Final[dict[str, str | None]] = {
    # ObjectMeta: finalizers are patchStrategy=merge (a set); ownerReferences merge on uid.
    "metadata.finalizers": None,
    "metadata.ownerReferences": "uid",
}


@dataclass
class ServiceNetwork:
    """The cluster's Service IP ranges (primary family first) and NodePort range."""

    families: list[IPAllocator]
    node_ports: PortAllocator = field(default_factory=PortAllocator)

    def allocator(self, family: str) -> IPAllocator | None:
        return next((a for a in self.families if a.family == family), None)

    @property
    def primary(self) -> IPAllocator:
        return self.families[0]

    @property
    def dual_stack(self) -> bool:
        return len(self.families) == 2


class WriteContext:
    """Allocations made while preparing one write: undone on rollback, releases deferred to commit."""

    def __init__(self, network: ServiceNetwork) -> None:
        self.network = network
        self._undo: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[], None]] = []

    def reserve_ip(self, allocator: IPAllocator, address: str | None) -> str:
        taken = allocator.allocate() if address is None else allocator.reserve(address)
        self._undo.append(lambda: allocator.release(taken))
        return taken

    def reserve_port(self, port: int | None) -> int:
        allocator = self.network.node_ports
        taken = allocator.allocate() if port is None else allocator.reserve(port)
        self._undo.append(lambda: allocator.release(taken))
        return taken

    def release_on_commit(self, action: Callable[[], None]) -> None:
        self._on_commit.append(action)

    def commit(self) -> None:
        for action in self._on_commit:
            action()
        self._undo.clear()
        self._on_commit.clear()

    def rollback(self) -> None:
        for action in reversed(self._undo):
            action()
        self._undo.clear()
        self._on_commit.clear()


def spec_of(obj: Obj) -> Any:
    """Everything but metadata and status: what ``metadata.generation`` tracks (API conventions)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Strategy:
    """Defaults shared by every kind; subclasses override what differs."""

    custom_resource: ClassVar[bool] = False
    review: ClassVar[bool] = False
    """A review (SubjectAccessReview, SelfSubjectReview, ...): POST answers it, nothing is stored."""
    """CRD-backed: no strategic merge patch, resourceVersion required on update, unknown top-level fields
    pruned, status dropped on create."""
    tracks_generation: ClassVar[bool] = False
    allow_unconditional_update: ClassVar[bool] = True
    return_deleted_object: ClassVar[bool] = False
    """Whether an immediate DELETE answers with the object (true for Services) or a Success Status."""
    merge_keys: ClassVar[MergeKeys] = METADATA_MERGE_KEYS
    field_selectors: ClassVar[dict[str, Callable[[Obj], str | None]]] = {}
    top_level_fields: ClassVar[frozenset[str] | None] = None
    """For CRD-backed kinds, the schema's top-level properties; others are pruned silently."""

    def validate_name(self, name: str) -> list[str]:
        """Most kinds' names are DNS-1123 subdomains (API conventions, "Names")."""
        return validation.dns1123_subdomain(name)

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        if self.custom_resource:
            self._prune(obj)
            if has_status:
                # customResourceStrategy.PrepareForCreate: "create cannot set status".
                obj.pop("status", None)

    def prepare_for_update(self, obj: Obj, old: Obj, has_status: bool) -> None:
        if self.custom_resource:
            self._prune(obj)
        if has_status:
            # With a status subresource, writes to the main resource keep the stored status.
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)

    def _prune(self, obj: Obj) -> None:
        if self.top_level_fields is not None:
            for key in [k for k in obj if k not in self.top_level_fields]:
                del obj[key]

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        return []

    def validate_update(self, obj: Obj, old: Obj, version: str) -> list[FieldError]:
        return self.validate(obj, version)

    def admit(self, obj: Obj, old: Obj | None, ctx: WriteContext) -> list[FieldError]:
        return []

    def on_removed(self, obj: Obj, ctx: WriteContext) -> None:
        return None

    def ready_to_remove(self, obj: Obj) -> bool:
        """An object marked for deletion leaves storage once this holds (no finalizers left)."""
        return not obj.get("metadata", {}).get("finalizers")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port_number(field_path: str, value: Any) -> list[FieldError]:
    if not _is_int(value) or not 1 <= value <= 65535:
        return [invalid(field_path, value, "must be between 1 and 65535, inclusive")]
    return []


_PROTOCOLS: Final = ["SCTP", "TCP", "UDP"]


# --- core/v1 Namespace ------------------------------------------------------------------------------------


class NamespaceStrategy(Strategy):
    return_deleted_object = True

    merge_keys = {**METADATA_MERGE_KEYS, "status.conditions": "type"}
    field_selectors = {"status.phase": lambda o: o.get("status", {}).get("phase")}
    _LABEL: Final = "kubernetes.io/metadata.name"

    def validate_name(self, name: str) -> list[str]:
        return validation.dns1123_label(name)

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        # The namespace lifecycle: spec.finalizers ["kubernetes"] keeps a deleted namespace (phase
        # Terminating) until its content is gone; the name label is immutable and always present.
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        meta = obj["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), self._LABEL: meta.get("name", "")}

    def prepare_for_update(self, obj: Obj, old: Obj, has_status: bool) -> None:
        obj["spec"] = copy.deepcopy(old.get("spec", {}))
        super().prepare_for_update(obj, old, has_status)
        meta = obj["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), self._LABEL: meta.get("name", "")}

    def ready_to_remove(self, obj: Obj) -> bool:
        return super().ready_to_remove(obj) and not obj.get("spec", {}).get("finalizers", [])


# --- core/v1 Service -------------------------------------------------------------------------------------


def _needs_cluster_ip(spec: Obj) -> bool:
    return bool(spec.get("type", "ClusterIP") != "ExternalName")


class ServiceStrategy(Strategy):
    return_deleted_object = True
    merge_keys = {**METADATA_MERGE_KEYS, "spec.ports": "port", "status.conditions": "type"}
    field_selectors = {
        "spec.clusterIP": lambda o: o.get("spec", {}).get("clusterIP"),
        "spec.type": lambda o: o.get("spec", {}).get("type"),
    }
    _TYPES: Final = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]

    def validate_name(self, name: str) -> list[str]:
        # Service names become DNS labels (<svc>.<ns>.svc...), so they must start with a letter.
        return validation.dns1035_label(name)

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        obj["status"] = {"loadBalancer": {}}
        self._default(obj)

    def prepare_for_update(self, obj: Obj, old: Obj, has_status: bool) -> None:
        super().prepare_for_update(obj, old, has_status)
        self._default(obj)
        spec, old_spec = obj["spec"], old.get("spec", {})
        if _needs_cluster_ip(spec) and _needs_cluster_ip(old_spec):
            # Since 1.20 an update that omits allocated values keeps them (patchAllocatedValues).
            if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
                spec.setdefault("clusterIPs", copy.deepcopy(old_spec.get("clusterIPs")))
            if (
                not spec.get("clusterIPs")
                and old_spec.get("clusterIPs")
                and spec.get("clusterIP") == old_spec.get("clusterIP")
            ):
                spec["clusterIPs"] = copy.deepcopy(old_spec["clusterIPs"])
            for key in ("ipFamilies", "ipFamilyPolicy"):
                if not spec.get(key) and old_spec.get(key):
                    spec[key] = copy.deepcopy(old_spec[key])
            old_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                for p in old_spec.get("ports") or []
                if isinstance(p, dict)
            }
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and "nodePort" not in port:
                    previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                    if previous and spec.get("type") in ("NodePort", "LoadBalancer"):
                        port["nodePort"] = previous
        if spec.get("clusterIPs") is None:
            spec.pop("clusterIPs", None)

    @staticmethod
    def _default(obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("type", "ClusterIP")
        if spec["type"] != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if port.get("targetPort") in (None, 0, ""):
                    port["targetPort"] = port.get("port")

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        errors: list[FieldError] = []
        svc_type = spec.get("type")
        if svc_type not in self._TYPES:
            errors.append(not_supported("spec.type", svc_type, self._TYPES))
        headless = spec.get("clusterIP") == "None"
        ports = spec.get("ports")
        if ports is not None and not isinstance(ports, list):
            return [invalid("spec.ports", ports, "must be a list")]
        ports = ports or []
        if not ports and not headless and svc_type != "ExternalName":
            errors.append(required("spec.ports"))
        names: set[str] = set()
        for i, port in enumerate(ports):
            path = f"spec.ports[{i}]"
            if not isinstance(port, dict):
                errors.append(invalid(path, port, "must be an object"))
                continue
            name = port.get("name", "")
            if len(ports) > 1 and not name:
                errors.append(required(f"{path}.name"))
            elif name:
                errors += validation.check(f"{path}.name", name, validation.dns1123_label)
                if name in names:
                    errors.append(duplicate(f"{path}.name", name))
                names.add(name)
            errors += _port_number(f"{path}.port", port.get("port"))
            if port.get("protocol") not in _PROTOCOLS:
                errors.append(not_supported(f"{path}.protocol", port.get("protocol"), _PROTOCOLS))
        if svc_type == "ExternalName":
            if not spec.get("externalName"):
                errors.append(required("spec.externalName"))
            if spec.get("clusterIP") not in (None, "", "None"):
                errors.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
        selector = spec.get("selector")
        if selector is not None and not validation.is_string_map(selector):
            errors.append(invalid("spec.selector", selector, "must be a map of strings"))
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
            errors.append(
                not_supported(
                    "spec.ipFamilyPolicy", policy, ["PreferDualStack", "RequireDualStack", "SingleStack"]
                )
            )
        for i, family in enumerate(spec.get("ipFamilies") or []):
            if family not in ("IPv4", "IPv6"):
                errors.append(not_supported(f"spec.ipFamilies[{i}]", family, ["IPv4", "IPv6"]))
        return errors

    def validate_update(self, obj: Obj, old: Obj, version: str) -> list[FieldError]:
        errors = self.validate(obj, version)
        spec, old_spec = obj.get("spec", {}), old.get("spec", {})
        if _needs_cluster_ip(spec) and _needs_cluster_ip(old_spec):
            if spec.get("clusterIP") != old_spec.get("clusterIP"):
                errors.append(invalid("spec.clusterIP", spec.get("clusterIP"), "field is immutable"))
            elif (
                spec.get("clusterIPs")
                and old_spec.get("clusterIPs")
                and spec["clusterIPs"][0] != old_spec["clusterIPs"][0]
            ):
                errors.append(invalid("spec.clusterIPs[0]", spec["clusterIPs"], "may not change once set"))
        return errors

    def admit(self, obj: Obj, old: Obj | None, ctx: WriteContext) -> list[FieldError]:
        spec = obj["spec"]
        old_spec = (old or {}).get("spec", {})
        errors: list[FieldError] = []
        if not _needs_cluster_ip(spec):
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(key, None)
        elif old is not None and _needs_cluster_ip(old_spec) and old_spec.get("clusterIPs"):
            pass  # already allocated and (validated) unchanged
        else:
            errors += self._allocate_ips(obj, ctx)
        errors += self._node_ports(spec, old_spec, ctx)
        if not errors and old is not None:
            released = [
                ip for ip in old_spec.get("clusterIPs") or [] if ip not in (spec.get("clusterIPs") or [])
            ]
            if released:
                ctx.release_on_commit(lambda: self._release_ips(released, ctx))
        return errors

    @staticmethod
    def _release_ips(ips: list[str], ctx: WriteContext) -> None:
        for ip in ips:
            for allocator in ctx.network.families:
                allocator.release(ip)

    def _allocate_ips(self, obj: Obj, ctx: WriteContext) -> list[FieldError]:
        spec = obj["spec"]
        network = ctx.network
        cluster_ip = spec.get("clusterIP") or ""
        requested = list(spec.get("clusterIPs") or [])
        if cluster_ip and requested and requested[0] != cluster_ip:
            return [invalid("spec.clusterIPs", requested, "element [0] must match clusterIP")]
        if cluster_ip and not requested:
            requested = [cluster_ip]
        policy = spec.get("ipFamilyPolicy")
        families = list(spec.get("ipFamilies") or [])
        other = {"IPv4": "IPv6", "IPv6": "IPv4"}
        if requested == ["None"]:
            # initIPFamilyFields: selector-less headless Services default to RequireDualStack and list
            # both families even on a single-stack cluster; with a selector they follow the cluster.
            selectorless = not spec.get("selector")
            if policy is None:
                policy = "RequireDualStack" if selectorless else "SingleStack"
            if not families:
                families = [network.primary.family]
            if len(families) < 2 and policy != "SingleStack" and (selectorless or network.dual_stack):
                families.append(other[families[0]])
            spec.update(clusterIP="None", clusterIPs=["None"], ipFamilies=families, ipFamilyPolicy=policy)
            return []
        if len(requested) > 2:
            return [too_many("spec.clusterIPs", len(requested), 2)]
        for i, ip in enumerate(requested):
            try:
                family = "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"
            except ValueError:
                return [
                    invalid(
                        f"spec.clusterIPs[{i}]",
                        ip,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                ]
            if i < len(families) and families[i] != family:
                return [
                    invalid(
                        f"spec.ipFamilies[{i}]",
                        families[i],
                        f"must match the IP family of clusterIPs[{i}] ({family})",
                    )
                ]
            if i >= len(families):
                families.append(family)
        if policy is None:
            policy = "RequireDualStack" if len(families) == 2 else "SingleStack"
        if policy == "SingleStack" and len(families) > 1:
            return [
                invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "must be RequireDualStack or PreferDualStack when multiple IP families are specified",
                )
            ]
        if policy == "RequireDualStack" and not network.dual_stack:
            return [
                invalid(
                    "spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services"
                )
            ]
        if not families:
            families = [network.primary.family]
        if policy in ("PreferDualStack", "RequireDualStack") and network.dual_stack and len(families) < 2:
            families.append(other[families[0]])
        ips: list[str] = []
        for i, family in enumerate(families):
            allocator = network.allocator(family)
            if allocator is None:
                return [invalid(f"spec.ipFamilies[{i}]", family, "not configured on this cluster")]
            wanted = requested[i] if i < len(requested) else None
            try:
                ips.append(ctx.reserve_ip(allocator, wanted))
            except AllocationError as exc:
                shown = wanted if wanted is not None else family
                return [
                    invalid("spec.clusterIPs", requested or [shown], f"failed to allocate IP {shown}: {exc}")
                ]
        spec.update(clusterIP=ips[0], clusterIPs=ips, ipFamilies=families, ipFamilyPolicy=policy)
        return []

    @staticmethod
    def _node_ports(spec: Obj, old_spec: Obj, ctx: WriteContext) -> list[FieldError]:
        wants = spec.get("type") in ("NodePort", "LoadBalancer")
        old_ports: set[int] = {
            p["nodePort"]
            for p in old_spec.get("ports") or []
            if isinstance(p, dict) and _is_int(p.get("nodePort"))
        }

        kept: set[int] = set()
        errors: list[FieldError] = []
        for i, port in enumerate(spec.get("ports") or []):
            if not wants:
                port.pop("nodePort", None)
                continue
            node_port = port.get("nodePort")
            if node_port in old_ports:
                kept.add(node_port)
                continue
            try:
                port["nodePort"] = ctx.reserve_port(node_port if _is_int(node_port) else None)
            except AllocationError as exc:
                errors.append(invalid(f"spec.ports[{i}].nodePort", node_port, str(exc)))
        released = old_ports - kept
        if released and not errors:

            def release() -> None:
                for port in released:
                    ctx.network.node_ports.release(port)

            ctx.release_on_commit(release)
        return errors

    def on_removed(self, obj: Obj, ctx: WriteContext) -> None:
        spec = obj.get("spec", {})
        ips = [ip for ip in spec.get("clusterIPs") or [] if ip != "None"]
        ports = [p["nodePort"] for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")]

        def release() -> None:
            self._release_ips(ips, ctx)
            for port in ports:
                ctx.network.node_ports.release(port)

        ctx.release_on_commit(release)


# --- discovery.k8s.io/v1 EndpointSlice -------------------------------------------------------------------


class EndpointSliceStrategy(Strategy):
    tracks_generation = True
    _ADDRESS_TYPES: Final = ["FQDN", "IPv4", "IPv6"]

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        self._default(obj)

    def prepare_for_update(self, obj: Obj, old: Obj, has_status: bool) -> None:
        super().prepare_for_update(obj, old, has_status)
        self._default(obj)

    @staticmethod
    def _default(obj: Obj) -> None:
        for port in obj.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("name", "")

    def validate_update(self, obj: Obj, old: Obj, version: str) -> list[FieldError]:
        errors = self.validate(obj, version)
        if obj.get("addressType") != old.get("addressType"):
            errors.append(invalid("addressType", obj.get("addressType"), "field is immutable"))
        return errors

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        errors: list[FieldError] = []
        address_type = obj.get("addressType")

        if not address_type:
            errors.append(required("addressType"))
        elif address_type not in self._ADDRESS_TYPES:
            errors.append(not_supported("addressType", address_type, self._ADDRESS_TYPES))
        endpoints = obj.get("endpoints")
        if endpoints is None:
            # The published schema lists "endpoints" as required and typed clients (the Python client's
            # V1EndpointSlice) refuse a slice without it, so the emulator insists on at least [].
            errors.append(required("endpoints"))
        elif not isinstance(endpoints, list):
            errors.append(invalid("endpoints", endpoints, "must be a list"))
        else:
            if len(endpoints) > 1000:
                errors.append(too_many("endpoints", len(endpoints), 1000))
            for i, endpoint in enumerate(endpoints):
                errors += self._endpoint(f"endpoints[{i}]", endpoint, address_type)
        ports = obj.get("ports")
        if ports is not None:
            if not isinstance(ports, list):
                errors.append(invalid("ports", ports, "must be a list"))
            else:
                names: set[str] = set()
                for i, port in enumerate(ports):
                    path = f"ports[{i}]"
                    if not isinstance(port, dict):
                        errors.append(invalid(path, port, "must be an object"))
                        continue
                    name = port.get("name") or ""
                    if name:
                        errors += validation.check(f"{path}.name", name, validation.dns1123_label)
                    if name in names:
                        errors.append(duplicate(f"{path}.name", name))
                    names.add(name)
                    if port.get("port") is not None:
                        errors += _port_number(f"{path}.port", port["port"])
                    if port.get("protocol") not in _PROTOCOLS:
                        errors.append(not_supported(f"{path}.protocol", port.get("protocol"), _PROTOCOLS))
        return errors

    @staticmethod
    def _endpoint(path: str, endpoint: Any, address_type: Any) -> list[FieldError]:
        if not isinstance(endpoint, dict):
            return [invalid(path, endpoint, "must be an object")]
        errors: list[FieldError] = []
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            errors.append(required(f"{path}.addresses", "must contain at least 1 address"))
        else:
            if len(addresses) > 100:
                errors.append(too_many(f"{path}.addresses", len(addresses), 100))
            for j, address in enumerate(addresses):
                where = f"{path}.addresses[{j}]"
                if not isinstance(address, str):
                    errors.append(invalid(where, address, "must be a string"))
                elif address_type in ("IPv4", "IPv6"):
                    family = str(address_type)
                    errors += [invalid(where, address, p) for p in validation.ip_address(address, family)]
                elif address_type == "FQDN":
                    errors += validation.check(where, address, validation.dns1123_subdomain)
        conditions = endpoint.get("conditions")
        if conditions is not None:
            if not isinstance(conditions, dict):
                errors.append(invalid(f"{path}.conditions", conditions, "must be an object"))
            else:
                for key in ("ready", "serving", "terminating"):
                    value = conditions.get(key)
                    if value is not None and not isinstance(value, bool):
                        errors.append(invalid(f"{path}.conditions.{key}", value, "must be a boolean"))
        hostname = endpoint.get("hostname")
        if hostname is not None:
            errors += validation.check(f"{path}.hostname", str(hostname), validation.dns1123_label)
        return errors


# --- core/v1 ConfigMap and ServiceAccount ----------------------------------------------------------------


class ConfigMapStrategy(Strategy):
    """Kept as given, keys and values checked as ValidateConfigMap does (CoreDNS's Corefile lives in one)."""

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        errors: list[FieldError] = []
        seen: set[str] = set()
        for section in ("data", "binaryData"):
            values = obj.get(section)
            if values is None:
                continue
            if not isinstance(values, dict):
                errors.append(invalid(section, values, "must be an object"))
                continue
            for key, value in values.items():
                if not validation.CONFIG_MAP_KEY.fullmatch(str(key)):
                    errors.append(
                        invalid(
                            f"{section}[{key}]",
                            key,
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        )
                    )
                if key in seen:
                    errors.append(duplicate(f"{section}[{key}]", key))
                seen.add(key)
                if not isinstance(value, str):
                    errors.append(invalid(f"{section}[{key}]", value, "must be a string"))
        return errors


class ServiceAccountStrategy(Strategy):
    """No token controller: a ServiceAccount is stored as given (clusters >= 1.24 create no token Secret)."""


# --- authorization.k8s.io and authentication.k8s.io reviews -----------------------------------------------


class ReviewStrategy(Strategy):
    """A review kind: create-only, answered and not stored (``handlers.ApiApp`` computes the status)."""

    review: ClassVar[bool] = True


# --- coordination.k8s.io/v1 Lease ------------------------------------------------------------------------


class LeaseStrategy(Strategy):
    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        spec = obj.get("spec") or {}
        if not isinstance(spec, dict):
            return [invalid("spec", spec, "must be an object")]
        errors: list[FieldError] = []
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and (not _is_int(duration) or duration <= 0):
            errors.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
        transitions = spec.get("leaseTransitions")
        if transitions is not None and (not _is_int(transitions) or transitions < 0):
            errors.append(invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
        holder = spec.get("holderIdentity")
        if holder is not None and not isinstance(holder, str):
            errors.append(invalid("spec.holderIdentity", holder, "must be a string"))
        return errors


# --- CRD-backed kinds --------------------------------------------------------------------------------------


class CustomResourceStrategy(Strategy):
    custom_resource = True
    tracks_generation = True
    # customResourceStrategy.AllowUnconditionalUpdate is false: PUT must carry metadata.resourceVersion.
    allow_unconditional_update = False
    top_level_fields = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


def _schema_type(path: str, value: Any, expected: str) -> list[FieldError]:
    ok = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": _is_int(value),
        "boolean": isinstance(value, bool),
    }[expected]
    if ok:
        return []
    # Structural-schema type errors read 'spec.ports: Invalid value: "string": spec.ports in body must be of
    # type array: "string"'.
    actual = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), "null")
    return [invalid(path, actual, f'{path} in body must be of type {expected}: "{actual}"')]


class ServiceImportStrategy(CustomResourceStrategy):
    merge_keys = {**METADATA_MERGE_KEYS, "status.clusters": "cluster", "status.conditions": "type"}
    _TYPES: Final = ["ClusterSetIP", "Headless"]
    _MAX_IPS: Final = {"v1alpha1": 1, "v1beta1": 2}

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        super().prepare_for_create(obj, has_status)
        self._default(obj)

    def prepare_for_update(self, obj: Obj, old: Obj, has_status: bool) -> None:
        super().prepare_for_update(obj, old, has_status)
        self._default(obj)

    @staticmethod
    def _default(obj: Obj) -> None:
        # The CRD schema defaults ports[].protocol to TCP.
        spec = obj.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("ports"), list):
            for port in spec["ports"]:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        errors: list[FieldError] = []
        spec = obj.get("spec")
        if spec is not None:
            errors += _schema_type("spec", spec, "object")
        if isinstance(spec, dict):
            if "type" not in spec:
                errors.append(required("spec.type"))
            elif spec["type"] not in self._TYPES:
                errors.append(not_supported("spec.type", spec["type"], self._TYPES))
            if "ports" not in spec:
                errors.append(required("spec.ports"))
            else:
                errors += _schema_type("spec.ports", spec["ports"], "array")
                for i, port in enumerate(spec["ports"] if isinstance(spec["ports"], list) else []):
                    path = f"spec.ports[{i}]"
                    errors += _schema_type(path, port, "object")
                    if isinstance(port, dict):
                        if "port" not in port:
                            errors.append(required(f"{path}.port"))
                        else:
                            errors += _schema_type(f"{path}.port", port["port"], "integer")
            if "ips" in spec:
                errors += _schema_type("spec.ips", spec["ips"], "array")
                ips = spec["ips"] if isinstance(spec["ips"], list) else []
                limit = self._MAX_IPS.get(version, 2)
                if len(ips) > limit:
                    errors.append(too_many("spec.ips", len(ips), limit))
                for i, ip in enumerate(ips):
                    errors += _schema_type(f"spec.ips[{i}]", ip, "string")
        status = obj.get("status")
        if isinstance(status, dict) and "clusters" in status:
            errors += _schema_type("status.clusters", status["clusters"], "array")
            for i, item in enumerate(status["clusters"] if isinstance(status["clusters"], list) else []):
                if not isinstance(item, dict) or "cluster" not in item:
                    errors.append(required(f"status.clusters[{i}].cluster"))
        return errors


class ServiceExportStrategy(CustomResourceStrategy):
    merge_keys = {**METADATA_MERGE_KEYS, "status.conditions": "type"}

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        status = obj.get("status")
        errors: list[FieldError] = []
        if isinstance(status, dict) and "conditions" in status:
            errors += _schema_type("status.conditions", status["conditions"], "array")
            for i, cond in enumerate(status["conditions"] if isinstance(status["conditions"], list) else []):
                path = f"status.conditions[{i}]"
                if not isinstance(cond, dict):
                    errors += _schema_type(path, cond, "object")
                    continue
                for key in ("type", "status"):
                    if key not in cond:
                        errors.append(required(f"{path}.{key}"))
        return errors


class ClusterPropertyStrategy(CustomResourceStrategy):
    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        spec = obj.get("spec")
        if spec is None:
            return [required("spec")]
        errors = _schema_type("spec", spec, "object")
        if isinstance(spec, dict):
            value = spec.get("value")
            if value is None:
                errors.append(required("spec.value"))
            elif not isinstance(value, str):
                errors += _schema_type("spec.value", value, "string")
            elif not 1 <= len(value) <= 128:
                errors.append(invalid("spec.value", value, "should be between 1 and 128 characters long"))
        return errors


API_APPROVED: Final = "api-approved.kubernetes.io"


class CustomResourceDefinitionStrategy(Strategy):
    tracks_generation = True
    merge_keys = {**METADATA_MERGE_KEYS, "status.conditions": "type"}

    def prepare_for_create(self, obj: Obj, has_status: bool) -> None:
        # Accepted and stored; the emulator serves its built-in kinds whatever a CRD says, so report the
        # conditions a controller waits for (Established, NamesAccepted) straight away.
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        versions = [v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict)]
        storage = [
            v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")
        ]
        obj["status"] = {
            "acceptedNames": copy.deepcopy(spec.get("names") or {}),
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
            "storedVersions": storage or versions[:1],
        }

    def validate(self, obj: Obj, version: str) -> list[FieldError]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        errors: list[FieldError] = []
        group = spec.get("group")
        names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
        assert isinstance(names, dict)
        if not group:
            errors.append(required("spec.group"))
        for key in ("plural", "kind"):
            if not names.get(key):
                errors.append(required(f"spec.names.{key}"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errors.append(not_supported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
        if not spec.get("versions"):
            errors.append(
                required("spec.versions", "must have exactly one version marked as storage version")
            )
        name = obj.get("metadata", {}).get("name")
        if group and names.get("plural") and name != f"{names['plural']}.{group}":
            errors.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
        # KEP-1111, as apiextensions-apiserver checks it: a group under k8s.io or kubernetes.io is the
        # project's, and a CRD there must say where its API was approved (or say "unapproved...").
        annotations = obj.get("metadata", {}).get("annotations") or {}
        protected = isinstance(group, str) and any(
            group == root or group.endswith("." + root) for root in ("k8s.io", "kubernetes.io")
        )
        if protected and not annotations.get(API_APPROVED):
            errors.append(
                required(
                    f"metadata.annotations[{API_APPROVED}]",
                    f'protected groups must have approval annotation "{API_APPROVED}", see '
                    "https://github.com/kubernetes/enhancements/pull/1111",
                )
            )
        return errors

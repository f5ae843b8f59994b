"""What the ServiceAccount mcsdns runs as must be allowed to do: the one table of it in the product.

The chart's ClusterRole and Role grant exactly these (tests/unit/ops/test_permissions.py renders the chart
for each mode and compares), and tests/chart/test_chart_rbac.py proves from the API server's audit log that
the grants are exactly the calls mcsdns makes. ``mcsdns check`` asks the API server about each row.
"""

from __future__ import annotations

from dataclasses import dataclass

ALWAYS = "always"
CONTROLLER = "controller"  # --cloudmap with a cluster: the export and import controllers
DNS_ONLY = "dns-only"  # no --cloudmap: only the zone sources watch
PROPERTIES = "properties"  # not both ids given: the ClusterProperties are followed
LEASE = "lease"  # --leader-elect: the Lease in --lease-namespace
LEASE_NAMED = "lease-named"  # ... and, by name, the one Lease


@dataclass(frozen=True, slots=True)
class Permission:
    group: str
    resource: str  # plural, or plural/subresource
    verb: str
    when: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'.' + self.group if self.group else ''}"


def _rows(group: str, resource: str, verbs: str, when: str) -> list[Permission]:
    return [Permission(group, resource, verb, when) for verb in verbs.split()]


MCS = "multicluster.x-k8s.io"
PERMISSIONS: tuple[Permission, ...] = (
    # The controller (leader): export (watch ServiceExports, Services and EndpointSlices; add the finalizer
    # with a merge patch; write the export's status) and import (watch Namespaces; create, replace and delete
    # the ServiceImports, derived Services and EndpointSlices it manages; write the import's status).
    *_rows(MCS, "serviceimports", "list watch create update delete", CONTROLLER),
    *_rows(MCS, "serviceimports/status", "update", CONTROLLER),
    *_rows(MCS, "serviceexports", "list watch patch", CONTROLLER),
    *_rows(MCS, "serviceexports/status", "update", CONTROLLER),
    *_rows("discovery.k8s.io", "endpointslices", "list watch create update delete", CONTROLLER),
    *_rows("", "services", "list watch create update delete", CONTROLLER),
    *_rows("", "namespaces", "list watch", CONTROLLER),
    # DNS only: the zone sources' watches (the controller's rows above include them).
    *_rows(MCS, "serviceimports", "list watch", DNS_ONLY),
    *_rows("discovery.k8s.io", "endpointslices", "list watch", DNS_ONLY),
    *_rows("about.k8s.io", "clusterproperties", "list watch", PROPERTIES),
    # Leader election: RBAC cannot limit create to a name, hence the two kinds of rows.
    *_rows("coordination.k8s.io", "leases", "create", LEASE),
    *_rows("coordination.k8s.io", "leases", "get update", LEASE_NAMED),
)


def required(*, cloudmap: bool, reads_properties: bool, leader_elect: bool) -> list[Permission]:
    """The rows ``mcsdns serve`` needs with these settings (a cluster given: --kubeconfig)."""
    wanted = {ALWAYS, CONTROLLER if cloudmap else DNS_ONLY}
    if reads_properties:
        wanted.add(PROPERTIES)
    if leader_elect:
        wanted |= {LEASE, LEASE_NAMED}
    return [p for p in PERMISSIONS if p.when in wanted]

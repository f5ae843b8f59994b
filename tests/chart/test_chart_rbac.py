"""The chart's RBAC rules against the API calls mcsdns really makes: two real clusters (kube-apiserver with
its RBAC authorizer, etcd, the chart's CRDs; tests/realkube.py), the embedded Cloud Map and two mcsdns
engines configured from the chart's rendered environment and holding a token of the chart's ServiceAccount,
while a service is exported, scaled, changed, and unexported. Every request the ServiceAccount made is read
from the API servers' audit logs in the authorizer's terms (verb, group, resource). The real authorizer
refuses anything the rules do not allow (a 403 fails the test); the test adds the other half of least
privilege: the rules allow nothing that was not called."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcsdns.mcs.import_ import derived_name
from mcsdns.settings import Settings, resolve
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.chart.helpers import (
    EXAMPLES,
    NAMESPACE,
    Call,
    Rendered,
    crd_errors,
    crd_schemas,
    grants,
    manifest_objects,
    permissions,
    pretty,
    render,
)
from tests.controlplane import ApiError, Audited, ControlPlane, Objects, chart_access
from tests.realkube import CLUSTERSET, ControlPlanes, cleaned
from tests.support import ServerThread, query, wait_for

TUTORIAL = EXAMPLES / "tutorial"
SLICE = "nginx-hello-7xq2p"
STEP = 15.0  # seconds each step of the scenario may take

# cls1 is given its identity in the values; cls2 reads it from its ClusterProperties (the chart's default).
CLS1_VALUES = {"clusterId": "cls1", "clustersetId": CLUSTERSET}
CLS2_VALUES: dict[str, Any] = {}
DNS_ONLY_VALUES = {"cloudmap": {"enabled": False}}


def engine_settings(rendered: Rendered, kubeconfig: Path, *, pod: str, region: str | None = None) -> Settings:
    """The settings a pod of this rendering runs with (its env through mcsdns's own parser), pointed at a
    test cluster instead of the in-cluster API, on ephemeral loopback ports, with short test periods."""
    env = {name: value for name, value in rendered.env.items() if not value.startswith("<")}
    env.update(
        MCSDNS_KUBECONFIG=str(kubeconfig),
        MCSDNS_LISTEN="127.0.0.1:0",
        MCSDNS_HTTP="127.0.0.1:0",
        POD_NAMESPACE=NAMESPACE,  # the downward API's metadata.namespace
    )
    if "MCSDNS_STATE_DIR" in env:  # the pod's own volume: a fresh directory per pod
        env.update(MCSDNS_STATE_DIR=str(kubeconfig.parent / f"state-{pod}"))
    if "MCSDNS_LEADER_ID" in rendered.env:
        env.update(MCSDNS_LEADER_ID=pod, MCSDNS_LEASE_DURATION="3s", MCSDNS_RENEW_DEADLINE="2s")
    if env.get("MCSDNS_CLOUDMAP") == "true":
        env.update(MCSDNS_CLOUDMAP_POLL="300ms")
        if region:
            env.setdefault("AWS_REGION", region)
    return resolve({}, environ=env, config={})


def service_account_of(rendered: Rendered) -> tuple[str, str]:
    account = rendered.one("ServiceAccount")["metadata"]
    return account.get("namespace") or NAMESPACE, account["name"]


def grant_access(cluster: ControlPlane, rendered: Rendered) -> None:
    """The rendering's ServiceAccount and RBAC, as ``helm install`` creates them (again: unchanged)."""
    for obj in chart_access(rendered.objects):
        with contextlib.suppress(ApiError):  # already there from an earlier test of the run
            cluster.objects.create(obj)


def kubeconfig_as(cluster: ControlPlane, rendered: Rendered, path: Path) -> Path:
    """A kubeconfig with a token of the rendering's ServiceAccount: mcsdns as that release's pod runs."""
    return cluster.write_service_account_kubeconfig(path, *service_account_of(rendered))


@dataclass
class Audit:
    """What one ServiceAccount asked of a cluster from a mark on, in the authorizer's terms."""

    cluster: ControlPlane
    user: str
    mark: int

    @classmethod
    def start(cls, cluster: ControlPlane, rendered: Rendered) -> Audit:
        namespace, name = service_account_of(rendered)
        return cls(cluster, f"system:serviceaccount:{namespace}:{name}", cluster.audit_mark())

    def _mine(self) -> list[Audited]:
        return [c for c in self.cluster.audited(since=self.mark) if c.user == self.user]

    @property
    def calls(self) -> list[Call]:
        return [Call(c.verb, c.group, c.resource, c.namespace, c.name) for c in self._mine() if c.resource]

    @property
    def non_resource(self) -> list[str]:
        return [f"{c.verb.upper()} {c.uri}" for c in self._mine() if not c.resource]


@dataclass
class ControllerRun:
    """What the two clusters' engines asked of their API servers, and what they wrote."""

    rendered: dict[str, Rendered]
    calls: dict[str, list[Call]]
    non_resource: list[str]
    written: list[dict[str, Any]]


@pytest.fixture(scope="module")
def controller_run(
    control_planes: ControlPlanes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControllerRun]:
    tmp = tmp_path_factory.mktemp("rbac")
    rendered = {"cls1": render(CLS1_VALUES), "cls2": render(CLS2_VALUES)}
    with (
        pytest.MonkeyPatch.context() as patch,
        EmbeddedCloudMap() as cloudmap,
        cleaned(control_planes("cls1"), "cls1") as one,
        cleaned(control_planes("cls2"), "cls2") as two,
    ):
        for key, value in cloudmap.env().items():
            patch.setenv(key, value)
        clusters = {"cls1": one, "cls2": two}
        one.objects.load_yaml(TUTORIAL / "nginx-service.yaml")
        one.objects.load_yaml(TUTORIAL / "nginx-endpoints.yaml")
        audits = {name: Audit.start(cluster, rendered[name]) for name, cluster in clusters.items()}
        settings = {
            name: engine_settings(
                rendered[name],
                kubeconfig_as(cluster, rendered[name], tmp / f"{name}.kubeconfig"),
                pod=f"mcsdns-{name}-0",
                region=cloudmap.region,
            )
            for name, cluster in clusters.items()
        }
        written: list[dict[str, Any]] = []
        with ServerThread(settings["cls1"]) as s1, ServerThread(settings["cls2"]) as s2:
            s1.wait_serving()
            s2.wait_serving()
            _export_scale_change_unexport(one.objects, two.objects, s2, written)
        yield ControllerRun(
            rendered=rendered,
            calls={name: audit.calls for name, audit in audits.items()},
            non_resource=[path for audit in audits.values() for path in audit.non_resource],
            written=written,
        )


def _export_scale_change_unexport(
    one: Objects, two: Objects, dns: ServerThread, written: list[dict[str, Any]]
) -> None:
    """Drive every write path: export (create), scale (update slices), port change (update import and
    Service), unexport (finalizer, delete); both clusters import what cls1 exports."""

    def imported(api: Objects) -> dict[str, Any] | None:
        return api.find("serviceimports", "nginx-hello", namespace="demo")

    def import_port(api: Objects) -> int | None:
        found = imported(api)
        return found["spec"]["ports"][0]["port"] if found else None

    # Export: the finalizer (patch), the export's conditions (status), the import in both clusters.
    one.load_yaml(TUTORIAL / "nginx-serviceexport.yaml")
    for api in (one, two):
        wait_for(
            lambda a=api: (imported(a) or {}).get("status", {}).get("clusters"), timeout=STEP, what="import"
        )
    wait_for(lambda: query(dns, "nginx-hello.demo.svc.clusterset.local.").answer, timeout=STEP, what="answer")
    wait_for(
        lambda: (one.get("serviceexports", "nginx-hello", namespace="demo").get("status") or {}).get(
            "conditions"
        ),
        timeout=STEP,
        what="export conditions",
    )
    written.append(one.get("serviceexports", "nginx-hello", namespace="demo"))
    written.append(copy.deepcopy(imported(two)))

    # Scale up: the imported EndpointSlices are replaced.
    endpoint_slice = one.get("endpointslices", SLICE, namespace="demo")
    endpoint_slice["endpoints"].append({"addresses": ["10.10.30.1"], "conditions": {"ready": True}})
    one.update(endpoint_slice)

    def imported_addresses(api: Objects) -> int:
        items = api.list(
            "endpointslices", namespace="demo", label_selector="endpointslice.kubernetes.io/managed-by=mcsdns"
        )
        return sum(len(s["endpoints"]) for s in items)

    wait_for(lambda: imported_addresses(two) == 4, timeout=STEP, what="the scale-up to reach cls2")

    # A new service port: the ServiceImport and the derived Service are replaced.
    service = one.get("services", "nginx-hello", namespace="demo")
    service["spec"]["ports"][0]["port"] = 8080
    one.update(service)
    wait_for(lambda: import_port(two) == 8080, timeout=STEP, what="the new port to reach cls2")
    derived = two.get("services", derived_name("demo", "nginx-hello"), namespace="demo")
    assert derived["spec"]["ports"][0]["port"] == 8080

    # Unexport: the finalizer goes (patch), and each cluster deletes its import, Service and slices.
    one.delete("serviceexports", "nginx-hello", namespace="demo")
    for api in (one, two):
        wait_for(lambda a=api: imported(a) is None, timeout=STEP, what="the import to be removed")
        wait_for(lambda a=api: imported_addresses(a) == 0, timeout=STEP, what="the imported slices to go")
    wait_for(
        lambda: one.find("serviceexports", "nginx-hello", namespace="demo") is None,
        timeout=STEP,
        what="the finalizer to be removed",
    )


def _outside_discovery(paths: list[str]) -> list[str]:
    """The non-resource requests a cluster's default RBAC would refuse: every authenticated user may GET
    /api, /apis and /apis/<group>[/<version>] (system:discovery, bound to system:authenticated),
    which is what mcsdns's API version discovery reads; anything else would need a grant the chart lacks."""
    allowed = re.compile(r"GET /apis?(/[^/]+){0,2}")
    return [path for path in paths if not allowed.fullmatch(path)]


def _split(calls: list[Call]) -> tuple[list[Call], list[Call]]:
    """(calls on Leases, every other call)."""
    leases = [call for call in calls if call.group == "coordination.k8s.io"]
    return leases, [call for call in calls if call.group != "coordination.k8s.io"]


def test_the_controller_calls_exactly_what_the_cluster_role_grants(controller_run: ControllerRun) -> None:
    granted = permissions(grants(controller_run.rendered["cls2"].one("ClusterRole")))
    _, cluster_calls = _split([call for calls in controller_run.calls.values() for call in calls])
    called = {call.permission for call in cluster_calls}
    assert pretty(called - granted) == "[]", "calls the ClusterRole does not allow"
    assert pretty(granted - called) == "[]", "permissions the ClusterRole grants but mcsdns never used"
    assert _outside_discovery(controller_run.non_resource) == []


def test_leader_election_calls_exactly_what_the_role_grants_in_the_release_namespace(
    controller_run: ControllerRun,
) -> None:
    rendered = controller_run.rendered["cls2"]
    role = rendered.one("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    role_grants = grants(role)
    lease_calls = [call for calls in controller_run.calls.values() for call in _split(calls)[0]]
    assert {call.namespace for call in lease_calls} == {NAMESPACE}
    assert {call.permission for call in lease_calls} == permissions(role_grants)
    for call in lease_calls:
        allowed = [g for g in role_grants if g.permission == call.permission]
        assert any(not g.resource_names or call.name in g.resource_names for g in allowed), call
    assert {call.name for call in lease_calls if call.name} == {rendered.env["MCSDNS_LEASE_NAME"]}


def test_a_cluster_given_its_identity_never_reads_cluster_properties_and_is_not_granted_them(
    controller_run: ControllerRun,
) -> None:
    with_ids = permissions(grants(controller_run.rendered["cls1"].one("ClusterRole")))
    without = permissions(grants(controller_run.rendered["cls2"].one("ClusterRole")))
    cluster_properties = {("about.k8s.io", "clusterproperties", verb) for verb in ("list", "watch")}
    assert without - with_ids == cluster_properties
    called = {call.permission for call in _split(controller_run.calls["cls1"])[1]}
    assert called <= with_ids
    assert {call.permission for call in controller_run.calls["cls2"]} >= cluster_properties


def test_every_write_verb_was_exercised_by_the_scenario(controller_run: ControllerRun) -> None:
    called = {call.permission for calls in controller_run.calls.values() for call in calls}
    writes = {(g, r, v) for g, r, v in called if v not in ("get", "list", "watch")}
    assert pretty(writes) == pretty(
        {
            ("multicluster.x-k8s.io", "serviceimports", "create"),
            ("multicluster.x-k8s.io", "serviceimports", "update"),
            ("multicluster.x-k8s.io", "serviceimports", "delete"),
            ("multicluster.x-k8s.io", "serviceimports/status", "update"),
            ("multicluster.x-k8s.io", "serviceexports", "patch"),
            ("multicluster.x-k8s.io", "serviceexports/status", "update"),
            ("", "services", "create"),
            ("", "services", "update"),
            ("", "services", "delete"),
            ("discovery.k8s.io", "endpointslices", "create"),
            ("discovery.k8s.io", "endpointslices", "update"),
            ("discovery.k8s.io", "endpointslices", "delete"),
            ("coordination.k8s.io", "leases", "create"),
            ("coordination.k8s.io", "leases", "update"),
        }
    )


def test_what_the_controller_writes_is_valid_against_the_crds(controller_run: ControllerRun) -> None:
    schemas = crd_schemas(controller_run.rendered["cls2"])
    kinds = []
    for obj in controller_run.written:
        kinds.append(obj["kind"])
        assert crd_errors(schemas[(obj["apiVersion"], obj["kind"])], obj) == [], obj["kind"]
    assert sorted(kinds) == ["ServiceExport", "ServiceImport"]


def test_dns_only_calls_exactly_what_the_chart_and_the_sidecar_example_grant(
    real_cluster: ControlPlane, tmp_path: Path
) -> None:
    """A second release, DNS only, with its own ServiceAccount and ClusterRole, in the same cluster."""
    rendered = render(DNS_ONLY_VALUES, release="dnsonly")
    assert rendered.find("Role") is None
    grant_access(real_cluster, rendered)
    real_cluster.objects.load_yaml(EXAMPLES / "clusterset" / "nginx-hello.yaml")
    audit = Audit.start(real_cluster, rendered)
    kubeconfig = kubeconfig_as(real_cluster, rendered, tmp_path / "kubeconfig")
    settings = engine_settings(rendered, kubeconfig, pod="dnsonly-0")
    assert not settings.cloudmap.enabled and not settings.lease.elect
    with ServerThread(settings) as server:
        server.wait_serving()
        reply = query(server, "nginx-hello.demo.svc.clusterset.local.")
        assert [r.to_text() for rrset in reply.answer for r in rrset] == ["172.20.179.134"]
        wait_for(lambda: len({c.permission for c in audit.calls}) >= 6, what="every watch to start")
    called = {call.permission for call in audit.calls}
    assert _outside_discovery(audit.non_resource) == []
    assert called == permissions(grants(rendered.one("ClusterRole")))
    sidecar_role = next(
        obj
        for _, obj in manifest_objects([EXAMPLES / "sidecar" / "pod.yaml"])
        if obj["kind"] == "ClusterRole"
    )
    assert called == permissions(grants(sidecar_role))

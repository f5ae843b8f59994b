"""The real control plane (tests/controlplane.py) as fixtures: one etcd and one kube-apiserver per cluster for
the whole run (starting one costs seconds), each test starting from a clean cluster.

``real_cluster`` is cluster ``cls2`` of clusterset ``clusterset1`` with the chart's CRDs, ServiceAccount and
RBAC installed (as ``helm install`` with Cloud Map on would), the namespace ``prod``, and two kubeconfigs:
``admin_kubeconfig`` and ``chart_kubeconfig`` (the chart's ServiceAccount, nothing more). ``real_clusters``
adds ``cls1`` for the tests that export in one cluster and import in another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helpers import NAMESPACE, render
from tests.controlplane import ControlPlane, ControlPlaneUnavailable, Etcd, binaries, chart_access

CLUSTERSET = "clusterset1"
TEST_NAMESPACES = ("prod", "demo", NAMESPACE)  # demo: the tutorial's
# Each cluster its own service range, as in a real clusterset, so a test sees whose ClusterIP it got; cls2 is
# dual-stack (IPv4 primary), for the import's two VIPs.
SERVICE_CIDRS = {"cls1": "10.100.0.0/16", "cls2": "172.20.0.0/16,fd00:20::/108", "cls3": "10.96.0.0/16"}
SERVICE_ACCOUNT = "mcsdns"  # the chart's ServiceAccount for release "mcsdns"


@pytest.fixture(scope="session")
def control_plane_binaries() -> dict[str, Path]:
    try:
        return binaries()
    except ControlPlaneUnavailable as exc:
        pytest.fail(f"the real control plane cannot be built here: {exc}")


@pytest.fixture(scope="session")
def etcd(control_plane_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(control_plane_binaries["etcd"], tmp_path_factory.mktemp("etcd"))
    server.start()
    yield server
    server.stop()


def chart_rendering() -> list[dict[str, Any]]:
    """What ``helm install mcsdns`` with Cloud Map on creates that matters to the API: CRDs, access."""
    return render({"cloudmap": {"enabled": True}}).objects


def install_chart(cluster: ControlPlane) -> None:
    """The chart's CRDs, the test namespaces, and the chart's ServiceAccount with its RBAC."""
    rendered = chart_rendering()
    cluster.install(obj for obj in rendered if obj["kind"] == "CustomResourceDefinition")
    cluster.install(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in TEST_NAMESPACES]
    )
    cluster.install(chart_access(rendered))


def _start_cluster(name: str, binaries_: dict[str, Path], etcd: Etcd, directory: Path) -> ControlPlane:
    cluster = ControlPlane(binaries_, etcd, directory, name=name, service_cidr=SERVICE_CIDRS[name]).start()
    install_chart(cluster)
    return cluster


def _identity(cluster: ControlPlane, cluster_id: str) -> None:
    for property_name, value in (
        ("cluster.clusterset.k8s.io", cluster_id),
        ("clusterset.k8s.io", CLUSTERSET),
    ):
        cluster.objects.create(
            {
                "apiVersion": "about.k8s.io/v1alpha1",
                "kind": "ClusterProperty",
                "metadata": {"name": property_name},
                "spec": {"value": value},
            }
        )


class ControlPlanes:
    """The run's clusters by name, each started the first time a test asks for it (a start costs seconds)
    and stopped when the run ends."""

    def __init__(self, binaries_: dict[str, Path], etcd: Etcd, tmp: pytest.TempPathFactory) -> None:
        self._binaries, self._etcd, self._tmp = binaries_, etcd, tmp
        self._started: dict[str, ControlPlane] = {}

    def __call__(self, name: str) -> ControlPlane:
        if name not in self._started:
            self._started[name] = _start_cluster(name, self._binaries, self._etcd, self._tmp.mktemp(name))
        return self._started[name]

    def stop(self) -> None:
        for cluster in self._started.values():
            cluster.stop()


@pytest.fixture(scope="session")
def control_planes(
    control_plane_binaries: dict[str, Path], etcd: Etcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlanes]:
    planes = ControlPlanes(control_plane_binaries, etcd, tmp_path_factory)
    yield planes
    planes.stop()


@contextlib.contextmanager
def cleaned(cluster: ControlPlane, cluster_id: str) -> Iterator[ControlPlane]:
    """The cluster reset for one test (or one module's scenario), with the chart's RBAC proven after it."""
    if not cluster.running():  # a test that stopped it and failed before starting it again
        cluster.start()
    cluster.thaw()
    cluster.reset(TEST_NAMESPACES)
    _identity(cluster, cluster_id)
    mark = cluster.audit_mark()
    yield cluster
    cluster.thaw()
    if not cluster.running():
        cluster.start()
    # Least privilege, proven by the real authorizer: whatever the test saw, a request the chart's RBAC
    # refused fails it (but for the moment after a start when a real server refuses everyone).
    forbidden = sorted(
        {
            f"{c.user}: {c.verb} {c.uri}"
            for c in cluster.audited(since=mark)
            if c.code == 403 and not cluster.was_starting(c.received)
        }
    )
    if forbidden:
        pytest.fail(f"cluster {cluster.name} refused (403) what the chart's RBAC does not grant: {forbidden}")


@pytest.fixture
def real_cluster(control_planes: ControlPlanes) -> Iterator[ControlPlane]:
    with cleaned(control_planes("cls2"), "cls2") as cluster:
        yield cluster


@pytest.fixture
def real_clusters(
    control_planes: ControlPlanes, real_cluster: ControlPlane
) -> Iterator[dict[str, ControlPlane]]:
    with cleaned(control_planes("cls1"), "cls1") as cluster:
        yield {"cls1": cluster, "cls2": real_cluster}


@pytest.fixture
def real_cluster_cls3(control_planes: ControlPlanes) -> Iterator[ControlPlane]:
    """A third cluster, for the few tests that need one more importer."""
    with cleaned(control_planes("cls3"), "cls3") as cluster:
        yield cluster


@pytest.fixture
def admin_kubeconfig(real_cluster: ControlPlane, tmp_path: Path) -> Path:
    return real_cluster.write_kubeconfig(tmp_path / "admin.kubeconfig")


def chart_kubeconfig_of(cluster: ControlPlane, path: Path) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount: mcsdns as the chart runs it."""
    return cluster.write_service_account_kubeconfig(path, NAMESPACE, SERVICE_ACCOUNT)


@pytest.fixture
def chart_kubeconfig(real_cluster: ControlPlane, tmp_path: Path) -> Path:
    return chart_kubeconfig_of(real_cluster, tmp_path / "chart.kubeconfig")

"""The manifests directory as a zone source: reload within a second, broken files keep their last good
content, removed files and objects disappear from DNS."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.support import (
    ServerThread,
    endpoint,
    endpoint_slice,
    query,
    service_import,
    settings_for,
    wait_for,
    write_manifests,
)

Z = "clusterset.local."
WEB = f"web.prod.svc.{Z}"
IMPORT_HEAD = (
    "apiVersion: multicluster.x-k8s.io/v1alpha1\n"
    "kind: ServiceImport\n"
    "metadata: {name: web, namespace: prod}\n"
)
SLICE_HEAD = (
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  namespace: prod\n"
    "  labels:\n    multicluster.kubernetes.io/service-name: web\n"
    "    multicluster.kubernetes.io/source-cluster: c1\n"
)


def addresses(server: ServerThread, name: str, rdtype: str = "A") -> list[str]:
    reply = query(server, name, rdtype)
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    write_manifests(tmp_path, "web.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    return tmp_path


@pytest.fixture
def server(directory: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(directory)) as running:
        running.wait_serving()
        yield running


def test_edit_is_served_within_a_second(server: ServerThread, directory: Path) -> None:
    assert addresses(server, WEB) == ["10.0.0.1"]
    started = time.monotonic()
    write_manifests(directory, "web.yaml", [service_import("web", "prod", ips=["10.0.0.9"])])
    wait_for(lambda: addresses(server, WEB) == ["10.0.0.9"], timeout=1.0, what="the edit")
    assert time.monotonic() - started < 1.0


def test_new_file_adds_and_removed_file_deletes(server: ServerThread, directory: Path) -> None:
    path = write_manifests(
        directory,
        "db.yaml",
        [
            service_import("db", "prod", type="Headless"),
            endpoint_slice("db-1", "prod", service="db", cluster="cls1", endpoints=[endpoint("10.1.0.1")]),
        ],
    )
    wait_for(lambda: addresses(server, f"db.prod.svc.{Z}") == ["10.1.0.1"], what="the new file")
    path.unlink()
    wait_for(lambda: query(server, f"db.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN, what="the removal")
    assert addresses(server, WEB) == ["10.0.0.1"], "the other file is untouched"


def test_readiness_flip_removes_and_restores_an_endpoint(server: ServerThread, directory: Path) -> None:
    def write(ready: bool) -> None:
        write_manifests(
            directory,
            "db.yaml",
            [
                service_import("db", "prod", type="Headless"),
                endpoint_slice(
                    "db-1",
                    "prod",
                    service="db",
                    cluster="cls1",
                    endpoints=[endpoint("10.1.0.1"), endpoint("10.1.0.2", ready=ready)],
                ),
            ],
        )

    write(True)
    wait_for(lambda: addresses(server, f"db.prod.svc.{Z}") == ["10.1.0.1", "10.1.0.2"], what="both ready")
    write(False)
    wait_for(lambda: addresses(server, f"db.prod.svc.{Z}") == ["10.1.0.1"], what="not-ready endpoint to go")
    assert query(server, f"10-1-0-2.cls1.db.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("kind: [unclosed", "web.yaml:", id="invalid-yaml"),
        pytest.param("- just\n- a list\n", "document 1 is not a Kubernetes object", id="not-an-object"),
        pytest.param(
            IMPORT_HEAD + "spec: {type: LoadBalancer}\n",
            "ServiceImport prod/web: spec.type must be ClusterSetIP or Headless",
            id="bad-type",
        ),
        pytest.param(
            IMPORT_HEAD + "spec: {type: ClusterSetIP, ips: [10.0.0.300]}\n",
            "ServiceImport prod/web: spec.ips has '10.0.0.300', not an IP address",
            id="bad-ip",
        ),
        pytest.param(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  namespace: prod\n"
            "  labels: {multicluster.kubernetes.io/service-name: web}\naddressType: IPv4\nendpoints: []\n",
            "EndpointSlice prod/s: label multicluster.kubernetes.io/source-cluster is missing",
            id="no-cluster-label",
        ),
        pytest.param(
            IMPORT_HEAD + "spec: {type: ClusterSetIP, ports: [{port: 70000}]}\n",
            "spec.ports[0].port must be a number 1-65535",
            id="bad-port",
        ),
        *(
            pytest.param(
                SLICE_HEAD
                + f"addressType: IPv4\nendpoints: [{{addresses: [10.1.0.1]}}, {{addresses: [{bad}]}}]\n",
                f"EndpointSlice prod/s: endpoints[1].addresses has {shown}, not IPv4",
                id=f"endpoint-address-{case}",
            )
            for case, bad, shown in (
                ("leading-zero", "10.1.0.01", "'10.1.0.01'"),  # octal in some parsers: never guessed
                ("other-family", "'fd00::1'", "'fd00::1'"),
                ("not-a-string", "167837953", "167837953"),
            )
        ),
    ],
)
def test_broken_file_logs_one_clear_error_and_keeps_last_good_content(
    server: ServerThread, directory: Path, caplog: pytest.LogCaptureFixture, content: str, message: str
) -> None:
    caplog.set_level(logging.ERROR, logger="mcsdns")
    (directory / "web.yaml").write_text(content)
    errors = wait_for(
        lambda: [r.getMessage() for r in caplog.records if r.levelname == "ERROR"],
        what="the error to be logged",
    )
    assert len(errors) == 1 and message in errors[0] and "web.yaml" in errors[0], errors
    assert "keeping the last good content" in errors[0]
    assert addresses(server, WEB) == ["10.0.0.1"], "the last good content keeps serving"
    # Fixing the file is picked up as usual.
    write_manifests(directory, "web.yaml", [service_import("web", "prod", ips=["10.0.0.7"])])
    wait_for(lambda: addresses(server, WEB) == ["10.0.0.7"], what="the fixed file")


def test_broken_file_at_start_serves_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_manifests(tmp_path, "good.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    (tmp_path / "bad.yaml").write_text("kind: ServiceImport\napiVersion: multicluster.x-k8s.io/v1alpha1\n")
    with ServerThread(settings_for(tmp_path)) as server:
        server.wait_serving()
        assert addresses(server, WEB) == ["10.0.0.1"]
    assert any(
        "bad.yaml" in r.getMessage() and "metadata.name is missing" in r.getMessage() for r in caplog.records
    )


def test_kind_list_and_kubectl_output_shapes(tmp_path: Path) -> None:
    # `kubectl get ... -o yaml` prints a List with items, plus status, managedFields and other noise.
    write_manifests(
        tmp_path,
        "list.yaml",
        [
            {
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": ""},
                "items": [
                    {
                        **service_import("web", "prod", ips=["10.0.0.1"]),
                        "status": {"clusters": [{"cluster": "cls1"}]},
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "web", "namespace": "prod"},
                        "spec": {"clusterIP": "10.96.0.1"},
                    },
                ],
            }
        ],
    )
    with ServerThread(settings_for(tmp_path)) as server:
        server.wait_serving()
        assert addresses(server, WEB) == ["10.0.0.1"]


def test_endpoint_slices_without_an_import_publish_nothing(server: ServerThread, directory: Path) -> None:
    before = server.serial()
    write_manifests(
        directory,
        "orphan.yaml",
        [endpoint_slice("x", "prod", service="ghost", cluster="cls1", endpoints=[endpoint("10.1.0.1")])],
    )
    write_manifests(directory, "marker.yaml", [service_import("marker", "prod", ips=["10.0.0.5"])])
    server.wait_new_serial(before)
    wait_for(lambda: addresses(server, f"marker.prod.svc.{Z}") == ["10.0.0.5"], what="the marker")
    assert query(server, f"ghost.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN

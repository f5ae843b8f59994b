"""The manifests directory as a zone source: reload within a second, objects validated one by one (an
invalid object is logged once with every reason and keeps its previous version, its valid neighbours are
served), unreadable files keep their last good content, removed files and objects disappear from DNS."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from mcsdns.sources.manifests import FILE_KEPT, NOT_SERVED, SERVING_PREVIOUS, UNIDENTIFIED, ManifestSource
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


VALID_IMPORT = IMPORT_HEAD + "spec: {type: ClusterSetIP, ips: [10.0.0.1]}\n---\n"


@pytest.mark.parametrize(
    ("content", "message", "outcome"),
    [
        pytest.param("kind: [unclosed", "web.yaml:", FILE_KEPT, id="invalid-yaml"),
        pytest.param(
            "- just\n- a list\n",
            "document 1: not a Kubernetes object (a list)",
            UNIDENTIFIED,
            id="not-an-object",
        ),
        pytest.param(
            IMPORT_HEAD + "spec: {type: LoadBalancer}\n",
            "document 1 ServiceImport prod/web: spec.type must be ClusterSetIP or Headless",
            SERVING_PREVIOUS,
            id="bad-type",
        ),
        pytest.param(
            IMPORT_HEAD + "spec: {type: ClusterSetIP, ips: [10.0.0.300]}\n",
            "ServiceImport prod/web: spec.ips has '10.0.0.300', not an IP address",
            SERVING_PREVIOUS,
            id="bad-ip",
        ),
        pytest.param(
            VALID_IMPORT + "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            "metadata:\n  name: s\n  namespace: prod\n"
            "  labels: {multicluster.kubernetes.io/service-name: web}\naddressType: IPv4\nendpoints: []\n",
            "document 2 EndpointSlice prod/s: label multicluster.kubernetes.io/source-cluster is missing",
            NOT_SERVED,
            id="no-cluster-label",
        ),
        pytest.param(
            IMPORT_HEAD + "spec: {type: ClusterSetIP, ports: [{port: 70000}]}\n",
            "spec.ports[0].port must be a number 1-65535",
            SERVING_PREVIOUS,
            id="bad-port",
        ),
        *(
            pytest.param(
                VALID_IMPORT
                + SLICE_HEAD
                + f"addressType: IPv4\nendpoints: [{{addresses: [10.1.0.1]}}, {{addresses: [{bad}]}}]\n",
                f"EndpointSlice prod/s: endpoints[1].addresses has {shown}, not IPv4",
                NOT_SERVED,
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
def test_invalid_content_logs_one_clear_error_and_web_keeps_serving(
    server: ServerThread,
    directory: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    message: str,
    outcome: str,
) -> None:
    # web is served throughout: its previous version (the object or the file is broken), or the valid
    # neighbour of the broken slice. A broken slice that was never valid is not served.
    caplog.set_level(logging.ERROR, logger="mcsdns")
    (directory / "web.yaml").write_text(content)
    errors = wait_for(
        lambda: [r.getMessage() for r in caplog.records if r.levelname == "ERROR"],
        what="the error to be logged",
    )
    assert len(errors) == 1 and message in errors[0] and "web.yaml" in errors[0], errors
    assert errors[0].endswith(f"; {outcome}"), errors
    assert addresses(server, WEB) == ["10.0.0.1"], "web keeps serving"
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


# --- objects validated one by one, as `kubectl apply` reports them ------------------------------------------

MARKER = f"marker.prod.svc.{Z}"


@pytest.fixture
def source(directory: Path) -> ManifestSource:
    return ManifestSource(str(directory), poll_interval=0.05)


@pytest.fixture
def watched(directory: Path, source: ManifestSource) -> Iterator[ServerThread]:
    """A server whose ManifestSource the test holds, to read ``rejected``."""
    with ServerThread(settings_for(directory), sources=[source]) as running:
        running.wait_serving()
        yield running


def rescan(server: ServerThread, directory: Path, times: int = 2) -> None:
    """Return after the directory was scanned at least ``times`` more times (an edit of another file is
    served after each)."""
    for n in range(1, times + 1):
        ip = f"10.0.9.{n}"
        write_manifests(directory, "marker.yaml", [service_import("marker", "prod", ips=[ip])])
        wait_for(lambda ip=ip: addresses(server, MARKER) == [ip], what="a rescan")


def logged(caplog: pytest.LogCaptureFixture, level: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == level and text in r.getMessage()]


def invalid_import(name: str, namespace: str = "prod", **fields: Any) -> dict[str, Any]:
    obj = service_import(name, namespace, ips=["10.0.0.3"])
    obj["spec"].update(fields)
    return obj


def test_valid_objects_next_to_an_invalid_one_are_served(
    watched: ServerThread, directory: Path, source: ManifestSource
) -> None:
    write_manifests(
        directory,
        "web.yaml",
        [
            service_import("web", "prod", ips=["10.0.0.2"]),
            invalid_import("api", type="LoadBalancer", ips=["10.0.0.300"]),
        ],
    )
    wait_for(lambda: addresses(watched, WEB) == ["10.0.0.2"], what="the valid neighbour")
    assert query(watched, f"api.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN, "never valid: not served"
    assert source.rejected == (
        f"{directory / 'web.yaml'} document 2 ServiceImport prod/api: "
        "spec.type must be ClusterSetIP or Headless, got 'LoadBalancer'; "
        "spec.ips has '10.0.0.300', not an IP address; not served",
    )


def test_every_reason_is_logged_once_per_change_of_the_file(
    watched: ServerThread, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcsdns")
    bad = invalid_import("web", "Prod", ports=[{"name": "Bad_Name!", "port": 70000, "protocol": "tcp"}])
    path = write_manifests(directory, "web.yaml", [service_import("db", "prod"), bad])
    rescan(watched, directory)
    errors = logged(caplog, "ERROR", "web.yaml")
    assert errors == [
        f"manifests: {path} document 2 ServiceImport Prod/web: "
        'metadata.namespace: Invalid value: "Prod": a lowercase RFC 1123 label must consist of lower case '
        "alphanumeric characters or '-', and must start and end with an alphanumeric character; "
        'spec.ports[0].name: Invalid value: "Bad_Name!": a lowercase RFC 1123 label must consist of lower '
        "case alphanumeric characters or '-', and must start and end with an alphanumeric character; "
        "spec.ports[0].protocol must be TCP, UDP or SCTP, got 'tcp'; "
        "spec.ports[0].port must be a number 1-65535, got 70000; not served"
    ], "one line with every reason, not repeated by the rescans"
    assert logged(caplog, "INFO", f"loaded {path} (1 objects, 1 rejected)")
    # Another change of the file, the same object still invalid: logged again, once.
    write_manifests(directory, "web.yaml", [service_import("db", "prod", ips=["10.0.0.4"]), bad])
    wait_for(lambda: addresses(watched, f"db.prod.svc.{Z}") == ["10.0.0.4"], what="the edit")
    rescan(watched, directory)
    assert len(logged(caplog, "ERROR", "web.yaml")) == 2


@pytest.mark.parametrize(
    ("kind", "api_version", "reason"),
    [
        pytest.param(
            "ServiceImports",
            "multicluster.x-k8s.io/v1alpha1",
            'kind: Unsupported value: "ServiceImports": did you mean "ServiceImport"? '
            "(mcsdns reads ServiceImport and EndpointSlice)",
            id="kind-typo",
        ),
        pytest.param(
            "ServiceImport",
            "multicluster.x-k8s.io/v1",
            'apiVersion: Unsupported value: "multicluster.x-k8s.io/v1": mcsdns reads ServiceImport in '
            "multicluster.x-k8s.io/v1alpha1, multicluster.x-k8s.io/v1beta1",
            id="unknown-version",
        ),
    ],
)
def test_misspelt_kind_or_unknown_version_is_rejected_once_with_a_suggestion(
    watched: ServerThread,
    directory: Path,
    source: ManifestSource,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    api_version: str,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="mcsdns")
    web = {**service_import("web", "prod", ips=["10.0.0.8"]), "kind": kind, "apiVersion": api_version}
    path = write_manifests(directory, "web.yaml", [web])
    rescan(watched, directory)
    expected = f"{path} document 1 {kind} prod/web: {reason}; serving its previous version"
    assert logged(caplog, "ERROR", "web.yaml") == [f"manifests: {expected}"]
    assert source.rejected == (expected,)
    # Taken for the ServiceImport it was meant to be, so its previous version keeps serving.
    assert addresses(watched, WEB) == ["10.0.0.1"]


def test_kinds_mcsdns_does_not_read_are_named_in_one_warning(
    watched: ServerThread, directory: Path, source: ManifestSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcsdns")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
    }
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api"}}
    export = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": "api"},
    }
    path = write_manifests(
        directory,
        "api.yaml",
        [deployment, service_import("api", "prod", ips=["10.0.0.6"]), config_map, {**deployment}, export],
    )
    wait_for(lambda: addresses(watched, f"api.prod.svc.{Z}") == ["10.0.0.6"], what="the import")
    rescan(watched, directory)
    assert logged(caplog, "WARNING", "api.yaml") == [
        f"manifests: {path}: ignored 4 objects mcsdns does not read: apps/v1 Deployment (2), v1 ConfigMap, "
        "multicluster.x-k8s.io/v1alpha1 ServiceExport"
    ]
    assert source.rejected == (), "ignored, not rejected"


def test_a_name_that_is_not_a_dns_label_is_rejected(
    watched: ServerThread, directory: Path, source: ManifestSource
) -> None:
    path = write_manifests(directory, "bad.yaml", [service_import("Bad_Name!", "prod", ips=["10.0.0.3"])])
    rescan(watched, directory, times=1)
    assert query(watched, f"Bad_Name!.prod.svc.{Z}").rcode() == dns.rcode.NXDOMAIN
    assert source.rejected == (
        f'{path} document 1 ServiceImport prod/Bad_Name!: metadata.name: Invalid value: "Bad_Name!": a '
        "lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
        "and end with an alphanumeric character; not served",
    )


def test_previous_version_keeps_serving_until_the_object_is_fixed(
    watched: ServerThread, directory: Path, source: ManifestSource
) -> None:
    assert addresses(watched, WEB) == ["10.0.0.1"]
    for db_ip, broken in (
        ("10.0.0.4", invalid_import("web", type="LoadBalancer", ips=["10.0.0.9"])),
        ("10.0.0.5", invalid_import("web", ips=["10.0.0.9"], ports=[{"name": "http_2", "port": 80}])),
    ):
        write_manifests(directory, "web.yaml", [broken, service_import("db", "prod", ips=[db_ip])])
        wait_for(lambda ip=db_ip: addresses(watched, f"db.prod.svc.{Z}") == [ip], what="the valid edit")
        assert addresses(watched, WEB) == ["10.0.0.1"], "the last valid version of web"
        assert len(source.rejected) == 1 and source.rejected[0].endswith("; serving its previous version")
    write_manifests(
        directory,
        "web.yaml",
        [service_import("web", "prod", ips=["10.0.0.9"]), service_import("db", "prod", ips=["10.0.0.5"])],
    )
    wait_for(lambda: addresses(watched, WEB) == ["10.0.0.9"], what="the fixed object")
    assert source.rejected == ()


def test_an_object_that_cannot_be_told_keeps_what_the_file_no_longer_has(
    watched: ServerThread, directory: Path, source: ManifestSource
) -> None:
    # web lost its name (or became garbage): it could be any object the file had, so web keeps serving.
    nameless = service_import("web", "prod", ips=["10.0.0.9"])
    del nameless["metadata"]["name"]
    write_manifests(directory, "web.yaml", [service_import("db", "prod", ips=["10.0.0.4"]), nameless])
    wait_for(lambda: addresses(watched, f"db.prod.svc.{Z}") == ["10.0.0.4"], what="the valid neighbour")
    assert addresses(watched, WEB) == ["10.0.0.1"]
    assert source.rejected[0].endswith(f"metadata.name is missing; {UNIDENTIFIED}"), source.rejected
    # Once the file is valid, what it no longer holds goes.
    write_manifests(directory, "web.yaml", [service_import("db", "prod", ips=["10.0.0.4"])])
    wait_for(lambda: query(watched, WEB).rcode() == dns.rcode.NXDOMAIN, what="web to go")
    assert source.rejected == ()


def test_a_file_that_is_not_yaml_counts_once_and_keeps_its_content(
    watched: ServerThread, directory: Path, source: ManifestSource
) -> None:
    (directory / "web.yaml").write_text("kind: [unclosed")
    wait_for(lambda: source.rejected, what="the rejection")
    assert len(source.rejected) == 1 and source.rejected[0].endswith(f"; {FILE_KEPT}"), source.rejected
    assert addresses(watched, WEB) == ["10.0.0.1"]
    (directory / "web.yaml").unlink()
    wait_for(lambda: not source.rejected, what="the removed file's rejection to go")


def test_readyz_and_metrics_count_rejected_objects_and_a_scan_failure_shows(tmp_path: Path) -> None:
    from dataclasses import replace

    from mcsdns.settings import ListenAddress
    from tests.integration.test_health import get
    from tests.support import free_port

    directory = tmp_path / "m"
    write_manifests(directory, "web.yaml", [service_import("web", "prod", ips=["10.0.0.1"])])
    bad = write_manifests(directory, "bad.yaml", [service_import("Bad_Name!", "prod", ips=["10.0.0.3"])])
    port = free_port()
    with ServerThread(replace(settings_for(directory), http=ListenAddress("127.0.0.1", port))) as server:
        server.wait_serving()
        status, body = get(port, "/readyz")
        assert status == 200, "one bad object does not take the replica out of its Service"
        assert body.startswith(f"ready\nrejected: 1 manifest objects\n{bad} document 1 ServiceImport prod/")
        assert "mcsdns_manifests_rejected_objects 1.0" in get(port, "/metrics")[1]
        aside = directory.rename(tmp_path / "aside")  # gone (an unmounted volume): the last good zone serves
        try:
            wait_for(lambda: "stale: manifests" in get(port, "/readyz")[1], what="the scan failure")
            assert addresses(server, WEB) == ["10.0.0.1"]
        finally:
            aside.rename(directory)
        wait_for(lambda: "stale" not in get(port, "/readyz")[1], what="the directory readable again")

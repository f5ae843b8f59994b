"""The Kubernetes faults a real kube-apiserver cannot be made to show on cue, against the project's API
emulator (mcsdns_sandbox.kubeapi); everything else is in test_kubernetes.py, against a real server.

- 500s for the next N requests (a flaky API or a proxy in front of it): a real server fails that way only
  when broken, not when asked.
- a list that fails between two pages: the real server does not fail page two of a list on demand.
- a server whose MCS CRDs serve one version only: the real control plane of the run carries the chart's
  CRDs (both versions), and a second one per variant would cost its start-up for a check of discovery.
- a write whose reply arrives after the watch has delivered the next change: on a real server it happens
  when the two land within milliseconds (CI saw it once), never on cue.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mcsdns.clients import kube
from mcsdns.errors import SourceError
from mcsdns.settings import CloudMapSettings
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.integration.test_cloudmap import TUTORIAL, instances
from tests.integration.test_cloudmap import cloudmap as cloudmap  # a fixture, used by name
from tests.integration.test_kubernetes import WEB, Z, addresses, kube_settings
from tests.support import ServerThread, service_import, wait_for


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(cluster_id="cls2", clusterset_id="clusterset1") as emulator:
        emulator.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
        emulator.write_kubeconfig(tmp_path / "kubeconfig")
        yield emulator


@pytest.fixture
def kubeconfig(api: KubeApiEmulator, tmp_path: Path) -> Path:
    return tmp_path / "kubeconfig"


def test_api_errors_keep_serving_the_last_good_zone(api: KubeApiEmulator, kubeconfig: Path) -> None:
    api.store.create(service_import("web", "prod", ips=["10.0.0.1"]))
    with ServerThread(kube_settings(kubeconfig, elect=False)) as server:
        server.wait_serving()
        api.fail_next(20, code=500)
        api.close_watches()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert addresses(server, WEB) == ["10.0.0.1"]
            time.sleep(0.1)
        api.store.create(service_import("after", "prod", ips=["10.0.0.8"]))
        wait_for(
            lambda: addresses(server, f"after.prod.svc.{Z}") == ["10.0.0.8"], timeout=20, what="recovery"
        )


def test_a_list_that_fails_midway_is_listed_again_whole(api: KubeApiEmulator, kubeconfig: Path) -> None:
    # 1,100 imports are three pages of 500; the second page fails once. Nothing may be served from the
    # first page alone, and after the retry every page's services answer.
    for i in range(1100):
        api.store.create(service_import(f"s{i}", "prod", ips=[f"10.1.{i // 250}.{i % 250 + 1}"]))
    failed: list[str] = []

    def fail_second_page(request: Any) -> None:
        if "serviceimports" in request.path and request.query.get("continue") and not failed:
            failed.append(request.query["continue"])
            api.fail_next(1, path_contains="serviceimports")

    stop_observing = api.observe_requests(fail_second_page)
    try:
        with ServerThread(kube_settings(kubeconfig, elect=False)) as server:
            server.wait_serving()
            assert failed, "the second page was asked for and failed"
            for i in (0, 499, 500, 999, 1000, 1099):
                assert addresses(server, f"s{i}.prod.svc.{Z}") == [f"10.1.{i // 250}.{i % 250 + 1}"]
    finally:
        stop_observing()


@pytest.mark.parametrize("version", ["v1beta1", "v1alpha1"])
def test_service_imports_served_at_one_version_only(tmp_path: Path, version: str) -> None:
    with KubeApiEmulator(mcs_versions=(version,)) as api:
        api.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
        obj = service_import("web", "prod", ips=["10.0.0.1"])
        obj["apiVersion"] = f"multicluster.x-k8s.io/{version}"
        api.store.create(obj)
        with ServerThread(kube_settings(api.write_kubeconfig(tmp_path / "kc"), elect=False)) as server:
            server.wait_serving()
            assert addresses(server, WEB) == ["10.0.0.1"]


def test_an_http_proxy_in_the_environment_carries_the_api_requests(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator behind a proxy sets HTTP_PROXY: mcsdns skips reading the environment per request only when
    # nothing in it applies (clients/kube.py), so with one set the requests must still go through it.
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def proxy() -> None:
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.recv(65536).split(b"\r\n", 1)[0].decode())
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        thread = threading.Thread(target=proxy, daemon=True)
        thread.start()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)

        async def get() -> None:
            api = await kube.KubeApi.connect(str(kubeconfig))
            try:
                with pytest.raises(SourceError, match="502"):
                    await api.get(kube.NAMESPACES, None, "prod")
            finally:
                await api.close()

        asyncio.run(get())
        thread.join(5)
    assert len(seen) == 1 and seen[0].startswith("GET http://127.0.0.1:"), seen


def test_an_export_deleted_before_its_status_reply_arrives_is_still_unexported(
    api: KubeApiEmulator, kubeconfig: Path, cloudmap: EmbeddedCloudMap
) -> None:
    # The controller writes an export's status; the user deletes the export; the watch delivers both; only
    # then does the status write's reply arrive. That reply is older than the deletion: kept as the
    # controller's view of the export, the deletion is lost and the instances stay in Cloud Map until the
    # resync, 5 minutes later.
    for name in ("namespace.yaml", "nginx-service.yaml", "nginx-endpoints.yaml"):
        api.store.load_yaml(TUTORIAL / name)
    settings = replace(
        kube_settings(kubeconfig, elect=False),
        cloudmap=CloudMapSettings(enabled=True, poll=0.3, region=cloudmap.region),
    )
    with ServerThread(settings) as server:
        server.wait_serving()
        api.store.load_yaml(TUTORIAL / "nginx-serviceexport.yaml")
        wait_for(lambda: len(instances(cloudmap)) == 3, what="3 instances")
        api.hold_replies(1, 3.0, methods=["PUT"], path_contains="serviceexports/nginx-hello/status")
        endpoint_slice = api.store.get("endpointslices", "nginx-hello-7xq2p", namespace="demo")
        endpoint_slice["endpoints"] = endpoint_slice["endpoints"][1:]
        api.store.update(endpoint_slice)  # 2 instances: the status's message changes
        wait_for(lambda: api.holding == 1, what="the status write's reply held")
        api.store.delete("serviceexports", "nginx-hello", namespace="demo")
        wait_for(lambda: instances(cloudmap) == {}, timeout=15, what="deregistration")
        wait_for(
            lambda: api.store.find("serviceexports", "nginx-hello", namespace="demo") is None,
            what="the finalizer removed",
        )

"""Fault hooks, from Python and over the admin HTTP paths, and the ``python -m`` command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeapi_helpers import eventually, http, service
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def test_close_watches_ends_every_open_stream(api: KubeApiEmulator) -> None:
    finished: list[list[bytes]] = []

    def watch_forever() -> None:
        version = api.store.resource_version
        url = f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={version}"
        with urllib.request.urlopen(url, timeout=10) as response:
            finished.append(list(response))

    threads = [threading.Thread(target=watch_forever) for _ in range(3)]
    for thread in threads:
        thread.start()
    eventually(lambda: api.open_watches == 3)
    assert api.close_watches() == 3
    for thread in threads:
        thread.join(timeout=5)
    assert finished == [[], [], []]
    assert api.open_watches == 0


def test_client_rewatches_from_its_last_version_after_watches_close(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    from kubernetes import watch

    seen: list[str] = []
    stream = watch.Watch()

    def consume() -> None:
        for event in stream.stream(
            core.list_namespaced_service, "default", resource_version=api.store.resource_version
        ):
            seen.append(event["object"].metadata.name)
            if event["object"].metadata.name == "second":
                stream.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    api.store.create(service("first"))
    eventually(lambda: seen == ["first"])
    api.close_watches()
    api.store.create(service("second"))
    thread.join(timeout=10)
    assert seen == ["first", "second"]


def test_fail_next_answers_500_then_recovers(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    api.fail_next(2)
    for _ in range(2):
        with pytest.raises(ApiException) as raised:
            core.read_namespace("default")
        assert raised.value.status == 500
        assert json.loads(raised.value.body)["reason"] == "InternalError"
    assert core.read_namespace("default").metadata.name == "default"


def test_fail_next_429_carries_retry_after(api: KubeApiEmulator) -> None:
    api.fail_next(1, code=429, retry_after=3)
    status, headers, body = http(f"{api.url}/api/v1/namespaces")
    assert (status, headers["Retry-After"]) == (429, "3")
    assert (body["reason"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 3)


def test_fail_next_can_target_methods_and_paths(api: KubeApiEmulator) -> None:
    api.fail_next(1, code=503, methods=["POST"], path_contains="/services")
    assert http(f"{api.url}/api/v1/namespaces/default/services")[0] == 200
    assert http(f"{api.url}/api/v1/namespaces", "POST", {"metadata": {"name": "x"}})[0] == 201
    assert http(f"{api.url}/api/v1/namespaces/default/services", "POST", service("web"))[0] == 503
    assert http(f"{api.url}/api/v1/namespaces/default/services", "POST", service("web"))[0] == 201


def test_fail_next_also_fails_watch_requests(api: KubeApiEmulator) -> None:
    api.fail_next(1)
    status, _, _ = http(f"{api.url}/api/v1/services?watch=1")
    assert status == 500


def test_a_held_reply_comes_after_the_watch_saw_the_write_and_what_followed(api: KubeApiEmulator) -> None:
    events: list[str] = []
    start = api.store.resource_version

    def consume() -> None:
        url = f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={start}"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response:
                event = json.loads(line)
                events.append(
                    f"{event['type']} {event['object']['metadata'].get('deletionTimestamp') is None}"
                )
                if event["type"] == "DELETED":
                    return

    watcher = threading.Thread(target=consume)
    watcher.start()
    eventually(lambda: api.open_watches == 1)
    api.hold_replies(1, 2.0, methods=["POST"], path_contains="/services")
    replies: list[int] = []
    writer = threading.Thread(
        target=lambda: replies.append(
            http(f"{api.url}/api/v1/namespaces/default/services", "POST", service("web"))[0]
        )
    )
    writer.start()
    eventually(lambda: api.holding == 1)
    assert api.store.find("services", "web", namespace="default") is not None, "carried out before the reply"
    api.store.delete("services", "web", namespace="default")
    watcher.join(timeout=5)
    assert events == ["ADDED True", "DELETED True"] and replies == [], (
        "the watch saw both; the writer nothing"
    )
    writer.join(timeout=5)
    assert replies == [201] and api.holding == 0


def test_pause_hang_holds_requests_until_resume(api: KubeApiEmulator) -> None:
    api.pause()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        http(f"{api.url}/api/v1/namespaces", timeout=0.3)
    held: list[int] = []
    thread = threading.Thread(target=lambda: held.append(http(f"{api.url}/api/v1/namespaces")[0]))
    thread.start()
    api.resume()
    thread.join(timeout=5)
    assert held == [200]


def test_pause_hang_holds_watch_events(api: KubeApiEmulator) -> None:
    received: list[dict[str, Any]] = []
    start = api.store.resource_version

    def consume() -> None:
        url = f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={start}"
        with urllib.request.urlopen(url, timeout=10) as response:
            received.append(json.loads(next(response)))

    thread = threading.Thread(target=consume)
    thread.start()
    eventually(lambda: api.open_watches == 1)
    api.pause()
    api.store.create(service("web"))
    assert received == []
    api.resume()
    thread.join(timeout=5)
    assert received[0]["object"]["metadata"]["name"] == "web"


def test_pause_refuse_refuses_connections_until_resume(api: KubeApiEmulator) -> None:
    url = api.url
    api.pause(mode="refuse")
    with pytest.raises(urllib.error.URLError) as raised:
        http(f"{url}/version")
    assert isinstance(raised.value.reason, ConnectionRefusedError)
    api.resume()
    assert api.url == url
    assert http(f"{url}/version")[0] == 200


def test_admin_paths_drive_the_hooks_from_another_process(api: KubeApiEmulator) -> None:
    admin = f"{api.url}/_emulator"
    old = api.store.resource_version
    api.store.create(service("web"))
    status, _, body = http(f"{admin}/compact", "POST", b"")
    assert status == 200 and body["compactedResourceVersion"] == api.store.resource_version
    status, _, body = http(f"{api.url}/api/v1/services?watch=1&resourceVersion={old}")
    assert (status, body["type"], body["object"]["code"]) == (200, "ERROR", 410)

    assert http(f"{admin}/fail?count=1&code=429&retryAfter=2", "POST", b"")[2]["pendingFailures"] == 1
    assert http(f"{api.url}/version")[0] == 429
    assert http(f"{admin}/close-watches", "POST", b"")[2] == {"closed": 0}
    assert http(f"{admin}/pause?mode=refuse&seconds=0.2", "POST", b"")[2]["paused"] == "refuse"
    eventually(lambda: api.faults.pause_mode is None, timeout=5)
    assert http(f"{api.url}/version")[0] == 200
    assert http(f"{admin}/pause?mode=hang", "POST", b"")[0] == 200
    state = http(f"{admin}/state")[2]  # admin paths bypass the pause
    assert state["paused"] == "hang"
    assert http(f"{admin}/resume", "POST", b"")[2]["paused"] is None
    assert http(f"{admin}/pause?mode=sideways", "POST", b"")[0] == 400


def test_command_prints_url_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcsdns_sandbox.kubeapi",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--cluster-id",
            "east",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        status, _, body = http(
            f"{url}/apis/about.k8s.io/v1alpha1/clusterproperties/cluster.clusterset.k8s.io"
        )
        assert (status, body["spec"]["value"]) == (200, "east")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr

"""Fixtures for the Kubernetes API emulator tests: a running emulator, the official client bound to it over
HTTP, and ``kubectl`` pointed at it through a kubeconfig. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeapi_helpers import Kubectl
from kubernetes import client, config

from mcsdns_sandbox.kubeapi import KubeApiEmulator


@pytest.fixture
def api() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(bookmark_interval=0.2, seed=7) as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(api: KubeApiEmulator, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def slices(api_client: client.ApiClient) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client)


@pytest.fixture
def leases(api_client: client.ApiClient) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api_client)


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is not installed (Debian package kubectl or kubernetes-client)")

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A private discovery cache: ports are reused across tests, cached discovery must not be.
        command = [
            binary,
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(tmp_path / "kube-cache"),
            *args,
        ]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    return run

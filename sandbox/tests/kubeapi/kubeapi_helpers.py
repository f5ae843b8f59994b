"""Helpers shared by the emulator tests: bounded polling and small object builders."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

MCS = "multicluster.x-k8s.io"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
"""The ``kubectl`` fixture: run(*args, stdin=None, check=True)."""


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}], **spec},
    }


def service_import(
    name: str, *, version: str = "v1alpha1", type_: str = "ClusterSetIP", **extra: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{MCS}/{version}",
        "kind": "ServiceImport",
        "metadata": {"name": name},
        "spec": {"type": type_, "ports": [{"port": 80}]},
    }
    obj.update(extra)
    return obj


def endpoint_slice(name: str, *addresses: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": labels or {}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def http(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    content_type: str = "application/json",
    accept: str = "application/json",
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """One raw request; returns (status, headers, decoded JSON body or text) for 2xx and errors alike."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type, "Accept": accept}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
        exc.close()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode()

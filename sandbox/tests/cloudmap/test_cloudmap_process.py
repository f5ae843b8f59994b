"""The embedded Cloud Map from another process's point of view: the ``python -m mcsdns_sandbox.cloudmap``
command, a boto3 client configured by environment variables alone, and why
AWS_DISABLE_HOST_PREFIX_INJECTION is one of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import create_namespace, create_service, make_client

# Variables that could point a client somewhere else than the emulator.
_AWS_NOISE = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
)


class _Sent(Exception):
    """Raised from botocore's before-send hook to stop a request after seeing where it would go."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def _url_of_discover(client: Any) -> str:
    def capture(request: Any, **_: Any) -> None:
        raise _Sent(request.url)

    client.meta.events.register("before-send.servicediscovery.DiscoverInstances", capture)
    with pytest.raises(_Sent) as sent:
        client.discover_instances(NamespaceName="demo", ServiceName="nginx")
    return sent.value.url


def _env_client(cloudmap: EmbeddedCloudMap, monkeypatch: pytest.MonkeyPatch, **overrides: str | None) -> Any:
    for name in _AWS_NOISE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in {**cloudmap.env(), **overrides}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return boto3.session.Session().client("servicediscovery")


def test_without_the_variable_botocore_prefixes_the_host_with_data(
    cloudmap: EmbeddedCloudMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _env_client(cloudmap, monkeypatch, AWS_DISABLE_HOST_PREFIX_INJECTION=None)
    try:
        assert _url_of_discover(client).startswith(f"http://data-{cloudmap.host}:{cloudmap.port}")
    finally:
        client.close()


def test_a_client_configured_by_env_alone_reaches_the_emulator(
    cloudmap: EmbeddedCloudMap, sd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service_id = create_service(sd, create_namespace(sd, "demo"), "nginx")
    sd.register_instance(ServiceId=service_id, InstanceId="i1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"})

    client = _env_client(cloudmap, monkeypatch)
    try:
        assert _url_of_discover(client).startswith(f"{cloudmap.endpoint_url}/")
    finally:
        client.close()
    client = _env_client(cloudmap, monkeypatch)
    try:
        response = client.discover_instances(NamespaceName="demo", ServiceName="nginx")
        assert [i["InstanceId"] for i in response["Instances"]] == ["i1"]
        assert client.meta.region_name == cloudmap.region
    finally:
        client.close()


@pytest.fixture
def command() -> Iterator[tuple[subprocess.Popen[str], str, dict[str, str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcsdns_sandbox.cloudmap", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        env: dict[str, str] = {}
        for line in iter(proc.stdout.readline, ""):
            if line.strip() == "ready":
                break
            key, _, value = line.strip().partition("=")
            env[key] = value
        assert url.startswith("http://127.0.0.1:"), (
            url,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        yield proc, url, env
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


_CHILD = textwrap.dedent(
    """
    import json, boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    sd = boto3.client("servicediscovery", config=Config(retries={"total_max_attempts": 1}))
    out = {}
    try:
        sd.list_namespaces()
    except ClientError as exc:
        out["throttled"] = exc.response["Error"]["Code"]
    op = sd.create_http_namespace(Name="demo")["OperationId"]
    ns = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    svc = sd.create_service(Name="nginx", NamespaceId=ns)["Service"]["Id"]
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"})
    found = sd.discover_instances(NamespaceName="demo", ServiceName="nginx")["Instances"]
    out["instances"] = [i["InstanceId"] for i in found]
    print(json.dumps(out))
    """
)


def test_command_prints_the_endpoint_and_env_and_serves_another_process(
    command: tuple[subprocess.Popen[str], str, dict[str, str]],
) -> None:
    proc, url, env = command
    assert env["AWS_ENDPOINT_URL_SERVICEDISCOVERY"] == url
    assert env["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
    assert {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env.keys()

    throttle = urllib.request.Request(
        f"{url}/_mcsdns/throttle", data=json.dumps({"n": 1, "operations": ["ListNamespaces"]}).encode()
    )
    with urllib.request.urlopen(throttle, timeout=5) as response:
        assert response.status == 200

    child_env = {k: v for k, v in os.environ.items() if k not in _AWS_NOISE}
    child_env.update(env, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], env=child_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == {"throttled": "ThrottlingException", "instances": ["i1"]}

    with urllib.request.urlopen(f"{url}/_mcsdns/calls", timeout=5) as response:
        calls = json.loads(response.read())
    assert calls["ListNamespaces"] == 1
    assert calls["DiscoverInstances"] == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_command_exits_on_sigint(command: tuple[subprocess.Popen[str], str, dict[str, str]]) -> None:
    proc, _, _ = command
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_helper_client_and_env_agree(cloudmap: EmbeddedCloudMap) -> None:
    client = make_client(cloudmap)
    try:
        assert client.meta.endpoint_url == cloudmap.env()["AWS_ENDPOINT_URL_SERVICEDISCOVERY"]
    finally:
        client.close()

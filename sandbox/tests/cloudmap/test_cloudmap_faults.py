"""Fault hooks of the embedded Cloud Map: throttling and server errors shaped as AWS sends them, outages on
the same port, the per-operation call counter, the admin HTTP paths, and per-emulator isolation."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import create_namespace, create_service, error_code, http_status, make_client


@pytest.fixture
def demo(sd: Any) -> str:
    service_id = create_service(sd, create_namespace(sd, "demo"), "nginx")
    sd.register_instance(ServiceId=service_id, InstanceId="i1", Attributes={"A": "1"})
    return service_id


def discover(sd: Any) -> Any:
    return sd.discover_instances(NamespaceName="demo", ServiceName="nginx")


def admin(cloudmap: EmbeddedCloudMap, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{cloudmap.endpoint_url}/_mcsdns/{path}", data=data, method="POST" if data else "GET"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def refused(cloudmap: EmbeddedCloudMap) -> bool:
    try:
        socket.create_connection((cloudmap.host, cloudmap.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# --- throttling ---------------------------------------------------------------------------------------------
def test_control_plane_throttling_is_a_400_throttling_exception(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    cloudmap.throttle_next(2)
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            sd.list_namespaces()
        assert error_code(exc.value) == "ThrottlingException"
        assert exc.value.response["Error"]["Message"] == "Rate exceeded"
        assert http_status(exc.value) == 400
    assert sd.list_namespaces()["Namespaces"] == []


def test_discover_throttling_is_the_documented_429_request_limit_exceeded(
    cloudmap: EmbeddedCloudMap, sd: Any, demo: str
) -> None:
    cloudmap.throttle_next(1)
    with pytest.raises(sd.exceptions.RequestLimitExceeded) as exc:
        discover(sd)
    assert http_status(exc.value) == 429

    cloudmap.throttle_next(1, code="ThrottlingException")
    with pytest.raises(ClientError) as forced:
        sd.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")
    assert error_code(forced.value) == "ThrottlingException"


def test_throttle_only_the_named_operations(cloudmap: EmbeddedCloudMap, sd: Any, demo: str) -> None:
    cloudmap.throttle_next(1, operations=["DiscoverInstances"])
    sd.list_namespaces()
    sd.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")
    with pytest.raises(ClientError):
        discover(sd)
    assert [i["InstanceId"] for i in discover(sd)["Instances"]] == ["i1"]
    assert cloudmap.faults.pending() == 0


def test_botocore_retries_the_throttled_call(cloudmap: EmbeddedCloudMap, demo: str) -> None:
    client = make_client(cloudmap, retries={"mode": "standard", "total_max_attempts": 2})
    try:
        cloudmap.reset_calls()
        cloudmap.throttle_next(1)
        response = discover(client)
        assert response["ResponseMetadata"]["RetryAttempts"] == 1
        assert cloudmap.calls() == {"DiscoverInstances": 2}
    finally:
        client.close()


# --- server errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalFailure"), (503, "ServiceUnavailable"), (502, "502"), (504, "504")]
)
def test_fail_next(cloudmap: EmbeddedCloudMap, sd: Any, status: int, code: str) -> None:
    cloudmap.fail_next(1, status=status)
    with pytest.raises(ClientError) as exc:
        sd.list_namespaces()
    assert (http_status(exc.value), error_code(exc.value)) == (status, code)
    sd.list_namespaces()


def test_faults_queue_in_order_and_clear(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    cloudmap.fail_next(1, status=500)
    cloudmap.throttle_next(1)
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            sd.list_namespaces()
        codes.append(error_code(exc.value))
    assert codes == ["InternalFailure", "ThrottlingException"]
    cloudmap.throttle_next(5)
    cloudmap.clear_faults()
    sd.list_namespaces()


@pytest.mark.parametrize(
    "call",
    [
        lambda cm: cm.throttle_next(-1),
        lambda cm: cm.throttle_next(1, code="SlowDown"),
        lambda cm: cm.fail_next(1, status=200),
    ],
)
def test_bad_fault_arguments_are_refused(cloudmap: EmbeddedCloudMap, call: Any) -> None:
    with pytest.raises(ValueError):
        call(cloudmap)


# --- outages ------------------------------------------------------------------------------------------------
def test_stop_refuses_connections_and_start_serves_the_same_state_on_the_same_port(
    cloudmap: EmbeddedCloudMap, sd: Any, demo: str
) -> None:
    port = cloudmap.port
    cloudmap.stop()
    assert not cloudmap.running
    assert refused(cloudmap)
    with pytest.raises(EndpointConnectionError):
        sd.list_namespaces()

    cloudmap.start()
    assert cloudmap.port == port
    assert [i["InstanceId"] for i in discover(sd)["Instances"]] == ["i1"]


def test_outage_ends_by_itself(cloudmap: EmbeddedCloudMap, sd: Any, demo: str) -> None:
    restart = cloudmap.outage(0.2)
    assert refused(cloudmap)
    restart.join(timeout=5)
    assert cloudmap.running
    assert discover(sd)["Instances"]


# --- call counter -------------------------------------------------------------------------------------------
def test_calls_count_every_attempt_per_operation(cloudmap: EmbeddedCloudMap, sd: Any, demo: str) -> None:
    cloudmap.reset_calls()
    assert cloudmap.calls() == {}
    for _ in range(3):
        sd.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")
    discover(sd)
    cloudmap.throttle_next(1, operations=["ListNamespaces"])
    with pytest.raises(ClientError):
        sd.list_namespaces()
    assert cloudmap.calls() == {"DiscoverInstancesRevision": 3, "DiscoverInstances": 1, "ListNamespaces": 1}
    admin(cloudmap, "calls")  # admin requests are not API calls
    assert sum(cloudmap.calls().values()) == 5


# --- admin HTTP paths ---------------------------------------------------------------------------------------
def test_admin_paths_drive_the_same_hooks(cloudmap: EmbeddedCloudMap, sd: Any, demo: str) -> None:
    assert admin(cloudmap, "health") == (200, {"ok": True})
    assert admin(cloudmap, "calls/reset", {}) == (200, {"ok": True})

    admin(cloudmap, "throttle", {"n": 1, "operations": ["ListServices"]})
    with pytest.raises(ClientError) as exc:
        sd.list_services()
    assert error_code(exc.value) == "ThrottlingException"

    admin(cloudmap, "fail", {"n": 1, "status": 503})
    with pytest.raises(ClientError) as failed:
        sd.list_services()
    assert http_status(failed.value) == 503

    admin(cloudmap, "throttle", {"n": 3})
    admin(cloudmap, "faults/clear", {})
    sd.list_services()
    assert admin(cloudmap, "calls") == (200, {"ListServices": 3})

    with pytest.raises(urllib.error.HTTPError) as bad:
        admin(cloudmap, "throttle", {"n": -2})
    assert bad.value.code == 400
    bad.value.close()

    status, _ = admin(cloudmap, "outage", {"seconds": 0.2})
    assert status == 202
    assert refused(cloudmap)


def test_admin_reset_forgets_everything(cloudmap: EmbeddedCloudMap, sd: Any, demo: str) -> None:
    admin(cloudmap, "reset", {})
    assert sd.list_namespaces()["Namespaces"] == []
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        discover(sd)


# --- isolation ----------------------------------------------------------------------------------------------
def test_emulators_in_one_process_do_not_share_state(sd: Any, demo: str) -> None:
    with EmbeddedCloudMap() as other:
        client = make_client(other)
        try:
            assert client.list_namespaces()["Namespaces"] == []
            create_namespace(client, "elsewhere")
        finally:
            client.close()
    assert [ns["Name"] for ns in sd.list_namespaces()["Namespaces"]] == ["demo"]


def test_close_wipes_the_account(cloudmap: EmbeddedCloudMap) -> None:
    with EmbeddedCloudMap(account_id="111122223333") as first:
        client = make_client(first)
        create_namespace(client, "demo")
        client.close()
    with EmbeddedCloudMap(account_id="111122223333") as second:
        client = make_client(second)
        assert client.list_namespaces()["Namespaces"] == []
        client.close()
    with pytest.raises(RuntimeError):
        first.start()


def test_a_busy_port_raises_oserror() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(OSError):
        EmbeddedCloudMap(port=taken.getsockname()[1]).start()

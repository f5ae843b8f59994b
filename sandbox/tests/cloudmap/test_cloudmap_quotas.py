"""Quota enforcement of the embedded Cloud Map: token buckets per account, shared by every client, answering
RequestLimitExceeded (DiscoverInstances, DiscoverInstancesRevision) or ThrottlingException (control plane).

The arithmetic is checked with an injected clock (integer nanoseconds), so nothing here depends on how fast
the machine is; one test refills on the real clock.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mcsdns_sandbox.cloudmap import REQUEST_LIMIT_EXCEEDED, EmbeddedCloudMap
from mcsdns_sandbox.cloudmap.quotas import (
    CONTROL_READ,
    CONTROL_WRITE,
    DEFAULT_LIMITS,
    DISCOVER,
    DISCOVER_REVISION,
    QuotaLimit,
    Quotas,
    bucket_of,
)

from .helpers import create_namespace, create_service, error_code, http_status, make_client

MS = 1_000_000  # nanoseconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def advance(self, nanos: int) -> None:
        self.now += nanos


def takes(quotas: Quotas, n: int, operation: str = DISCOVER, account: str = "111111111111") -> list[bool]:
    return [quotas.take(account, operation) is None for _ in range(n)]


# --- the arithmetic, in process -----------------------------------------------------------------------------
def test_buckets_of_operations() -> None:
    assert bucket_of("DiscoverInstances") == DISCOVER
    assert bucket_of("DiscoverInstancesRevision") == DISCOVER_REVISION
    assert {bucket_of(op) for op in ("ListServices", "GetOperation", "ListOperations")} == {CONTROL_READ}
    assert {bucket_of(op) for op in ("RegisterInstance", "CreateService", "TagResource")} == {CONTROL_WRITE}
    # The documented figures: "The bucket size for the DiscoverInstances API operation is 2,000 tokens, and
    # the refill rate is 1,000 tokens every second."; "DiscoverInstancesRevision operation per account rate:
    # 3,000".
    assert (DEFAULT_LIMITS[DISCOVER].rate, DEFAULT_LIMITS[DISCOVER].burst) == (1000, 2000)
    assert DEFAULT_LIMITS[DISCOVER_REVISION].rate == 3000


def test_a_full_bucket_gives_its_burst_then_refills_exactly() -> None:
    clock = FakeClock()
    quotas = Quotas(enabled=True, clock=clock)
    assert all(takes(quotas, 2000))
    reply = quotas.take("111111111111", DISCOVER)
    assert reply is not None and reply.status == 429 and reply.throttle
    assert json.loads(reply.body)["__type"] == REQUEST_LIMIT_EXCEEDED

    clock.advance(MS - 1)  # 0.999999 of a token at 1,000/s: not a whole one
    assert takes(quotas, 1) == [False]
    clock.advance(1)  # exactly one token after exactly 1 ms
    assert takes(quotas, 2) == [True, False]

    clock.advance(250 * MS)  # 250 tokens
    assert sum(takes(quotas, 300)) == 250

    clock.advance(60 * 10**9)  # a minute idle: refill stops at the bucket size
    assert sum(takes(quotas, 2500)) == 2000


def test_scale_and_overrides() -> None:
    clock = FakeClock()
    quotas = Quotas(enabled=True, scale=0.01, clock=clock)
    assert quotas.effective(DISCOVER) == (Fraction(10), Fraction(20))
    assert quotas.effective(CONTROL_WRITE) == (Fraction(1, 2), Fraction(1))
    assert sum(takes(quotas, 30)) == 20
    clock.advance(100 * MS)  # 0.1 s at 10/s
    assert takes(quotas, 2) == [True, False]
    # 0.5/s: the next write token takes 2 s.
    assert takes(quotas, 2, "CreateService") == [True, False]
    clock.advance(1999 * MS)
    assert takes(quotas, 1, "CreateService") == [False]
    clock.advance(MS)
    assert takes(quotas, 1, "CreateService") == [True]

    quotas.configure(scale=1, limits={DISCOVER: QuotaLimit(rate=3, burst=2, code="ThrottlingException")})
    assert takes(quotas, 3) == [True, True, False]
    reply = quotas.take("111111111111", DISCOVER)
    assert reply is not None and reply.status == 400
    with pytest.raises(ValueError):
        quotas.configure(limits={"Nope": QuotaLimit(1, 1, REQUEST_LIMIT_EXCEEDED)})
    with pytest.raises(ValueError):
        QuotaLimit(0, 1, REQUEST_LIMIT_EXCEEDED)


def test_buckets_are_per_account_and_per_bucket() -> None:
    quotas = Quotas(enabled=True, scale=0.001, clock=FakeClock())  # Discover 1/s burst 2
    assert takes(quotas, 3, account="111111111111") == [True, True, False]
    assert takes(quotas, 3, account="222222222222") == [True, True, False]
    assert takes(quotas, 1, DISCOVER_REVISION, account="111111111111") == [True]
    assert takes(quotas, 1, "ListServices", account="111111111111") == [True]


def test_disabled_quotas_never_throttle() -> None:
    quotas = Quotas(enabled=False, scale=0.0001, clock=FakeClock())
    assert all(takes(quotas, 100))


# --- over HTTP ----------------------------------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[EmbeddedCloudMap]:
    """An emulator with one namespace, service and instance, made before quotas are switched on."""
    with EmbeddedCloudMap(seed=7, quota_clock=clock) as emulator:
        sd = make_client(emulator)
        service_id = create_service(sd, create_namespace(sd, "demo"), "nginx")
        sd.register_instance(ServiceId=service_id, InstanceId="i1", Attributes={})
        sd.close()
        # DiscoverInstances 2/s burst 4, DiscoverInstancesRevision 6/s burst 12, control plane burst 1.
        emulator.set_quotas(True, scale=0.002)
        yield emulator


def discover(sd: Any, **kwargs: Any) -> Any:
    return sd.discover_instances(NamespaceName="demo", ServiceName="nginx", **kwargs)


def test_clients_of_one_account_share_its_bucket(
    limited: EmbeddedCloudMap, clock: FakeClock, new_client: Callable[..., Any]
) -> None:
    first, second = new_client(limited), new_client(limited)
    for sd in (first, second, first, second):
        discover(sd)
    with pytest.raises(ClientError) as exc:
        discover(second)
    assert (error_code(exc.value), http_status(exc.value)) == ("RequestLimitExceeded", 429)
    with pytest.raises(ClientError):
        discover(first)

    clock.advance(500 * MS)  # one token at 2/s
    discover(first)
    with pytest.raises(ClientError):
        discover(second)
    # The revision has its own bucket.
    assert second.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")["InstancesRevision"]
    assert limited.throttled() == {"DiscoverInstances": 3}
    assert limited.calls()["DiscoverInstances"] == 8


def test_control_plane_throttling_is_a_400_throttling_exception(
    limited: EmbeddedCloudMap, clock: FakeClock, new_client: Callable[..., Any]
) -> None:
    sd = new_client(limited)
    sd.list_namespaces()
    with pytest.raises(ClientError) as exc:
        sd.list_services()  # the same read bucket, burst 1
    assert (error_code(exc.value), http_status(exc.value)) == ("ThrottlingException", 400)
    sd.create_http_namespace(Name="other")  # writes have their own bucket
    with pytest.raises(ClientError) as write:
        sd.create_http_namespace(Name="third")
    assert error_code(write.value) == "ThrottlingException"
    clock.advance(10**9)  # reads refill at 0.2/s: not yet
    with pytest.raises(ClientError):
        sd.list_namespaces()
    clock.advance(4 * 10**9)
    assert len(sd.list_namespaces()["Namespaces"]) == 2
    assert limited.throttled() == {"ListServices": 1, "CreateHttpNamespace": 1, "ListNamespaces": 1}


def test_another_account_has_its_own_bucket(
    limited: EmbeddedCloudMap, new_client: Callable[..., Any]
) -> None:
    owner = new_client(limited)
    for _ in range(4):
        discover(owner)
    with pytest.raises(ClientError):
        discover(owner)
    other = new_client(limited, account_id=limited.add_account())
    with pytest.raises(other.exceptions.NamespaceNotFound):  # not throttled: its bucket is full
        discover(other)


def test_quotas_refill_on_the_real_clock(new_client: Callable[..., Any]) -> None:
    limits = {DISCOVER: QuotaLimit(rate=20, burst=1, code=REQUEST_LIMIT_EXCEEDED)}
    with EmbeddedCloudMap(enforce_quotas=True, quota_limits=limits) as emulator:
        sd = new_client(emulator)
        with pytest.raises(sd.exceptions.NamespaceNotFound):
            discover(sd)  # answered (not throttled), with the namespace missing
        with pytest.raises(sd.exceptions.RequestLimitExceeded):
            discover(sd)
        time.sleep(0.06)  # 1.2 tokens at 20/s
        with pytest.raises(sd.exceptions.NamespaceNotFound):
            discover(sd)


def admin(cloudmap: EmbeddedCloudMap, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{cloudmap.endpoint_url}/_mcsdns/{path}", data=data, method="POST" if data else "GET"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_quotas_over_the_admin_paths(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    assert admin(cloudmap, "quotas")["enabled"] is False
    state = admin(cloudmap, "quotas", {"enabled": True, "scale": 0.001})
    assert state["limits"]["DiscoverInstances"] == {"rate": 1.0, "burst": 2.0, "code": "RequestLimitExceeded"}
    state = admin(cloudmap, "quotas", {"scale": 1, "limits": {"ControlPlaneRead": {"rate": 1, "burst": 2}}})
    assert state["limits"]["ControlPlaneRead"]["burst"] == 2.0
    sd.list_namespaces()
    sd.list_namespaces()
    with pytest.raises(ClientError):
        sd.list_namespaces()
    assert admin(cloudmap, "throttled") == {"ListNamespaces": 1}
    assert 0 <= admin(cloudmap, "quotas")["tokens"][cloudmap.account_id]["ControlPlaneRead"] < 1
    admin(cloudmap, "calls/reset", {"x": 1})
    assert admin(cloudmap, "throttled") == {}
    admin(cloudmap, "quotas", {"enabled": False})
    assert sd.list_namespaces()["Namespaces"] == []


def test_injected_throttles_are_counted_as_throttled(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    cloudmap.throttle_next(2, operations=["ListServices"])
    cloudmap.fail_next(1, operations=["ListServices"])
    for _ in range(3):
        with pytest.raises(ClientError):
            sd.list_services()
    assert cloudmap.throttled() == {"ListServices": 2}

"""Concurrent clients of the embedded Cloud Map: reads are answered together, a write alone and whole.

Measured over HTTP with separate boto3 clients (separate connections, so separate server threads). A call is
kept inside the state lock by ``hold_next`` (deterministic: the test decides when it ends) or ``delay_next``
(a fixed sleep, to compare wall times). Sleeping releases the GIL, so what these tests show is that nothing
queues behind a slow call that need not; CPU-bound work is still one thread at a time in CPython.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import create_namespace, create_service, discovered

SETTLE = 0.3  # how long a call that should be waiting is given to (wrongly) finish


@pytest.fixture
def demo(sd: Any) -> str:
    service_id = create_service(sd, create_namespace(sd, "demo"), "nginx")
    sd.register_instance(ServiceId=service_id, InstanceId="i1", Attributes={"A": "1"})
    return service_id


def clients(new_client: Callable[..., Any], cloudmap: EmbeddedCloudMap, n: int) -> list[Any]:
    out = [new_client(cloudmap) for _ in range(n)]
    for client in out:
        client.list_namespaces()  # open each client's connection now, not inside the measured window
    return out


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_held_read_does_not_block_another_clients_read(
    cloudmap: EmbeddedCloudMap, sd: Any, demo: str, new_client: Callable[..., Any]
) -> None:
    (other,) = clients(new_client, cloudmap, 1)
    hold = cloudmap.hold_next(1, operations=["ListServices"], timeout=10)
    with ThreadPoolExecutor(1) as pool:
        held: Future[Any] = pool.submit(sd.list_services)
        assert hold.wait_entered(5)
        found, elapsed = timed(lambda: discovered(other, "demo", "nginx"))
        revision, _ = timed(
            lambda: other.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")
        )
        assert not held.done()  # the first read is still inside the lock, and the others were answered
        hold.release()
        assert [s["Id"] for s in held.result(5)["Services"]] == [demo]
    assert found == {"i1": {"A": "1"}}
    assert revision["InstancesRevision"] > 0
    assert elapsed < 2.0  # a queued read would have waited for the release, i.e. for ever here


def test_a_write_waits_for_a_held_read(
    cloudmap: EmbeddedCloudMap, sd: Any, demo: str, new_client: Callable[..., Any]
) -> None:
    (writer,) = clients(new_client, cloudmap, 1)
    hold = cloudmap.hold_next(1, operations=["ListServices"], timeout=10)
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(sd.list_services)
        assert hold.wait_entered(5)
        write = pool.submit(writer.register_instance, ServiceId=demo, InstanceId="i2", Attributes={})
        time.sleep(SETTLE)
        assert not write.done()  # a write never runs beside a reader of moto's state
        hold.release()
        assert write.result(5)["OperationId"]
        held.result(5)
    assert set(discovered(sd, "demo", "nginx")) == {"i1", "i2"}


def test_a_held_write_is_atomic_reads_wait_and_then_see_all_of_it(
    cloudmap: EmbeddedCloudMap, sd: Any, demo: str, new_client: Callable[..., Any]
) -> None:
    (reader,) = clients(new_client, cloudmap, 1)
    hold = cloudmap.hold_next(1, operations=["RegisterInstance"], timeout=10)
    with ThreadPoolExecutor(2) as pool:
        write = pool.submit(sd.register_instance, ServiceId=demo, InstanceId="i2", Attributes={"B": "2"})
        assert hold.wait_entered(5)
        read = pool.submit(discovered, reader, "demo", "nginx")
        time.sleep(SETTLE)
        assert not read.done()
        hold.release()
        write.result(5)
        assert read.result(5) == {"i1": {"A": "1"}, "i2": {"B": "2"}}


def test_slow_reads_of_many_clients_overlap_and_slow_writes_do_not(
    cloudmap: EmbeddedCloudMap, demo: str, new_client: Callable[..., Any]
) -> None:
    n, delay = 8, 0.25
    many = clients(new_client, cloudmap, n)
    cloudmap.delay_next(n, delay, operations=["DiscoverInstances"])
    with ThreadPoolExecutor(n) as pool:
        results, reads = timed(lambda: list(pool.map(lambda c: discovered(c, "demo", "nginx"), many)))
    assert results == [{"i1": {"A": "1"}}] * n
    # One at a time would take n * delay = 2 s; together they take one delay plus the answering.
    assert delay <= reads < delay * 3, f"{n} reads of {delay}s each took {reads:.2f}s"

    writers = many[:4]
    cloudmap.delay_next(len(writers), delay, operations=["RegisterInstance"])
    with ThreadPoolExecutor(len(writers)) as pool:
        _, writes = timed(
            lambda: list(
                pool.map(
                    lambda ic: ic[1].register_instance(ServiceId=demo, InstanceId=f"w{ic[0]}", Attributes={}),
                    enumerate(writers),
                )
            )
        )
    assert writes >= len(writers) * delay, f"{len(writers)} writes of {delay}s each took {writes:.2f}s"
    assert len(discovered(many[0], "demo", "nginx")) == 1 + len(writers)


def test_the_delay_admin_path_slows_the_next_call(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    request = urllib.request.Request(
        f"{cloudmap.endpoint_url}/_mcsdns/delay",
        data=json.dumps({"n": 1, "seconds": 0.2, "operations": ["ListNamespaces"]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    _, slow = timed(sd.list_namespaces)
    _, fast = timed(sd.list_namespaces)
    assert slow >= 0.2 > fast


def test_clearing_faults_lets_a_held_call_go_on(cloudmap: EmbeddedCloudMap, sd: Any) -> None:
    hold = cloudmap.hold_next(1, operations=["ListNamespaces"], timeout=10)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(sd.list_namespaces)
        assert hold.wait_entered(5)
        cloudmap.clear_faults()
        assert held.result(2)["Namespaces"] == []

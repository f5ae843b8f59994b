"""Cloud Map at clusterset scale, end to end on real clusters and the embedded Cloud Map: what is not
announced arrives within the staleness bound, a throttling storm removes nothing, one budget paces export
and import together, and a burst of exports converges (through a restart) without duplicates."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mcsdns.clients.budget import RateBudget
from mcsdns.clients.cloudmap import CloudMapClient
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.controlplane import ControlPlane
from tests.integration import test_cloudmap
from tests.integration.test_cloudmap import (
    Cluster,
    engine_settings,
    export,
    imported_clusters,
    instances,
    local_slice,
    sd_client,
    tutorial_clusters,
)
from tests.realkube import CLUSTERSET
from tests.support import ServerThread, aws_controller_attributes, wait_for


def tuned(cluster: Cluster, cloudmap: EmbeddedCloudMap, **cloudmap_settings: Any) -> Any:
    settings = engine_settings(cluster, cloudmap)
    return replace(settings, cloudmap=replace(settings.cloudmap, **cloudmap_settings))


cloudmap = test_cloudmap.cloudmap  # the embedded Cloud Map, its environment set for the engines


@pytest.fixture
def planes(
    cloudmap: EmbeddedCloudMap, real_clusters: dict[str, ControlPlane], tmp_path: Path
) -> dict[str, Cluster]:
    return tutorial_clusters(real_clusters, tmp_path)


def test_a_write_no_beacon_announces_is_imported_within_the_staleness_bound(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1, cls2 = planes["cls1"], planes["cls2"]
    bound = 3.0
    with (
        ServerThread(tuned(cls1, cloudmap, max_staleness=bound)) as s1,
        ServerThread(tuned(cls2, cloudmap, max_staleness=bound)) as s2,
    ):
        cls1.server, cls2.server = s1, s2
        export(cls1)
        wait_for(
            lambda: imported_clusters(cls2) == ["cls1"], what="cls1's export imported through its beacon"
        )
        # A cluster run by the AWS controller registers into the same service and announces nothing.
        client = sd_client(cloudmap)
        service_id = next(s["Id"] for s in client.list_services()["Services"] if s["Name"] == "nginx-hello")
        registered = time.monotonic()
        client.register_instance(
            ServiceId=service_id,
            InstanceId="aws-controller-1",
            Attributes=aws_controller_attributes(address="10.30.0.9", cluster="aws1", clusterset=CLUSTERSET),
        )
        wait_for(
            lambda: imported_clusters(cls2) == ["aws1", "cls1"],
            timeout=bound + 10,
            what="the sweep to find the AWS controller's instance",
        )
        took = time.monotonic() - registered
        assert s2.app is not None
        importer = s2.app.controllers[1]
        assert took <= bound + 2 * 0.3 + 1.0, f"found after {took:.1f}s, bound {bound}s"
        assert importer.oldest_unverified() <= bound + 1.0


def test_a_throttling_storm_keeps_answering_and_removes_nothing(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1, cls2 = planes["cls1"], planes["cls2"]
    with (
        ServerThread(tuned(cls1, cloudmap, max_staleness=2.0)) as s1,
        ServerThread(tuned(cls2, cloudmap, max_staleness=2.0)) as s2,
    ):
        cls1.server, cls2.server = s1, s2
        export(cls1)
        wait_for(lambda: cls2.answer() == [cls2.vip()], what="the import")
        before = (cls2.store.find("serviceimports", "nginx-hello", namespace="demo"), cls2.answer())
        # Every call of every client throttled for 4 s, with both codes AWS uses.
        cloudmap.throttle_next(100_000, code="RequestLimitExceeded", operations=["DiscoverInstances"])
        cloudmap.throttle_next(100_000, code="ThrottlingException")
        assert s2.app is not None and s2.app.cloudmap is not None
        quotas = s2.app.cloudmap.quotas
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            assert cls2.answer() == before[1], "DNS answers through the storm"
            time.sleep(0.2)
        # cls2 only reads (it exports nothing): the quotas it was refused by backed off, its writes' did not.
        backed_off = {group for group, quota in quotas.items() if quota.allowed < quota.limit}
        assert backed_off and "writes" not in backed_off, backed_off
        assert cloudmap.throttled(), "Cloud Map refused calls"
        after = cls2.store.find("serviceimports", "nginx-hello", namespace="demo")
        assert after is not None and before[0] is not None
        assert after["metadata"]["uid"] == before[0]["metadata"]["uid"], "the import was never removed"
        assert cls2.store.list(
            "endpointslices",
            namespace="demo",
            label_selector="multicluster.kubernetes.io/service-name=nginx-hello",
        ), "its slices neither"
        cloudmap.clear_faults()
        # After the storm, changes flow again.
        cls1.store.load([local_slice("nginx-hello-extra", "nginx-hello", "10.10.66.6")])
        wait_for(lambda: "tcp-10_10_66_6-80-cls1" in instances(cloudmap), timeout=30, what="the export after")


def exported(name: str, address: str) -> list[dict[str, Any]]:
    """A Service of one endpoint in namespace demo, its EndpointSlice, and its ServiceExport."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]},
        },
        local_slice(f"{name}-1", name, address),
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": "demo"},
        },
    ]


def _burst(count: int) -> list[dict[str, Any]]:
    return [
        obj for i in range(count) for obj in exported(f"burst-{i:04d}", f"10.50.{i // 250}.{i % 250 + 1}")
    ]


# 400 here keeps the suite's time; bench/cloudmap_scale_bench.py registers 5,000 exports (1,000 per cluster)
# and a 500-export burst, against the quotas.
BURST = 400


def test_an_export_burst_converges_through_a_restart_without_duplicates(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1 = planes["cls1"]
    settings = tuned(cls1, cloudmap, rate=400.0)
    cls1.store.load(_burst(BURST))
    client = sd_client(cloudmap)

    def registered() -> int:
        return sum(
            len(
                client.discover_instances(NamespaceName="demo", ServiceName=s["Name"], HealthStatus="ALL")[
                    "Instances"
                ]
            )
            for s in _services(client)
            if s["Name"].startswith("burst-")
        )

    with ServerThread(settings) as first:
        assert first.app is not None and first.app.controllers
        exporter = first.app.controllers[0]
        wait_for(
            lambda: sum(exporter.reconciles.results.values()) >= BURST // 3,
            timeout=120,
            what="a third of the burst",
        )
    # The process is gone mid-burst; the next one carries on from what Cloud Map and the cluster hold.
    with ServerThread(settings):
        wait_for(
            lambda: all(_ready(e) for e in cls1.store.list("serviceexports", namespace="demo")),
            timeout=240,
            what="every ServiceExport Ready",
        )
    names = [s["Name"] for s in _services(client) if s["Name"].startswith("burst-")]
    assert len(names) == len(set(names)) == BURST, "one Cloud Map service per export, none twice"
    assert registered() == BURST, "one instance per endpoint, none twice"


def _services(client: Any) -> list[dict[str, Any]]:
    return [s for page in client.get_paginator("list_services").paginate() for s in page["Services"]]


def _ready(export_obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (export_obj.get("status") or {}).get("conditions") or []
    )


def test_one_budget_paces_export_and_import_together(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    cls1 = planes["cls1"]
    rate = 40.0
    cls1.store.load(_burst(60))
    with ServerThread(tuned(cls1, cloudmap, rate=rate)) as s1:
        assert s1.app is not None and s1.app.cloudmap is not None
        wait_for(lambda: s1.app is not None and sum(s1.app.cloudmap.outcomes.values()) > 50, what="busy")
        cloudmap.reset_calls()
        window = 3.0
        time.sleep(window)
        made = sum(cloudmap.calls().values())
        assert made <= rate * window + rate + 5, f"{made} calls in {window}s at a budget of {rate}/s"
        assert made >= rate * window * 0.5, "the budget is used, not idle"
        assert s1.app.controllers[1].cycles >= 1, "the importer took its share while the exports ran"


def test_a_cluster_in_another_account_imports_and_exports_through_a_shared_namespace(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Account A owns namespace demo and shares it (AWS RAM); cls2 runs in account B with
    --cloudmap-owner-account A: it imports what A's clusters export and exports into A's namespace."""
    owner = cloudmap.account_id
    consumer = cloudmap.add_account("222233334444")
    client_a = sd_client(cloudmap)
    operation = client_a.create_http_namespace(Name="demo")["OperationId"]
    namespace_id = client_a.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"]
    service_id = client_a.create_service(Name="nginx-hello", NamespaceId=namespace_id)["Service"]["Id"]
    client_a.register_instance(
        ServiceId=service_id,
        InstanceId="aws-controller-1",
        Attributes=aws_controller_attributes(address="10.30.0.9", cluster="aws1", clusterset=CLUSTERSET),
    )
    cloudmap.share_namespace(namespace_id, consumer)
    # mcsdns's own namespace (heartbeats, change beacons) is the clusterset's too: A shares it as well.
    operation = client_a.create_http_namespace(Name="mcsdns.heartbeats")["OperationId"]
    cloudmap.share_namespace(
        client_a.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"], consumer
    )
    for key, value in cloudmap.env(consumer).items():
        monkeypatch.setenv(key, value)  # the engine below signs as account B
    cls2 = planes["cls2"]
    cls2.store.load(exported("web", "10.20.0.5"))
    with ServerThread(tuned(cls2, cloudmap, owner_account=owner)) as s2:
        cls2.server = s2
        wait_for(
            lambda: imported_clusters(cls2) == ["aws1"], what="account A's service imported in account B"
        )
        wait_for(
            lambda: "tcp-10_20_0_5-80-cls2" in instances(cloudmap, "web"),
            what="cls2's export registered in account A's namespace",
        )
    assert sorted(n["Name"] for n in client_a.list_namespaces()["Namespaces"]) == [
        "demo",
        "mcsdns.heartbeats",
    ], "account B made no namespace of its own"


def test_a_new_service_in_a_namespace_already_listed_stays_imported(
    planes: dict[str, Cluster], cloudmap: EmbeddedCloudMap
) -> None:
    """The second service of a namespace is first known from cls1's beacon, while cls2's service list (read
    again at most every 30 s) predates it: the import must stay, not come and go with each poll."""
    cls1, cls2 = planes["cls1"], planes["cls2"]
    with ServerThread(tuned(cls1, cloudmap)) as s1, ServerThread(tuned(cls2, cloudmap)) as s2:
        cls1.server, cls2.server = s1, s2
        export(cls1)
        wait_for(lambda: imported_clusters(cls2) == ["cls1"], what="the first service imported")
        cls1.store.load(_burst(1))
        wait_for(
            lambda: cls2.store.find("serviceimports", "burst-0000", namespace="demo") is not None,
            what="the second service imported",
        )
        first = cls2.store.get("serviceimports", "burst-0000", namespace="demo")["metadata"]["uid"]
        assert s2.app is not None
        importer = s2.app.controllers[1]
        cycles = importer.cycles
        wait_for(lambda: importer.cycles >= cycles + 5, what="five more polls")
        found = cls2.store.find("serviceimports", "burst-0000", namespace="demo")
        assert found is not None and found["metadata"]["uid"] == first, "imported once, and kept"


def test_service_lists_read_again_take_turns_within_their_share(cloudmap: EmbeddedCloudMap) -> None:
    # Twelve namespaces gain a service no beacon announced, so each one's ServiceCount moved. Alone, each
    # list would be read again within a second (one page, SERVICE_LIST_SECONDS_PER_PAGE); together the
    # re-reads take SERVICE_LIST_SHARE of the budget (2 pages/s at 20/s), the oldest list first, and every
    # namespace still gets its turn.
    client = sd_client(cloudmap)
    names = [f"team-{i:02d}" for i in range(12)]
    ids = []
    for name in names:
        operation = client.create_http_namespace(Name=name)["OperationId"]
        ids.append(client.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"])
        client.create_service(Name="first", NamespaceId=ids[-1])

    async def poll() -> tuple[list[float], dict[str, float]]:
        cm = CloudMapClient(region=cloudmap.region, budget=RateBudget(20.0))
        namespaces = await cm.namespaces()
        for name in names:
            assert "first" in await cm.services(namespaces[name])
        for namespace_id in ids:
            client.create_service(Name="late", NamespaceId=namespace_id)
        cloudmap.reset_calls()
        start, lists, seen = time.monotonic(), [], {}
        while time.monotonic() - start < 9.0 and len(seen) < len(names):
            namespaces = await cm.namespaces()
            for name in names:
                if "late" in await cm.services(namespaces[name]):
                    seen.setdefault(name, time.monotonic() - start)
            lists.append(cloudmap.calls().get("ListServices", 0))
            await asyncio.sleep(0.1)
        return lists, seen

    lists, seen = asyncio.run(poll())
    assert sorted(seen) == names, "every namespace's list was read again"
    assert lists[min(20, len(lists) - 1)] <= 2 * 2.0 + 2, f"{lists[:21]}: 2 pages/s over the first 2 s"

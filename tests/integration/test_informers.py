"""One list and one watch per resource per replica: the zone sources, the export and import controllers
and the ClusterProperty follower share the process's informers (controller-runtime's rule), instead of
each opening its own watch. Counted from the requests the emulated API server receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.integration.test_cloudmap import CLUSTERSET, TUTORIAL, Cluster, engine_settings
from tests.support import ApiRequests, ServerThread, query, wait_for


def test_a_replica_lists_and_watches_each_resource_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = ApiRequests()

    with (
        EmbeddedCloudMap() as cloudmap,
        KubeApiEmulator(cluster_name="cls1", cluster_id="cls1", clusterset_id=CLUSTERSET) as api,
    ):
        for key, value in cloudmap.env().items():
            monkeypatch.setenv(key, value)
        api.store.load_yaml(TUTORIAL / "namespace.yaml")
        api.store.load_yaml(TUTORIAL / "nginx-service.yaml")
        api.store.load_yaml(TUTORIAL / "nginx-endpoints.yaml")
        api.store.load_yaml(TUTORIAL / "nginx-serviceexport.yaml")
        cluster = Cluster("cls1", api, api.write_kubeconfig(tmp_path / "cls1.kubeconfig"))
        stop = api.observe_requests(counter)
        try:
            # All in one: DNS from the cluster, the ids from ClusterProperties, export and import.
            with ServerThread(engine_settings(cluster, cloudmap)) as server:
                server.wait_serving()
                # The export reaches Cloud Map and comes back as an import: every part is running.
                wait_for(
                    lambda: query(server, "nginx-hello.demo.svc.clusterset.local.", "A").answer,
                    what="the exported service to be imported and answered",
                )
                seen_watches, seen_lists, _ = counter.snapshot()
        finally:
            stop()
    resources = {"serviceimports", "endpointslices", "services", "serviceexports", "namespaces"}
    resources.add("clusterproperties")
    assert set(seen_watches) == resources, seen_watches
    # Before the shared informers: 10 watches (serviceimports x2, endpointslices x3, services x2, ...).
    assert all(count == 1 for count in seen_watches.values()), seen_watches
    assert seen_lists == dict.fromkeys(resources, 1), seen_lists

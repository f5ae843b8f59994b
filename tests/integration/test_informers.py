"""One list and one watch per resource per replica: the zone sources, the export and import controllers
and the ClusterProperty follower share the process's informers (controller-runtime's rule), instead of
each opening its own watch. Counted from a real API server's audit log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.controlplane import ControlPlane
from tests.integration.test_cloudmap import TUTORIAL, Cluster, engine_settings
from tests.realkube import chart_kubeconfig_of
from tests.support import ServerThread, query, wait_for


def test_a_replica_lists_and_watches_each_resource_once(
    real_cluster: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedCloudMap() as cloudmap:
        for key, value in cloudmap.env().items():
            monkeypatch.setenv(key, value)
        for manifest in ("nginx-service.yaml", "nginx-endpoints.yaml", "nginx-serviceexport.yaml"):
            real_cluster.objects.load_yaml(TUTORIAL / manifest)
        cluster = Cluster("cls2", real_cluster, chart_kubeconfig_of(real_cluster, tmp_path / "kubeconfig"))
        mark = real_cluster.audit_mark()
        # All in one: DNS from the cluster, the ids from ClusterProperties, export and import.
        with ServerThread(engine_settings(cluster, cloudmap)) as server:
            server.wait_serving()
            # The export reaches Cloud Map and comes back as an import: every part is running.
            wait_for(
                lambda: query(server, "nginx-hello.demo.svc.clusterset.local.", "A").answer,
                what="the exported service to be imported and answered",
            )
            calls = real_cluster.audited(since=mark)
    seen_watches = Counter(c.resource for c in calls if c.verb == "watch")
    seen_lists = Counter(c.resource for c in calls if c.verb == "list")
    resources = {"serviceimports", "endpointslices", "services", "serviceexports", "namespaces"}
    resources.add("clusterproperties")
    assert set(seen_watches) == resources, seen_watches
    # Before the shared informers: 10 watches (serviceimports x2, endpointslices x3, services x2, ...).
    assert all(count == 1 for count in seen_watches.values()), seen_watches
    assert dict(seen_lists) == dict.fromkeys(resources, 1), seen_lists

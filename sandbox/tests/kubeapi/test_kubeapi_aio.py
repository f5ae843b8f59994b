"""The official client's asyncio API (``kubernetes.aio``, shipped with ``kubernetes`` >= 36) against the
emulator: what ``clients/kube.py`` uses — list, then watch from the list's version with bookmarks."""

from __future__ import annotations

from pathlib import Path

from kubeapi_helpers import MCS, endpoint_slice, service_import
from kubernetes.aio import client, config, watch

from mcsdns_sandbox.kubeapi import KubeApiEmulator


async def test_aio_list_then_watch_from_the_list_version(api: KubeApiEmulator, kubeconfig: Path) -> None:
    api.store.create(service_import("web"))
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    async with api_client:
        custom = client.CustomObjectsApi(api_client)
        listed = await custom.list_namespaced_custom_object(MCS, "v1alpha1", "default", "serviceimports")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
        api.store.create(service_import("db"))
        api.store.delete("serviceimports", "web")
        seen: list[tuple[str, str]] = []
        stream = watch.Watch()
        async with stream.stream(
            custom.list_namespaced_custom_object,
            MCS,
            "v1alpha1",
            "default",
            "serviceimports",
            resource_version=listed["metadata"]["resourceVersion"],
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        ) as events:
            async for event in events:
                if event["type"] == "BOOKMARK":
                    break
                seen.append((event["type"], event["object"]["metadata"]["name"]))
        assert seen == [("ADDED", "db"), ("DELETED", "web")]


async def test_aio_typed_api_reads_endpoint_slices(api: KubeApiEmulator, kubeconfig: Path) -> None:
    api.store.create(
        endpoint_slice("web-1", "10.0.0.1", labels={"multicluster.kubernetes.io/service-name": "web"})
    )
    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    async with api_client:
        slices = await client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces(
            label_selector="multicluster.kubernetes.io/service-name"
        )
        assert [(s.metadata.name, s.endpoints[0].addresses) for s in slices.items] == [
            ("web-1", ["10.0.0.1"])
        ]

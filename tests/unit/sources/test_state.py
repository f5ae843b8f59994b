"""Event sequences in, services out: what ClusterSetState makes of lists, upserts and deletes."""

from __future__ import annotations

from mcsdns.sources.events import Deleted, Listed, SourceName, Upserted
from mcsdns.sources.state import ClusterSetState
from mcsdns.zone.model import ClusterId, Endpoint, EndpointGroup, ServiceImport, ServiceKey, ServiceType

K8S = SourceName("kubernetes")
FILES = SourceName("manifests")
WEB = ServiceKey("prod", "web")
DB = ServiceKey("prod", "db")


def imp(key: ServiceKey, *ips: str) -> ServiceImport:
    return ServiceImport(key=key, type=ServiceType.CLUSTERSET_IP, ips=ips)


def group(key: ServiceKey, cluster: str, *addresses: str) -> EndpointGroup:
    return EndpointGroup(
        service=key,
        cluster=ClusterId(cluster),
        ports=(),
        endpoints=tuple(Endpoint(cluster=ClusterId(cluster), addresses=(a,)) for a in addresses),
    )


def ref(kind: str, key: ServiceKey, name: str | None = None) -> tuple[str, str, str]:
    return (kind, key.namespace, name or key.name)


def test_relist_drops_what_disappeared_while_disconnected() -> None:
    state = ClusterSetState()
    state.apply(
        Listed(
            K8S,
            {ref("ServiceImport", WEB): imp(WEB, "10.0.0.1"), ref("ServiceImport", DB): imp(DB, "10.0.0.2")},
        )
    )
    dirty = state.apply(Listed(K8S, {ref("ServiceImport", WEB): imp(WEB, "10.0.0.1")}))
    assert dirty == {DB}, "only the service that changed"
    assert state.service(DB) is None
    assert state.service(WEB) == state.service(WEB)


def test_unchanged_upsert_dirties_nothing() -> None:
    state = ClusterSetState()
    state.apply(Listed(K8S, {}))
    assert state.apply(Upserted(K8S, ref("ServiceImport", WEB), imp(WEB, "10.0.0.1"))) == {WEB}
    assert state.apply(Upserted(K8S, ref("ServiceImport", WEB), imp(WEB, "10.0.0.1"))) == set()


def test_delete_of_unknown_object_is_harmless() -> None:
    state = ClusterSetState()
    assert state.apply(Deleted(K8S, ref("ServiceImport", WEB))) == set()


def test_slice_before_import_publishes_once_the_import_arrives() -> None:
    state = ClusterSetState()
    state.apply(Upserted(K8S, ref("EndpointSlice", WEB, "web-1"), group(WEB, "cls1", "10.1.0.1")))
    assert state.service(WEB) is None
    state.apply(Upserted(K8S, ref("ServiceImport", WEB), imp(WEB)))
    service = state.service(WEB)
    assert service is not None and [g.cluster for g in service.groups] == ["cls1"]


def test_slice_moving_to_another_service_dirties_both() -> None:
    state = ClusterSetState()
    state.apply(Upserted(K8S, ref("EndpointSlice", WEB, "s"), group(WEB, "cls1", "10.1.0.1")))
    assert state.apply(Upserted(K8S, ref("EndpointSlice", WEB, "s"), group(DB, "cls1", "10.1.0.1"))) == {
        WEB,
        DB,
    }


def test_groups_are_ordered_by_cluster_whatever_the_arrival() -> None:
    state = ClusterSetState()
    state.apply(Upserted(K8S, ref("ServiceImport", WEB), imp(WEB)))
    state.apply(Upserted(K8S, ref("EndpointSlice", WEB, "b"), group(WEB, "cls2", "10.2.0.1")))
    state.apply(Upserted(K8S, ref("EndpointSlice", WEB, "a"), group(WEB, "cls1", "10.1.0.1")))
    service = state.service(WEB)
    assert service is not None and [g.cluster for g in service.groups] == ["cls1", "cls2"]


def test_two_sources_with_one_import_pick_a_stable_winner() -> None:
    state = ClusterSetState()
    state.apply(Upserted(K8S, ref("ServiceImport", WEB), imp(WEB, "10.0.0.1")))
    state.apply(Upserted(FILES, ref("ServiceImport", WEB), imp(WEB, "10.0.0.2")))
    service = state.service(WEB)
    assert service is not None and service.spec.ips == ("10.0.0.1",), "kubernetes < manifests"
    state.apply(Deleted(K8S, ref("ServiceImport", WEB)))
    service = state.service(WEB)
    assert service is not None and service.spec.ips == ("10.0.0.2",), "the other source still has it"

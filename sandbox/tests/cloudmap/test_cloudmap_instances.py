"""RegisterInstance/DeregisterInstance, InstancesRevision and DiscoverInstances against the documented
behaviour of AWS Cloud Map (patches a and b, and the DiscoverInstances half of c)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from .helpers import create_namespace, create_service, discovered, error_code


@pytest.fixture
def svc(sd: Any) -> str:
    return create_service(sd, create_namespace(sd, "demo"), "nginx")


def revision(sd: Any) -> int:
    return int(sd.discover_instances_revision(NamespaceName="demo", ServiceName="nginx")["InstancesRevision"])


# --- a. re-registering an instance id replaces it -----------------------------------------------------------
def test_register_existing_id_replaces_attributes_without_a_twin(sd: Any, svc: str) -> None:
    sd.register_instance(
        ServiceId=svc, InstanceId="i1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1", "X": "a"}
    )
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.2"})

    assert discovered(sd, "demo", "nginx") == {"i1": {"AWS_INSTANCE_IPV4": "10.0.0.2"}}
    listed = sd.list_instances(ServiceId=svc)["Instances"]
    # InstanceSummary.CreatedByAccount (also listed): "The ID of the Amazon Web Services account that
    # registered the instance."
    assert [(i["Id"], i["Attributes"]) for i in listed] == [("i1", {"AWS_INSTANCE_IPV4": "10.0.0.2"})]
    assert sd.get_instance(ServiceId=svc, InstanceId="i1")["Instance"]["Attributes"] == {
        "AWS_INSTANCE_IPV4": "10.0.0.2"
    }


def test_register_accepts_the_service_arn(sd: Any, svc: str) -> None:
    arn = sd.get_service(Id=svc)["Service"]["Arn"]
    sd.register_instance(ServiceId=arn, InstanceId="i1", Attributes={"A": "1"})
    assert discovered(sd, "demo", "nginx") == {"i1": {"A": "1"}}


def test_deregister_removes_the_only_copy(sd: Any, svc: str) -> None:
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "2"})
    sd.deregister_instance(ServiceId=svc, InstanceId="i1")
    assert discovered(sd, "demo", "nginx") == {}
    with pytest.raises(sd.exceptions.InstanceNotFound):
        sd.deregister_instance(ServiceId=svc, InstanceId="i1")


# --- b. InstancesRevision only grows ------------------------------------------------------------------------
def test_revision_grows_on_every_change_and_never_falls(sd: Any, svc: str) -> None:
    seen = [revision(sd)]

    def step() -> int:
        seen.append(revision(sd))
        return seen[-1]

    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})
    assert step() > seen[-2]
    sd.register_instance(ServiceId=svc, InstanceId="i2", Attributes={"A": "1"})
    assert step() > seen[-2]
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "2"})  # attributes changed
    assert step() > seen[-2]
    sd.deregister_instance(ServiceId=svc, InstanceId="i1")
    assert step() > seen[-2]
    sd.deregister_instance(ServiceId=svc, InstanceId="i2")
    assert step() > seen[-2]
    assert seen == sorted(seen)


def test_unchanged_service_keeps_its_revision(sd: Any, svc: str) -> None:
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})
    before = revision(sd)
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})  # same attributes again
    sd.list_instances(ServiceId=svc)
    assert revision(sd) == before


def test_discover_returns_the_same_revision_whatever_the_filters(sd: Any, svc: str) -> None:
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"CLUSTERSET_ID": "a"})
    sd.register_instance(ServiceId=svc, InstanceId="i2", Attributes={"CLUSTERSET_ID": "b"})
    expected = revision(sd)
    for query in ({}, {"CLUSTERSET_ID": "a"}, {"CLUSTERSET_ID": "none"}):
        response = sd.discover_instances(NamespaceName="demo", ServiceName="nginx", QueryParameters=query)
        assert response["InstancesRevision"] == expected


def test_revision_of_a_recreated_service_is_above_the_old_one(sd: Any, svc: str) -> None:
    namespace_id = sd.get_service(Id=svc)["Service"]["NamespaceId"]
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})
    old = revision(sd)
    sd.deregister_instance(ServiceId=svc, InstanceId="i1")
    sd.delete_service(Id=svc)
    create_service(sd, namespace_id, "nginx")
    assert revision(sd) > old


def test_health_updates_do_not_move_the_revision(sd: Any, checked: str) -> None:
    def checked_revision() -> int:
        return int(
            sd.discover_instances_revision(NamespaceName="demo", ServiceName="checked")["InstancesRevision"]
        )

    before = checked_revision()
    sd.update_instance_custom_health_status(ServiceId=checked, InstanceId="i1", Status="UNHEALTHY")
    sd.update_instance_custom_health_status(ServiceId=checked, InstanceId="i2", Status="HEALTHY")
    assert checked_revision() == before


def test_revision_of_unknown_names_is_an_error(sd: Any, svc: str) -> None:
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        sd.discover_instances_revision(NamespaceName="nope", ServiceName="nginx")
    with pytest.raises(sd.exceptions.ServiceNotFound):
        sd.discover_instances_revision(NamespaceName="demo", ServiceName="nope")


# --- c. DiscoverInstances parameters ------------------------------------------------------------------------
def test_query_parameters_must_all_match(sd: Any, svc: str) -> None:
    sd.register_instance(
        ServiceId=svc, InstanceId="a1", Attributes={"CLUSTERSET_ID": "cs", "CLUSTER_ID": "a"}
    )
    sd.register_instance(
        ServiceId=svc, InstanceId="b1", Attributes={"CLUSTERSET_ID": "cs", "CLUSTER_ID": "b"}
    )
    sd.register_instance(ServiceId=svc, InstanceId="x1", Attributes={"CLUSTERSET_ID": "other"})

    assert set(discovered(sd, "demo", "nginx", QueryParameters={"CLUSTERSET_ID": "cs"})) == {"a1", "b1"}
    both = {"CLUSTERSET_ID": "cs", "CLUSTER_ID": "b"}
    assert set(discovered(sd, "demo", "nginx", QueryParameters=both)) == {"b1"}
    assert discovered(sd, "demo", "nginx", QueryParameters={"CLUSTER_ID": "c"}) == {}


def test_optional_parameters_narrow_only_when_something_matches(sd: Any, svc: str) -> None:
    sd.register_instance(ServiceId=svc, InstanceId="a1", Attributes={"CLUSTERSET_ID": "cs", "AZ": "1a"})
    sd.register_instance(ServiceId=svc, InstanceId="b1", Attributes={"CLUSTERSET_ID": "cs", "AZ": "1b"})
    query = {"CLUSTERSET_ID": "cs"}

    narrowed = discovered(sd, "demo", "nginx", QueryParameters=query, OptionalParameters={"AZ": "1a"})
    assert set(narrowed) == {"a1"}
    ignored = discovered(sd, "demo", "nginx", QueryParameters=query, OptionalParameters={"AZ": "1c"})
    assert set(ignored) == {"a1", "b1"}


@pytest.fixture
def checked(sd: Any, svc: str) -> str:
    """A service with a custom health check: i1 healthy, i2 unhealthy (AWS_INIT_HEALTH_STATUS)."""
    namespace_id = sd.get_service(Id=svc)["Service"]["NamespaceId"]
    service_id = create_service(sd, namespace_id, "checked", HealthCheckCustomConfig={})
    sd.register_instance(ServiceId=service_id, InstanceId="i1", Attributes={"Q": "x"})
    sd.register_instance(
        ServiceId=service_id, InstanceId="i2", Attributes={"Q": "y", "AWS_INIT_HEALTH_STATUS": "UNHEALTHY"}
    )
    return service_id


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("HEALTHY", {"i1"}),
        ("UNHEALTHY", {"i2"}),
        ("ALL", {"i1", "i2"}),
        ("HEALTHY_OR_ELSE_ALL", {"i1"}),
        # "When you configure a health check, AWS Cloud Map returns healthy resources by default."
        (None, {"i1"}),
    ],
)
def test_health_status_filter(sd: Any, checked: str, health: str | None, expected: set[str]) -> None:
    kwargs = {"HealthStatus": health} if health else {}
    response = sd.discover_instances(NamespaceName="demo", ServiceName="checked", **kwargs)
    assert {i["InstanceId"] for i in response["Instances"]} == expected
    status = {i["InstanceId"]: i["HealthStatus"] for i in response["Instances"]}
    assert all(status[i] == ("HEALTHY" if i == "i1" else "UNHEALTHY") for i in status)


def test_healthy_or_else_all_fails_open_on_the_queried_instances(sd: Any, checked: str) -> None:
    # i1 is healthy but excluded by the query; among what the query selects nobody is healthy, so all of it.
    found = discovered(sd, "demo", "checked", QueryParameters={"Q": "y"}, HealthStatus="HEALTHY_OR_ELSE_ALL")
    assert set(found) == {"i2"}
    sd.update_instance_custom_health_status(ServiceId=checked, InstanceId="i1", Status="UNHEALTHY")
    assert set(discovered(sd, "demo", "checked", HealthStatus="HEALTHY_OR_ELSE_ALL")) == {"i1", "i2"}
    assert discovered(sd, "demo", "checked", HealthStatus="HEALTHY") == {}


def test_services_without_health_checks_ignore_the_filter_and_report_unknown(sd: Any, svc: str) -> None:
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})
    for health in ("HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL"):
        response = sd.discover_instances(NamespaceName="demo", ServiceName="nginx", HealthStatus=health)
        assert [(i["InstanceId"], i["HealthStatus"]) for i in response["Instances"]] == [("i1", "UNKNOWN")]
    with pytest.raises(sd.exceptions.CustomHealthNotFound):
        sd.update_instance_custom_health_status(ServiceId=svc, InstanceId="i1", Status="UNHEALTHY")


def test_max_results_defaults_to_100_and_allows_up_to_1000(sd: Any, svc: str) -> None:
    for n in range(101):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{n}", Attributes={"N": str(n)})
    response = sd.discover_instances(NamespaceName="demo", ServiceName="nginx")
    assert len(response["Instances"]) == 100
    assert "NextToken" not in response  # DiscoverInstances has no pagination
    assert len(discovered(sd, "demo", "nginx", MaxResults=1000)) == 101
    assert len(discovered(sd, "demo", "nginx", MaxResults=7)) == 7
    with pytest.raises(ClientError) as exc:
        sd.discover_instances(NamespaceName="demo", ServiceName="nginx", MaxResults=1001)
    assert error_code(exc.value) == "InvalidInput"


def test_discover_returns_a_shuffled_list(sd: Any, svc: str) -> None:
    for n in range(20):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{n:02}", Attributes={})
    orders = {
        tuple(
            i["InstanceId"]
            for i in sd.discover_instances(NamespaceName="demo", ServiceName="nginx")["Instances"]
        )
        for _ in range(5)
    }
    assert len(orders) > 1  # "DiscoverInstances returns a randomized list of instances"

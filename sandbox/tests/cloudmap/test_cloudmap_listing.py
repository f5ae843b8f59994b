"""ListNamespaces, ListServices and ListInstances: filters and pagination as AWS Cloud Map documents them
(patch c). AWS pages first and filters each page, so a filtered page may be short or empty while NextToken
still points at more."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from .helpers import create_namespace, create_service, error_code


def names(namespaces: list[dict[str, Any]]) -> list[str]:
    return [ns["Name"] for ns in namespaces]


def all_pages(sd: Any, operation: str, key: str, **kwargs: Any) -> list[list[Any]]:
    pages = []
    for page in sd.get_paginator(operation).paginate(**kwargs):
        pages.append(page[key])
    return pages


# --- ListNamespaces -----------------------------------------------------------------------------------------
def test_list_namespaces_pages_with_max_results_and_next_token(sd: Any) -> None:
    for n in range(5):
        create_namespace(sd, f"ns{n}")

    first = sd.list_namespaces(MaxResults=2)
    assert names(first["Namespaces"]) == ["ns0", "ns1"]
    second = sd.list_namespaces(MaxResults=2, NextToken=first["NextToken"])
    assert names(second["Namespaces"]) == ["ns2", "ns3"]
    third = sd.list_namespaces(MaxResults=2, NextToken=second["NextToken"])
    assert names(third["Namespaces"]) == ["ns4"]
    assert "NextToken" not in third

    pages = all_pages(sd, "list_namespaces", "Namespaces", PaginationConfig={"PageSize": 2})
    assert [len(p) for p in pages] == [2, 2, 1]
    assert "NextToken" not in sd.list_namespaces()


def test_list_namespaces_returns_100_per_page_by_default(sd: Any) -> None:
    for n in range(101):
        create_namespace(sd, f"ns{n:03}")
    first = sd.list_namespaces()
    assert len(first["Namespaces"]) == 100
    assert names(sd.list_namespaces(NextToken=first["NextToken"])["Namespaces"]) == ["ns100"]


def test_list_namespaces_filters_each_page_after_cutting_it(sd: Any) -> None:
    for name in ("b1", "b2", "a1", "b3", "a2"):
        create_namespace(sd, name)
    by_prefix = {"Name": "NAME", "Values": ["a"], "Condition": "BEGINS_WITH"}

    first = sd.list_namespaces(MaxResults=2, Filters=[by_prefix])
    assert first["Namespaces"] == []  # b1, b2 matched nothing, yet there is more
    pages = all_pages(
        sd, "list_namespaces", "Namespaces", Filters=[by_prefix], PaginationConfig={"PageSize": 2}
    )
    assert [names(p) for p in pages] == [[], ["a1"], ["a2"]]


@pytest.fixture
def mixed(sd: Any) -> None:
    create_namespace(sd, "team-a")
    create_namespace(sd, "team-b")
    sd.create_private_dns_namespace(Name="private.example", Vpc="vpc-1")
    sd.create_public_dns_namespace(Name="public.example")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([{"Name": "TYPE", "Values": ["HTTP"]}], ["team-a", "team-b"]),  # EQ is the default condition
        ([{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}], ["private.example"]),
        (
            [{"Name": "TYPE", "Values": ["DNS"], "Condition": "BEGINS_WITH"}],
            ["private.example", "public.example"],
        ),
        ([{"Name": "NAME", "Values": ["team-b"], "Condition": "EQ"}], ["team-b"]),
        ([{"Name": "NAME", "Values": ["team"], "Condition": "BEGINS_WITH"}], ["team-a", "team-b"]),
        ([{"Name": "HTTP_NAME", "Values": ["team-a"]}], ["team-a"]),
        ([{"Name": "HTTP_NAME", "Values": ["private.example"]}], ["private.example"]),
        ([{"Name": "RESOURCE_OWNER", "Values": ["OTHER_ACCOUNTS"]}], []),
        (  # more than one filter: a namespace must match all of them
            [
                {"Name": "NAME", "Values": ["p"], "Condition": "BEGINS_WITH"},
                {"Name": "TYPE", "Values": ["DNS_PUBLIC"]},
            ],
            ["public.example"],
        ),
    ],
)
def test_list_namespaces_filters(
    sd: Any, mixed: None, filters: list[dict[str, Any]], expected: list[str]
) -> None:
    assert names(sd.list_namespaces(Filters=filters)["Namespaces"]) == expected


@pytest.mark.parametrize(
    "bad_filter",
    [
        {"Name": "NAME", "Values": ["a", "b"], "Condition": "EQ"},  # EQ takes one value
        {"Name": "HTTP_NAME", "Values": ["a"], "Condition": "BETWEEN"},
        {"Name": "RESOURCE_OWNER", "Values": ["S"], "Condition": "BEGINS_WITH"},
    ],
)
def test_list_namespaces_rejects_unsupported_filters(sd: Any, bad_filter: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        sd.list_namespaces(Filters=[bad_filter])
    assert error_code(exc.value) == "InvalidInput"


def test_bad_next_token_and_max_results_are_invalid_input(sd: Any) -> None:
    for kwargs in ({"NextToken": "not-a-token"}, {"MaxResults": 101}):
        with pytest.raises(ClientError) as exc:
            sd.list_namespaces(**kwargs)
        assert error_code(exc.value) == "InvalidInput"


# --- ListServices -------------------------------------------------------------------------------------------
def test_list_services_filters_by_namespace_id_and_pages(sd: Any) -> None:
    ns_a, ns_b = create_namespace(sd, "a"), create_namespace(sd, "b")
    for n in range(3):
        create_service(sd, ns_a, f"a{n}")
        create_service(sd, ns_b, f"b{n}")

    only_a = {"Name": "NAMESPACE_ID", "Values": [ns_a], "Condition": "EQ"}
    assert [s["Name"] for s in sd.list_services(Filters=[only_a])["Services"]] == ["a0", "a1", "a2"]

    pages = all_pages(sd, "list_services", "Services", Filters=[only_a], PaginationConfig={"PageSize": 2})
    assert len(pages) == 3  # six services, two per page, filtered after paging
    assert [s["Name"] for page in pages for s in page] == ["a0", "a1", "a2"]

    arn_b = sd.get_namespace(Id=ns_b)["Namespace"]["Arn"]
    by_arn = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [arn_b]}])
    assert [s["Name"] for s in by_arn["Services"]] == ["b0", "b1", "b2"]

    everything = all_pages(sd, "list_services", "Services", PaginationConfig={"PageSize": 4})
    assert [len(p) for p in everything] == [4, 2]


def test_list_services_rejects_two_namespace_ids(sd: Any) -> None:
    with pytest.raises(ClientError) as exc:
        sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": ["ns-1", "ns-2"]}])
    assert error_code(exc.value) == "InvalidInput"


# --- ListInstances ------------------------------------------------------------------------------------------
def test_list_instances_pages(sd: Any) -> None:
    svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
    for n in range(5):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{n}", Attributes={"N": str(n)})

    first = sd.list_instances(ServiceId=svc, MaxResults=2)
    assert [i["Id"] for i in first["Instances"]] == ["i0", "i1"]
    pages = all_pages(sd, "list_instances", "Instances", ServiceId=svc, PaginationConfig={"PageSize": 2})
    assert [[i["Id"] for i in p] for p in pages] == [["i0", "i1"], ["i2", "i3"], ["i4"]]


def test_list_instances_returns_100_per_page_by_default(sd: Any) -> None:
    svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
    for n in range(101):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{n:03}", Attributes={})
    first = sd.list_instances(ServiceId=svc)
    assert len(first["Instances"]) == 100
    rest = sd.list_instances(ServiceId=svc, NextToken=first["NextToken"])
    assert [i["Id"] for i in rest["Instances"]] == ["i100"]


def test_list_namespaces_reports_service_count(sd: Any) -> None:
    """NamespaceSummary.ServiceCount: the number of services associated with the namespace."""
    operation = sd.create_http_namespace(Name="counted")["OperationId"]
    namespace_id = sd.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"]

    def count() -> int:
        found = [ns for ns in sd.list_namespaces()["Namespaces"] if ns["Id"] == namespace_id]
        return int(found[0]["ServiceCount"])

    assert count() == 0
    sd.create_service(Name="a", NamespaceId=namespace_id)
    service_id = sd.create_service(Name="b", NamespaceId=namespace_id)["Service"]["Id"]
    assert count() == 2
    sd.delete_service(Id=service_id)
    assert count() == 1

"""ListOperations and GetOperation as the API reference documents them: every operation kept (instance ones
too), filters that must all match, MaxResults taken before filtering (pages may be short or empty while
NextToken continues), creation order, InvalidInput for bad filters, and an optional retention."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import create_namespace, create_service, error_code


def listed(sd: Any, *filters: dict[str, Any], **kwargs: Any) -> list[str]:
    """Every operation id ListOperations gives for ``filters``, following NextToken."""
    ids: list[str] = []
    token = None
    while True:
        page = sd.list_operations(Filters=list(filters), **kwargs, **({"NextToken": token} if token else {}))
        ids += [op["Id"] for op in page["Operations"]]
        token = page.get("NextToken")
        if not token:
            return ids


def op_type(sd: Any, operation_id: str) -> str:
    return str(sd.get_operation(OperationId=operation_id)["Operation"]["Type"])


@pytest.fixture
def history(sd: Any) -> dict[str, Any]:
    """Two namespaces; in the first a service with one instance registered, re-registered and deregistered."""
    ops: dict[str, Any] = {"create_demo": sd.create_http_namespace(Name="demo")["OperationId"]}
    demo = sd.get_operation(OperationId=ops["create_demo"])["Operation"]["Targets"]["NAMESPACE"]
    ops["create_other"] = sd.create_http_namespace(Name="other")["OperationId"]
    other = sd.get_operation(OperationId=ops["create_other"])["Operation"]["Targets"]["NAMESPACE"]
    svc = create_service(sd, demo, "nginx")
    ops["register"] = sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={})["OperationId"]
    ops["reregister"] = sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={"A": "1"})[
        "OperationId"
    ]
    ops["deregister"] = sd.deregister_instance(ServiceId=svc, InstanceId="i1")["OperationId"]
    ops.update(demo=demo, other=other, service=svc)
    return ops


ORDER = ("create_demo", "create_other", "register", "reregister", "deregister")


def test_every_operation_is_kept_in_creation_order(sd: Any, history: dict[str, Any]) -> None:
    assert listed(sd) == [history[name] for name in ORDER]
    assert listed(sd) == [history[name] for name in ORDER]  # listing forgets nothing (moto did)
    for name in ("register", "deregister"):
        op = sd.get_operation(OperationId=history[name])["Operation"]
        assert op["Targets"] == {"INSTANCE": "i1", "SERVICE": history["service"]}
        assert op["Status"] == "SUCCESS"
        assert op["OwnerAccount"] and op["UpdateDate"] >= op["CreateDate"]
    assert {op["Status"] for op in sd.list_operations()["Operations"]} == {"SUCCESS"}


def test_filters_each_and_together(sd: Any, history: dict[str, Any]) -> None:
    def ids(*names: str) -> list[str]:
        return [history[name] for name in names]

    type_eq = {"Name": "TYPE", "Condition": "EQ", "Values": ["REGISTER_INSTANCE"]}
    assert listed(sd, type_eq) == ids("register", "reregister")
    assert listed(sd, {"Name": "TYPE", "Values": ["CREATE_NAMESPACE"]}) == ids("create_demo", "create_other")
    type_in = {"Name": "TYPE", "Condition": "IN", "Values": ["CREATE_NAMESPACE", "DEREGISTER_INSTANCE"]}
    assert listed(sd, type_in) == ids("create_demo", "create_other", "deregister")
    # The filter documentation says SUCCEED, the status enum SUCCESS: both are accepted.
    assert listed(sd, {"Name": "STATUS", "Values": ["SUCCEED"]}) == ids(*ORDER)
    assert listed(sd, {"Name": "STATUS", "Values": ["SUCCESS"]}) == ids(*ORDER)
    assert listed(sd, {"Name": "STATUS", "Condition": "IN", "Values": ["FAIL", "PENDING"]}) == []
    # An instance operation is related to its service's namespace.
    in_demo = {"Name": "NAMESPACE_ID", "Values": [history["demo"]]}
    assert listed(sd, in_demo) == ids("create_demo", "register", "reregister", "deregister")
    assert listed(sd, {"Name": "NAMESPACE_ID", "Values": [history["other"]]}) == ids("create_other")
    by_service = {"Name": "SERVICE_ID", "Values": [history["service"]]}
    assert listed(sd, by_service) == ids("register", "reregister", "deregister")
    # All filters must match.
    assert listed(sd, in_demo, type_in) == ids("create_demo", "deregister")
    assert listed(sd, by_service, type_eq, {"Name": "STATUS", "Values": ["SUCCESS"]}) == ids(
        "register", "reregister"
    )


def test_update_date_between(sd: Any, history: dict[str, Any]) -> None:
    dates = [sd.get_operation(OperationId=history[name])["Operation"]["UpdateDate"] for name in ORDER]
    first, last = dates[0].timestamp(), dates[-1].timestamp()

    def between(start: float, end: float) -> dict[str, Any]:
        return {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": [str(start), str(end)]}

    assert listed(sd, between(first - 1, last + 1)) == [history[name] for name in ORDER]
    assert listed(sd, between(first - 60, first - 30)) == []
    assert listed(sd, between(last + 30, last + 60)) == []
    assert listed(sd, between(last, last + 1))[-1] == history["deregister"]


def test_max_results_is_taken_before_filtering(sd: Any, history: dict[str, Any]) -> None:
    """NextToken: "Cloud Map gets MaxResults operations and then filters them based on the specified criteria.
    It's possible that no operations in the first MaxResults operations matched the specified criteria but
    that subsequent groups of MaxResults operations do contain operations that match the criteria." """
    deregister = {"Name": "TYPE", "Values": ["DEREGISTER_INSTANCE"]}
    first = sd.list_operations(Filters=[deregister], MaxResults=2)
    assert first["Operations"] == [] and first["NextToken"]  # an empty page that continues
    second = sd.list_operations(Filters=[deregister], MaxResults=2, NextToken=first["NextToken"])
    assert second["Operations"] == [] and second["NextToken"]
    third = sd.list_operations(Filters=[deregister], MaxResults=2, NextToken=second["NextToken"])
    assert [op["Id"] for op in third["Operations"]] == [history["deregister"]]
    assert "NextToken" not in third

    short = sd.list_operations(Filters=[{"Name": "TYPE", "Values": ["CREATE_NAMESPACE"]}], MaxResults=3)
    assert len(short["Operations"]) == 2 and short["NextToken"]  # fewer than asked, yet more to come
    assert listed(sd, MaxResults=1) == [history[name] for name in ORDER]


def test_max_results_defaults_to_100(sd: Any) -> None:
    svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
    for i in range(104):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{i}", Attributes={})
    page = sd.list_operations()
    assert len(page["Operations"]) == 100 and page["NextToken"]
    assert len(sd.list_operations(NextToken=page["NextToken"])["Operations"]) == 5
    assert len(sd.list_operations(MaxResults=100)["Operations"]) == 100
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.list_operations(MaxResults=101)


@pytest.mark.parametrize(
    "bad",
    [
        {"Name": "INSTANCE_ID", "Values": ["i1"]},  # no such filter
        {"Name": "TYPE", "Values": ["CREATE_SERVICE"]},  # no such type
        {"Name": "STATUS", "Values": ["DONE"]},
        {"Name": "STATUS", "Condition": "BETWEEN", "Values": ["FAIL", "SUCCESS"]},
        {"Name": "NAMESPACE_ID", "Condition": "IN", "Values": ["ns-a", "ns-b"]},  # EQ only
        {"Name": "SERVICE_ID", "Values": ["srv-a", "srv-b"]},  # EQ takes one value
        {"Name": "UPDATE_DATE", "Values": ["1", "2"]},  # EQ (the default) is not supported for it
        {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": ["1"]},
        {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": ["2", "1"]},  # start must come first
        {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": ["yesterday", "today"]},
        {"Name": "TYPE", "Condition": "BEGINS_WITH", "Values": ["CREATE"]},
    ],
)
def test_bad_filters_are_invalid_input(sd: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        sd.list_operations(Filters=[bad])
    assert error_code(exc.value) == "InvalidInput"


def test_a_malformed_token_is_invalid_input(sd: Any) -> None:
    with pytest.raises(sd.exceptions.InvalidInput):
        sd.list_operations(NextToken="not-a-token")


def test_operations_are_per_account(
    cloudmap: EmbeddedCloudMap, sd: Any, history: dict[str, Any], new_client: Callable[..., Any]
) -> None:
    other = new_client(cloudmap, account_id=cloudmap.add_account())
    assert other.list_operations()["Operations"] == []
    with pytest.raises(other.exceptions.OperationNotFound):
        other.get_operation(OperationId=history["register"])


def test_retention_forgets_old_operations_without_shifting_a_listing(new_client: Callable[..., Any]) -> None:
    with EmbeddedCloudMap(operation_retention=0.4) as cloudmap:
        sd = new_client(cloudmap)
        svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
        old = [sd.register_instance(ServiceId=svc, InstanceId="a", Attributes={})["OperationId"]]
        time.sleep(0.25)
        young = [
            sd.register_instance(ServiceId=svc, InstanceId=f"y{i}", Attributes={})["OperationId"]
            for i in range(2)
        ]
        first = sd.list_operations(MaxResults=2)  # the namespace's and the old registration
        assert [op["Id"] for op in first["Operations"]] == [listed(sd)[0], old[0]]
        time.sleep(0.25)  # the first two are past the retention now, the young ones are not
        with pytest.raises(sd.exceptions.OperationNotFound):
            sd.get_operation(OperationId=old[0])
        newest = sd.register_instance(ServiceId=svc, InstanceId="n", Attributes={})[
            "OperationId"
        ]  # drops them
        rest = sd.list_operations(MaxResults=2, NextToken=first["NextToken"])
        assert [op["Id"] for op in rest["Operations"]] == young  # no operation skipped
        assert listed(sd) == [*young, newest]
        assert op_type(sd, young[0]) == "REGISTER_INSTANCE"

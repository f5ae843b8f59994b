"""Operations and errors as AWS Cloud Map sends them (patches d and e): every mutating call returns an
OperationId that GetOperation reports as SUCCESS with its targets, and the modeled errors arrive with their
codes, HTTP statuses and members."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import create_namespace, create_service, error_code, http_status


def operation(sd: Any, operation_id: str) -> dict[str, Any]:
    result: dict[str, Any] = sd.get_operation(OperationId=operation_id)["Operation"]
    return result


def test_create_http_namespace_operation_targets_the_namespace(sd: Any) -> None:
    op = operation(sd, sd.create_http_namespace(Name="demo")["OperationId"])
    assert op["Status"] == "SUCCESS"
    assert op["Type"] == "CREATE_NAMESPACE"
    namespace = sd.get_namespace(Id=op["Targets"]["NAMESPACE"])["Namespace"]
    assert namespace["Name"] == "demo"
    assert namespace["Type"] == "HTTP"
    assert namespace["Properties"]["HttpProperties"]["HttpName"] == "demo"


def test_register_and_deregister_operations_target_instance_and_service(sd: Any) -> None:
    svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
    registered = operation(
        sd, sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={})["OperationId"]
    )
    assert registered["Status"] == "SUCCESS"
    assert registered["Type"] == "REGISTER_INSTANCE"
    assert registered["Targets"] == {"INSTANCE": "i1", "SERVICE": svc}

    sd.list_operations()  # moto used to drop instance operations here
    deregistered_id = sd.deregister_instance(ServiceId=svc, InstanceId="i1")["OperationId"]
    deregistered = operation(sd, deregistered_id)
    assert (deregistered["Status"], deregistered["Type"]) == ("SUCCESS", "DEREGISTER_INSTANCE")
    assert deregistered["Targets"] == {"INSTANCE": "i1", "SERVICE": svc}
    assert operation(sd, registered["Id"])["Status"] == "SUCCESS"


def test_service_in_an_http_namespace_is_of_type_http(sd: Any) -> None:
    svc = sd.create_service(Name="nginx", NamespaceId=create_namespace(sd, "demo"))["Service"]
    assert svc["Type"] == "HTTP"
    assert sd.list_services()["Services"][0]["Type"] == "HTTP"


def test_not_found_errors(sd: Any) -> None:
    svc = create_service(sd, create_namespace(sd, "demo"), "nginx")
    cases = [
        (sd.exceptions.NamespaceNotFound, lambda: sd.get_namespace(Id="ns-missing")),
        (sd.exceptions.NamespaceNotFound, lambda: sd.create_service(Name="x", NamespaceId="ns-missing")),
        (
            sd.exceptions.NamespaceNotFound,
            lambda: sd.discover_instances(NamespaceName="nope", ServiceName="x"),
        ),
        (sd.exceptions.ServiceNotFound, lambda: sd.get_service(Id="srv-missing")),
        (sd.exceptions.ServiceNotFound, lambda: sd.delete_service(Id="srv-missing")),
        (
            sd.exceptions.ServiceNotFound,
            lambda: sd.register_instance(ServiceId="srv-missing", InstanceId="i", Attributes={}),
        ),
        (sd.exceptions.ServiceNotFound, lambda: sd.discover_instances(NamespaceName="demo", ServiceName="x")),
        (sd.exceptions.InstanceNotFound, lambda: sd.get_instance(ServiceId=svc, InstanceId="i-missing")),
        (
            sd.exceptions.InstanceNotFound,
            lambda: sd.deregister_instance(ServiceId=svc, InstanceId="i-missing"),
        ),
    ]
    for exception, call in cases:
        with pytest.raises(exception) as exc:
            call()
        assert http_status(exc.value) == 400


def test_namespace_already_exists_names_the_existing_namespace(sd: Any) -> None:
    namespace_id = create_namespace(sd, "demo")
    with pytest.raises(sd.exceptions.NamespaceAlreadyExists) as exc:
        sd.create_http_namespace(Name="demo")
    assert exc.value.response["NamespaceId"] == namespace_id
    assert "CreatorRequestId" in exc.value.response
    assert len(sd.list_namespaces()["Namespaces"]) == 1


def test_service_already_exists_names_the_existing_service(sd: Any) -> None:
    namespace_id = create_namespace(sd, "demo")
    service_id = create_service(sd, namespace_id, "nginx")
    with pytest.raises(sd.exceptions.ServiceAlreadyExists) as exc:
        sd.create_service(Name="nginx", NamespaceId=namespace_id)
    assert exc.value.response["ServiceId"] == service_id
    assert exc.value.response["ServiceArn"].endswith(f"service/{service_id}")
    create_service(sd, create_namespace(sd, "other"), "nginx")  # the same name in another namespace is fine


def test_deleting_what_is_in_use_is_refused(sd: Any) -> None:
    namespace_id = create_namespace(sd, "demo")
    svc = create_service(sd, namespace_id, "nginx")
    sd.register_instance(ServiceId=svc, InstanceId="i1", Attributes={})
    with pytest.raises(sd.exceptions.ResourceInUse) as exc:
        sd.delete_service(Id=svc)
    assert http_status(exc.value) == 409
    with pytest.raises(sd.exceptions.ResourceInUse):
        sd.delete_namespace(Id=namespace_id)

    sd.deregister_instance(ServiceId=svc, InstanceId="i1")
    sd.delete_service(Id=svc)
    assert operation(sd, sd.delete_namespace(Id=namespace_id)["OperationId"])["Status"] == "SUCCESS"
    assert sd.list_namespaces()["Namespaces"] == []
    assert error_code(exc.value) == "ResourceInUse"

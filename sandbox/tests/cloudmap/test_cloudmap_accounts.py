"""Several accounts in one emulator, and a namespace shared between them as AWS RAM shares it (Cloud Map,
since 2025-08): the consumer lists it with the owner as ResourceOwner, creates services in it by namespace
ARN, registers instances by service ARN, discovers with OwnerAccount, and sees nothing the owner did not
share."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import create_namespace, create_service, discovered


@dataclass
class Shared:
    owner: str
    consumer: str
    owner_sd: Any
    consumer_sd: Any
    namespace_id: str
    namespace_arn: str
    service_arn: str  # the owner's service "nginx" in the shared namespace
    private_id: str  # a namespace of the owner's that is not shared
    private_service_arn: str


@pytest.fixture
def shared(cloudmap: EmbeddedCloudMap, sd: Any, new_client: Callable[..., Any]) -> Shared:
    consumer = cloudmap.add_account()
    namespace_id = create_namespace(sd, "demo")
    service = sd.create_service(Name="nginx", NamespaceId=namespace_id)["Service"]
    sd.register_instance(ServiceId=service["Id"], InstanceId="owner-1", Attributes={"FROM": "owner"})
    private_id = create_namespace(sd, "private")
    private_service = sd.create_service(Name="secret", NamespaceId=private_id)["Service"]
    arn = cloudmap.share_namespace(namespace_id, with_account=consumer)
    return Shared(
        owner=cloudmap.account_id,
        consumer=consumer,
        owner_sd=sd,
        consumer_sd=new_client(cloudmap, account_id=consumer),
        namespace_id=namespace_id,
        namespace_arn=arn,
        service_arn=service["Arn"],
        private_id=private_id,
        private_service_arn=private_service["Arn"],
    )


def test_accounts_are_told_apart_by_access_key(
    cloudmap: EmbeddedCloudMap, sd: Any, new_client: Callable[..., Any]
) -> None:
    second = cloudmap.add_account("222233334444")
    assert cloudmap.accounts == [cloudmap.account_id, second]
    assert cloudmap.env(second)["AWS_ACCESS_KEY_ID"] != cloudmap.env()["AWS_ACCESS_KEY_ID"]
    create_namespace(sd, "demo")
    other = new_client(cloudmap, account_id=second)
    assert other.list_namespaces()["Namespaces"] == []
    create_namespace(other, "demo")  # the same name in another account is another namespace
    owners = {ns["ResourceOwner"] for ns in sd.list_namespaces()["Namespaces"]}
    assert owners == {cloudmap.account_id}
    with pytest.raises(ValueError):
        cloudmap.add_account("not-an-account")


def test_a_key_the_emulator_did_not_hand_out_is_the_first_accounts(
    cloudmap: EmbeddedCloudMap, sd: Any
) -> None:
    cloudmap.add_account()
    create_namespace(sd, "demo")
    stranger = boto3.session.Session().client(
        "servicediscovery",
        endpoint_url=cloudmap.endpoint_url,
        region_name=cloudmap.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(inject_host_prefix=False),
    )
    try:
        assert [ns["Name"] for ns in stranger.list_namespaces()["Namespaces"]] == ["demo"]
    finally:
        stranger.close()


def test_the_consumer_lists_only_what_is_shared(shared: Shared) -> None:
    namespaces = shared.consumer_sd.list_namespaces()["Namespaces"]
    assert [(ns["Name"], ns["Arn"], ns["ResourceOwner"]) for ns in namespaces] == [
        ("demo", shared.namespace_arn, shared.owner)
    ]
    assert shared.namespace_arn.split(":")[4] == shared.owner
    others = [{"Name": "RESOURCE_OWNER", "Values": ["OTHER_ACCOUNTS"]}]
    assert len(shared.consumer_sd.list_namespaces(Filters=others)["Namespaces"]) == 1
    assert shared.owner_sd.list_namespaces(Filters=others)["Namespaces"] == []
    services = shared.consumer_sd.list_services()["Services"]
    assert [(s["Name"], s["ResourceOwner"], s["CreatedByAccount"]) for s in services] == [
        ("nginx", shared.owner, shared.owner)
    ]
    got = shared.consumer_sd.get_namespace(Id=shared.namespace_arn)["Namespace"]
    assert (got["Name"], got["ResourceOwner"], got["ServiceCount"]) == ("demo", shared.owner, 1)


def test_the_consumer_sees_nothing_unshared(shared: Shared, cloudmap: EmbeddedCloudMap) -> None:
    sd = shared.consumer_sd
    private_arn = shared.namespace_arn.rsplit("/", 1)[0] + "/" + shared.private_id
    for call in (
        lambda: sd.get_namespace(Id=private_arn),
        lambda: sd.get_namespace(Id=shared.namespace_id),  # shared, but a bare ID names the caller's own
        lambda: sd.create_service(Name="x", NamespaceId=private_arn),
        lambda: sd.create_service(Name="x", NamespaceId=shared.namespace_id),
        lambda: sd.discover_instances(
            NamespaceName="private", ServiceName="secret", OwnerAccount=shared.owner
        ),
        lambda: sd.delete_namespace(Id=shared.namespace_arn),  # shared is not owned
    ):
        with pytest.raises(sd.exceptions.NamespaceNotFound):
            call()
    for call in (
        lambda: sd.get_service(Id=shared.private_service_arn),
        lambda: sd.register_instance(ServiceId=shared.private_service_arn, InstanceId="x", Attributes={}),
        lambda: sd.register_instance(
            ServiceId=shared.service_arn.rsplit("/", 1)[1], InstanceId="x", Attributes={}
        ),  # the shared service by bare ID
    ):
        with pytest.raises(sd.exceptions.ServiceNotFound):
            call()
    cloudmap.unshare_namespace(shared.namespace_arn, shared.consumer)
    assert sd.list_namespaces()["Namespaces"] == []
    assert sd.list_services()["Services"] == []


def test_the_consumer_creates_registers_and_discovers_in_the_shared_namespace(shared: Shared) -> None:
    sd = shared.consumer_sd
    service = sd.create_service(Name="api", NamespaceId=shared.namespace_arn)["Service"]
    assert (service["ResourceOwner"], service["CreatedByAccount"]) == (shared.owner, shared.consumer)
    assert service["Arn"].split(":")[4] == shared.owner
    operation_id = sd.register_instance(ServiceId=service["Arn"], InstanceId="c-1", Attributes={"FROM": "c"})[
        "OperationId"
    ]
    sd.register_instance(ServiceId=shared.service_arn, InstanceId="c-2", Attributes={"FROM": "c"})

    # Operation.OwnerAccount: "The ID of the Amazon Web Services account that owns the namespace associated
    # with the operation." GetOperation: "For operations associated with namespaces that are shared with your
    # account, you must specify an OwnerAccount."
    op = sd.get_operation(OperationId=operation_id, OwnerAccount=shared.owner)["Operation"]
    assert (op["Type"], op["OwnerAccount"]) == ("REGISTER_INSTANCE", shared.owner)
    with pytest.raises(sd.exceptions.OperationNotFound):
        sd.get_operation(OperationId=operation_id)
    assert operation_id in [o["Id"] for o in shared.owner_sd.list_operations()["Operations"]]

    found = discovered(sd, "demo", "nginx", OwnerAccount=shared.owner)
    assert found == {"owner-1": {"FROM": "owner"}, "c-2": {"FROM": "c"}}
    with pytest.raises(sd.exceptions.NamespaceNotFound):  # without OwnerAccount: the caller's own only
        discovered(sd, "demo", "nginx")
    revision = sd.discover_instances_revision(
        NamespaceName="demo", ServiceName="api", OwnerAccount=shared.owner
    )
    assert revision["InstancesRevision"] > 0

    owner_view = {s["Name"]: s for s in shared.owner_sd.list_services()["Services"]}
    assert owner_view["api"]["CreatedByAccount"] == shared.consumer
    assert owner_view["api"]["ResourceOwner"] == shared.owner
    listed = shared.owner_sd.list_instances(ServiceId=owner_view["nginx"]["Id"])
    assert {i["Id"]: i["CreatedByAccount"] for i in listed["Instances"]} == {
        "owner-1": shared.owner,
        "c-2": shared.consumer,
    }
    assert listed["ResourceOwner"] == shared.owner
    assert discovered(shared.owner_sd, "demo", "api") == {"c-1": {"FROM": "c"}}

    sd.deregister_instance(ServiceId=service["Arn"], InstanceId="c-1")
    sd.delete_service(Id=service["Arn"])
    assert "api" not in {s["Name"] for s in shared.owner_sd.list_services()["Services"]}


def test_owner_account_picks_between_same_named_namespaces(shared: Shared) -> None:
    sd = shared.consumer_sd
    own_service = create_service(sd, create_namespace(sd, "demo"), "nginx")
    sd.register_instance(ServiceId=own_service, InstanceId="mine", Attributes={})
    assert set(discovered(sd, "demo", "nginx")) == {"mine"}
    assert set(discovered(sd, "demo", "nginx", OwnerAccount=shared.consumer)) == {"mine"}
    assert set(discovered(sd, "demo", "nginx", OwnerAccount=shared.owner)) == {"owner-1"}
    self_only = [{"Name": "RESOURCE_OWNER", "Values": ["SELF"]}]
    assert [ns["ResourceOwner"] for ns in sd.list_namespaces(Filters=self_only)["Namespaces"]] == [
        shared.consumer
    ]
    by_arn = [{"Name": "NAMESPACE_ID", "Values": [shared.namespace_arn]}]
    assert [s["ResourceOwner"] for s in sd.list_services(Filters=by_arn)["Services"]] == [shared.owner]


def test_a_consumers_calls_charge_its_own_quota(cloudmap: EmbeddedCloudMap, shared: Shared) -> None:
    cloudmap.set_quotas(True, scale=0.001)  # DiscoverInstances burst 2 per account
    for _ in range(2):
        discovered(shared.owner_sd, "demo", "nginx")
    with pytest.raises(shared.owner_sd.exceptions.RequestLimitExceeded):
        discovered(shared.owner_sd, "demo", "nginx")
    # The owner's bucket is empty; the consumer's, charged for its calls on the owner's namespace, is not.
    for _ in range(2):
        discovered(shared.consumer_sd, "demo", "nginx", OwnerAccount=shared.owner)
    with pytest.raises(shared.consumer_sd.exceptions.RequestLimitExceeded):
        discovered(shared.consumer_sd, "demo", "nginx", OwnerAccount=shared.owner)


def post(cloudmap: EmbeddedCloudMap, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{cloudmap.endpoint_url}/_mcsdns/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_accounts_and_shares_over_the_admin_paths(
    cloudmap: EmbeddedCloudMap, sd: Any, new_client: Callable[..., Any]
) -> None:
    namespace_id = create_namespace(sd, "demo")
    added = post(cloudmap, "accounts", {"account_id": "333344445555"})
    assert added["account_id"] == "333344445555"
    assert added["env"] == cloudmap.env("333344445555")
    shared = post(cloudmap, "share", {"namespace_id": namespace_id, "with_account": "333344445555"})
    consumer = new_client(cloudmap, account_id="333344445555")
    assert [ns["Arn"] for ns in consumer.list_namespaces()["Namespaces"]] == [shared["namespace_arn"]]
    with pytest.raises(urllib.error.HTTPError) as exc:
        post(cloudmap, "share", {"namespace_id": "ns-missing", "with_account": "333344445555"})
    assert exc.value.code == 400
    exc.value.close()  # an HTTPError holds the response (and its socket) open
    post(cloudmap, "unshare", {"namespace_arn": shared["namespace_arn"], "with_account": "333344445555"})
    assert consumer.list_namespaces()["Namespaces"] == []


def test_reset_forgets_every_account_and_share(cloudmap: EmbeddedCloudMap, shared: Shared) -> None:
    create_namespace(shared.consumer_sd, "mine")
    cloudmap.reset()
    assert shared.consumer_sd.list_namespaces()["Namespaces"] == []
    assert shared.owner_sd.list_namespaces()["Namespaces"] == []
    assert cloudmap.accounts == [shared.owner, shared.consumer]

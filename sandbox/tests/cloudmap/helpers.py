"""boto3 clients for the embedded Cloud Map, and small builders for namespaces, services and instances.

boto3 lives here, not in ``mcsdns_sandbox``: the import contract keeps boto3/botocore inside
``mcsdns.clients.cloudmap``.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

NO_RETRIES = {"total_max_attempts": 1}  # note: botocore's "max_attempts" counts retries, not attempts

# One session for every test client: a session caches the parsed service model; a new one re-reads it
# (about 0.1 s per client).
_SESSION = boto3.session.Session()


def make_client(
    cloudmap: EmbeddedCloudMap, *, retries: dict[str, Any] | None = None, account_id: str | None = None
) -> Any:
    """A servicediscovery client bound to ``cloudmap`` as ``account_id`` (default: its first account); by
    default it makes exactly one attempt per call."""
    env = cloudmap.env(account_id)
    return _SESSION.client(
        "servicediscovery",
        endpoint_url=cloudmap.endpoint_url,
        region_name=cloudmap.region,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        # In-process twin of AWS_DISABLE_HOST_PREFIX_INJECTION=true: DiscoverInstances would otherwise go to
        # http://data-127.0.0.1:<port>.
        config=Config(inject_host_prefix=False, retries=retries or NO_RETRIES),
    )


def create_namespace(sd: Any, name: str) -> str:
    """Create an HTTP namespace and return its id, read from the operation as the AWS controller does."""
    operation_id = sd.create_http_namespace(Name=name)["OperationId"]
    return str(sd.get_operation(OperationId=operation_id)["Operation"]["Targets"]["NAMESPACE"])


def create_service(sd: Any, namespace_id: str, name: str, **kwargs: Any) -> str:
    return str(sd.create_service(Name=name, NamespaceId=namespace_id, **kwargs)["Service"]["Id"])


def discovered(sd: Any, namespace: str, service: str, **kwargs: Any) -> dict[str, dict[str, str]]:
    """DiscoverInstances as {instance id: attributes}."""
    response = sd.discover_instances(NamespaceName=namespace, ServiceName=service, **kwargs)
    return {i["InstanceId"]: i["Attributes"] for i in response["Instances"]}


def error_code(exc: Any) -> str:
    return str(exc.response["Error"]["Code"])


def http_status(exc: Any) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])

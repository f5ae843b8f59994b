"""The Cloud Map client without AWS credentials: one clear sentence at start-up, and the same in /readyz."""

from __future__ import annotations

import os

import botocore.exceptions
import pytest

from mcsdns.clients.cloudmap import NO_CREDENTIALS, NO_REGION, CloudMapClient, CloudMapError
from mcsdns.errors import StartupError


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing for boto3 to find: no variables, no files, no instance metadata (nothing leaves the host)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def test_no_credentials_stops_the_client_from_being_made() -> None:
    with pytest.raises(StartupError) as raised:
        CloudMapClient(region="us-west-2")
    assert str(raised.value) == NO_CREDENTIALS
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in NO_CREDENTIALS


def test_no_region_says_where_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(StartupError) as raised:
        CloudMapClient()
    assert str(raised.value) == NO_REGION


async def test_credentials_lost_later_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """What /readyz shows (``waiting for the first list of cloudmap: <error>``) says the same sentence."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    client = CloudMapClient(region="us-west-2")

    def unsigned(**_: object) -> None:
        raise botocore.exceptions.NoCredentialsError()

    monkeypatch.setattr(client._client, "list_namespaces", unsigned)
    with pytest.raises(CloudMapError) as raised:
        await client.namespaces()
    assert str(raised.value) == f"cloudmap: ListNamespaces: {NO_CREDENTIALS}"

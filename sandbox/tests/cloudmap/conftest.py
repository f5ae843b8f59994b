"""Fixtures for the embedded Cloud Map tests: a running emulator on 127.0.0.1 and a boto3 client bound to it.
Each test gets its own emulator (its own moto account), so no state leaks between tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap

from .helpers import make_client


@pytest.fixture
def cloudmap() -> Iterator[EmbeddedCloudMap]:
    with EmbeddedCloudMap(seed=7) as emulator:
        yield emulator


@pytest.fixture
def sd(cloudmap: EmbeddedCloudMap) -> Iterator[Any]:
    client = make_client(cloudmap)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def new_client() -> Iterator[Callable[..., Any]]:
    """``new_client(emulator, account_id=None)``: more boto3 clients, each closed after the test (an open one
    would leave its socket to the garbage collector, a ResourceWarning)."""
    made: list[Any] = []

    def make(emulator: EmbeddedCloudMap, **kwargs: Any) -> Any:
        client = make_client(emulator, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()

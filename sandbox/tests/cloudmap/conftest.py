"""Fixtures for the embedded Cloud Map tests: a running emulator on 127.0.0.1 and a boto3 client bound to it.
Each test gets its own emulator (its own moto account), so no state leaks between tests."""

from __future__ import annotations

from collections.abc import Iterator
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

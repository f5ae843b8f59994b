"""The embedded Cloud Map on moto: proven versions only, moto imported by one module, and a failure inside
moto or the layer answered as AWS would (500 InternalFailure) and remembered, so the demo can name it."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import pytest

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap, motoapi

from .helpers import error_code, http_status

PACKAGE = Path(motoapi.__file__).parent


def test_proven_on_the_locked_moto() -> None:
    # The lock (requirements/*.txt) pins moto 5.2.6; 5.2.5 was the version before it, run with the same suite.
    assert motoapi.PROVEN_MOTO_VERSIONS == ("5.2.5", "5.2.6")
    if os.environ.get(motoapi.ALLOW_UNPROVEN_ENV) != "1":  # .ci/latest tries newer ones on purpose
        assert importlib.metadata.version("moto") in motoapi.PROVEN_MOTO_VERSIONS
        assert motoapi.check_moto() == importlib.metadata.version("moto")


def test_an_unproven_moto_stops_at_start_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(motoapi, "PROVEN_MOTO_VERSIONS", ("5.0.0",))
    monkeypatch.delenv(motoapi.ALLOW_UNPROVEN_ENV, raising=False)
    installed = importlib.metadata.version("moto")
    with pytest.raises(motoapi.UnprovenMoto) as exc:
        EmbeddedCloudMap()
    message = str(exc.value)
    assert f"proven on moto 5.0.0, and moto {installed} is installed" in message
    assert "requirements/demo.txt" in message and motoapi.ALLOW_UNPROVEN_ENV in message
    monkeypatch.setenv(motoapi.ALLOW_UNPROVEN_ENV, "1")
    assert motoapi.check_moto() == installed


def test_only_motoapi_imports_moto() -> None:
    importers = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if any(line.startswith(("from moto", "import moto")) for line in path.read_text().splitlines())
    )
    assert importers == ["motoapi.py"]


def test_every_operation_mcsdns_calls_is_answered_by_the_layer() -> None:
    called = {
        "ListNamespaces", "ListServices", "DiscoverInstances", "DiscoverInstancesRevision", "GetOperation",
        "CreateHttpNamespace", "CreateService", "RegisterInstance", "DeregisterInstance",
    }  # fmt: skip
    assert called <= motoapi.OPERATIONS.keys()


def test_a_bug_answers_internal_failure_and_is_remembered(
    cloudmap: EmbeddedCloudMap, sd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cloudmap.internal_error is None

    def broken(backend: Any, params: Any) -> dict[str, Any]:
        raise AttributeError("'Namespace' object has no attribute 'to_json'")

    monkeypatch.setitem(motoapi.OPERATIONS, "ListNamespaces", broken)
    with pytest.raises(Exception) as exc:
        sd.list_namespaces()
    assert (error_code(exc.value), http_status(exc.value)) == ("InternalFailure", 500)
    assert (
        cloudmap.internal_error
        == "ListNamespaces: AttributeError: 'Namespace' object has no attribute 'to_json'"
    )
    sd.create_http_namespace(Name="demo")  # the rest keeps answering

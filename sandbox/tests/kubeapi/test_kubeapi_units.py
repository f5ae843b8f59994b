"""The emulator's pure pieces without HTTP: selectors, patches, the IP allocator, table ages, tokens."""

from __future__ import annotations

import ipaddress
import random

import pytest

from mcsdns_sandbox.kubeapi.errors import ApiError
from mcsdns_sandbox.kubeapi.ipalloc import AllocationError, IPAllocator, parse_cidrs
from mcsdns_sandbox.kubeapi.patch import apply_patch, json_patch, merge_patch, strategic_merge_patch
from mcsdns_sandbox.kubeapi.selectors import parse_field_selector, parse_label_selector
from mcsdns_sandbox.kubeapi.storage import decode_continue, encode_continue
from mcsdns_sandbox.kubeapi.tables import human_duration


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        pytest.param("a=1", {"a": "1"}, True, id="equals"),
        pytest.param("a!=1", {}, True, id="not-equals-missing"),
        pytest.param("a in (1, 2),b", {"a": "2", "b": ""}, True, id="in-and-exists"),
        pytest.param("a notin (1,2)", {"a": "2"}, False, id="notin"),
        pytest.param("!a", {"a": "x"}, False, id="not-exists"),
        pytest.param("a>3", {"a": "4"}, True, id="greater"),
        pytest.param("example.com/a=x", {"example.com/a": "x"}, True, id="prefixed-key"),
    ],
)
def test_label_selector_matching(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is matches


@pytest.mark.parametrize("selector", ["a in (x", "a=b=c", "=x", "a>b", "a b"])
def test_bad_label_selectors_are_400(selector: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_label_selector(selector)
    assert raised.value.code == 400


def test_field_selector_unescapes_values() -> None:
    getters = {"metadata.name": lambda o: o["metadata"]["name"]}
    selector = parse_field_selector(r"metadata.name=a\,b", getters)
    assert selector.matches({"metadata": {"name": "a,b"}}, getters)
    assert selector.exact_name() == "a,b"


def test_merge_patch_follows_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c": "x"}}
    result = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/a/0"},
            {"op": "copy", "from": "/b/c", "path": "/d"},
            {"op": "move", "from": "/b", "path": "/e"},
            {"op": "replace", "path": "/d", "value": "y"},
            {"op": "test", "path": "/a", "value": [2, 3]},
        ],
    )
    assert result == {"a": [2, 3], "d": "y", "e": {"c": "x"}}
    assert doc == {"a": [1, 2], "b": {"c": "x"}}
    with pytest.raises(ApiError) as raised:
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert raised.value.code == 422


def test_strategic_merge_patch_directives() -> None:
    keys = {"spec.ports": "port", "metadata.finalizers": None}
    current = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "list": [1]},
    }
    patch = {
        "metadata": {"finalizers": ["b"], "labels": {"$retainKeys": ["x"], "x": "9"}},
        "spec": {
            "ports": [{"port": 443, "$patch": "delete"}, {"port": 8080}],
            "list": [2],
            "$setElementOrder/ports": [{"port": 80}],
        },
    }
    result = strategic_merge_patch(current, patch, keys)
    assert result["metadata"] == {"finalizers": ["a", "b"], "labels": {"x": "9"}}
    assert result["spec"] == {"ports": [{"port": 80, "name": "http"}, {"port": 8080}], "list": [2]}
    replaced = strategic_merge_patch(current, {"metadata": {"labels": {"$patch": "replace", "z": "3"}}}, keys)
    assert replaced["metadata"]["labels"] == {"z": "3"}
    removed = strategic_merge_patch(
        current, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, keys
    )
    assert removed["metadata"]["finalizers"] == []


def test_apply_patch_drops_only_fields_the_manager_stopped_applying() -> None:
    current = {"metadata": {"labels": {"mine": "1", "old": "1", "theirs": "1"}}}
    previous = {"metadata": {"labels": {"mine": "1", "old": "1"}}}
    applied = {"metadata": {"labels": {"mine": "2"}}}
    assert apply_patch(current, applied, previous, {})["metadata"]["labels"] == {"mine": "2", "theirs": "1"}


def test_ip_allocator_never_hands_out_network_or_broadcast() -> None:
    allocator = IPAllocator(ipaddress.ip_network("10.0.0.0/29"), random.Random(1))
    addresses = {allocator.allocate() for _ in range(6)}
    assert addresses == {f"10.0.0.{i}" for i in range(1, 7)}
    with pytest.raises(AllocationError, match="range is full"):
        allocator.allocate()
    allocator.release("10.0.0.3")
    assert allocator.allocate() == "10.0.0.3"
    with pytest.raises(AllocationError, match="not in the valid range"):
        allocator.reserve("10.0.0.7")


def test_dynamic_allocation_prefers_the_upper_band() -> None:
    allocator = IPAllocator(ipaddress.ip_network("10.96.0.0/24"), random.Random(3))
    assert all(int(allocator.allocate().rsplit(".", 1)[1]) > 16 for _ in range(50))


def test_service_cidr_parsing() -> None:
    assert [n.version for n in parse_cidrs("10.96.0.0/16, fd00::/108")] == [4, 6]
    with pytest.raises(ValueError):
        parse_cidrs("10.0.0.0/8,10.96.0.0/16")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ],
)
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_continue_tokens_round_trip_and_reject_garbage() -> None:
    assert decode_continue(encode_continue(42, "default/web")) == (42, "default/web")
    with pytest.raises(ApiError) as raised:
        decode_continue("not-a-token")
    assert raised.value.code == 400

"""Watch semantics: resume from a resourceVersion, synthetic initial events, selectors, bookmarks, 410 Gone
after compaction and the client's relist path, and ordered delivery under concurrent writes."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubeapi_helpers import MCS, service, service_import
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def raw_watch(
    url: str, *, limit: int | None = None, until: str | None = None, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Read a watch stream line by line until the server closes it, ``limit`` events arrived, or an event for
    the object named ``until`` (a sentinel written last, so that "nothing else came" needs no waiting)."""
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        for line in response:
            event = json.loads(line)
            if until is not None and event["object"].get("metadata", {}).get("name") == until:
                break
            events.append(event)
            if limit is not None and len(events) >= limit:
                break
    return events


def client_watch(func: Any, *args: Any, until: str, **kwargs: Any) -> list[tuple[str, str]]:
    """The official client's watch, stopped at the sentinel object ``until``."""
    stream = watch.Watch()
    seen: list[tuple[str, str]] = []
    for event in stream.stream(func, *args, timeout_seconds=10, **kwargs):
        name = event["object"].metadata.name
        if name == until:
            stream.stop()
            break
        seen.append((event["type"], name))
    return seen


def test_watch_from_a_version_sees_exactly_the_later_events_in_order(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_service("default", service("before"))
    start = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", service("web"))
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_service("before", "default")
    core.create_namespace({"metadata": {"name": "elsewhere"}})  # another type: not in this watch
    core.create_namespaced_service("elsewhere", service("web"))  # another namespace: not in this watch
    core.create_namespaced_service("default", service("end"))
    events = client_watch(core.list_namespaced_service, "default", resource_version=start, until="end")
    assert events == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "before")]


def test_watch_resource_versions_increase_and_deleted_carries_the_deletion_version(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    start = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", service("web"))
    core.delete_namespaced_service("web", "default")
    deleted_at = api.store.resource_version
    core.create_namespaced_service("default", service("end"))
    url = f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={start}"
    events = raw_watch(url, until="end")
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert versions == sorted(versions) and versions[1] == int(deleted_at)
    assert all(e["object"]["apiVersion"] == "v1" and e["object"]["kind"] == "Service" for e in events)


def test_watch_without_a_version_starts_with_the_current_state(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_service("default", service("web"))
    url = f"{api.url}/api/v1/namespaces/default/services?watch=true"
    events = raw_watch(url, limit=2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "kubernetes"),
        ("ADDED", "web"),
    ]


STREAMING_LIST = (
    "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
)
INITIAL_EVENTS_END = {"k8s.io/initial-events-end": "true"}


def without_progress_bookmarks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events but the periodic BOOKMARKs (this emulator sends them often), which carry no annotation."""
    return [
        e
        for e in events
        if e["type"] != "BOOKMARK" or e["object"]["metadata"].get("annotations") == INITIAL_EVENTS_END
    ]


def test_streaming_list_sends_the_state_then_a_marked_bookmark_then_changes(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    # KEP-3157, what kubectl's informers ask for since 1.32: without the bookmark a client waits forever.
    core.create_namespaced_service("default", service("web"))
    listed = core.list_namespaced_service("default").metadata.resource_version

    def later() -> None:
        core.create_namespaced_service("default", service("late"))
        core.create_namespaced_service("default", service("zz-end"))

    timer = threading.Timer(0.5, later)
    timer.start()
    try:
        events = without_progress_bookmarks(
            raw_watch(f"{api.url}/api/v1/namespaces/default/services?{STREAMING_LIST}", until="zz-end")
        )
    finally:
        timer.join()
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "kubernetes"),
        ("ADDED", "web"),
        ("BOOKMARK", None),
        ("ADDED", "late"),
    ]
    end = events[2]["object"]
    assert end["kind"] == "Service" and end["metadata"]["resourceVersion"] == listed
    assert end["metadata"]["annotations"] == INITIAL_EVENTS_END


def test_streaming_list_without_initial_events_starts_now(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_service("default", service("web"))
    timer = threading.Timer(0.5, lambda: core.create_namespaced_service("default", service("zz-end")))
    timer.start()
    query = STREAMING_LIST.replace("sendInitialEvents=true", "sendInitialEvents=false")
    try:
        events = raw_watch(f"{api.url}/api/v1/namespaces/default/services?{query}", until="zz-end")
    finally:
        # The watch can see zz-end before the create's reply is read: the emulator must not stop under it.
        timer.join()
    assert without_progress_bookmarks(events) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("watch=true&sendInitialEvents=true&allowWatchBookmarks=true", "resourceVersionMatch"),
        ("watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", "allowWatchBookmarks"),
        ("watch=true&resourceVersionMatch=NotOlderThan", "resourceVersionMatch"),
    ],
)
def test_streaming_list_preconditions_are_checked(api: KubeApiEmulator, query: str, field: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{api.url}/api/v1/namespaces/default/services?{query}", timeout=5)
    assert raised.value.code == 422
    assert [cause["field"] for cause in json.loads(raised.value.read())["details"]["causes"]] == [field]


def test_watch_in_the_requested_version_of_a_multi_version_kind(api: KubeApiEmulator) -> None:
    api.store.create(service_import("web"))
    url = f"{api.url}/apis/{MCS}/v1beta1/namespaces/default/serviceimports?watch=1"
    assert [e["object"]["apiVersion"] for e in raw_watch(url, limit=1)] == [f"{MCS}/v1beta1"]


def test_label_selector_watch_turns_leaving_the_selection_into_deleted(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    start = api.store.resource_version
    body = service("web")
    body["metadata"]["labels"] = {"export": "yes"}
    core.create_namespaced_service("default", body)
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"export": "no"}}})
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"export": "yes"}}})
    end = service("end")
    end["metadata"]["labels"] = {"export": "yes"}
    core.create_namespaced_service("default", end)
    url = (
        f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={start}"
        "&labelSelector=export%3Dyes"
    )
    assert [e["type"] for e in raw_watch(url, until="end")] == ["ADDED", "DELETED", "ADDED"]


def test_field_selector_watch_on_one_name(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    start = api.store.resource_version
    core.create_namespaced_service("default", service("a"))
    core.create_namespaced_service("default", service("b"))
    core.delete_namespaced_service("b", "default")
    core.delete_namespaced_service("a", "default")
    core.create_namespaced_service("default", service("b"))
    events = raw_watch(
        f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={start}"
        "&fieldSelector=metadata.name%3Db",
        limit=3,
    )
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]
    assert {e["object"]["metadata"]["name"] for e in events} == {"b"}


def test_bookmarks_arrive_periodically_and_before_the_server_closes(api: KubeApiEmulator) -> None:
    url = (
        f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={api.store.resource_version}"
        "&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    events = raw_watch(url)
    assert len(events) >= 2  # bookmark_interval is 0.2 s in these tests, plus one just before the close
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert events[-1]["object"]["metadata"]["resourceVersion"] == api.store.resource_version
    assert events[-1]["object"]["kind"] == "Service"


def test_no_bookmarks_unless_asked(api: KubeApiEmulator) -> None:
    url = (
        f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={api.store.resource_version}"
        "&timeoutSeconds=1"
    )
    assert raw_watch(url) == []


def test_client_resumes_from_bookmark_versions(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    stream = watch.Watch()
    seen: list[str] = []
    for event in stream.stream(
        core.list_namespaced_service,
        "default",
        resource_version=api.store.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=2,
    ):
        seen.append(event["type"])
        if event["type"] == "BOOKMARK":
            stream.stop()
    assert seen == ["BOOKMARK"]
    assert stream.resource_version == api.store.resource_version


def test_watch_after_compaction_gets_an_expired_error_event(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    old = api.store.resource_version
    core.create_namespaced_service("default", service("web"))
    api.compact()
    events = raw_watch(f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={old}")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    # The current version still works after compaction.
    current = api.store.resource_version
    core.create_namespaced_service("default", service("end"))
    url = f"{api.url}/api/v1/namespaces/default/services?watch=1&resourceVersion={current}"
    assert raw_watch(url, until="end") == []


def test_history_bound_expires_old_versions() -> None:
    with KubeApiEmulator(history_size=3) as small:
        old = small.store.resource_version
        for i in range(4):
            small.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"n{i}"}})
        events = raw_watch(f"{small.url}/api/v1/namespaces?watch=1&resourceVersion={old}")
        assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
        small.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "end"}})
        oldest_kept = int(small.store.resource_version) - 3  # the last three events are n2, n3, end
        events = raw_watch(
            f"{small.url}/api/v1/namespaces?watch=1&resourceVersion={oldest_kept}", until="end"
        )
        assert [e["object"]["metadata"]["name"] for e in events] == ["n2", "n3"]
        events = raw_watch(f"{small.url}/api/v1/namespaces?watch=1&resourceVersion={oldest_kept - 1}")
        assert [e["type"] for e in events] == ["ERROR"]


def test_client_relists_after_410_and_watches_again(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    """The informer pattern: list, watch; on 410 list again and watch from the new list's version."""
    listed = core.list_namespaced_service("default")
    core.create_namespaced_service("default", service("web"))
    api.compact()
    with pytest.raises(ApiException) as raised:
        for _ in watch.Watch().stream(
            core.list_namespaced_service, "default", resource_version=listed.metadata.resource_version
        ):
            pass
    assert raised.value.status == 410
    relisted = core.list_namespaced_service("default")
    assert [s.metadata.name for s in relisted.items] == ["kubernetes", "web"]
    core.create_namespaced_service("default", service("after"))
    core.create_namespaced_service("default", service("end"))
    events = client_watch(
        core.list_namespaced_service,
        "default",
        resource_version=relisted.metadata.resource_version,
        until="end",
    )
    assert events == [("ADDED", "after")]


def test_list_continue_after_compaction_is_410_with_a_fresh_token(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    for i in range(4):
        core.create_namespaced_service("default", service(f"s{i}"))
    first = core.list_namespaced_service("default", limit=2)
    core.create_namespaced_service("default", service("s9"))
    api.compact()
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_service("default", limit=2, _continue=first.metadata._continue)
    status = json.loads(raised.value.body)
    assert (raised.value.status, status["reason"]) == (410, "Expired")
    rest = core.list_namespaced_service("default", _continue=status["metadata"]["continue"])
    assert [s.metadata.name for s in rest.items] == ["s1", "s2", "s3", "s9"]


def test_list_at_an_exact_old_version_sees_the_old_state(
    api: KubeApiEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_service("default", service("web"))
    then = api.store.resource_version
    core.delete_namespaced_service("web", "default")
    old = core.list_namespaced_service("default", resource_version=then, resource_version_match="Exact")
    assert [s.metadata.name for s in old.items] == ["kubernetes", "web"]
    assert old.metadata.resource_version == then
    api.compact()
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_service("default", resource_version=then, resource_version_match="Exact")
    assert raised.value.status == 410


def test_concurrent_watchers_see_every_write_in_order(api: KubeApiEmulator, core: client.CoreV1Api) -> None:
    start = api.store.resource_version
    writers, per_writer = 4, 25
    results: list[list[tuple[str, int]]] = [[] for _ in range(3)]

    def watcher(index: int) -> None:
        url = f"{api.url}/api/v1/services?watch=1&resourceVersion={start}&timeoutSeconds=20"
        for event in raw_watch(url, limit=writers * per_writer * 2, timeout=20):
            results[index].append((event["type"], int(event["object"]["metadata"]["resourceVersion"])))

    def writer(index: int) -> None:
        for i in range(per_writer):
            name = f"w{index}-{i}"
            api.store.create(service(name))
            api.store.patch("services", name, {"metadata": {"labels": {"n": str(i)}}})

    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    expected_count = writers * per_writer * 2
    for events in results:
        versions = [v for _, v in events]
        assert len(events) == expected_count
        assert versions == sorted(versions) and len(set(versions)) == expected_count
    assert results[0] == results[1] == results[2]

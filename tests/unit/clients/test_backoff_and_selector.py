"""The shared retry backoff and the label selectors the informer views evaluate client-side."""

from __future__ import annotations

import random

import pytest

from mcsdns.clients.backoff import Backoff
from mcsdns.clients.kube import Selector


def test_backoff_grows_to_its_cap_with_full_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(backoff.ceiling())
        assert 0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    delays = [Backoff(1.0, 1.0, rng=random.Random(seed)).next_delay() for seed in range(50)]
    assert min(delays) < 0.2 and max(delays) > 0.8, "full jitter spreads retries over [0, ceiling]"


def test_backoff_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app", {"app": "x"}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": ""}, False),
        ("tier=web", {"tier": "web"}, True),
        ("tier==web", {"tier": "web"}, True),
        ("tier=web", {"tier": "db"}, False),
        ("tier!=web", {}, True),
        ("tier!=web", {"tier": "web"}, False),
        (
            "kubernetes.io/service-name,endpointslice.kubernetes.io/managed-by!=mcsdns",
            {"kubernetes.io/service-name": "a", "endpointslice.kubernetes.io/managed-by": "mcsdns"},
            False,
        ),
        (
            "kubernetes.io/service-name,endpointslice.kubernetes.io/managed-by!=mcsdns",
            {"kubernetes.io/service-name": "a", "endpointslice.kubernetes.io/managed-by": "controller"},
            True,
        ),
    ],
)
def test_selector_matches_as_the_api_server_does(
    selector: str, labels: dict[str, str], matches: bool
) -> None:
    assert Selector(selector).matches(labels) is matches


def test_a_views_objects_are_indexed_by_label_through_every_kind_of_write() -> None:
    from mcsdns.clients.kube import Objects

    def obj(name: str, service: str | None) -> dict[str, object]:
        labels = {"kubernetes.io/service-name": service} if service else {}
        return {"metadata": {"name": name, "namespace": "demo", "labels": labels}}

    objects = Objects({("demo", "a-1"): obj("a-1", "a")}, indexed=("kubernetes.io/service-name",))
    objects[("demo", "a-2")] = obj("a-2", "a")
    objects[("demo", "b-1")] = obj("b-1", "b")
    objects[("other", "a-1")] = {"metadata": {"labels": {"kubernetes.io/service-name": "a"}}}
    assert set(objects.labelled("kubernetes.io/service-name", "demo", "a")) == {
        ("demo", "a-1"),
        ("demo", "a-2"),
    }
    objects[("demo", "a-2")] = obj("a-2", "b")  # relabelled
    assert set(objects.labelled("kubernetes.io/service-name", "demo", "b")) == {
        ("demo", "a-2"),
        ("demo", "b-1"),
    }
    del objects[("demo", "a-1")]
    objects.pop(("demo", "b-1"))
    assert objects.pop(("demo", "gone"), None) is None
    assert objects.labelled("kubernetes.io/service-name", "demo", "a") == {}
    assert set(objects.labelled("kubernetes.io/service-name", "demo", "b")) == {("demo", "a-2")}


def test_a_write_reply_never_takes_a_view_back_behind_its_watch() -> None:
    from mcsdns.clients.kube import Objects

    def version(rv: str, **extra: object) -> dict[str, object]:
        return {"metadata": {"name": "web", "namespace": "demo", "resourceVersion": rv, **extra}}

    key = ("demo", "web")
    objects = Objects({key: version("1")})
    objects.wrote(key, version("2"), over=version("1"))
    assert objects[key] == version("2"), "nothing newer seen: the reply is the view's newest"
    objects[key] = version("4", deletionTimestamp="now")  # the watch: a deletion after our next write
    objects.wrote(key, version("3"), over=version("2"))
    assert objects[key] == version("4", deletionTimestamp="now")
    del objects[key]  # the watch: deleted
    objects.wrote(key, version("5"), over=version("4"))
    assert key not in objects, "a reply does not bring a deleted object back"
    objects.wrote(key, version("6"), over=None)
    assert objects[key] == version("6"), "a create is kept while the watch has not delivered it"
    objects.wrote(key, version("7"), over=None)
    assert objects[key] == version("6"), "a create reply does not replace what the watch holds"

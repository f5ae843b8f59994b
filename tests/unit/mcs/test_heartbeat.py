"""Clusters that are gone: the heartbeat's judgement, by the importer's clock over its own fresh reads."""

from __future__ import annotations

from mcsdns.clients.cloudmap import Instance
from mcsdns.mcs import heartbeat


def test_a_cluster_whose_beat_stands_still_grows_stale_then_evictable() -> None:
    judge = heartbeat.Staleness(stale_after=10.0, grace=5.0)
    judge.read(0.0, {"cls1": "1", "cls2": "1"})
    judge.read(6.0, {"cls1": "2", "cls2": "1"})
    judge.read(11.0, {"cls1": "3", "cls2": "1"})
    assert judge.stale() == {"cls2": 11.0} and judge.evictable() == frozenset()
    judge.read(16.5, {"cls1": "4", "cls2": "1"})
    assert judge.evictable() == {"cls2"}, "past stale_after + grace"
    judge.read(17.0, {"cls1": "5", "cls2": "2"})
    assert judge.stale() == {} and judge.evictable() == frozenset(), "a beat brings it back at once"


def test_a_partition_of_the_importer_never_makes_anybody_stale() -> None:
    judge = heartbeat.Staleness(stale_after=10.0, grace=5.0)
    judge.read(0.0, {"cls1": "1"})
    judge.failed()  # Cloud Map unreachable from here for a minute ...
    judge.read(60.0, {"cls1": "1"})  # ... and the first read after it still shows the old beat
    assert judge.stale() == {}
    judge.read(65.0, {"cls1": "1"})
    assert judge.ages() == {"cls1": 5.0}, "only time between two fresh reads counts"


def test_clusters_that_never_beat_or_stopped_being_listed_are_not_judged() -> None:
    judge = heartbeat.Staleness(stale_after=1.0, grace=0.0)
    judge.read(0.0, {"cls1": "1"})
    judge.read(5.0, {})  # its heartbeat instance was removed (uninstalled): nothing to say about it
    assert judge.ages() == {} and judge.stale() == {}
    off = heartbeat.Staleness(stale_after=0.0, grace=0.0)
    off.read(0.0, {"cls1": "1"})
    off.read(100.0, {"cls1": "1"})
    assert off.stale() == {} and off.evictable() == frozenset(), "0 turns judging off"


def test_beats_are_read_for_this_clusterset_only_and_instance_ids_fit_cloud_map() -> None:
    found = [
        Instance("a", heartbeat.beat_attributes("cls1", "set1", 7)),
        Instance("b", heartbeat.beat_attributes("cls9", "other", 8)),
        Instance("c", {"CLUSTER_ID": "cls3", "CLUSTERSET_ID": "set1"}),  # no beat: not a heartbeat
    ]
    assert heartbeat.beats(found, "set1") == {"cls1": "7"}
    assert len(heartbeat.instance_id("c" * 128, "s" * 128)) <= 64
    assert heartbeat.instance_id("cls1", "set1") == "set1/cls1"
    assert heartbeat.interval(300.0) == 60.0 and heartbeat.interval(1.0) == 0.2

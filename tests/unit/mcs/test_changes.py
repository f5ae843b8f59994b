"""Change beacons and the sweep (mcs/changes.py): what a beacon says, what an importer reads from it, and
the sweep's pace."""

from __future__ import annotations

import itertools

import pytest

from mcsdns.mcs import changes
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.workqueue import FairQueue


def beacon_of(log: changes.BeaconLog) -> changes.Beacon:
    found = changes.read_beacon(log.attributes("cls1", "set1"), "set1")
    assert found is not None
    return found


def test_a_beacon_round_trips_and_names_what_changed_since_a_sequence() -> None:
    log = changes.BeaconLog()
    log.announce([("demo", "a"), ("demo", "b")], now_ms=1000)
    first = log.seq
    log.announce([("prod", "c")], now_ms=1000)  # the same clock: still a new, larger sequence
    beacon = beacon_of(log)
    assert beacon.cluster == "cls1" and beacon.seq == first + 1 and beacon.since == 0
    assert changes.named_since(beacon, 0) == {("demo", "a"), ("demo", "b"), ("prod", "c")}
    assert changes.named_since(beacon, first) == {("prod", "c")}
    assert changes.named_since(beacon, beacon.seq) == set()


def test_attributes_stay_inside_cloud_maps_limits_and_old_batches_drop_out() -> None:
    log = changes.BeaconLog()
    long = "n" * 63
    for batch in range(200):
        log.announce([(long, f"{long[:50]}-{batch}-{i}") for i in range(3)], now_ms=batch)
    values = log.attributes("cls1", "set1")
    assert len(values) <= 30, "RegisterInstance: up to 30 custom attributes"
    assert all(len(v) <= changes.MAX_VALUE for v in values.values()), "a value is at most 1,024 characters"
    assert sum(len(k) + len(v) for k, v in values.items()) <= 5000, "5,000 characters in all"
    beacon = beacon_of(log)
    assert beacon.since > 0, "the oldest batches were dropped"
    assert changes.named_since(beacon, beacon.since - 1) is None, "an importer that saw less must check all"
    newest = {(long, f"{long[:50]}-199-{i}") for i in range(3)}
    assert changes.named_since(beacon, beacon.seq - 1) == newest


def test_a_batch_larger_than_one_value_is_split_under_the_same_sequence() -> None:
    log = changes.BeaconLog()
    keys = [("team", f"service-{i:03d}") for i in range(70)]  # about 1,200 characters
    log.announce(keys, now_ms=5)
    beacon = beacon_of(log)
    assert changes.named_since(beacon, 0) == set(keys)
    assert sum(1 for k in log.attributes("c", "s") if k.startswith(changes.CHANGED)) == 2


def test_a_new_leader_continues_the_log_it_finds() -> None:
    old = changes.BeaconLog()
    old.announce([("demo", "a")], now_ms=10_000)
    new = changes.BeaconLog()
    new.adopt(beacon_of(old))
    new.announce([("demo", "b")], now_ms=9_000)  # a clock behind the old leader's still moves forward
    beacon = beacon_of(new)
    assert beacon.seq > old.seq and beacon.since == 0
    assert changes.named_since(beacon, old.seq) == {("demo", "b")}


@pytest.mark.parametrize(
    "attributes",
    [
        {attrs.CLUSTER_ID: "c", attrs.CLUSTERSET_ID: "other", changes.SEQ: "1", changes.FROM: "0"},
        {attrs.CLUSTER_ID: "c", attrs.CLUSTERSET_ID: "set1", changes.SEQ: "x", changes.FROM: "0"},
        {attrs.CLUSTER_ID: "c", attrs.CLUSTERSET_ID: "set1", changes.FROM: "0"},
        {attrs.CLUSTERSET_ID: "set1", changes.SEQ: "1", changes.FROM: "0"},
        {
            attrs.CLUSTER_ID: "c",
            attrs.CLUSTERSET_ID: "set1",
            changes.SEQ: "2",
            changes.FROM: "0",
            f"{changes.CHANGED}0": "notanumber=demo/a",
        },
    ],
)
def test_what_is_not_a_beacon_of_this_clusterset_is_ignored(attributes: dict[str, str]) -> None:
    assert changes.read_beacon(attributes, "set1") is None


def test_the_sweep_checks_every_key_within_the_window_at_an_even_pace() -> None:
    sweep = changes.Sweep(max_staleness=100.0)  # window 80 s
    keys = [("ns", f"s{i}") for i in range(400)]
    verified = dict.fromkeys(keys, 0.0)
    now = 0.0
    per_poll = []
    while now < 80.0:
        now += 2.0
        picked = sweep.pick(verified, keys, now=now, period=2.0)
        per_poll.append(len(picked))
        verified.update(dict.fromkeys(picked, now))
    assert max(per_poll) <= 11 and min(per_poll) >= 9, "400 keys x 2 s / 80 s = 10 a poll, evenly"
    assert max(now - t for t in verified.values()) <= 80.0


def test_a_queue_of_first_reads_does_not_hold_the_sweep_past_its_bound() -> None:
    # A cold start or a burst: 1,500 new services queue for their first read while 2,000 imports, checked
    # over the last 150 s, fall due. The poll's limit (50) could go to the queue alone for 30 polls. The
    # sweep's pace fits half a poll: 3,500 keys x 1 s / 160 s = 22 a poll.
    sweep = changes.Sweep(max_staleness=200.0)  # window 160 s
    imported = [("a", f"s{i}") for i in range(2000)]
    verified = {key: -150.0 + 150.0 * i / len(imported) for i, key in enumerate(imported)}
    pending: FairQueue[changes.Key] = FairQueue()
    new = [(f"n{i % 7}", f"new{i}") for i in range(1500)]
    for key in new:
        pending.put(key)
    known = set(imported) | set(new)
    oldest, drained = 0.0, 0
    for poll in range(1, 300):
        now = float(poll)
        direct, checks = sweep.plan(pending, known, verified, now=now, period=1.0, limit=50)
        assert len(direct) + len(checks) <= 50
        verified.update(dict.fromkeys([*direct, *checks], now))
        oldest = max(oldest, max(now - verified[key] for key in imported))
        if not len(pending) and not drained:
            drained = poll
    assert oldest <= 160.0 + 1.0, "every import checked within the window, queue or not"
    assert 0 < drained <= 1500 / 25, "the queue still gets at least half of every poll"


def test_a_few_keys_cost_a_check_now_and_then_not_every_poll() -> None:
    sweep = changes.Sweep(max_staleness=300.0)  # window 240 s
    keys = [("ns", "only")]
    verified = {keys[0]: 0.0}
    checks = 0
    for poll in range(1, 126):  # 250 s of 2 s polls: one window and a bit
        picked = sweep.pick(verified, keys, now=poll * 2.0, period=2.0)
        checks += len(picked)
        verified.update(dict.fromkeys(picked, poll * 2.0))
    assert checks == 1


def test_overdue_and_never_checked_keys_go_first() -> None:
    sweep = changes.Sweep(max_staleness=10.0)
    verified = {("ns", "fresh"): 99.0, ("ns", "old"): 50.0}
    picked = sweep.pick(verified, [("ns", "fresh"), ("ns", "old"), ("ns", "new")], now=100.0, period=0.1)
    assert picked == [("ns", "new"), ("ns", "old")]


def test_a_service_seen_moving_is_followed_at_doubling_intervals_then_left_to_the_sweep() -> None:
    # The AWS controller creates a service, then registers its instances in later calls: a read between
    # the two sees it empty, and the rest must not wait for the sweep's window (240 s here).
    sweep = changes.Sweep(max_staleness=300.0)
    key = ("ns", "legacy-app")
    verified = {key: 0.0}
    pending: FairQueue[changes.Key] = FairQueue()
    sweep.moved(key, 0.0)
    checked_at = []
    for poll in range(1, 1000):  # 300 s of 0.3 s polls
        now = poll * 0.3
        _, checks = sweep.plan(pending, {key}, verified, now=now, period=0.3, limit=50)
        if key in checks:
            checked_at.append(now)
            verified[key] = now
            sweep.checked(key, now, changed=False)
    assert 1.0 <= checked_at[0] <= 1.3, "the first follow-up comes after about a second"
    gaps = [round(b - a) for a, b in itertools.pairwise(checked_at)]
    assert gaps[:6] == [2, 4, 8, 16, 32, 64], "doubling"
    assert len(checked_at) <= 9, "a move costs about log2(240 s / 1 s) checks; then the sweep's pace"


def test_a_follow_up_that_finds_a_move_starts_over_and_stays_inside_the_limit() -> None:
    sweep = changes.Sweep(max_staleness=300.0)
    keys = [("ns", f"s{i}") for i in range(30)]
    verified = dict.fromkeys(keys, 0.0)
    for key in keys:
        sweep.moved(key, 0.0)
    pending: FairQueue[changes.Key] = FairQueue()
    _, checks = sweep.plan(pending, set(keys), verified, now=1.0, period=1.0, limit=10)
    assert len(checks) == 10, "the rest stay due for the next poll"
    sweep.checked(checks[0], 1.0, changed=True)
    sweep.checked(checks[1], 1.0, changed=False)
    _, later = sweep.plan(pending, set(keys), verified, now=2.0, period=1.0, limit=50)
    assert checks[0] in later and checks[1] not in later
    assert set(later) >= set(keys) - set(checks), "the ones left over come at the next poll"


def test_checks_still_running_take_their_share_but_never_a_change_reads_turn() -> None:
    # The sweep's checks run behind the polls; while 15 are still waiting for the budget, a poll of 20
    # starts only 2 more, and every change read a beacon asked for still goes.
    sweep = changes.Sweep(max_staleness=10.0)
    overdue = [("ns", f"s{i}") for i in range(100)]
    pending: FairQueue[changes.Key] = FairQueue()
    named = [("ns", "new0"), ("ns", "new1"), ("ns", "new2")]
    for key in named:
        pending.put(key)
    verified = dict.fromkeys(overdue, 0.0)
    known = set(overdue) | set(named)
    direct, checks = sweep.plan(pending, known, verified, now=100.0, period=1.0, limit=20, in_flight=15)
    assert direct == named
    assert len(checks) == 2
    direct, checks = sweep.plan(pending, known, verified, now=101.0, period=1.0, limit=20, in_flight=30)
    assert direct == [] and checks == [], "more in flight than a poll's share: nothing more is started"

"""An upstream's health on its own: how long failures mark it down (as CoreDNS's ``forward`` does)."""

from __future__ import annotations

from mcsdns.dns.forward import DOWN_AFTER, DOWN_MAX, UpstreamHealth


def test_failures_mark_an_upstream_down_for_a_doubling_while_up_to_the_most() -> None:
    health = UpstreamHealth(("127.0.0.1", 53), 0, 2)
    health.failed(100.0)
    assert health.down_until == 0.0, f"one failure is not {DOWN_AFTER}"
    whiles = []
    for _ in range(8):
        health.failed(100.0)
        whiles.append(health.down_until - 100.0)
    assert whiles == [1.0, 2.0, 4.0, 8.0, 16.0, DOWN_MAX, DOWN_MAX, DOWN_MAX]
    health.succeeded(0.001)
    assert (health.fails, health.down_until) == (0, 0.0)


def test_an_outage_of_any_length_keeps_the_upstream_down_for_the_most() -> None:
    # 2.0 ** 1024 overflows: a long outage once made every later failure raise inside the forwarder.
    health = UpstreamHealth(("127.0.0.1", 53), 0, 2)
    for _ in range(5000):
        health.failed(100.0)
    assert health.down_until == 100.0 + DOWN_MAX and health.failures == 5000

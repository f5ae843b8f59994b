"""Request duration and size histograms, sampled so that they cost the packet path nothing measurable.

CoreDNS observes every request into three histograms; in Python that costs a few hundred nanoseconds a
query, a few per cent of the zone path (counting every query to pick each 32nd still cost 4 %). Here a
timer raises ``sample`` every ``SAMPLE_PERIOD`` and the next query is observed: its time inside mcsdns
(parse, lookup, render, the send call), its size and its reply's size; every other query pays one
attribute read. /metrics scales each histogram to the queries the responder counted, so counts and rates
read as CoreDNS's do, and a quantile is the same whatever the scale. Which query is taken depends on the
clock, which no client steers. Pure apart from the timer the server starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from mcsdns.histogram import DURATION_BUCKETS, SIZE_BUCKETS, Histogram
from mcsdns.wire import Malformed, parse_question

SAMPLE_PERIOD = 0.005  # seconds: at most 200 observed queries a second


@dataclass(slots=True)
class RequestStats:
    """What every listener of one process shares: the query count and the sampled histograms."""

    sample: bool = True  # observe the next query
    observed: dict[str, int] = field(default_factory=dict)  # queries observed, by proto
    durations: dict[tuple[str, int], Histogram] = field(default_factory=dict)  # (proto, QTYPE)
    request_sizes: dict[str, Histogram] = field(default_factory=dict)  # proto
    response_sizes: dict[str, Histogram] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raise ``sample`` every ``SAMPLE_PERIOD`` from now on, until ``stop``."""
        self._timer = loop.call_later(SAMPLE_PERIOD, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sample = True
        self._timer = loop.call_later(SAMPLE_PERIOD, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def observe(self, proto: str, query: bytes, reply: object, seconds: float) -> None:
        """One sampled query; ``reply`` is its bytes, or anything else when none was sent."""
        self.sample = False
        self.observed[proto] = self.observed.get(proto, 0) + 1
        try:
            qend = parse_question(query) if len(query) >= 12 else 0
            qtype = query[qend - 4] << 8 | query[qend - 3] if qend else 0
        except Malformed:
            qtype = 0
        key = (proto, qtype)
        if key not in self.durations:
            self.durations[key] = Histogram(DURATION_BUCKETS)
        self.durations[key].observe(seconds)
        for sizes, message in ((self.request_sizes, query), (self.response_sizes, reply)):
            if isinstance(message, bytes):
                if proto not in sizes:
                    sizes[proto] = Histogram(SIZE_BUCKETS)
                sizes[proto].observe(len(message))

    def scaled(self, answered: dict[str, int]) -> Scaled:
        """The histograms with each observed query standing for its share of the queries ``answered`` per
        proto, as /metrics reports them."""
        factor = {proto: answered.get(proto, 0) / count for proto, count in self.observed.items() if count}
        return Scaled(
            {key: h.scaled(factor.get(key[0], 0.0)) for key, h in self.durations.items()},
            {proto: h.scaled(factor.get(proto, 0.0)) for proto, h in self.request_sizes.items()},
            {proto: h.scaled(factor.get(proto, 0.0)) for proto, h in self.response_sizes.items()},
        )


class Scaled(NamedTuple):
    durations: dict[tuple[str, int], Histogram]  # (proto, QTYPE)
    request_sizes: dict[str, Histogram]  # proto
    response_sizes: dict[str, Histogram]

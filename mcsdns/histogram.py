"""A Prometheus-style histogram kept as plain numbers, for the places that observe without a client
library on their path (the packet path's samples, Cloud Map calls, reconciles) and for /metrics to read.
Pure, and at the bottom of the import graph: anything may use it."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# CoreDNS's buckets (plugin/metrics/vars): durations 0.25 ms doubling 16 times, sizes by typical limits.
DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
SIZE_BUCKETS: tuple[float, ...] = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
# Prometheus clients' default buckets, which controller-runtime's reconcile and API latencies resemble.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...]
    counts: list[float] = field(default_factory=list)  # per bucket, then +Inf; not cumulative
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0.0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def scaled(self, factor: float) -> Histogram:
        return Histogram(self.buckets, [count * factor for count in self.counts], self.total * factor)

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), +Inf last."""
        out, running = [], 0.0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

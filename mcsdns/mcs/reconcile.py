"""Reconcile metrics in controller-runtime's names, so a controller dashboard reads mcsdns's two loops as it
reads any Kubernetes controller's: ``controller_runtime_reconcile_total{controller,result}``,
``controller_runtime_reconcile_errors_total{controller}`` and ``controller_runtime_reconcile_time_seconds``.
The export controller reconciles one ServiceExport at a time; the import controller one Cloud Map poll."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from mcsdns.histogram import CALL_BUCKETS, Histogram


@dataclass(slots=True)
class ReconcileStats:
    controller: str
    results: collections.Counter[str] = field(default_factory=collections.Counter)  # success, error
    durations: Histogram = field(default_factory=lambda: Histogram(CALL_BUCKETS))

    def done(self, started: float, *, failed: bool) -> None:
        """One reconcile that began at ``started`` (time.monotonic) ended, well or not."""
        self.results["error" if failed else "success"] += 1
        self.durations.observe(time.monotonic() - started)

    def metrics(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "controller_runtime_reconcile", "Total number of reconciliations per controller",
            labels=["controller", "result"],
        )  # fmt: skip
        for result in ("success", "error"):
            total.add_metric([self.controller, result], self.results[result])
        errors = CounterMetricFamily(
            "controller_runtime_reconcile_errors", "Total number of reconciliation errors per controller",
            labels=["controller"],
        )  # fmt: skip
        errors.add_metric([self.controller], self.results["error"])
        seconds = HistogramMetricFamily(
            "controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller",
            labels=["controller"],
        )  # fmt: skip
        seconds.add_metric([self.controller], self.durations.cumulative(), sum_value=self.durations.total)
        yield from (total, errors, seconds)

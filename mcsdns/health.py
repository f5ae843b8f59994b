"""``--http``: /healthz, /readyz and /metrics, served from the event loop that serves DNS.

Liveness: if this answers, the loop runs; it fails once a background loop has died. Readiness: every
source has listed once (the zone is served) and, with the controller, the cluster and clusterset ids are
known; otherwise 503 with the reasons, one per line. Metrics are Prometheus text, read at scrape time from
the counters the components keep (the packet path only increments ints).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mcsdns import __version__
from mcsdns.dns.forward import Forwarder
from mcsdns.dns.responder import Responder
from mcsdns.dns.server import BatchedUdp, Listener, bind_reason
from mcsdns.dns.server import errors as server_errors
from mcsdns.dns.stats import Scaled
from mcsdns.errors import ListenError
from mcsdns.histogram import DURATION_BUCKETS, Histogram
from mcsdns.mcs.identity import ClusterIdentity
from mcsdns.mcs.leader import LeaderElector
from mcsdns.settings import ListenAddress
from mcsdns.sources.engine import SyncEngine
from mcsdns.wire import QType, Rcode
from mcsdns.zone.store import ZoneStore

if TYPE_CHECKING:
    from mcsdns.clients.cloudmap import CloudMapClient  # only a type: boto3 loads only with --cloudmap

logger = logging.getLogger(__name__)

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


@dataclass(kw_only=True)
class Observed:
    """The components the endpoint reports on; absent ones are simply not reported."""

    store: ZoneStore
    engine: SyncEngine
    responder: Responder
    listeners: tuple[Listener, ...] = ()
    task: asyncio.Task[None] | None = None
    identity: ClusterIdentity | None = None
    identity_required: bool = False
    elector: LeaderElector | None = None
    cloudmap: CloudMapClient | None = None
    forwarder: Forwarder | None = None
    metrics_names: str = "mcsdns"  # "coredns": also CoreDNS's names for the cache and forward families
    rejected: Callable[[], Sequence[str]] | None = None  # manifest objects not served as written
    ptr_addresses: Callable[[], int] | None = None  # --ptr: how many addresses answer PTR
    controllers: tuple[Any, ...] = ()
    workers: Any = None  # workers.Workers: the other serving processes (--workers)
    stopping_at: float = 0.0  # monotonic time the lame-duck period ends, once SIGTERM came
    extra: dict[str, Callable[[], float]] = field(default_factory=dict)

    def not_ready(self) -> list[str]:
        reasons = []
        if self.stopping_at:
            left = max(0.0, self.stopping_at - time.monotonic())
            reasons.append(f"shutting down: still answering DNS for {left:.1f}s (lame duck)")
        serving_saved = self.store.current is not None and self.store.current.saved_at > 0
        for name in () if serving_saved else self.engine.waiting_for:
            failure = self.engine.stats[name].failure if name in self.engine.stats else ""
            reasons.append(f"waiting for the first list of {name}" + (f": {failure}" if failure else ""))
        if self.store.current is None and not reasons:
            reasons.append("the first zone is being built")
        if self.identity_required and self.identity is not None:
            reasons.extend(self.identity.missing)
        if self.workers is not None and self.store.current is not None:
            reasons.extend(self.workers.not_ready())
        return reasons

    def stale(self) -> list[str]:
        """One line per source that is down while the last good zone serves: ready, but going stale."""
        now = time.time()
        lines = []
        current = self.store.current
        if current is not None and current.saved_at:
            waiting = ", ".join(self.engine.waiting_for) or "the first zone"
            lines.append(
                f"stale: serving the zone saved {now - current.saved_at:.0f}s ago until {waiting} lists"
            )
        for name, stats in sorted(self.engine.stats.items()):
            age = stats.stale_for(now)
            if age is not None and stats.listed:
                lines.append(f"stale: {name} {age:.0f}s ({failure_kind(stats.failure)}: {stats.failure})")
        return lines

    def rejected_lines(self, shown: int = 10) -> list[str]:
        """A count of the manifest objects not served as written, and the first few (the log has each)."""
        rejected = self.rejected() if self.rejected is not None else ()
        if not rejected:
            return []
        more = [f"... and {len(rejected) - shown} more"] if len(rejected) > shown else []
        return [f"rejected: {len(rejected)} manifest objects", *rejected[:shown], *more]

    def ptr_lines(self) -> list[str]:
        """``--ptr``: the reverse zones answered, and for how many of the zone's addresses."""
        if self.ptr_addresses is None:
            return []
        count = self.ptr_addresses()
        return [f"ptr: in-addr.arpa and ip6.arpa for {count} addresses; other reverse names fall through"]

    def alive(self) -> bool:
        return self.task is None or not self.task.done()


_FAILURE_KINDS = (  # what an operator acts on, first match wins: the text is the client's or the API's
    ("throttled", ("Throttl", "RequestLimitExceeded", "TooManyRequests", " 429")),
    ("credentials", ("credentials", "Unauthorized", " 401", "ExpiredToken", "InvalidClientTokenId", "token")),
    ("forbidden", ("Forbidden", " 403", "AccessDenied", "not authorized")),
    ("dns", ("Name or service not known", "name resolution", "getaddrinfo", "nodename nor servname")),
    ("unreachable", ("refused", "Cannot connect", "cannot connect", "unreachable", "timed out", "Timeout")),
)


def failure_kind(failure: str) -> str:
    """A short category of a source's failure, for the metric label and the /readyz line."""
    for kind, needles in _FAILURE_KINDS:
        if any(needle in failure for needle in needles):
            return kind
    return "error"


def _label(value: int, names: type[QType] | type[Rcode]) -> str:
    try:
        return names(value).name
    except ValueError:
        return str(value)


class _Collector(Collector):
    def __init__(self, observed: Observed) -> None:
        self._observed = observed

    def collect(self) -> Iterator[Any]:
        o = self._observed
        yield from build_info(o.metrics_names)
        serving = serving_metrics(o.responder, o.listeners, o.forwarder, o.metrics_names)
        yield from merge_samples(serving, o.workers.samples() if o.workers is not None else {})
        snapshot = o.store.current
        yield GaugeMetricFamily(
            "mcsdns_zone_serial", "SOA serial of the served zone", value=snapshot.serial if snapshot else 0
        )
        yield GaugeMetricFamily(
            "mcsdns_zone_services", "Services in the zone", value=snapshot.services if snapshot else 0
        )
        yield GaugeMetricFamily(
            "mcsdns_zone_names", "Names in the zone", value=len(snapshot.names) if snapshot else 0
        )
        yield GaugeMetricFamily(
            "mcsdns_zone_stale",
            "1 while the zone saved by an earlier run (--state-dir) serves, until every source has listed",
            value=1 if snapshot is not None and snapshot.saved_at else 0,
        )
        yield GaugeMetricFamily(
            "mcsdns_zone_answers", "Precomputed answers", value=len(snapshot.answers) if snapshot else 0
        )
        events = CounterMetricFamily(
            "mcsdns_source_events", "Changes received per zone source", labels=["source"]
        )
        listed = GaugeMetricFamily("mcsdns_source_listed", "1 once the source has listed", labels=["source"])
        synced = GaugeMetricFamily(
            "mcsdns_source_last_change_timestamp_seconds",
            "Unix time of the source's last change",
            labels=["source"],
        )
        up = GaugeMetricFamily(
            "mcsdns_source_up", "1 while the source reaches its backend, 0 while it fails", labels=["source"]
        )
        success = GaugeMetricFamily(
            "mcsdns_source_last_success_timestamp_seconds",
            "Unix time of the source's last good list, poll or watch event",
            labels=["source"],
        )
        staleness = GaugeMetricFamily(
            "mcsdns_source_staleness_seconds",
            "Seconds since the last good contact while the source is down; 0 while it is up",
            labels=["source"],
        )
        failing = GaugeMetricFamily(
            "mcsdns_source_failure_info", "1 for why a source is down", labels=["source", "reason"]
        )
        now = time.time()
        for source, stats in sorted(o.engine.stats.items()):
            events.add_metric([source], stats.events)
            listed.add_metric([source], 1 if stats.listed else 0)
            synced.add_metric([source], stats.last_change)
            up.add_metric([source], 1 if stats.up else 0)
            success.add_metric([source], stats.last_success)
            age = stats.stale_for(now)
            staleness.add_metric([source], 0.0 if age is None else min(age, now))
            if not stats.up:
                failing.add_metric([source, failure_kind(stats.failure)], 1)
        yield from (events, listed, synced, up, success, staleness, failing)
        if o.rejected is not None:
            yield GaugeMetricFamily(
                "mcsdns_manifests_rejected_objects",
                "Manifest objects not served as written (invalid; their previous version serves if any)",
                value=len(o.rejected()),
            )
        if o.elector is not None:
            yield GaugeMetricFamily(
                "mcsdns_leader", "1 while this replica may write", value=int(o.elector.may_write())
            )
            # client-go's leader election gauge, which controller dashboards and alerts read.
            master = GaugeMetricFamily(
                "leader_election_master_status",
                "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 "
                "indicates master. 'name' is the string used to identify the lease.",
                labels=["name"],
            )
            master.add_metric([o.elector.lease_name], int(o.elector.may_write()))
            yield master
        if o.cloudmap is not None:
            calls = CounterMetricFamily(
                "mcsdns_cloudmap_calls",
                "Cloud Map API calls by outcome (success, throttled, error)",
                labels=["operation", "outcome"],
            )
            throttles = CounterMetricFamily(
                "mcsdns_cloudmap_throttles", "Throttled Cloud Map calls", labels=["operation"]
            )
            for (operation, outcome), count in sorted(o.cloudmap.outcomes.items()):
                calls.add_metric([operation, outcome], count)
            for operation, count in sorted(o.cloudmap.throttles.items()):
                throttles.add_metric([operation], count)
            yield from (calls, throttles)
            budget = o.cloudmap.budget
            yield GaugeMetricFamily(
                "mcsdns_cloudmap_rate_budget",
                "Cloud Map calls per second this process may make (--cloudmap-rate)",
                value=budget.limit,
            )
            allowed = GaugeMetricFamily(
                "mcsdns_cloudmap_rate_allowed",
                "Cloud Map calls per second allowed now per AWS quota: the budget, lowered after throttling"
                " (AIMD)",
                labels=["quota"],
            )
            for group, quota in sorted(o.cloudmap.quotas.items()):
                allowed.add_metric([group], quota.allowed)
            yield allowed
            yield GaugeMetricFamily(
                "mcsdns_cloudmap_waiting_calls",
                "Cloud Map calls waiting for the rate budget",
                value=budget.waiting,
            )
            yield _histogram(
                "mcsdns_cloudmap_call_duration_seconds",
                "Time of each Cloud Map API call, answered or failed, by operation",
                ["operation"],
                (([operation], h) for operation, h in sorted(o.cloudmap.durations.items())),
            )
        for controller in o.controllers:
            yield from controller.metrics()
        if o.workers is not None:
            yield from o.workers.metrics()


def serving_metrics(
    responder: Responder, listeners: Sequence[Listener], forwarder: Forwarder | None, metrics_names: str
) -> Iterator[Metric]:
    """The families of one serving process: replies, TCP connections, forwarding. A worker
    (``workers.py``) sends these to the main process, which adds them to its own (``merge_samples``)."""
    responses = CounterMetricFamily(
        "mcsdns_dns_responses",
        "DNS replies sent, by transport, QTYPE and RCODE",
        labels=["transport", "qtype", "rcode"],
    )
    for transport, counts in (("udp", responder.udp), ("tcp", responder.tcp)):
        for key, count in sorted(counts.items()):
            responses.add_metric([transport, _label(key >> 8, QType), _label(key & 0xF, Rcode)], count)
    yield responses
    dropped = CounterMetricFamily(
        "mcsdns_dns_dropped",
        "Packets dropped unanswered (short, or QR set); UDP replies a full socket buffer did not take",
        labels=["transport"],
    )
    unsent = sum(listener.udp.dropped for listener in listeners if isinstance(listener.udp, BatchedUdp))
    for transport, count in responder.dropped.items():
        dropped.add_metric([transport], count + (unsent if transport == "udp" else 0))
    yield dropped
    yield CounterMetricFamily("mcsdns_dns_truncated", "UDP replies sent with TC=1", value=responder.truncated)
    if listeners:
        limits = listeners[0].connections
        yield GaugeMetricFamily("mcsdns_tcp_connections", "Open TCP connections", value=limits.open)
        yield CounterMetricFamily(
            "mcsdns_tcp_connections_accepted", "TCP connections accepted", value=limits.accepted
        )
        yield CounterMetricFamily(
            "mcsdns_tcp_connections_rejected", "TCP connections closed at the cap", value=limits.rejected
        )
        yield CounterMetricFamily(
            "mcsdns_tcp_connections_evicted",
            "Idle TCP connections closed to admit a new one at the cap",
            value=limits.evicted,
        )
        yield CounterMetricFamily(
            "mcsdns_tcp_connections_timed_out",
            "TCP connections closed for silence, a slow message or their lifetime",
            value=limits.timed_out,
        )
    answered = {"udp": sum(responder.udp.values()), "tcp": sum(responder.tcp.values())}
    scaled = listeners[0].requests.scaled(answered) if listeners else None
    if scaled is not None:
        yield from _request_metrics(scaled)
    yield CounterMetricFamily(
        "mcsdns_dns_errors",
        "Unexpected errors answering a query (answered SERVFAIL)",
        value=server_errors.count,
    )
    server = f"dns://{listeners[0].address}" if listeners else "dns://"
    if metrics_names == "coredns":
        yield from _coredns_request_metrics(responder, listeners, server, scaled)
    if forwarder is not None:
        yield from _forward_metrics(forwarder, responder)
        if metrics_names == "coredns":
            yield from _coredns_forward_metrics(forwarder, server)


def _histogram(
    name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in series:
        family.add_metric(values, histogram.cumulative(), sum_value=histogram.total)
    return family


def _request_metrics(scaled: Scaled) -> Iterator[Metric]:
    """Request duration and sizes: a query every few milliseconds is observed (dns/stats.py), each
    histogram scaled to the queries answered."""
    yield _histogram(
        "mcsdns_dns_request_duration_seconds",
        "Time from a query's arrival to its reply's send, by transport and QTYPE (sampled, scaled)",
        ["proto", "type"],
        (([proto, _label(qtype, QType)], h) for (proto, qtype), h in sorted(scaled.durations.items())),
    )
    for kind, sizes in (("request", scaled.request_sizes), ("response", scaled.response_sizes)):
        yield _histogram(
            f"mcsdns_dns_{kind}_size_bytes",
            f"Size of each {kind} in bytes, by transport (sampled, scaled)",
            ["proto"],
            (([proto], h) for proto, h in sorted(sizes.items())),
        )


def _coredns_request_metrics(
    responder: Responder, listeners: Sequence[Listener], server: str, scaled: Scaled | None
) -> Iterator[Metric]:
    """CoreDNS's request families (plugin/metrics), with its names and labels, so its dashboards and the
    kube-prometheus alerts (CoreDNSLatencyHigh, CoreDNSErrorsHigh) read mcsdns unchanged. ``zone`` is the
    clusterset zone; ``family`` is the first listener's; ``view`` and ``plugin`` are empty."""
    zone = responder.zone
    family = "2" if listeners and ":" in listeners[0].address.host else "1"
    requests = CounterMetricFamily(
        "coredns_dns_requests",
        "Counter of DNS requests made per zone, protocol and family.",
        labels=["server", "zone", "view", "proto", "family", "type"],
    )
    responses = CounterMetricFamily(
        "coredns_dns_responses",
        "Counter of response status codes.",
        labels=["server", "zone", "view", "rcode", "plugin"],
    )
    by_rcode: collections.Counter[str] = collections.Counter()
    for proto, counts in (("udp", responder.udp), ("tcp", responder.tcp)):
        by_type: collections.Counter[str] = collections.Counter()
        for key, count in counts.items():
            by_type[_label(key >> 8, QType)] += count
            by_rcode[_label(key & 0xF, Rcode)] += count
        for qtype, count in sorted(by_type.items()):
            requests.add_metric([server, zone, "", proto, family, qtype], count)
    for rcode, count in sorted(by_rcode.items()):
        responses.add_metric([server, zone, "", rcode, ""], count)
    yield from (requests, responses)
    if scaled is None:
        return
    durations: dict[str, Histogram] = {}
    for (_, number), histogram in scaled.durations.items():  # by type, not proto
        durations.setdefault(_label(number, QType), Histogram(DURATION_BUCKETS)).add(histogram)
    yield _histogram(
        "coredns_dns_request_duration_seconds",
        "Histogram of the time (in seconds) each request took per zone.",
        ["server", "zone", "view", "type"],
        (([server, zone, "", qtype], h) for qtype, h in sorted(durations.items())),
    )
    for kind, sizes in (("request", scaled.request_sizes), ("response", scaled.response_sizes)):
        yield _histogram(
            f"coredns_dns_{kind}_size_bytes",
            f"Size of the {kind}s in bytes.",
            ["server", "zone", "view", "proto"],
            (([server, zone, "", proto], h) for proto, h in sorted(sizes.items())),
        )
    yield CounterMetricFamily(
        "coredns_panics", "A metrics that counts the number of panics.", value=server_errors.count
    )


# Gauges whose value across serving processes is their sum; every other gauge is the main process's.
ADDITIVE_GAUGES = frozenset(
    {
        "mcsdns_tcp_connections",
        "mcsdns_forward_cache_entries",
        "mcsdns_forward_cache_bytes",
        "coredns_cache_entries",
    }
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def additive_samples(families: Iterator[Metric]) -> Samples:
    """The samples of ``families`` that add up across processes, keyed by sample name and labels."""
    out: Samples = {}
    for family in families:
        if family.type in ("counter", "histogram") or family.name in ADDITIVE_GAUGES:
            for sample in family.samples:
                out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def merge_samples(families: Iterator[Metric], extra: Samples) -> Iterator[Metric]:
    """``families`` with ``extra`` (other processes' additive samples) added in, label sets they lack
    included."""
    for family in families:
        if extra and (family.type in ("counter", "histogram") or family.name in ADDITIVE_GAUGES):
            names = {f"{family.name}{suffix}" for suffix in ("_total", "", "_bucket", "_sum", "_count")}
            mine = {(sample.name, tuple(sorted(sample.labels.items()))) for sample in family.samples}
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                merged.add_sample(sample.name, sample.labels, sample.value + extra.get(key, 0.0))
            for (name, labels), value in extra.items():
                if name in names and (name, labels) not in mine:
                    merged.add_sample(name, dict(labels), value)
            yield merged
        else:
            yield family


def _forward_metrics(f: Forwarder, responder: Responder) -> Iterator[Metric]:
    cache = f.cache
    forwarded = CounterMetricFamily(
        "mcsdns_forward_queries", "Queries for names outside the zone, by outcome", labels=["outcome"]
    )
    for outcome, count in (
        ("cache_hit", cache.hits + cache.denial_hits),
        ("cache_miss", f.misses),
        ("coalesced", f.coalesced),
        ("stale", f.stale_answers),
        ("refused", responder.forward_refused),
        ("servfail", f.failures),
    ):
        forwarded.add_metric([outcome], count)
    yield forwarded
    entries = GaugeMetricFamily(
        "mcsdns_forward_cache_entries", "Answers in the forwarding cache", labels=["type"]
    )
    positive, negative = cache.counts()
    entries.add_metric(["positive"], positive)
    entries.add_metric(["negative"], negative)
    yield entries
    yield GaugeMetricFamily(
        "mcsdns_forward_cache_bytes", "Bytes the forwarding cache holds", value=cache.bytes
    )
    yield CounterMetricFamily(
        "mcsdns_forward_cache_evictions",
        "Answers evicted to stay within the cache's size",
        value=cache.evictions + cache.denial_evictions,
    )
    yield CounterMetricFamily(
        "mcsdns_forward_cache_prefetches",
        "Popular answers refreshed before they expired",
        value=cache.prefetches,
    )
    yield CounterMetricFamily(
        "mcsdns_forward_upstream_errors", "Failed upstream attempts", value=f.upstream_errors
    )
    yield CounterMetricFamily(
        "mcsdns_forward_ignored_replies",
        "Upstream replies that matched no query in flight (late, or spoofed)",
        value=f.ignored,
    )
    yield _histogram(
        "mcsdns_forward_request_duration_seconds",
        "Round-trip time of each upstream reply",
        ["upstream"],
        (([str(ListenAddress(*u.address))], u.durations) for u in f.upstreams),
    )
    replies = CounterMetricFamily(
        "mcsdns_forward_responses", "Upstream replies by RCODE", labels=["upstream", "rcode"]
    )
    for u in f.upstreams:
        for rcode, count in sorted(u.rcodes.items()):
            replies.add_metric([str(ListenAddress(*u.address)), _label(rcode, Rcode)], count)
    yield replies
    queries = CounterMetricFamily("mcsdns_forward_upstream_queries", "Queries sent", labels=["upstream"])
    failures = CounterMetricFamily(
        "mcsdns_forward_upstream_failures", "Timeouts and unusable replies", labels=["upstream"]
    )
    rtt = GaugeMetricFamily(
        "mcsdns_forward_upstream_rtt_seconds", "Smoothed round-trip time", labels=["upstream"]
    )
    up = GaugeMetricFamily(
        "mcsdns_forward_upstream_up", "1 unless marked down after failing twice in a row", labels=["upstream"]
    )
    now = time.monotonic()
    for upstream in f.upstreams:
        name = str(ListenAddress(*upstream.address))
        queries.add_metric([name], upstream.queries)
        failures.add_metric([name], upstream.failures)
        rtt.add_metric([name], upstream.srtt)
        up.add_metric([name], 0 if upstream.down_until > now else 1)
    yield from (queries, failures, rtt, up)


def _coredns_forward_metrics(f: Forwarder, server: str) -> Iterator[Metric]:
    """The same counts under CoreDNS's ``cache`` and ``forward`` plugin names and labels (plugin/cache and
    plugin/forward metrics.go): ``zones`` is the root, as a sidecar caches every name it forwards."""
    cache = f.cache
    at = [server, ".", ""]  # server, zones, view
    positive, negative = cache.counts()
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    for name, doc, kind, success, denial in (
        ("coredns_cache_entries", "The number of elements in the cache.", gauge, positive, negative),
        ("coredns_cache_hits", "The count of cache hits.", counter, cache.hits, cache.denial_hits),
        ("coredns_cache_evictions", "The count of cache evictions.", counter,
         cache.evictions, cache.denial_evictions),
    ):  # fmt: skip
        typed = kind(name, doc, labels=["server", "type", "zones", "view"])
        typed.add_metric([server, "success", ".", ""], success)
        typed.add_metric([server, "denial", ".", ""], denial)
        yield typed
    hits = cache.hits + cache.denial_hits
    for name, doc, value in (
        ("coredns_cache_requests", "The count of cache requests.", hits + f.misses),
        ("coredns_cache_misses", "The count of cache misses.", f.misses),
        (
            "coredns_cache_prefetch",
            "The number of times the cache has prefetched a cached item.",
            cache.prefetches,
        ),
        (
            "coredns_cache_served_stale",
            "The number of requests served from stale cache entries.",
            f.stale_answers,
        ),
    ):
        family = CounterMetricFamily(name, doc, labels=["server", "zones", "view"])
        family.add_metric(at, value)
        yield family
    requests = CounterMetricFamily(
        "coredns_forward_requests", "Counter of requests made per upstream.", labels=["to"]
    )
    failures = CounterMetricFamily(
        "coredns_forward_healthcheck_failures", "Counter of the number of failed healthchecks.", labels=["to"]
    )
    replies = CounterMetricFamily(
        "coredns_forward_responses", "Counter of responses received per upstream.", labels=["to", "rcode"]
    )
    for upstream in f.upstreams:
        to = str(ListenAddress(*upstream.address))
        requests.add_metric([to], upstream.queries)
        failures.add_metric([to], upstream.failures)
        for rcode, count in sorted(upstream.rcodes.items()):
            replies.add_metric([to, _label(rcode, Rcode)], count)
    yield from (requests, failures, replies)
    yield _histogram(
        "coredns_forward_request_duration_seconds",
        "Histogram of the time each request took.",
        ["to"],
        (([str(ListenAddress(*u.address))], u.durations) for u in f.upstreams),
    )


def make_registry(observed: Observed) -> CollectorRegistry:
    """Our families, plus the default collectors every Prometheus client serves (``process_*``: CPU,
    memory, file descriptors, start time; ``python_*``: GC and the interpreter), which the usual node and
    process dashboards read."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(observed))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def build_info(metrics_names: str) -> Iterator[Metric]:
    """``mcsdns_build_info`` (and CoreDNS's ``coredns_build_info`` with its labels when asked): a constant 1
    whose labels say what runs, for dashboards that show versions across replicas."""
    info = GaugeMetricFamily(
        "mcsdns_build_info", "mcsdns's version and the Python it runs on", labels=["version", "python"]
    )
    info.add_metric([__version__, platform.python_version()], 1)
    yield info
    if metrics_names == "coredns":
        coredns = GaugeMetricFamily(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which "
            "CoreDNS was built.",
            labels=["version", "revision", "goversion"],
        )
        coredns.add_metric([f"mcsdns-{__version__}", "", f"python{platform.python_version()}"], 1)
        yield coredns


class HealthServer:
    def __init__(self, observed: Observed) -> None:
        self._observed = observed
        self._registry = make_registry(observed)

    async def start(self, address: ListenAddress) -> asyncio.Server:
        """Listen on ``address``; ``ListenError`` (the address and the system's reason) if it cannot."""
        try:
            return await asyncio.start_server(self._handle, address.host, address.port, limit=MAX_REQUEST)
        except OSError as exc:
            raise ListenError(f"cannot listen on tcp {address}: {bind_reason(exc)}") from exc

    def route(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/healthz":
            if self._observed.alive():
                return 200, "text/plain", b"ok\n"
            return 500, "text/plain", b"a background loop stopped\n"
        if path == "/readyz":
            reasons = self._observed.not_ready()
            if not reasons:
                # Still ready while a source is down: pulling every replica out of its Service would be worse
                # than the last good zone. The body says what is going stale.
                lines = [
                    "ready",
                    *self._observed.stale(),
                    *self._observed.rejected_lines(),
                    *self._observed.ptr_lines(),
                ]
                return 200, "text/plain", ("\n".join(lines) + "\n").encode()
            return 503, "text/plain", ("\n".join(reasons) + "\n").encode()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self._registry)
        return 404, "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(line) != 3 or line[0] not in ("GET", "HEAD"):
                status, kind, body = 405, "text/plain", b"only GET\n"
            else:
                status, kind, body = self.route(line[1])
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                500: "Internal Server Error",
                503: "Service Unavailable",
            }[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (body if line and line[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a slow, oversized or vanished client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

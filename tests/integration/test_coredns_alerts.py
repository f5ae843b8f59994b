"""With ``--metrics-names coredns``, the queries of the CoreDNS alert rules that kube-prometheus ships
(coredns-mixin, alerts/coredns.libsonnet and alerts/forward.libsonnet) find series in mcsdns's /metrics, so
a team's existing alerts watch mcsdns unchanged.

The rules, as facts (metric, the labels the query selects or groups by):
  CoreDNSLatencyHigh: histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket[5m]))
    by (server, zone, le)) > 4
  CoreDNSErrorsHigh: sum(rate(coredns_dns_responses_total{rcode="SERVFAIL"}[5m]))
    / sum(rate(coredns_dns_responses_total[5m])) > 0.03 (and > 0.01, warning)
  CoreDNSForwardLatencyHigh: histogram_quantile(0.99,
    sum(rate(coredns_forward_request_duration_seconds_bucket[5m])) by (to, le)) > 4
  CoreDNSForwardErrorsHigh: coredns_forward_responses_total{rcode="SERVFAIL"}, over all of them
  CoreDNSForwardHealthcheckFailureCount: sum(rate(coredns_forward_healthcheck_failures_total[5m])) by (to)
  CoreDNSDown: absent(up{job="coredns"} == 1), Prometheus's own series: nothing to serve
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import replace
from pathlib import Path

import dns.rcode

from mcsdns.settings import ListenAddress
from tests.integration.test_forward import NAME, sidecar_settings, started
from tests.support import free_port, query
from tests.upstream import Upstream

# (metric, labels each series must carry for the rule's selector and grouping)
RULE_SERIES = [
    ("coredns_dns_request_duration_seconds_bucket", {"server", "zone", "le"}),
    ("coredns_dns_responses_total", {"rcode"}),
    ("coredns_forward_request_duration_seconds_bucket", {"to", "le"}),
    ("coredns_forward_responses_total", {"to", "rcode"}),
    ("coredns_forward_healthcheck_failures_total", {"to"}),
    # Dashboards (coredns-mixin's and Grafana 14981) read these too.
    ("coredns_dns_requests_total", {"server", "zone", "proto", "family", "type"}),
    ("coredns_dns_request_size_bytes_bucket", {"server", "zone", "proto", "le"}),
    ("coredns_dns_response_size_bytes_bucket", {"server", "zone", "proto", "le"}),
    ("coredns_cache_hits_total", {"server", "type"}),
    ("coredns_panics_total", set()),
    ("coredns_build_info", {"version"}),
]

SERIES = re.compile(r"^(?P<name>[a-z_]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.MULTILINE)


def series(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for match in SERIES.finditer(text):
        labels = dict(re.findall(r'([a-z_]+)="([^"]*)"', match["labels"] or ""))
        out.append((match["name"], labels, float(match["value"])))
    return out


def test_the_coredns_alert_queries_find_series(tmp_path: Path) -> None:
    port = free_port()
    with Upstream(records={(NAME, "A"): ["192.0.2.1"]}) as upstream:
        settings = replace(
            sidecar_settings(tmp_path, upstream),
            http=ListenAddress("127.0.0.1", port),
            metrics_names="coredns",
        )
        with started(settings) as sidecar:
            sidecar.wait_serving()
            for i in range(64):  # one query in 32 is timed
                assert query(sidecar, "api.prod.svc.clusterset.local.").rcode() == dns.rcode.NOERROR
                query(sidecar, f"n{i}.up.test.", "A")  # misses: upstream replies, NXDOMAIN
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
    found = series(text)
    for metric, labels in RULE_SERIES:
        matching = [s for s in found if s[0] == metric and labels <= s[1].keys()]
        assert matching, f"no {metric} series with labels {sorted(labels)}"
    latency = [s for s in found if s[0] == "coredns_dns_request_duration_seconds_count"]
    # Scaled counts are floats (observed x answered / observed), so their sum may miss 64 by a rounding step.
    assert sum(v for _, _, v in latency) >= 64 - 1e-6, "sampled counts are scaled back to every query"
    responses = {s[1]["rcode"]: s[2] for s in found if s[0] == "coredns_dns_responses_total"}
    assert responses["NOERROR"] >= 64
    upstream_rcodes = {s[1]["rcode"] for s in found if s[0] == "coredns_forward_responses_total"}
    assert "NXDOMAIN" in upstream_rcodes

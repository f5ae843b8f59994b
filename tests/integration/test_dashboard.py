"""The Grafana dashboard the chart ships (metrics.grafanaDashboard): rendered as the ConfigMap the Grafana
sidecar loads, and every query of it reading series a real mcsdns serves.

A dashboard fails silently: a panel on a metric that was renamed, or grouped by a label the metric does not
carry, just shows "No data". So every metric name in every panel's PromQL and every template variable's
query is read out with a small parser, one real mcsdns process is started with every family on (the
Kubernetes source and the MCS controller on a real kube-apiserver under the chart's RBAC, the embedded Cloud
Map, forwarding to a real upstream, two serving processes), and its /metrics must serve each name with each
label the queries select or group by.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import helm_python as helm
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.chart.helpers import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    kubernetes_errors,
    lint,
    render,
    validate_schema,
)
from tests.controlplane import ControlPlane
from tests.realkube import chart_kubeconfig_of
from tests.support import free_port, wait_for
from tests.upstream import Upstream

DASHBOARD = CHART / "dashboards" / "mcsdns.json"
TUTORIAL = Path(__file__).resolve().parents[2] / "examples" / "tutorial"
ENABLED = {"metrics": {"grafanaDashboard": {"enabled": True}}}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Labels Prometheus attaches to every series it scrapes (the Prometheus Operator's ServiceMonitor sets job to
# the Service's name, namespace and pod from the target): mcsdns never serves them, and the dashboard's
# variables select releases and replicas by them.
TARGET_LABELS = frozenset({"job", "namespace", "pod", "instance"})


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


# --- the chart ------------------------------------------------------------------------------------------


def test_the_dashboard_is_opt_in_and_a_configmap_the_grafana_sidecar_loads() -> None:
    assert render().find("ConfigMap") is None
    rendered = render(ENABLED)
    configmap = rendered.one("ConfigMap", "mcsdns-dashboard")
    meta = configmap["metadata"]
    # The sidecar's default selector (grafana chart sidecar.dashboards.label/labelValue) and the release's
    # namespace; no annotations unless asked.
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["labels"]["app.kubernetes.io/instance"] == "mcsdns"
    assert meta["namespace"] == NAMESPACE and "annotations" not in meta
    (key,) = configmap["data"]  # the sidecar reads each key ending in .json as one dashboard
    assert key.endswith(".json")
    shipped = json.loads(configmap["data"][key])
    assert shipped == dashboard(), "the ConfigMap carries the file unchanged (Grafana's {{ }} legends too)"
    assert any("{{pod}}" in target["legendFormat"] for target in targets(shipped))
    for version in KUBERNETES_VERSIONS:
        assert kubernetes_errors(configmap, version) is None
    report = lint(ENABLED)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] > 1] == []


def test_the_sidecar_label_annotations_and_namespace_are_configurable() -> None:
    values = {
        "metrics": {
            "grafanaDashboard": {
                "enabled": True,
                "label": "grafana.example.org/dashboard",
                "labelValue": 1,  # what --set ...labelValue=1 gives: an integer, quoted into the label
                "annotations": {"grafana_folder": "DNS"},
                "namespace": "monitoring",
            }
        }
    }
    meta = render(values).one("ConfigMap")["metadata"]
    assert meta["labels"]["grafana.example.org/dashboard"] == "1"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "DNS"}
    assert meta["namespace"] == "monitoring"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"enabled": "yes"}, "/metrics/grafanaDashboard/enabled"),
        ({"folder": "DNS"}, "additional properties 'folder' not allowed"),
        ({"label": "grafana dashboard"}, "/metrics/grafanaDashboard/label"),
        ({"namespace": "Monitoring"}, "/metrics/grafanaDashboard/namespace"),
        ({"annotations": {"grafana_folder": 1}}, "/metrics/grafanaDashboard/annotations/grafana_folder"),
    ],
    ids=["enabled-string", "typo", "label-with-space", "namespace-upper-case", "annotation-not-string"],
)
def test_the_values_schema_rejects_bad_dashboard_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        validate_schema({"metrics": {"grafanaDashboard": values}})


def targets(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield from panel.get("targets", [])
        for inner in panel.get("panels", []):  # a collapsed row holds its panels
            yield from inner.get("targets", [])


def test_every_panel_reads_the_datasource_variable_and_every_release_can_be_picked() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "namespace", "pod"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
        assert variables[name]["multi"] and variables[name]["includeAll"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {"${datasource}"}
    assert {t["datasource"]["uid"] for t in targets(board)} == {"${datasource}"}
    for target in targets(board):
        # Each query is narrowed to the chosen releases and replicas, so two releases never mix.
        for matcher in ('job=~"$job"', 'namespace=~"$namespace"', 'pod=~"$pod"'):
            assert target["expr"].count(matcher) == target["expr"].count("{"), (matcher, target["expr"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    rows = {p["title"] for p in board["panels"] if p["type"] == "row"}
    assert {"DNS", "Zone and sources", "Forwarding", "Cloud Map", "MCS controller", "Process"} <= rows


# --- reading the queries --------------------------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SELECTOR = re.compile(rf"({NAME})?\s*\{{([^{{}}]*)\}}")
MATCHER = re.compile(rf'\s*({LABEL})\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*(?:,|$)')
RANGE = re.compile(r"\[[^\[\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
NUMBER = re.compile(r"(?<![a-zA-Z0-9_:.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
IDENTIFIER = re.compile(rf"{NAME}")
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
)


@dataclass
class Query:
    """What one PromQL expression reads: each metric with the labels its selector matches on, and the labels
    the expression groups or joins by (checked against every metric in it: stricter than PromQL's scoping,
    never looser)."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def parse(expr: str) -> Query:
    out = Query()
    rest = expr

    def selector(match: re.Match[str]) -> str:
        name, body = match[1], match[2]
        assert name, f"a selector without a metric name is beyond this parser: {match[0]!r} in {expr!r}"
        labels = MATCHER.findall(body)
        assert MATCHER.sub("", body).strip() == "", f"unreadable matchers {body!r} in {expr!r}"
        out.metrics.setdefault(name, set()).update(labels)
        return " "

    rest = SELECTOR.sub(selector, rest)  # label matchers, with the Grafana variables in their strings
    rest = RANGE.sub(" ", rest)  # range selectors and subqueries: [$__rate_interval], [5m:1m]
    for labels in GROUPING.findall(rest):
        out.grouping.update(label.strip() for label in labels.split(",") if label.strip())
    rest = GROUPING.sub(" ", rest)
    rest = NUMBER.sub(" ", rest)
    assert "$" not in rest and '"' not in rest, f"a variable or string outside a selector in {expr!r}"
    for match in IDENTIFIER.finditer(rest):
        word = match[0]
        if re.match(r"\s*\(", rest[match.end() :]) or word in KEYWORDS:
            continue  # a function or aggregation, or an operator
        out.metrics.setdefault(word, set())
    return out


def variable_query(query: str) -> Query:
    """Grafana's ``label_values(selector, label)``: the selector's metric must carry the label."""
    match = re.fullmatch(rf"\s*label_values\((.*),\s*({LABEL})\s*\)\s*", query)
    assert match, f"only label_values(...) variables are read here: {query!r}"
    parsed = parse(match[1])
    parsed.grouping.add(match[2])
    return parsed


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, Query]]:
    out = [(f"{t['expr']}", parse(t["expr"])) for t in targets(board)]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            out.append((f"variable {variable['name']}: {text}", variable_query(text)))
    return out


def test_the_query_reader_finds_names_matchers_and_grouping() -> None:
    parsed = parse(
        "histogram_quantile(0.99, sum by (le, proto) (rate(mcsdns_dns_request_duration_seconds_bucket"
        '{job=~"$job", type!="A"}[$__rate_interval]))) / on (proto) group_left count(up:ratio_5m == 1e3)'
        " or vector(0)"
    )
    assert parsed.metrics == {
        "mcsdns_dns_request_duration_seconds_bucket": {"job", "type"},
        "up:ratio_5m": set(),
    }
    assert parsed.grouping == {"le", "proto"}
    assert parse("time() - max(x_seconds)").metrics == {"x_seconds": set()}
    assert variable_query('label_values(mcsdns_build_info{job=~"$job"}, namespace)').grouping == {"namespace"}
    with pytest.raises(AssertionError, match="outside a selector"):
        parse("rate(x[5m]) > $threshold")


# --- what a real mcsdns serves -------------------------------------------------------------------------

ZONE_NAME = "nginx-hello.demo.svc.clusterset.local."
FORWARDED = "www.up.test."


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def served(text: str) -> dict[str, set[str]]:
    """Sample name (``_total``, ``_bucket``... as Prometheus stores them) → every label any of its series
    carries. A family with no series (a counter nothing has counted under any label yet) is not served."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def value(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def ask(port: int, name: str, *, tcp: bool = False) -> int | None:
    message = dns.message.make_query(name, "A")
    try:
        if tcp:
            reply = dns.query.tcp(message, "127.0.0.1", port=port, timeout=1)
        else:
            reply = dns.query.udp(message, "127.0.0.1", port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None
    return int(reply.rcode())


@pytest.fixture
def cloudmap() -> Iterator[EmbeddedCloudMap]:
    with EmbeddedCloudMap() as embedded:
        yield embedded


@pytest.fixture
def mcsdns_metrics(real_cluster: ControlPlane, cloudmap: EmbeddedCloudMap, tmp_path: Path) -> Iterator[str]:
    """/metrics of one mcsdns process, as a chart pod runs it, once every part has done its work once:
    exported and imported a service, written and read its heartbeat, been throttled by Cloud Map, answered
    the zone and forwarded names over UDP and TCP."""
    real_cluster.objects.load_yaml(TUTORIAL / "nginx-service.yaml")
    real_cluster.objects.load_yaml(TUTORIAL / "nginx-endpoints.yaml")
    real_cluster.objects.load_yaml(TUTORIAL / "nginx-serviceexport.yaml")
    dns_port, http_port = free_port(), free_port()
    kubeconfig = chart_kubeconfig_of(real_cluster, tmp_path / "chart.kubeconfig")
    with Upstream(records={(FORWARDED, "A"): ["192.0.2.1"]}) as upstream:
        argv = [
            sys.executable, "-m", "mcsdns", "serve", "--kubeconfig", str(kubeconfig),
            "--cloudmap", "--cloudmap-poll", "300ms", "--lease-namespace", NAMESPACE,
            "--leader-id", "replica-a", "--lease-duration", "3s", "--renew-deadline", "2s",
            "--listen", f"127.0.0.1:{dns_port}", "--http", f"127.0.0.1:{http_port}", "--workers", "2",
            "--forward", f"127.0.0.1:{upstream.port}", "--lameduck", "0",
            # Heartbeats written and read every second (a fifth of it) rather than every minute, so the
            # per-cluster heartbeat age is served within the test.
            "--cluster-stale-after", "5s",
        ]  # fmt: skip
        env = {**os.environ, **cloudmap.env()}
        with (tmp_path / "mcsdns.log").open("wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            wait_for(lambda: ask(dns_port, ZONE_NAME) == dns.rcode.NOERROR, timeout=60, what="the import")
            cloudmap.throttle_next(4)  # the next polls are refused, as Cloud Map refuses a busy account

            def done() -> str | None:
                for name in (ZONE_NAME, FORWARDED, "nxdomain.up.test."):
                    ask(dns_port, name)
                    ask(dns_port, name, tcp=True)
                text = scrape(http_port)
                got = served(text)
                finished = (
                    value(text, "mcsdns_exported_services") == 1
                    and value(text, "mcsdns_imported_services") == 1
                    and value(text, "mcsdns_cloudmap_throttles_total") > 0
                    and value(text, "mcsdns_tcp_connections_accepted_total") > 0
                    and value(text, "mcsdns_forward_upstream_queries_total") > 0
                    and "mcsdns_dns_request_duration_seconds_bucket" in got
                    and value(text, "mcsdns_workers_serving") == 1
                    and "mcsdns_cluster_heartbeat_age_seconds" in got  # its own beat, read back
                )
                return text if finished else None

            yield str(wait_for(done, timeout=60, what="every part of mcsdns to have worked once"))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_every_metric_and_label_the_dashboard_reads_is_served(mcsdns_metrics: str) -> None:
    series = served(mcsdns_metrics)
    queries = dashboard_queries(dashboard())
    assert len(queries) > 50
    missing: dict[str, list[str]] = {}
    for where, query in queries:
        for metric, selected in query.metrics.items():
            if metric not in series:
                missing.setdefault(metric, []).append(where)
                continue
            for label in (selected | query.grouping) - TARGET_LABELS:
                if label not in series[metric]:
                    missing.setdefault(f"{metric}{{{label}}}", []).append(where)
    assert missing == {}, "the dashboard reads what mcsdns does not serve:\n" + "\n".join(
        f"  {name}: {len(wheres)} queries, e.g. {wheres[0]}" for name, wheres in sorted(missing.items())
    )

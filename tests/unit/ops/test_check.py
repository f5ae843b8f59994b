"""The preflight's data and rendering, and its permission table against the chart's RBAC."""

from __future__ import annotations

import pytest

from mcsdns.clients.cloudmap import Instance
from mcsdns.ops import permissions, status
from mcsdns.ops.check import FAIL, OK, SKIP, Result, exit_status, judge_crd, judge_unique_id, render
from mcsdns.ops.reader import CloudMapView
from tests.chart.helpers import grants
from tests.chart.helpers import permissions as granted
from tests.chart.helpers import render as render_chart
from tests.support import aws_controller_attributes


def test_one_line_per_check_with_the_fix_of_a_failure() -> None:
    results = [Result("a", OK, "fine"), Result("b", FAIL, "broken", "do this"), Result("c", SKIP, "why")]
    assert render(results) == "✔ a: fine\n✘ b: broken — fix: do this\n- c: skipped: why\n"
    assert exit_status(results) == 1 and exit_status(results[::2]) == 0


def test_crds_older_than_expected_fail() -> None:
    crd = {"spec": {"versions": [{"name": "v1alpha1", "served": True, "storage": True}]}}
    r = judge_crd(
        "serviceimports.multicluster.x-k8s.io",
        "serviceimports.yaml",
        crd,
        None,
        needed="the zone",
        namespace="mcsdns-system",
        release="mcsdns",
    )
    assert (
        r.status == FAIL
        and "v1beta1 not served" in r.summary
        and "--show-only templates/crds/serviceimports.yaml" in r.fix
    )


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"clusterId": "a", "clustersetId": "b"},
        {"cloudmap": {"enabled": False}},
        {"leaderElection": {"enabled": False}},
    ],
)
def test_the_permission_table_is_what_the_chart_grants(values: dict) -> None:
    rendered = render_chart(values)
    cloudmap = values.get("cloudmap", {}).get("enabled", True)
    needed = permissions.required(
        cloudmap=cloudmap,
        reads_properties=not values.get("clusterId"),
        leader_elect=cloudmap and values.get("leaderElection", {}).get("enabled", True),
    )
    cluster_wide = {(p.group, p.resource, p.verb) for p in needed if not p.when.startswith("lease")}
    assert cluster_wide == granted(grants(rendered.one("ClusterRole")))
    role = rendered.find("Role")
    leases = {(p.group, p.resource, p.verb) for p in needed if p.when.startswith("lease")}
    assert leases == granted(grants(role))


def test_instances_under_this_clusters_id_it_does_not_export_are_another_clusters() -> None:
    view = CloudMapView(
        services={("demo", "web"): "srv-1", ("demo", "api"): "srv-2"},
        instances={
            ("demo", "web"): [
                Instance(
                    "i-1", aws_controller_attributes(address="10.0.0.1", cluster="cls2", clusterset="set")
                )
            ],
            ("demo", "api"): [
                Instance(
                    "i-2", aws_controller_attributes(address="10.0.0.2", cluster="cls2", clusterset="set")
                )
            ],
        },
    )
    assert judge_unique_id("cls2", "set", {("demo", "web"), ("demo", "api")}, view).status == OK
    r = judge_unique_id("cls2", "set", {("demo", "api")}, view)
    assert r.status == FAIL and "deregister-instance --service-id srv-1 --instance-id i-1" in r.fix


def test_the_status_table_fits_120_columns_and_cuts_the_widest_cell() -> None:
    view = CloudMapView(
        instances={
            ("n" * 60, "s" * 60): [
                Instance("i", aws_controller_attributes(address="10.0.0.1", cluster="c1", clusterset="set"))
            ]
        }
    )
    found = status.build(now=2e9, cluster_id="c2", clusterset_id="set", view=view, sources=["Cloud Map"])
    text = status.table(found)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "…" in text and "c1:1/1" in text and "ClusterSetIP" in text
    assert [c.id for c in found.clusters] == ["c1", "c2"] and found.clusters[1].local
    assert (
        status.age(59) == "59s"
        and status.age(61) == "1m"
        and status.age(7300) == "2h"
        and status.age(None) == "-"
    )

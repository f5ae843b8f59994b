"""One object in, its record or every reason it is invalid out: ``sources.objects.check`` and ``convert``,
which the manifests directory and the Kubernetes watch share."""

from __future__ import annotations

from typing import Any

import pytest

from mcsdns.errors import ManifestError
from mcsdns.sources.objects import LABEL_MESSAGE, MAX_REASONS, SUBDOMAIN_MESSAGE, check, convert, misspelt
from mcsdns.zone.model import Port, ServiceKey
from tests.support import endpoint, endpoint_slice, service_import


def label_error(field: str, value: str) -> str:
    return f'{field}: Invalid value: "{value}": {LABEL_MESSAGE}'


def with_ports(obj: dict[str, Any], ports: list[dict[str, Any]]) -> dict[str, Any]:
    if "spec" in obj:
        obj["spec"]["ports"] = ports
    else:
        obj["ports"] = ports
    return obj


def test_a_valid_import_is_converted() -> None:
    checked = check(service_import("web", "prod", ips=["10.0.0.1"], ports=[{"name": "http", "port": 80}]))
    assert checked.problems == () and checked.ignored is None
    assert checked.ref == ("ServiceImport", "prod", "web")
    assert checked.record is not None and checked.record.ports == (Port("http", "TCP", 80),)


def test_every_reason_is_collected_not_only_the_first() -> None:
    obj = service_import("Web", "Prod", type="LoadBalancer", ips=["10.0.0.300"])
    with_ports(obj, [{"name": "Bad_Name!", "port": 0}, {"name": "ok", "port": 80, "protocol": "ICMP"}])
    assert check(obj).problems == (
        label_error("metadata.namespace", "Prod"),
        label_error("metadata.name", "Web"),
        "spec.type must be ClusterSetIP or Headless, got 'LoadBalancer'",
        "spec.ips has '10.0.0.300', not an IP address",
        label_error("spec.ports[0].name", "Bad_Name!"),
        "spec.ports[0].port must be a number 1-65535, got 0",
        "spec.ports[1].protocol must be TCP, UDP or SCTP, got 'ICMP'",
    )
    assert check(obj).ref == ("ServiceImport", "Prod", "Web"), "named as written, for the message"


def test_convert_raises_with_every_reason_for_the_watch() -> None:
    obj = service_import("web", "prod", type="LoadBalancer", ips=["bad"])
    with pytest.raises(ManifestError) as raised:
        convert(obj)
    assert str(raised.value) == (
        "ServiceImport prod/web: spec.type must be ClusterSetIP or Headless, got 'LoadBalancer'; "
        "spec.ips has 'bad', not an IP address"
    )


def test_reasons_beyond_the_cap_are_counted() -> None:
    slice_ = endpoint_slice(
        "s", "prod", service="web", cluster="c1", endpoints=[endpoint("fd00::1")] * (MAX_REASONS + 5)
    )
    with pytest.raises(ManifestError) as raised:
        convert(slice_)
    assert str(raised.value).endswith("; and 5 more")
    assert len(check(slice_).problems) == MAX_REASONS + 5


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("web", True),
        ("1web", True),  # Service names are RFC 1123 labels since KEP-5311 (GA in 1.37), not RFC 1035
        ("a" * 63, True),
        ("a" * 64, False),
        ("web.v2", False),  # a subdomain: fine for a custom resource, but the import names a Service
        ("-web", False),
        ("web-", False),
        ("Web", False),
        ("Bad_Name!", False),
    ],
)
def test_import_names_are_rfc_1123_labels(name: str, valid: bool) -> None:
    assert (check(service_import(name, "prod")).problems == ()) is valid


def test_a_long_name_gets_both_of_kubernetes_messages() -> None:
    name = "A" * 64
    assert check(service_import(name, "prod")).problems == (
        f'metadata.name: Invalid value: "{name}": must be no more than 63 characters',
        label_error("metadata.name", name),
    )


@pytest.mark.parametrize(
    ("name", "valid"),
    [("web-cls1-x7", True), ("web.cls1", True), ("a" * 253, True), ("a" * 254, False), ("Web", False)],
)
def test_endpoint_slice_names_are_rfc_1123_subdomains(name: str, valid: bool) -> None:
    slice_ = endpoint_slice(name, "prod", service="web", cluster="c1", endpoints=[])
    problems = check(slice_).problems
    assert (problems == ()) is valid
    if not valid and len(name) < 254:
        assert problems == (f'metadata.name: Invalid value: "{name}": {SUBDOMAIN_MESSAGE}',)


def test_missing_namespace_is_default_and_a_bad_one_is_a_label_error() -> None:
    obj = service_import("web", "prod")
    del obj["metadata"]["namespace"]
    assert check(obj).ref == ("ServiceImport", "default", "web")
    assert check(service_import("web", "a" * 64)).problems[0].endswith("must be no more than 63 characters")


def test_import_port_names_are_unique_labels_and_may_be_unnamed() -> None:
    unnamed = with_ports(service_import("web", "prod"), [{"port": 80}, {"port": 443}])
    record = check(unnamed).record
    assert record is not None and len(record.ports) == 2, "unnamed ports only have no SRV record"
    twice = with_ports(
        service_import("web", "prod"), [{"name": "http", "port": 80}, {"name": "http", "port": 81}]
    )
    assert check(twice).problems == ('spec.ports[1].name: Duplicate value: "http"',)


def test_slice_port_names_are_unique_labels_counting_the_unnamed_one() -> None:
    slice_ = endpoint_slice(
        "s", "prod", service="web", cluster="c1", endpoints=[], ports=[{"port": 80}, {"port": 81}]
    )
    assert check(slice_).problems == ('ports[1].name: Duplicate value: ""',)
    slice_["ports"] = [{"name": "http_2", "port": 80}]
    assert check(slice_).problems == (label_error("ports[0].name", "http_2"),)


def test_endpoint_hostnames_are_labels() -> None:
    slice_ = endpoint_slice(
        "s", "prod", service="web", cluster="c1", endpoints=[endpoint("10.0.0.1", hostname="Web_0")]
    )
    assert check(slice_).problems == (label_error("endpoints[0].hostname", "Web_0"),)
    slice_["endpoints"] = [endpoint("10.0.0.1", hostname="web-0")]
    group = check(slice_).record
    assert group is not None and group.endpoints[0].hostname == "web-0"


@pytest.mark.parametrize(
    ("kind", "meant"),
    [
        ("ServiceImports", "ServiceImport"),
        ("serviceimport", "ServiceImport"),
        ("ServiceImprt", "ServiceImport"),
        ("EndpointSlices", "EndpointSlice"),
        ("Endpointslice", "EndpointSlice"),
        # Real kinds that look like ours are not misspellings.
        ("ServiceExport", None),
        ("ServiceExports", None),
        ("Service", None),
        ("Endpoints", None),
        ("Deployment", None),
        ("ConfigMap", None),
    ],
)
def test_misspelt_kinds_are_recognised(kind: str, meant: str | None) -> None:
    assert misspelt(kind) == meant


def test_a_misspelt_kind_is_checked_as_the_kind_it_was_meant_to_be() -> None:
    obj = {**service_import("web", "prod", type="LoadBalancer"), "kind": "ServiceImports"}
    checked = check(obj)
    assert checked.ref == ("ServiceImport", "prod", "web")
    assert checked.problems == (
        'kind: Unsupported value: "ServiceImports": did you mean "ServiceImport"? '
        "(mcsdns reads ServiceImport and EndpointSlice)",
        "spec.type must be ClusterSetIP or Headless, got 'LoadBalancer'",
    )


def test_an_unknown_version_of_a_known_kind_names_the_versions_read() -> None:
    obj = {**service_import("web", "prod"), "apiVersion": "multicluster.x-k8s.io/v1"}
    assert check(obj).problems == (
        'apiVersion: Unsupported value: "multicluster.x-k8s.io/v1": mcsdns reads ServiceImport in '
        "multicluster.x-k8s.io/v1alpha1, multicluster.x-k8s.io/v1beta1",
    )
    assert check(service_import("web", "prod")).problems == ()
    beta = {**service_import("web", "prod"), "apiVersion": "multicluster.x-k8s.io/v1beta1"}
    assert check(beta).problems == ()


def test_other_kinds_are_ignored_and_kindless_objects_are_invalid() -> None:
    deployment = check({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}})
    assert deployment.problems == () and deployment.ignored == "apps/v1 Deployment"
    assert convert({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}) is None
    kindless = check({"metadata": {"name": "web"}})
    assert kindless.ref is None and kindless.problems == ("kind is missing", "apiVersion is missing")


def test_slices_of_no_imported_service_are_ignored_not_judged() -> None:
    plain = endpoint_slice("Not_Ours", "prod", service="web", cluster="c1", endpoints=[])
    del plain["metadata"]["labels"]["multicluster.kubernetes.io/service-name"]
    checked = check(plain)
    assert checked.problems == () and checked.ignored == (
        "EndpointSlice without label multicluster.kubernetes.io/service-name"
    )
    fqdn = endpoint_slice("s", "prod", service="web", cluster="c1", endpoints=[], address_type="FQDN")
    assert check(fqdn).ignored == "EndpointSlice with addressType FQDN"


def test_v1beta1_fields_at_the_top_level_are_named_there() -> None:
    obj = {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "prod"},
        "type": "Headless",
        "ports": [{"name": "HTTP", "port": 80}],
    }
    assert check(obj).problems == (label_error("ports[0].name", "HTTP"),)
    del obj["ports"]
    record = check(obj).record
    assert record is not None and record.key == ServiceKey("prod", "web")

"""examples/sidecar: the Pod with mcsdns as its resolver, and the same settings as a laptop's --config file.
The sidecar's arguments go through mcsdns's own command line and run against the emulator, with a second
mcsdns on loopback standing in for the cluster DNS it forwards to."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from mcsdns.cli import build_parser, settings_from
from mcsdns.settings import ForwardSettings, ListenAddress, Settings, ZoneSettings, load_config_file, resolve
from mcsdns_sandbox.kubeapi import KubeApiEmulator
from tests.chart.helpers import EXAMPLES, ROOT, kubernetes_errors, manifest_objects
from tests.support import ServerThread, query, service_import, settings_for, write_manifests

SIDECAR = EXAMPLES / "sidecar"
CLUSTERSET_NAME = "nginx-hello.demo.svc.clusterset.local."
# Native sidecars (an init container with restartPolicy Always) are in the schemas from 1.28 on.
VERSIONS = ("1.29", "1.37")


def objects() -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for _, obj in manifest_objects([SIDECAR / "pod.yaml"])}


def sidecar() -> dict[str, Any]:
    (container,) = objects()["Pod"]["spec"]["initContainers"]
    return dict(container)


def sidecar_settings() -> Settings:
    """The Settings mcsdns builds from the sidecar's args, as `mcsdns serve ARGS` in the pod."""
    return settings_from(build_parser().parse_args(sidecar()["args"]), {})


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sidecar_manifests_are_valid_for_kubernetes(version: str) -> None:
    found = objects()
    assert sorted(found) == ["ClusterRole", "ClusterRoleBinding", "Pod", "ServiceAccount"]
    assert [error for obj in found.values() if (error := kubernetes_errors(obj, version))] == []


def test_the_pod_resolves_through_the_sidecar_only() -> None:
    pod = objects()["Pod"]["spec"]
    assert pod["dnsPolicy"] == "None"
    assert pod["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    assert pod["dnsConfig"]["searches"][0] == f"{objects()['Pod']['metadata']['namespace']}.svc.cluster.local"
    assert pod["serviceAccountName"] == objects()["ServiceAccount"]["metadata"]["name"]
    container = sidecar()
    assert container["restartPolicy"] == "Always", "a native sidecar: up before the app, down after it"
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_the_sidecar_listens_on_loopback_53_forwards_to_the_cluster_dns_and_writes_nothing() -> None:
    settings = sidecar_settings()
    assert [str(a) for a in settings.server.listen] == ["127.0.0.1:53"]
    assert [str(u) for u in settings.forward.upstreams] == ["10.96.0.10:53"]
    assert settings.forward.allow == (ip_network("127.0.0.0/8"),)
    assert settings.kubernetes.kubeconfig == "in-cluster"
    assert settings.lease.elect is False and settings.cloudmap.enabled is False
    assert str(settings.http) == "0.0.0.0:9153"
    ports = {p["name"]: p["containerPort"] for p in sidecar()["ports"]}
    assert ports["http"] == settings.http.port


def test_the_sidecar_may_bind_port_53_as_a_non_root_user() -> None:
    pod = objects()["Pod"]["spec"]
    context = sidecar()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}
    ]


def test_the_sidecar_answers_the_zone_and_forwards_the_rest_as_configured(tmp_path: Path) -> None:
    # The cluster DNS it forwards to: another mcsdns on loopback, serving cluster.local.
    cluster = [service_import("kubernetes", "default", ips=["10.96.0.1"])]
    manifests = write_manifests(tmp_path / "up", "up.yaml", cluster).parent
    upstream_settings = settings_for(manifests, zone=ZoneSettings(zone="cluster.local"))
    with ServerThread(upstream_settings) as upstream, KubeApiEmulator() as api:
        upstream.wait_serving()
        api.store.load_yaml(EXAMPLES / "tutorial" / "namespace.yaml")
        api.store.load_yaml(EXAMPLES / "clusterset" / "nginx-hello.yaml")
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        settings = sidecar_settings()
        settings = replace(
            settings,
            # In the pod: in-cluster config, 127.0.0.1:53, kube-dns's ClusterIP. Here: loopback stand-ins.
            kubernetes=replace(settings.kubernetes, kubeconfig=str(kubeconfig)),
            server=replace(settings.server, listen=(ListenAddress("127.0.0.1", 0),)),
            forward=replace(settings.forward, upstreams=(ListenAddress(upstream.host, upstream.port),)),
            http=ListenAddress("127.0.0.1", 0),
        )
        with ServerThread(settings) as server:
            server.wait_serving()
            assert [r.to_text() for rrset in query(server, CLUSTERSET_NAME).answer for r in rrset] == [
                "172.20.179.134"
            ]
            forwarded = query(server, "kubernetes.default.svc.cluster.local.")
            assert forwarded.rcode() == dns.rcode.NOERROR
            assert [r.to_text() for rrset in forwarded.answer for r in rrset] == ["10.96.0.1"]


def test_the_laptop_config_file_holds_the_sidecars_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its manifests path is relative to the repository's root
    path = SIDECAR / "mcsdns.yaml"
    settings = resolve({}, environ={}, config=load_config_file(str(path)), config_path=str(path))
    pod = sidecar_settings()
    assert [str(a) for a in settings.server.listen] == ["127.0.0.1:5353"]
    assert settings.sources.manifests == "examples/clusterset"
    assert [str(u) for u in settings.forward.upstreams] == ["1.1.1.1:53"]
    assert str(settings.http) == "127.0.0.1:9153"
    # What the sidecar and the laptop share.
    assert (settings.zone, settings.forward.allow) == (pod.zone, pod.forward.allow)
    assert settings.log.level == pod.log.level


def test_the_laptop_config_serves_the_example_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    path = SIDECAR / "mcsdns.yaml"
    settings = resolve({}, environ={}, config=load_config_file(str(path)), config_path=str(path))
    settings = replace(
        settings,
        server=replace(settings.server, listen=(ListenAddress("127.0.0.1", 0),)),
        forward=ForwardSettings(),  # no network here: 1.1.1.1 is not asked
        http=None,
    )
    with ServerThread(settings) as server:
        server.wait_serving()
        assert [r.to_text() for rrset in query(server, CLUSTERSET_NAME).answer for r in rrset] == [
            "172.20.179.134"
        ]

"""kubectl against the emulator: apply, get, label, patch, delete, server-side apply. Validation stays on
(kubectl's default): the emulator's OpenAPI v3 tells kubectl that the server validates fields itself."""

from __future__ import annotations

import json

from kubeapi_helpers import Kubectl

from mcsdns_sandbox.kubeapi import KubeApiEmulator

MANIFEST = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata:
  name: web
  namespace: default
spec:
  type: ClusterSetIP
  ips: ["10.42.0.1"]
  ports:
  - port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-east
  namespace: default
  labels:
    multicluster.kubernetes.io/service-name: web
    multicluster.kubernetes.io/source-cluster: east
addressType: IPv4
endpoints:
- addresses: ["10.1.0.5"]
  conditions: {ready: true}
ports:
- name: http
  port: 8080
  protocol: TCP
"""


def test_kubectl_apply_get_label_delete(api: KubeApiEmulator, kubectl: Kubectl) -> None:
    applied = kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert "serviceimport.multicluster.x-k8s.io/web created" in applied.stdout
    assert "endpointslice.discovery.k8s.io/web-east created" in applied.stdout
    assert "unchanged" in kubectl("apply", "-f", "-", stdin=MANIFEST).stdout

    table = kubectl("get", "serviceimports").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "IP", "AGE"]
    assert table[1].split()[:3] == ["web", "ClusterSetIP", '["10.42.0.1"]']

    got = json.loads(kubectl("get", "endpointslice", "web-east", "-o", "json").stdout)
    assert got["endpoints"][0]["addresses"] == ["10.1.0.5"]
    assert got["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == "east"

    kubectl("label", "serviceimport", "web", "exported=yes")
    kubectl("label", "endpointslice", "web-east", "exported=yes")
    assert api.store.get("serviceimports", "web")["metadata"]["labels"] == {"exported": "yes"}
    selected = json.loads(kubectl("get", "endpointslices", "-l", "exported=yes", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in selected["items"]] == ["web-east"]

    kubectl("patch", "svcim", "web", "--type=merge", "-p", '{"spec":{"type":"Headless"}}')
    assert api.store.get("serviceimports", "web")["spec"]["type"] == "Headless"

    deleted = kubectl("delete", "-f", "-", stdin=MANIFEST)
    assert 'serviceimport.multicluster.x-k8s.io "web" deleted' in deleted.stdout
    assert api.store.find("endpointslices", "web-east") is None
    assert "No resources found" in kubectl("get", "serviceimports").stderr


def test_kubectl_server_side_apply(api: KubeApiEmulator, kubectl: Kubectl) -> None:
    result = kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST)
    assert "serverside-applied" in result.stdout
    assert api.store.get("serviceimports", "web")["spec"]["ips"] == ["10.42.0.1"]
    changed = MANIFEST.replace("10.42.0.1", "10.42.0.2")
    kubectl("apply", "--server-side", "-f", "-", stdin=changed)
    assert api.store.get("serviceimports", "web")["spec"]["ips"] == ["10.42.0.2"]


def test_kubectl_reports_server_errors(kubectl: Kubectl) -> None:
    bad = MANIFEST.split("---")[0].replace("ClusterSetIP", "Nope")
    result = kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert result.returncode != 0
    assert 'Unsupported value: "Nope"' in result.stderr
    missing = kubectl("get", "svc", "nope", check=False)
    assert 'services "nope" not found' in missing.stderr


def test_kubectl_builtin_resources_and_short_names(kubectl: Kubectl, api: KubeApiEmulator) -> None:
    # "kubectl create -f" rather than generators such as "kubectl create namespace": those send protobuf,
    # which the emulator does not decode (415).
    kubectl("create", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")
    kubectl(
        "create",
        "-n",
        "demo",
        "-f",
        "-",
        stdin="apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )
    rows = kubectl("get", "svc", "-n", "demo").stdout.splitlines()

    assert rows[0].split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    assert rows[1].split()[1] == "ClusterIP" and rows[1].split()[2].startswith("10.96.")
    assert "demo" in kubectl("get", "ns").stdout
    # --wait=true: kubectl waits with a streaming list (sendInitialEvents) for the namespace to go.
    deleted = kubectl("delete", "namespace", "demo", "--wait=true", "--timeout=20s")
    assert 'namespace "demo" deleted' in deleted.stdout
    assert api.store.find("namespaces", "demo") is None

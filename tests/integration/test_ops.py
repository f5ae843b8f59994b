"""``mcsdns check`` and ``mcsdns status`` as an operator runs them: subprocesses against a real kube-apiserver
(tests/realkube.py), the embedded Cloud Map and a running mcsdns. The preflight passes on a healthy setup;
each prerequisite broken in turn fails exactly its line, and applying the fix that line prints (run through
bash with kubectl where it is a kubectl command) makes it pass again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcsdns.settings import ListenAddress
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap
from tests.chart.helpers import render
from tests.controlplane import ControlPlane
from tests.integration import test_cloudmap
from tests.integration.test_cloudmap import (
    Cluster,
    export,
    imported_clusters,
    sd_client,
)
from tests.realkube import CLUSTERSET, chart_kubeconfig_of
from tests.support import ServerThread, aws_controller_attributes, free_port, settings_for, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "clusterset"
COREFILE = """\
.:53 {
    errors
    health
    # the cluster's own names
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
"""


def mcsdns(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcsdns", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its whole line."""
    assert not result.stderr.strip() or "Traceback" not in result.stderr, result.stderr
    out = {}
    for line in result.stdout.splitlines():
        found = re.match(r"^[✔✘-] ([^:]+):", line)
        assert found, line
        out[found.group(1)] = line
    return out


def failing(result: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(name for name, line in lines(result).items() if line.startswith("✘"))


def fix_of(line: str) -> str:
    return line.split(" — fix: ", 1)[1]


def shell(command: str, kubeconfig: Path, cwd: Path) -> None:
    """Run a printed fix as an operator pastes it: bash, kubectl on the PATH, the admin's kubeconfig."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    assert shutil.which("kubectl", path=path), "kubectl is required"
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig)},
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


cloudmap = test_cloudmap.cloudmap  # the embedded Cloud Map, its environment set for the engines


def coredns_configmap(corefile: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": corefile},
    }


def set_corefile(cluster: ControlPlane, corefile: str) -> None:
    cluster.objects.delete("configmaps", "coredns", namespace="kube-system")
    cluster.objects.create(coredns_configmap(corefile))


@pytest.fixture
def coredns(real_cluster: ControlPlane) -> Iterator[str]:
    """The chart's Service (its ClusterIP) and a CoreDNS ConfigMap forwarding the zone to it."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mcsdns", "namespace": "mcsdns-system"},
        "spec": {
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
            ]
        },
    }
    ip = real_cluster.objects.create(service)["spec"]["clusterIP"]
    set_corefile(real_cluster, COREFILE + f"clusterset.local:53 {{\n    errors\n    forward . {ip}\n}}\n")
    yield ip
    real_cluster.objects.delete("configmaps", "coredns", namespace="kube-system")


def test_check_passes_then_each_broken_prerequisite_fails_its_line_until_its_fix_is_applied(
    real_cluster: ControlPlane,
    admin_kubeconfig: Path,
    cloudmap: EmbeddedCloudMap,
    coredns: str,
    tmp_path: Path,
) -> None:
    http = ListenAddress("127.0.0.1", free_port())
    served = replace(settings_for(EXAMPLES), http=http)
    with ServerThread(served) as server:
        server.wait_serving()
        args = [
            "check",
            "--kubeconfig",
            str(admin_kubeconfig),
            "--cloudmap",
            "--server",
            f"127.0.0.1:{server.port}",
            "--http",
            str(http),
        ]

        def check(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return mcsdns(*args, *extra, env=env)

        healthy = check()
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert all(line.startswith("✔") for line in lines(healthy).values()), healthy.stdout
        assert len(lines(healthy)) == 13
        (tmp_path / "healthy.txt").write_text(healthy.stdout)

        # The ServiceExport CRD missing; its fix renders the chart's CRD (helm template, here through Helm's
        # own engine) and applies it with kubectl.
        crd = "serviceexports.multicluster.x-k8s.io"
        real_cluster.objects.delete("customresourcedefinitions", crd, namespace=None)
        wait_for(lambda: real_cluster.objects.find("customresourcedefinitions", crd, namespace=None) is None)
        broken = check()
        assert broken.returncode == 1 and failing(broken) == [f"CRD {crd}"], broken.stdout
        fix = fix_of(lines(broken)[f"CRD {crd}"])
        assert fix.startswith("helm template mcsdns charts/mcsdns --namespace mcsdns-system --show-only")
        template = re.search(r"--show-only (\S+)", fix)
        assert template is not None and template.group(1) == "templates/crds/serviceexports.yaml"
        rendered = [o for o in render().objects if o["metadata"]["name"] == crd]
        # `kubectl apply -f -` of what `helm template` prints
        shell(f"kubectl apply -f - <<'EOF'\n{yaml.safe_dump_all(rendered)}EOF", admin_kubeconfig, tmp_path)
        real_cluster.wait_established(crd)
        assert wait_for(lambda: check().returncode == 0, timeout=20, what="the CRD fix to pass")

        # The cluster id missing: the fix creates the ClusterProperty (its placeholder filled in).
        real_cluster.objects.delete("clusterproperties", "cluster.clusterset.k8s.io", namespace=None)
        broken = check()
        assert failing(broken) == ["cluster identity"], broken.stdout
        fix = fix_of(lines(broken)["cluster identity"]).split(" (or give")[0]
        shell(fix.replace("<cluster-id>", "cls2"), admin_kubeconfig, tmp_path)
        assert check().returncode == 0

        # Another cluster writing as cls2: instances of a service cls2 does not export.
        client = sd_client(cloudmap)
        operation = client.create_http_namespace(Name="demo")["OperationId"]
        namespace_id = client.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"]
        service_id = client.create_service(Name="web", NamespaceId=namespace_id)["Service"]["Id"]
        client.register_instance(
            ServiceId=service_id,
            InstanceId="tcp-10_9_0_1-80-cls2",
            Attributes=aws_controller_attributes(address="10.9.0.1", cluster="cls2", clusterset=CLUSTERSET),
        )
        broken = check()
        assert failing(broken) == ["cluster id unique"], broken.stdout
        for sid, iid in re.findall(
            r"deregister-instance --service-id (\S+) --instance-id (\S+)", lines(broken)["cluster id unique"]
        ):
            client.deregister_instance(ServiceId=sid, InstanceId=iid)
        assert check().returncode == 0

        # The ClusterRole missing a verb: the fix patches exactly that rule back in.
        role = real_cluster.objects.get("clusterroles", "mcsdns", namespace=None)
        original = role["rules"]
        rules = json.loads(json.dumps(original))
        for rule in rules:
            if rule["resources"] == ["serviceexports"]:
                rule["verbs"].remove("patch")
        real_cluster.objects.update({**role, "rules": rules})
        try:
            broken = check()
            assert failing(broken) == ["RBAC"], broken.stdout
            assert "patch serviceexports.multicluster.x-k8s.io" in lines(broken)["RBAC"]
            shell(fix_of(lines(broken)["RBAC"]).split("; or helm")[0], admin_kubeconfig, tmp_path)
            assert check().returncode == 0
        finally:
            current = real_cluster.objects.get("clusterroles", "mcsdns", namespace=None)
            real_cluster.objects.update({**current, "rules": original})

        # Cloud Map unreachable: an endpoint that refuses; the fix names the variable to correct.
        nowhere = {"AWS_ENDPOINT_URL_SERVICEDISCOVERY": f"http://127.0.0.1:{free_port()}"}
        broken = check(env=nowhere)
        assert failing(broken) == ["Cloud Map"], broken.stdout
        assert "AWS_ENDPOINT_URL_SERVICEDISCOVERY" in fix_of(lines(broken)["Cloud Map"])
        assert check(env={"AWS_ENDPOINT_URL_SERVICEDISCOVERY": cloudmap.endpoint_url}).returncode == 0

        # CoreDNS without the stanza (`.:53`'s kubernetes plugin claims the zone): the fix appends it.
        set_corefile(
            real_cluster, COREFILE.replace("cluster.local in-addr", "cluster.local clusterset.local in-addr")
        )
        broken = check()
        assert failing(broken) == ["CoreDNS"], broken.stdout
        assert "kubernetes plugin claiming clusterset.local" in lines(broken)["CoreDNS"]
        shell(fix_of(lines(broken)["CoreDNS"]), admin_kubeconfig, tmp_path)
        assert check().returncode == 0, check().stdout

        # ... and shadowed by a more specific block: the fix names its lines, which an edit deletes.
        corefile = real_cluster.objects.get("configmaps", "coredns", namespace="kube-system")["data"][
            "Corefile"
        ]
        set_corefile(real_cluster, corefile + "demo.svc.clusterset.local:53 {\n    whoami\n}\n")
        broken = check()
        assert failing(broken) == ["CoreDNS"], broken.stdout
        found = re.search(r"\(delete lines (\d+)-(\d+)\)", fix_of(lines(broken)["CoreDNS"]))
        assert found is not None, lines(broken)["CoreDNS"]
        text = real_cluster.objects.get("configmaps", "coredns", namespace="kube-system")["data"]["Corefile"]
        kept = [
            line
            for number, line in enumerate(text.splitlines(), 1)
            if not int(found.group(1)) <= number <= int(found.group(2))
        ]
        set_corefile(real_cluster, "\n".join(kept) + "\n")
        assert check().returncode == 0

        # The server not answering at --server: the fix is the address it serves.
        broken = mcsdns(*args[:-4], "--server", f"127.0.0.1:{free_port()}", "--http", str(http))
        assert failing(broken) == ["dns-version"], broken.stdout
        assert "--server" in fix_of(lines(broken)["dns-version"])

    # Run as the chart's ServiceAccount (as in its pod): it checks its own RBAC (SelfSubjectAccessReview),
    # reads the CRDs through discovery, and skips CoreDNS, which it may not read; the chart's RBAC refuses
    # nothing it asks (the fixture fails the test on any 403).
    as_account = mcsdns(
        "check", "--kubeconfig", str(chart_kubeconfig_of(real_cluster, tmp_path / "sa")), "--cloudmap"
    )
    found_lines = lines(as_account)
    assert as_account.returncode == 0, as_account.stdout
    assert "system:serviceaccount:mcsdns-system:mcsdns may do all 27 things" in found_lines["RBAC"]
    assert found_lines["CoreDNS"].startswith("- CoreDNS: skipped:")
    assert "stored version unknown" in found_lines["CRD serviceimports.multicluster.x-k8s.io"]


def test_check_and_status_say_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\n")
    for command in ("check", "status"):
        result = mcsdns(command, "--kubeconfig", str(bad), env={"AWS_REGION": "", "AWS_DEFAULT_REGION": ""})
        assert "Traceback" not in result.stderr
        if command == "status":
            assert result.returncode == 1
            assert (
                result.stderr.startswith("mcsdns: error: --kubeconfig: ") and result.stderr.count("\n") == 1
            )
        else:
            assert result.returncode == 1
            assert "✘ kubernetes API: --kubeconfig: " in result.stdout


clusters = test_cloudmap.clusters  # the tutorial's two clusters and engines


@pytest.fixture
def exported(clusters: dict[str, Cluster]) -> dict[str, Cluster]:
    """The tutorial: nginx-hello exported by cls1 and imported in cls2, by two engines."""
    export(clusters["cls1"])
    wait_for(lambda: imported_clusters(clusters["cls2"]) == ["cls1"], timeout=15, what="the import in cls2")
    return clusters


def test_status_shows_the_tutorial_from_the_importing_cluster(
    exported: dict[str, Cluster], tmp_path: Path
) -> None:
    cls2 = exported["cls2"]
    kubeconfig = cls2.plane.write_kubeconfig(tmp_path / "admin2.kubeconfig")
    vip = cls2.store.get("serviceimports", "nginx-hello", namespace="demo")["spec"]["ips"]
    table = mcsdns("status", "--kubeconfig", str(kubeconfig))
    assert table.returncode == 0, table.stderr
    (tmp_path / "status.txt").write_text(table.stdout)
    assert max(len(line) for line in table.stdout.splitlines()) <= 120
    assert table.stdout.startswith(f"clusterset {CLUSTERSET}, seen from cluster cls2")
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    assert rows["cls1"][1:3] == ["-", "-"] or "ago" in " ".join(rows["cls1"])  # heartbeat written by cls1
    assert rows["demo/nginx-hello"][:5] == [
        "demo/nginx-hello",
        "ClusterSetIP",
        ",".join(vip),
        "cls1",
        "cls1:3/3",
    ]
    assert rows["demo/nginx-hello"][5] == "-"

    document = json.loads(mcsdns("status", "--kubeconfig", str(kubeconfig), "-o", "json").stdout)
    assert document["cluster_id"] == "cls2" and document["clusterset_id"] == CLUSTERSET
    (service,) = document["services"]
    assert service["clusters"] == ["cls1"] and service["ready"] == {"cls1": [3, 3]} and service["vips"] == vip
    assert service["import_age"] is not None
    clusters = {c["id"]: c for c in document["clusters"]}
    assert clusters["cls1"]["services"] == 1 and clusters["cls1"]["ready_endpoints"] == 3
    assert clusters["cls2"]["local"] and clusters["cls2"]["services"] == 0

    def services(*filters: str) -> list[str]:
        found = json.loads(mcsdns("status", "--kubeconfig", str(kubeconfig), "-o", "json", *filters).stdout)
        return [f"{s['namespace']}/{s['name']}" for s in found["services"]]

    assert services("--namespace", "demo") == ["demo/nginx-hello"]
    assert services("--namespace", "prod") == []
    assert services("--service", "nginx-hello") == ["demo/nginx-hello"]
    assert services("--service", "absent") == []

    # From the exporting cluster with no kubeconfig at all: Cloud Map alone.
    alone = mcsdns("status", "--clusterset-id", CLUSTERSET)
    assert alone.returncode == 0 and "demo/nginx-hello" in alone.stdout and "cls1:3/3" in alone.stdout


def test_an_api_server_that_answers_no_access_reviews_still_shows_its_cluster(
    cloudmap: EmbeddedCloudMap, tmp_path: Path
) -> None:
    """An API server without authorization.k8s.io (404 to every review, as an emulated one had): status
    reads anyway and says so once; check's RBAC line says it cannot be checked, and the rest still passes."""
    from mcsdns_sandbox.kubeapi import KubeApiEmulator

    with KubeApiEmulator(cluster_id="cls2", clusterset_id=CLUSTERSET) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        api.store.load_yaml(ROOT / "examples" / "tutorial" / "namespace.yaml")
        api.store.create(
            {
                "apiVersion": "multicluster.x-k8s.io/v1beta1",
                "kind": "ServiceImport",
                "metadata": {"name": "nginx-hello", "namespace": "demo"},
                "spec": {"type": "ClusterSetIP", "ips": ["172.20.0.9"], "ports": [{"port": 80}]},
            }
        )
        api.fail_next(1000, code=404, path_contains="/apis/authorization.k8s.io/")
        status = mcsdns("status", "--kubeconfig", str(kubeconfig))
        assert status.returncode == 0, status.stderr
        notes = [line for line in status.stdout.splitlines() if line.startswith("note: ")]
        permission_notes = [n for n in notes if "authorization.k8s.io" in n]
        assert len(permission_notes) == 1 and "read anyway" in permission_notes[0], status.stdout
        assert status.stdout.startswith(f"clusterset {CLUSTERSET}, seen from cluster cls2")
        assert "demo/nginx-hello" in status.stdout and "172.20.0.9" in status.stdout

        check = mcsdns("check", "--kubeconfig", str(kubeconfig))
        found = lines(check)
        assert found["kubernetes API"].startswith("✔"), check.stdout
        assert found["cluster identity"].startswith("✔"), check.stdout
        assert found["RBAC"].startswith("- RBAC: skipped: cannot be checked:"), check.stdout
        assert "kubectl auth can-i --list --as=system:serviceaccount:mcsdns-system:mcsdns" in found["RBAC"]
        assert [name for name in failing(check)] == ["CoreDNS"], check.stdout  # no coredns ConfigMap here

"""``mcsdns demo``: the seed tutorial on one machine, with mcsdns in place of the AWS controller + CoreDNS.

Two emulated clusters (cls1, cls2), an embedded Cloud Map (moto), and two mcsdns engines each with its DNS
on loopback. nginx-hello is exported from cls1; the demo prints what each tutorial step shows (the Cloud
Map namespace, service and instances; the ServiceImport, derived Service and EndpointSlice in cls2; the
answers of both clusters' DNS) and keeps serving until Ctrl-C. Its kubeconfigs live in a temporary directory
that is removed on every way out: done, Ctrl-C or SIGTERM (also while starting), or a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import yaml

from mcsdns.app import App, loop_factory, running
from mcsdns.clients.cloudmap import CloudMapClient
from mcsdns.errors import McsDnsError, StartupError
from mcsdns.settings import (
    CloudMapSettings,
    KubernetesSettings,
    ListenAddress,
    ServerSettings,
    Settings,
)
from mcsdns_sandbox.cloudmap import EmbeddedCloudMap, UnprovenMoto
from mcsdns_sandbox.kubeapi import KubeApiEmulator

TUTORIAL = Path(__file__).resolve().parents[2] / "examples" / "tutorial"  # sandbox/mcsdns_sandbox/demo.py
NAME = "nginx-hello.demo.svc.clusterset.local"
CLUSTERSET = "clusterset-demo"
CLUSTERS = (("cls1", "10.100.0.0/16"), ("cls2", "172.20.0.0/16"))
WAIT = 30.0


COREFILE = """\
.:53 {
    errors
    health
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    reload
}
"""  # a kubeadm cluster's CoreDNS, before the chart's NOTES add the clusterset block


def _installed(api: KubeApiEmulator) -> None:
    """What ``helm install mcsdns charts/mcsdns -n mcsdns-system`` and the cluster's CoreDNS leave in a
    cluster, so that ``mcsdns check`` finds on the demo what it finds on a real one: the release's
    ServiceAccount and Service (its ClusterIP from the cluster's range), and the ``coredns`` ConfigMap with
    the server block the chart's NOTES tell users to add, forwarding the zone to that ClusterIP. The CRDs and
    the ClusterProperties come from the emulator itself (``KubeApiEmulator(crds=True, cluster_id=...)``)."""
    labels = {"app.kubernetes.io/name": "mcsdns", "app.kubernetes.io/instance": "mcsdns"}
    store = api.store
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mcsdns-system"}})
    meta = {"name": "mcsdns", "namespace": "mcsdns-system", "labels": labels}
    store.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    service = store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp", "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "targetPort": "http", "protocol": "TCP"},
                ],
            },
        }
    )
    ip = service["spec"]["clusterIP"]
    store.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": COREFILE + f"clusterset.local:53 {{\n    errors\n    forward . {ip}\n}}\n"},
        }
    )


def _free_port() -> int:
    """A port for an engine's --http: the engine does not report the port it bound for port 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ops_commands(env: dict[str, str], kubeconfig: Path, app: App, http: ListenAddress) -> list[str]:
    """``mcsdns status`` and ``mcsdns check`` for one cluster, ready to paste into another shell: the
    environment that points them at the embedded Cloud Map, and the engine's DNS and --http addresses."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k != "AWS_DEFAULT_REGION")
    server = app.addresses[0]
    return [
        f"export {exports}",
        f"mcsdns status --kubeconfig {kubeconfig}",
        f"mcsdns check --kubeconfig {kubeconfig} --cloudmap"
        f" --server {server.host}:{server.port} --http {http}",
    ]


def _tutorial_file(name: str) -> Path:
    path = TUTORIAL / name
    if not path.exists():  # installed without the repository: the package ships no examples
        raise SystemExit(f"mcsdns: error: {path} not found; run the demo from a checkout of mcsdns")
    return path


def _show(title: str, body: Any) -> None:
    print(f"\n## {title}")
    print(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False).rstrip())


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get -o yaml` shows that matters to the tutorial (no uid/resourceVersion noise)."""
    metadata = {
        k: v
        for k, v in obj["metadata"].items()
        if k in ("name", "namespace", "labels", "annotations", "ownerReferences")
    }
    head: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    return {
        **head,
        "metadata": metadata,
        **{k: v for k, v in obj.items() if k not in head and k != "metadata"},
    }


class _Parts:
    """The demo's emulated parts, checked while it waits: a part that fails by a bug of its own (or of moto,
    under the embedded Cloud Map) ends the demo at once with its name and the cause, instead of leaving the
    engines to retry until a timeout says only that nothing answered."""

    def __init__(self, cloudmap: EmbeddedCloudMap, clusters: dict[str, KubeApiEmulator]) -> None:
        self.cloudmap, self.clusters = cloudmap, clusters

    def check(self) -> None:
        if self.cloudmap.internal_error:
            raise SystemExit(f"mcsdns: error: the embedded Cloud Map failed: {self.cloudmap.internal_error}")
        for name, api in self.clusters.items():
            if api.internal_error:
                raise SystemExit(f"mcsdns: error: the emulated cluster {name} failed: {api.internal_error}")

    async def preflight(self) -> None:
        """One real request to each part before any engine starts: a part that cannot answer is named now."""
        try:
            await CloudMapClient(region=self.cloudmap.region).namespaces()
        except McsDnsError as exc:
            self.check()
            raise SystemExit(f"mcsdns: error: the embedded Cloud Map does not answer: {exc}") from None
        for name, api in self.clusters.items():
            try:
                await asyncio.to_thread(_get, f"{api.url}/api/v1/namespaces")
            except OSError as exc:
                self.check()
                raise SystemExit(
                    f"mcsdns: error: the emulated cluster {name} does not answer: {exc}"
                ) from None
        self.check()

    async def wait(self, predicate: Callable[[], Awaitable[Any]], what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while True:
            self.check()
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"mcsdns: error: the demo timed out after {WAIT:.0f} s waiting for {what}"
                    " (no emulated part reported an error)"
                )
            await asyncio.sleep(0.1)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as response:
        response.read()


async def _answer(app: App) -> list[str]:
    address = app.addresses[0]
    reply = await dns.asyncquery.udp(
        dns.message.make_query(NAME, "A"), address.host, port=address.port, timeout=2
    )
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Point boto3 in this process at the embedded Cloud Map for the demo's lifetime."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _demo(port: int, once: bool) -> int:
    """The tutorial until it is done (``once``) or a signal stops it. SIGINT and SIGTERM end it wherever it
    is by cancelling it, so every context below unwinds: engines, emulators, the temporary directory."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []
    serving = asyncio.Event()

    def interrupt(signum: int) -> None:
        received.append(signum)
        main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        await _tutorial(port, once, serving)
    except asyncio.CancelledError:
        if not received:
            raise
        # Stopping a serving demo is how it ends (exit 0); stopped while starting, it says by which signal.
        return 0 if serving.is_set() else 128 + received[0]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


def _kubectl_note(api_url: str) -> str:
    """What to say under a kubectl command when kubectl is not on PATH: the emulated API answers curl."""
    if shutil.which("kubectl"):
        return ""
    return (
        "\n    (kubectl is not installed here; the emulated API answers plain HTTP without it:"
        f"\n     curl -s {api_url}/apis/multicluster.x-k8s.io/v1alpha1/namespaces/demo/serviceimports)"
    )


async def _tutorial(port: int, once: bool, serving: asyncio.Event) -> None:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcsdns-demo-")))
        try:
            cloudmap = stack.enter_context(EmbeddedCloudMap())
        except UnprovenMoto as exc:
            raise SystemExit(f"mcsdns: error: {exc}") from None
        stack.enter_context(_environment(cloudmap.env()))
        clusters = {
            name: stack.enter_context(
                KubeApiEmulator(
                    cluster_name=name,
                    cluster_id=name,
                    clusterset_id=CLUSTERSET,
                    service_cidr=cidr,
                    crds=True,
                )
            )
            for name, cidr in CLUSTERS
        }
        for api in clusters.values():
            _installed(api)
            api.store.load_yaml(_tutorial_file("namespace.yaml"))
        clusters["cls1"].store.load_yaml(_tutorial_file("nginx-service.yaml"))
        clusters["cls1"].store.load_yaml(_tutorial_file("nginx-endpoints.yaml"))
        parts = _Parts(cloudmap, clusters)
        await parts.preflight()
        print("Two clusters, one Cloud Map, two mcsdns engines (each: DNS + export/import controller).")
        async with contextlib.AsyncExitStack() as engines:
            apps: dict[str, App] = {}
            https: dict[str, ListenAddress] = {}
            for index, (name, api) in enumerate(clusters.items()):
                https[name] = ListenAddress("127.0.0.1", _free_port())
                settings = Settings(
                    server=ServerSettings(listen=(ListenAddress("127.0.0.1", port + index if port else 0),)),
                    http=https[name],
                    kubernetes=KubernetesSettings(
                        kubeconfig=str(api.write_kubeconfig(workdir / f"{name}.kubeconfig"))
                    ),
                    cloudmap=CloudMapSettings(enabled=True, poll=1.0, region=cloudmap.region),
                )
                try:
                    apps[name] = await engines.enter_async_context(running(settings))
                except StartupError as exc:
                    if exc.setting != "--listen":
                        raise
                    # The demo's setting is --port: cls1 listens on PORT, cls2 on PORT+1.
                    hint = f"; {name} uses PORT+{index}" if index else ""
                    raise StartupError(
                        f"{exc.reason}{hint} (--port 0 picks free ports)", setting=f"--port {port}"
                    ) from exc
                print(f"  {name}: Kubernetes API {api.url}, DNS 127.0.0.1:{apps[name].addresses[0].port}")
            started = time.monotonic()
            clusters["cls1"].store.load_yaml(_tutorial_file("nginx-serviceexport.yaml"))
            print(
                f"\nkubectl --kubeconfig {workdir}/cls1.kubeconfig apply"
                " -f examples/tutorial/nginx-serviceexport.yaml"
                + (
                    ""
                    if shutil.which("kubectl")
                    else "\n    (applied by the demo; kubectl is not installed here)"
                )
            )
            answer = await parts.wait(lambda: _answer(apps["cls2"]), "cls2's DNS to answer")
            elapsed = time.monotonic() - started
            await _print_cloudmap(cloudmap.region)
            cls2 = clusters["cls2"].store
            _show(
                "ServiceImport in cls2", _clean(cls2.get("serviceimports", "nginx-hello", namespace="demo"))
            )
            derived = [
                s
                for s in cls2.list("services", namespace="demo")
                if s["metadata"]["name"].startswith("imported-")
            ]
            _show("derived Service in cls2", [_clean(s) for s in derived])
            slices = cls2.list("endpointslices", namespace="demo")
            _show("EndpointSlice in cls2", [_clean(s) for s in slices])
            export = clusters["cls1"].store.get("serviceexports", "nginx-hello", namespace="demo")
            _show("ServiceExport status in cls1", export.get("status"))
            cls1_answer = await parts.wait(lambda: _answer(apps["cls1"]), "cls1's DNS to answer")
            _show(
                f"dig {NAME}",
                "\n".join(
                    [
                        f"from cls2 (127.0.0.1:{apps['cls2'].addresses[0].port}): {' '.join(answer)}   "
                        f"(cls2's VIP, {elapsed:.1f} s after the export)",
                        f"from cls1 (127.0.0.1:{apps['cls1'].addresses[0].port}): {' '.join(cls1_answer)}   "
                        "(exporting clusters import too, KEP-1645)",
                    ]
                ),
            )
            if once:
                return
            print("\nServing until Ctrl-C. Try:")
            for name, app in apps.items():
                print(f"  dig @127.0.0.1 -p {app.addresses[0].port} {NAME}        # {name}")
            print(
                f"  kubectl --kubeconfig {workdir}/cls2.kubeconfig"
                " get serviceimports,svc,endpointslices -n demo" + _kubectl_note(clusters["cls2"].url)
            )
            print("\nThe clusterset at a glance, and the preflight, from cls2 (paste into another shell):")
            for line in _ops_commands(
                cloudmap.env(), workdir / "cls2.kubeconfig", apps["cls2"], https["cls2"]
            ):
                print(f"  {line}")
            print(flush=True)
            serving.set()
            await asyncio.Event().wait()  # until a signal cancels the demo (_demo)


async def _print_cloudmap(region: str) -> None:
    client = CloudMapClient(region=region)
    namespace = (await client.namespaces())["demo"]
    _show("Cloud Map namespace", {"Name": namespace.name, "Id": namespace.id, "Type": namespace.type})
    services = await client.services(namespace)
    # The client keeps a service's ARN (what instance calls take); the tutorial shows its id, the ARN's tail.
    _show("Cloud Map service", {"Name": "nginx-hello", "Id": services["nginx-hello"].rpartition("/")[2]})
    _, found = await client.discover("demo", "nginx-hello", CLUSTERSET)
    _show(
        "Cloud Map instances",
        [
            {"InstanceId": i.id, "Attributes": dict(sorted(i.attributes.items()))}
            for i in sorted(found, key=lambda i: i.id)
        ],
    )


def run_demo(*, port: int, once: bool) -> int:
    logging.getLogger("mcsdns").setLevel(logging.WARNING)  # the demo prints its own story
    # ... and names a failing emulated part in one line of its own (_Parts), so their tracebacks stay out.
    logging.getLogger("mcsdns_sandbox").setLevel(logging.CRITICAL)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_demo(port, once))

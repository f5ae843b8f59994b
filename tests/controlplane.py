"""A real Kubernetes control plane for the tests, the way controller-runtime's envtest makes one: etcd and
kube-apiserver, built from their Go modules by ``.ci/test-binaries`` (pinned, cached), started on loopback
with RBAC on, and the CRDs the chart ships installed.

``ControlPlane`` hands out two kubeconfigs: ``admin`` (a client certificate in ``system:masters``) and
``service_account`` (a token from the TokenRequest API for the chart's ServiceAccount, bound to exactly the
ClusterRole and Role the chart renders), so a test that runs mcsdns as the chart runs it fails on any call
the chart does not allow. ``objects`` reads and writes as the admin, with the emulator's ``Store`` calls
(create, get, update, delete ...), so a test reads the same against either.

The faults a real server shows by itself are made the real way: ``restart`` stops kube-apiserver and starts
it again on the same port (every watch ends; the new watch cache starts at the current revision, so an old
resourceVersion is answered 410), ``compact`` compacts etcd, ``freeze``/``thaw`` stop and continue the
process (a partitioned server: connections hang, nothing is refused). What a real server cannot be made to
do on cue (fail the next N requests with a chosen status, fail a list between two pages) stays with the
emulator (mcsdns_sandbox.kubeapi), and the tests that use it say so.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
Obj = dict[str, Any]

# The API server's audit log records what every ServiceAccount asked and what the authorizer answered: the
# tests read their RBAC proof from it (a 403 fails the test; the calls made must be exactly the grants).
# Metadata level: who, verb, resource, status code; no bodies. Admin (system:masters) seeding is not logged.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}

START_TIMEOUT = 90.0  # kube-apiserver on a busy 2-core machine: about 5-15 s; its first start builds caches


class ControlPlaneUnavailable(RuntimeError):
    """The binaries cannot be built here (no Go): the tests that need them are skipped, saying why."""


def binaries() -> dict[str, Path]:
    """The etcd and kube-apiserver binaries, built once by ``.ci/test-binaries`` (which CI runs first)."""
    try:
        result = subprocess.run(
            [str(ROOT / ".ci" / "test-binaries")], check=True, capture_output=True, text=True, timeout=3600
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ControlPlaneUnavailable(f".ci/test-binaries failed: {detail.strip()[-2000:]}") from exc
    paths = [Path(line) for line in result.stdout.split()]
    found = {path.name.rsplit("-", 1)[0]: path for path in paths}
    return {"etcd": found["etcd"], "kube-apiserver": found["kube-apiserver"]}


# --- certificates ------------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL
            if isinstance(key, rsa.RSAPrivateKey)
            else serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common: str, *organizations: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common)])


class Certificates:
    """A CA, kube-apiserver's serving certificate, an admin client certificate and the ServiceAccount keys."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        ca_key = _key()
        ca_name = _name("mcsdns-test-ca")
        ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
        serving_key = _key()
        serving = _certificate(_name("kube-apiserver"), serving_key, ca_name, ca_key, server=True)
        admin_key = _key()
        admin = _certificate(_name("admin", "system:masters"), admin_key, ca_name, ca_key)
        # ServiceAccount tokens are signed with RSA, as kube-apiserver's defaults expect.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = self._write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
        self.serving_cert = self._write("apiserver.crt", serving.public_bytes(serialization.Encoding.PEM))
        self.serving_key = self._write("apiserver.key", _pem_key(serving_key))
        self.admin_cert = self._write("admin.crt", admin.public_bytes(serialization.Encoding.PEM))
        self.admin_key = self._write("admin.key", _pem_key(admin_key))
        self.sa_key = self._write("sa.key", _pem_key(sa_key))
        self.sa_pub = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


# --- processes ---------------------------------------------------------------------------------------------


class _Process:
    """A child process with its output in a log file, stopped with its process group."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signum)

    def stop(self, grace: float = 15.0) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=15)
        self.process = None

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Etcd:
    """One etcd member on loopback; several API servers may share it under their own key prefixes."""

    def __init__(self, binary: Path, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = _Process(
            "etcd",
            [
                str(binary),
                "--name=default",
                f"--data-dir={directory / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # test data: durability across a machine crash is not wanted
                "--log-level=warn",
            ],
            directory / "etcd.log",
        )

    def start(self) -> None:
        self._process.start()
        _wait(
            lambda: requests.get(f"{self.url}/health", timeout=2).json().get("health") == "true",
            self._process,
        )

    def stop(self) -> None:
        self._process.stop()

    def revision(self) -> int:
        reply = requests.post(
            f"{self.url}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()}, timeout=5
        )
        reply.raise_for_status()
        return int(reply.json()["header"]["revision"])

    def compact(self) -> int:
        """Compact the whole key space to the current revision (physically): a watch or a list continue from
        an older revision is then answered 410 Gone by etcd, as after kube-apiserver's periodic compaction."""
        revision = self.revision()
        reply = requests.post(
            f"{self.url}/v3/kv/compaction", json={"revision": str(revision), "physical": True}, timeout=30
        )
        reply.raise_for_status()
        return revision


def _wait(ready: Any, process: _Process, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    problem = "not started"
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
        try:
            if ready():
                return
        except (requests.RequestException, ValueError) as exc:
            problem = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready after {timeout:.0f} s ({problem}):\n{process.tail()}")


# Resources the tests write, by plural: the apiVersion they are written in (the newest the server serves).
RESOURCES: dict[str, tuple[str, bool]] = {
    "namespaces": ("v1", False),
    "services": ("v1", True),
    "serviceaccounts": ("v1", True),
    "configmaps": ("v1", True),
    "endpointslices": ("discovery.k8s.io/v1", True),
    "leases": ("coordination.k8s.io/v1", True),
    "serviceimports": ("multicluster.x-k8s.io/v1beta1", True),
    "serviceexports": ("multicluster.x-k8s.io/v1beta1", True),
    "clusterproperties": ("about.k8s.io/v1beta1", False),
    "customresourcedefinitions": ("apiextensions.k8s.io/v1", False),
    "clusterroles": ("rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": ("rbac.authorization.k8s.io/v1", False),
    "roles": ("rbac.authorization.k8s.io/v1", True),
    "rolebindings": ("rbac.authorization.k8s.io/v1", True),
}
PLURALS = {
    "Namespace": "namespaces",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "EndpointSlice": "endpointslices",
    "Lease": "leases",
    "ServiceImport": "serviceimports",
    "ServiceExport": "serviceexports",
    "ClusterProperty": "clusterproperties",
    "CustomResourceDefinition": "customresourcedefinitions",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
}


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status


class Objects:
    """The emulator's ``Store`` calls, as the admin over HTTPS: a test seeds and reads a real cluster with the
    same lines as the emulator."""

    def __init__(self, url: str, certificates: Certificates) -> None:
        self.url = url
        self._session = requests.Session()
        self._session.cert = (str(certificates.admin_cert), str(certificates.admin_key))
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self._ca = str(certificates.ca)

    def probe(self, path: str) -> requests.Response:
        return self._session.get(self.url + path, timeout=5, verify=self._ca)

    def path(
        self,
        plural: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        api_version: str | None = None,
    ) -> str:
        version, namespaced = RESOURCES[plural]
        version = api_version or version
        prefix = f"/api/{version}" if "/" not in version else f"/apis/{version}"
        parts = [prefix]
        if namespaced and namespace is not None:
            parts.append(f"/namespaces/{quote(namespace, safe='')}")
        parts.append(f"/{plural}")
        if name is not None:
            parts.append(f"/{quote(name, safe='')}")
        return "".join(parts)

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        deadline = time.monotonic() + 30
        while True:
            reply = self._session.request(
                method,
                self.url + path,
                json=body,
                params=query or None,
                headers=headers,
                timeout=30,
                verify=self._ca,
            )
            # 429 "storage is (re)initializing": a CRD just established, or the server just started. Clients
            # wait Retry-After and ask again, as client-go does.
            if reply.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(float(reply.headers.get("Retry-After") or 1) / 4)
        if reply.status_code >= 400:
            raise ApiError(method, path, reply.status_code, reply.text)
        return reply.json() if reply.content else None

    def _of(self, obj: Obj) -> tuple[str, str | None]:
        plural = PLURALS[obj["kind"]]
        namespaced = RESOURCES[plural][1]
        namespace = (obj.get("metadata") or {}).get("namespace") or "default" if namespaced else None
        return plural, namespace

    def create(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        plural, own = self._of(obj)
        created: Obj = self.request(
            "POST", self.path(plural, namespace=namespace or own, api_version=obj.get("apiVersion")), obj
        )
        if "status" in obj and plural in ("serviceimports", "serviceexports"):
            created = self.update_status({**created, "status": obj["status"]})
        return created

    def get(self, resource: str, name: str, *, namespace: str | None = "default") -> Obj:
        result: Obj = self.request("GET", self.path(resource, namespace=namespace, name=name))
        return result

    def find(self, resource: str, name: str, *, namespace: str | None = "default") -> Obj | None:
        try:
            return self.get(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, *, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else {}
        items: list[Obj] = self.request("GET", self.path(resource, namespace=namespace), **query)["items"]
        return items

    def update(self, obj: Obj) -> Obj:
        plural, namespace = self._of(obj)
        path = self.path(
            plural, namespace=namespace, name=obj["metadata"]["name"], api_version=obj.get("apiVersion")
        )
        result: Obj = self.request("PUT", path, obj)
        return result

    def update_status(self, obj: Obj) -> Obj:
        plural, namespace = self._of(obj)
        path = self.path(
            plural, namespace=namespace, name=obj["metadata"]["name"], api_version=obj.get("apiVersion")
        )
        result: Obj = self.request("PUT", path + "/status", obj)
        return result

    def patch(self, resource: str, name: str, body: Obj, *, namespace: str | None = "default") -> Obj:
        result: Obj = self.request("PATCH", self.path(resource, namespace=namespace, name=name), body)
        return result

    def delete(self, resource: str, name: str, *, namespace: str | None = "default") -> None:
        try:
            self.request("DELETE", self.path(resource, namespace=namespace, name=name))
        except ApiError as exc:
            if exc.status != 404:
                raise

    def load(self, documents: Iterable[Obj]) -> list[Obj]:
        return [self.create(doc) for doc in documents if doc]

    def load_yaml(self, path: Path) -> list[Obj]:
        return self.load(doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict))


@dataclass(frozen=True)
class Audited:
    """One request of the audit log, in the authorizer's terms."""

    user: str
    verb: str
    group: str
    resource: str  # plural, or plural/subresource; "" for a non-resource request
    namespace: str | None
    name: str | None
    code: int
    uri: str
    received: datetime.datetime

    @classmethod
    def of(cls, event: Obj) -> Audited:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        return cls(
            user=(event.get("user") or {}).get("username", ""),
            verb=event.get("verb", ""),
            group=ref.get("apiGroup", ""),
            resource=resource,
            namespace=ref.get("namespace"),
            name=ref.get("name"),
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            uri=event.get("requestURI", ""),
            received=datetime.datetime.fromisoformat(event["requestReceivedTimestamp"]),
        )


class ControlPlane:
    """kube-apiserver (RBAC on) over a shared ``Etcd``, as one cluster of a clusterset.

    ``name`` is the cluster's name in kubeconfigs and the etcd key prefix, so several clusters share one etcd.
    """

    def __init__(
        self,
        binaries: dict[str, Path],
        etcd: Etcd,
        directory: Path,
        *,
        name: str = "cls1",
        service_cidr: str = "10.96.0.0/16",
    ) -> None:
        self.name = name
        self.service_cidr = service_cidr
        self._binaries = binaries
        self.etcd = etcd
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.certificates = Certificates(directory / "pki")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.audit_log = directory / "audit.log"
        c = self.certificates
        self._process = _Process(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd.url}",
                f"--etcd-prefix=/registry-{name}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={c.serving_cert}",
                f"--tls-private-key-file={c.serving_key}",
                f"--client-ca-file={c.ca}",
                f"--service-account-key-file={c.sa_pub}",
                f"--service-account-signing-key-file={c.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={service_cidr}",
                "--authorization-mode=RBAC",
                # As envtest: no controller-manager runs, so nothing makes the tokens this plugin expects.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # The apiserver compacts etcd itself every 5 minutes by default; the tests compact when they
                # mean to, so a run never sees a 410 it did not ask for.
                "--etcd-compaction-interval=0",
                f"--audit-policy-file={self._write_audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",  # written before the response: a test reads it right after
                "--profiling=false",
                "--v=0",
            ],
            directory / "kube-apiserver.log",
        )
        self.objects = Objects(self.url, c)
        # From each start until /readyz: a just-started server answers 403 for a moment while its RBAC
        # informers fill (seen in the audit log after a restart); clients retry, and so does mcsdns.
        self.starting: list[tuple[datetime.datetime, datetime.datetime]] = []

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        began = datetime.datetime.now(datetime.UTC)
        self._process.start()
        _wait(lambda: self.objects.probe("/readyz").status_code == 200, self._process)
        self.starting.append((began, datetime.datetime.now(datetime.UTC)))
        return self

    def was_starting(self, moment: datetime.datetime) -> bool:
        return any(began <= moment <= ready for began, ready in self.starting)

    def stop(self) -> None:
        # kube-apiserver's graceful shutdown waits out open watches for many seconds; what the tests want
        # is the server gone (as in a node failure), so after a short grace it is killed.
        self._process.stop(grace=2.0)

    def running(self) -> bool:
        return self._process.alive()

    def restart(self, *, down: float = 0.0, while_down: Any = None) -> None:
        """Stop kube-apiserver, run ``while_down`` (etcd up), wait ``down`` s, start it on the same port."""
        self.stop()
        if while_down is not None:
            while_down()
        time.sleep(down)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections open and hang, nothing answers (a partition, not a refusal)."""
        self._process.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._process.signal(signal.SIGCONT)

    def compact(self) -> int:
        return self.etcd.compact()

    def peer(self, directory: Path) -> ControlPlane:
        """A second kube-apiserver of this cluster (same etcd, same prefix), as in an HA control plane: it
        takes writes while this one is down. Not started."""
        return ControlPlane(
            self._binaries, self.etcd, directory, name=self.name, service_cidr=self.service_cidr
        )

    # --- what was asked ----------------------------------------------------------------------------------

    def _write_audit_policy(self) -> Path:
        path = self.directory / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(AUDIT_POLICY))
        return path

    def audit_mark(self) -> int:
        """Where the audit log ends now: ``audited(since=mark)`` reads what came after."""
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0

    def audited(self, *, since: int = 0) -> list[Audited]:
        """Each request the ServiceAccounts made after ``since``, once (a watch logs when its response
        starts and when it completes; the first is kept)."""
        seen: set[str] = set()
        out = []
        with self.audit_log.open("rb") as log:
            log.seek(since)
            for line in log:
                if not line.endswith(b"\n"):
                    break  # being written
                event = json.loads(line)
                if event.get("auditID") in seen:
                    continue
                seen.add(event.get("auditID"))
                out.append(Audited.of(event))
        return out

    # --- access ---------------------------------------------------------------------------------------------

    def kubeconfig(self, user: Obj) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {"server": self.url, "certificate-authority": str(self.certificates.ca)},
                }
            ],
            "users": [{"name": self.name, "user": user}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": self.name}}],
            "current-context": self.name,
        }

    def write_kubeconfig(self, path: Path, user: Obj | None = None) -> Path:
        """The admin kubeconfig (or one for ``user``) at ``path``."""
        admin = {
            "client-certificate": str(self.certificates.admin_cert),
            "client-key": str(self.certificates.admin_key),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(user or admin), sort_keys=False))
        return path

    def write_service_account_kubeconfig(self, path: Path, namespace: str, service_account: str) -> Path:
        """A kubeconfig at ``path`` holding a token of that ServiceAccount, as the kubelet mounts one."""
        return self.write_kubeconfig(path, {"token": self.token(namespace, service_account)})

    def token(self, namespace: str, service_account: str, *, seconds: int = 3600) -> str:
        """A ServiceAccount token from the TokenRequest API, as the kubelet mounts into the pod."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        return str(self.objects.request("POST", path, request)["status"]["token"])

    def install(self, documents: Iterable[Obj]) -> list[Obj]:
        """Create each object (a chart's rendering): CRDs are waited for until established."""
        created = []
        for doc in documents:
            created.append(self.objects.create(doc))
            if doc["kind"] == "CustomResourceDefinition":
                self.wait_established(doc["metadata"]["name"])
        return created

    def wait_established(self, crd: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.objects.get("customresourcedefinitions", crd, namespace=None)
            conditions = (found.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            time.sleep(0.05)
        raise RuntimeError(f"CRD {crd} not established after {timeout} s")

    def reset(self, namespaces: Iterable[str]) -> None:
        """Delete what tests make in ``namespaces`` (no controller-manager runs here to delete a namespace's
        contents), and the ClusterProperties: the next test starts from a clean cluster."""
        for namespace in namespaces:
            for plural in ("serviceexports", "serviceimports", "endpointslices", "services", "leases"):
                for obj in self.objects.list(plural, namespace=namespace):
                    name = obj["metadata"]["name"]
                    if plural == "services" and name == "kubernetes":
                        continue
                    if obj["metadata"].get("finalizers"):
                        self.objects.patch(
                            plural, name, {"metadata": {"finalizers": None}}, namespace=namespace
                        )
                    self.objects.delete(plural, name, namespace=namespace)
        for obj in self.objects.list("clusterproperties"):
            self.objects.delete("clusterproperties", obj["metadata"]["name"], namespace=None)


def chart_access(rendered: list[Obj]) -> Iterator[Obj]:
    """The RBAC objects and ServiceAccount of a chart rendering, in an order the API server takes."""
    order = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    for kind in order:
        yield from (obj for obj in rendered if obj["kind"] == kind)


def main(argv: list[str]) -> int:
    """``python -m tests.controlplane DIR``: a real control plane to try mcsdns by hand (docs/kubernetes.md).

    Starts etcd and kube-apiserver, installs the chart's CRDs and RBAC, writes ``DIR/admin.kubeconfig`` and
    ``DIR/chart.kubeconfig`` (the chart's ServiceAccount), and runs until interrupted.
    """
    from tests.realkube import NAMESPACE, SERVICE_ACCOUNT, install_chart

    if len(argv) != 1:
        print("usage: python -m tests.controlplane DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0]).resolve()
    etcd = Etcd(binaries()["etcd"], directory / "etcd")
    etcd.start()
    cluster = ControlPlane(binaries(), etcd, directory / "cls1", name="cls1")
    try:
        cluster.start()
        install_chart(cluster)
        admin = cluster.write_kubeconfig(directory / "admin.kubeconfig")
        chart = cluster.write_service_account_kubeconfig(
            directory / "chart.kubeconfig", NAMESPACE, SERVICE_ACCOUNT
        )
        print(f"kube-apiserver {cluster.url} (etcd {etcd.url}), RBAC on, the chart's CRDs and RBAC installed")
        print(f"  admin:                 --kubeconfig {admin}")
        print(f"  the chart's account:   --kubeconfig {chart}")
        print("Ctrl-C stops both.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
        etcd.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv[1:]))

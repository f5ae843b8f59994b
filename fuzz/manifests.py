"""Fuzz target: the manifests loader and the Kubernetes object checks, up to the zone built from them.

One control byte, then:

- bit 0 clear: the bytes of a manifest file. ``manifests.parse_file`` on it may raise ``ManifestError``
  (the file cannot be read or is not YAML) and nothing else; what it returns goes through what
  ``ManifestSource`` does with it (each rejection's line, the previous versions kept, the warning about
  ignored kinds), then into ``ClusterSetState`` and ``ZoneBuilder.build``, which must not raise either.
- bit 0 set: a Kubernetes object made by the fuzzer: a valid ServiceImport or EndpointSlice (bits 1-2 pick
  one of four) changed at up to 16 places, anywhere in its tree (a value replaced by another of any type
  JSON or YAML has, a key added or removed, a list item added or removed; ``atheris.FuzzedDataProvider``
  decides), so the checks are reached at every depth, not only YAML syntax. ``objects.convert`` (what the
  watch calls) may raise ``ManifestError`` only, and must agree with ``objects.check``; a record is built
  into the zone. With bit 3 set the object is also written as YAML, inside a ``kind: List`` when bit 4
  is set, and read back by ``parse_file``.

    .venv/bin/python fuzz/manifests.py -max_total_time=600 -dict=fuzz/manifests.dict \
        fuzz/work/manifests fuzz/corpus/manifests
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import sys
import tempfile
from typing import Any

import atheris
import yaml

# PyYAML's constructors are Python and are where YAML text becomes values: instrumented with mcsdns.
with (
    atheris.instrument_imports(include=["mcsdns", "yaml"])
    if __name__ == "__main__"
    else contextlib.nullcontext()
):
    from mcsdns.errors import ManifestError
    from mcsdns.settings import ZoneSettings
    from mcsdns.sources import manifests
    from mcsdns.sources.events import Listed, SourceName
    from mcsdns.sources.objects import KINDS, ObjectRef, Record, check, convert
    from mcsdns.sources.state import ClusterSetState
    from mcsdns.zone.build import ZoneBuilder
    from mcsdns.zone.model import EndpointGroup, ServiceImport, ServiceKey, ServiceType

SETTINGS = ZoneSettings()
SERVICE_LABEL = "multicluster.kubernetes.io/service-name"
CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"
_fd, PATH = tempfile.mkstemp(prefix="mcsdns-fuzz-", suffix=".yaml")  # one file, written for every input
os.close(_fd)
atexit.register(os.unlink, PATH)

# What a file served before: a rejected object with one of these refs keeps serving it (manifests._settle).
PREVIOUS: dict[ObjectRef, Record] = {
    ("ServiceImport", "prod", "web"): ServiceImport(key=ServiceKey("prod", "web"), type=ServiceType.HEADLESS),
}

TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "type": "ClusterSetIP",
            "ips": ["10.0.0.1", "fd00::1"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 53}],
        },
    },
    {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "prod"},
        "type": "Headless",
        "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
    },
    {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-cls1-abcde",
            "namespace": "prod",
            "labels": {SERVICE_LABEL: "web", CLUSTER_LABEL: "cls1"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.1.0.10"], "hostname": "web-0", "conditions": {"ready": True}},
            {"addresses": ["10.1.0.11"], "conditions": {"ready": False}},
        ],
    },
    {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-east-6",
            "namespace": "prod",
            "labels": {SERVICE_LABEL: "web", CLUSTER_LABEL: "east.aws"},
        },
        "addressType": "IPv6",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["fd00::10", "fd00::11"], "hostname": "web-1"}],
    },
)

KEYS = (
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "spec",
    "type",
    "ips",
    "ports",
    "port",
    "protocol",
    "addressType",
    "endpoints",
    "addresses",
    "hostname",
    "conditions",
    "ready",
    "items",
    SERVICE_LABEL,
    CLUSTER_LABEL,
)
STRINGS = (
    *KINDS,
    *(version for versions in KINDS.values() for version in versions),
    "ServiceImports",
    "Serviceimport",
    "EndpointSlices",
    "ServiceExport",
    "Service",
    "List",
    "ServiceImportList",
    "v1",
    "ClusterSetIP",
    "Headless",
    "TCP",
    "UDP",
    "SCTP",
    "tcp",
    "IPv4",
    "IPv6",
    "FQDN",
    "10.0.0.1",
    "fd00::1",
    "fe80::1%eth0",
    "::ffff:10.0.0.1",
    "010.0.0.1",
    "1.2.3",
    "web",
    "prod",
    "default",
    "cls1",
    "east.aws",
    "a.b.c",
    "a" * 63,
    "a" * 64,
    "b" * 254,
    "Bad_Name!",
    "-web",
    "web-",
    "wéb",
    "",
    "0",
    "true",
)
INTS = (0, 1, -1, 53, 80, 65535, 65536, 2**31, 2**63, -(2**63))


def one_input(data: bytes) -> None:
    if not data:
        return
    control = data[0]
    if control & 1:
        _object(control, data[1:])
    else:
        _file(data[1:])


def _file(text: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(text)
    _parse()


def _parse() -> manifests.Manifest | None:
    try:
        manifest = manifests.parse_file(PATH)
    except ManifestError:
        return None
    for rejection in manifest.rejections:
        assert rejection.problems, rejection
        assert isinstance(rejection.text(), str)
    for ref, record in manifest.records.items():
        assert ref[0] in KINDS and isinstance(record, ServiceImport | EndpointGroup), (ref, record)
    records, lines = manifests._settle(manifest, PREVIOUS)
    assert len(lines) == len(manifest.rejections)
    if manifest.ignored:
        manifests._ignored_text(manifest.ignored)
    _build(records)
    return manifest


def _build(records: dict[ObjectRef, Record]) -> None:
    """The zone the engine would publish from ``records``: every service they touch, rendered."""
    state = ClusterSetState()
    dirty = state.apply(Listed(SourceName("manifests"), {**PREVIOUS, **records}))
    ZoneBuilder(SETTINGS).build({key: state.service(key) for key in dirty}, serial=1)


def _object(control: int, data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    obj = copy.deepcopy(TEMPLATES[control >> 1 & 3])
    for _ in range(fdp.ConsumeIntInRange(0, 16)):
        _mutate(obj, fdp)
    checked = check(obj)
    try:
        converted = convert(obj)
    except ManifestError:
        assert checked.problems, checked
    else:
        assert not checked.problems, checked
        if converted is not None:
            assert (checked.ref, checked.record) == converted
            _build(dict((converted,)))
    if control & 8:
        document: Any = {"apiVersion": "v1", "kind": "List", "items": [obj]} if control & 16 else obj
        with open(PATH, "w", encoding="utf-8") as handle:
            yaml.dump_all([document, obj], handle, Dumper=_Dumper, allow_unicode=True)
        assert _parse() is not None, "a mapping dumped as YAML must read back"


_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _mutate(obj: dict[str, Any], fdp: atheris.FuzzedDataProvider) -> None:
    """One change somewhere in ``obj``'s tree: walk down as far as the fuzzer says, then change there."""
    node: dict[Any, Any] | list[Any] = obj
    for _ in range(8):
        children = list(node.values() if isinstance(node, dict) else node)
        containers = [child for child in children if isinstance(child, dict | list)]
        if not containers or not fdp.ConsumeBool():
            break
        node = containers[fdp.ConsumeIntInRange(0, len(containers) - 1)]
    op = fdp.ConsumeIntInRange(0, 2)
    if isinstance(node, dict):
        keys = list(node)
        if op == 0 and keys:
            del node[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]]
        elif op == 1 or not keys:
            node[_key(fdp)] = _value(fdp, 0)
        else:
            node[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]] = _value(fdp, 0)
    elif op == 0 and node:
        del node[fdp.ConsumeIntInRange(0, len(node) - 1)]
    elif op == 1 or not node:
        node.append(_value(fdp, 0))
    else:
        node[fdp.ConsumeIntInRange(0, len(node) - 1)] = _value(fdp, 0)


def _key(fdp: atheris.FuzzedDataProvider) -> Any:
    pick = fdp.ConsumeIntInRange(0, 7)
    if pick == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if pick == 1:
        return fdp.ConsumeIntInRange(-2, 2)  # YAML mappings may have keys of other types
    return KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]


def _value(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    pick = fdp.ConsumeIntInRange(0, 10 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return fdp.ConsumeBool()
    if pick == 2:
        return INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)]
    if pick == 3:
        return fdp.ConsumeInt(4)
    if pick == 4:
        return fdp.ConsumeRegularFloat()
    if pick == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    if pick in (6, 7, 8):
        return STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)]
    if pick == 9:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {_key(fdp): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


# --- seeds --------------------------------------------------------------------------------------------------

EXAMPLE = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata:
  name: web
  namespace: prod
spec:
  type: ClusterSetIP
  ips: ["10.0.0.1", "fd00::1"]
  ports:
  - {name: http, protocol: TCP, port: 80}
  - {protocol: UDP, port: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-cls1-abcde
  namespace: prod
  labels:
    multicluster.kubernetes.io/service-name: web
    multicluster.kubernetes.io/source-cluster: cls1
addressType: IPv4
ports:
- name: http
  protocol: TCP
  port: 8080
endpoints:
- addresses: ["10.1.0.10"]
  hostname: web-0
  conditions: {ready: true}
- addresses: ["10.1.0.11"]
  conditions:
    ready: false
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
"""

SEEDS_YAML = {
    "example": EXAMPLE,
    "list": """\
apiVersion: v1
kind: List
items:
- apiVersion: multicluster.x-k8s.io/v1beta1
  kind: ServiceImport
  metadata: {name: db, namespace: prod}
  type: Headless
  ports: [{name: pg, port: 5432}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: db-east
    namespace: prod
    labels: {multicluster.kubernetes.io/service-name: db, multicluster.kubernetes.io/source-cluster: east.aws}
  addressType: IPv6
  endpoints: [{addresses: ["fd00::10"], hostname: db-0}]
""",
    "typed-list": """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImportList
items:
- metadata: {name: a, namespace: x}
  spec: {type: ClusterSetIP, ips: [10.9.0.1]}
- metadata: {name: a, namespace: x}
  spec: {type: Headless}
""",
    "invalid": """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImports
metadata: {name: Bad_Name!, namespace: prod}
spec:
  type: Clusterset
  ips: [not-an-ip, 10.0.0.1]
  ports: [{name: http, port: 70000}, {name: http, port: 80, protocol: tcp}]
---
- just
- a list
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v2
metadata:
  name: x
  labels: {multicluster.kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: [fd00::1], hostname: -x}, 7]
""",
    "anchors": """\
base: &base {type: Headless, ports: [{name: http, port: 80}]}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: web, namespace: prod, labels: &labels {a: b}}
<<: *base
""",
    "json": '{"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport", "metadata":'
    ' {"name": "web", "namespace": "prod"}, "spec": {"type": "ClusterSetIP", "ips": ["10.0.0.1"]}}',
    "not-yaml": "kind: [unclosed\n",
}


def seeds() -> dict[str, bytes]:
    """The seed corpus (fuzz/corpus/manifests/seed-*): files, and each template as it is and as YAML."""
    out = {f"yaml-{name}": b"\x00" + text.encode() for name, text in SEEDS_YAML.items()}
    for index in range(len(TEMPLATES)):
        out[f"object-{index}"] = bytes((1 | index << 1,))
        out[f"object-{index}-as-yaml"] = bytes((1 | index << 1 | 8,))
        out[f"object-{index}-in-list"] = bytes((1 | index << 1 | 8 | 16,))
    return out


def main() -> None:
    logging.disable(logging.CRITICAL)  # the sources log every rejected object: not thousands a second
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Fuzz target: Cloud Map instance attributes, read by every consumer mcsdns has of them.

Instances are any str -> str attribute maps (Cloud Map stores what any writer registers): one to four, each
made from a valid instance as mcsdns or the AWS controller writes it (IPv4 ClusterSetIP, IPv6 Headless),
changed at up to 12 keys by ``atheris.FuzzedDataProvider`` (a value replaced by a near miss or by any
text, a key removed or added), in a service whose namespace and name may be changed too. Properties:

- ``instances.from_attributes`` raises ``InvalidInstance`` and nothing else; what it reads, written back
  with ``attributes()``, reads the same, and its ``instance_id()`` is at most 64 characters (Cloud Map's
  limit); ``needs_register`` and ``merged_attributes`` take any map;
- ``sources.cloudmap.service_records`` (the standalone zone source) never raises, and the zone built from
  its records (``ClusterSetState`` and ``ZoneBuilder.build``, as the engine does) neither;
- ``mcs.import_.import_model`` and the objects planned from it (``desired_import``, ``desired_service``,
  ``desired_slices``) never raise.

    .venv/bin/python fuzz/cloudmap.py -max_total_time=600 fuzz/work/cloudmap fuzz/corpus/cloudmap
"""

from __future__ import annotations

import contextlib
import logging
import sys

import atheris

with atheris.instrument_imports(include=["mcsdns"]) if __name__ == "__main__" else contextlib.nullcontext():
    from mcsdns.clients.cloudmap import Instance
    from mcsdns.mcs import import_
    from mcsdns.mcs import instances as attrs
    from mcsdns.settings import ZoneSettings
    from mcsdns.sources.cloudmap import service_records
    from mcsdns.sources.events import Listed, SourceName
    from mcsdns.sources.state import ClusterSetState
    from mcsdns.zone.build import ZoneBuilder
    from mcsdns.zone.model import ServiceKey

SETTINGS = ZoneSettings()

TEMPLATES: tuple[dict[str, str], ...] = (
    {
        attrs.IPV4: "10.1.0.10",
        attrs.PORT: "8080",
        attrs.ENDPOINT_PORT_NAME: "http",
        attrs.ENDPOINT_PROTOCOL: "TCP",
        attrs.SERVICE_PORT_NAME: "http",
        attrs.SERVICE_PORT: "80",
        attrs.SERVICE_TARGET_PORT: "8080",
        attrs.SERVICE_PROTOCOL: "TCP",
        attrs.SERVICE_TYPE: "ClusterSetIP",
        attrs.CLUSTER_ID: "cls1",
        attrs.CLUSTERSET_ID: "clusterset1",
        attrs.EXPORT_CREATED: "1700000000000",
        attrs.READY: "true",
        attrs.HOSTNAME: "web-0",
        attrs.NODENAME: "node-1",
        attrs.CONTROLLER: attrs.CONTROLLER_NAME,
    },
    {  # as the AWS controller writes a headless endpoint: no hostname, its own controller name
        attrs.IPV6: "fd00::10",
        attrs.PORT: "5432",
        attrs.ENDPOINT_PORT_NAME: "pg",
        attrs.ENDPOINT_PROTOCOL: "TCP",
        attrs.SERVICE_PORT_NAME: "pg",
        attrs.SERVICE_PORT: "5432",
        attrs.SERVICE_TARGET_PORT: "pg",
        attrs.SERVICE_PROTOCOL: "TCP",
        attrs.SERVICE_TYPE: "Headless",
        attrs.CLUSTER_ID: "east.aws",
        attrs.CLUSTERSET_ID: "clusterset1",
        attrs.EXPORT_CREATED: "1690000000000",
        attrs.READY: "false",
        attrs.CONTROLLER: "aws-cloud-map-mcs-controller-for-k8s 0.3.1",
    },
)
KEYS = (*attrs.OURS, "AWS_INSTANCE_CNAME", "AWS_ALIAS_DNS_NAME", "custom")
VALUES = (
    "",
    "0",
    "1",
    "80",
    "65535",
    "65536",
    "-1",
    " 80",
    "+80",
    "8_0",
    "1e3",
    "\u0668\u0660",  # Arabic-Indic 80: int() reads it
    "9223372036854775808",
    "9223372036854775809",
    "1" * 5000,
    "true",
    "True",
    "TRUE",
    "false",
    "yes",
    "ClusterSetIP",
    "Headless",
    "headless",
    "TCP",
    "tcp",
    "UDP",
    "SCTP",
    "\u017fctp",  # long s: upper() is SCTP
    "HTTP",
    "10.0.0.1",
    "010.0.0.1",
    "1.2.3",
    "0.0.0.0",
    "255.255.255.255",
    "fd00::1",
    "::",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "fe80::1%" + "x" * 80,
    "fe80::1%" + "x" * 300,
    "web-0",
    "Web_0",
    "a" * 63,
    "a" * 64,
    "a" * 300,
    "x.y",
    "-x",
    "w\u00e9b",
    "K",
    "\u212a",  # Kelvin sign: lower() is k
    "cls1",
    "east.aws",
    "a.b.c",
    "UPPER",
    "c" * 128,
)
NAMES = ("web", "demo", "prod", "Web", "web.v2", "_web", "a" * 63, "a" * 64, "a" * 300, "w\u00e9b", "", "x y")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    namespace = _name(fdp, "demo")
    name = _name(fdp, "web")
    instances = []
    for index in range(fdp.ConsumeIntInRange(1, 4)):
        attributes = dict(TEMPLATES[fdp.ConsumeIntInRange(0, len(TEMPLATES) - 1)])
        for _ in range(fdp.ConsumeIntInRange(0, 12)):
            _mutate(attributes, fdp)
        instances.append(Instance(f"i-{index}", attributes))
        _read(attributes)

    records = service_records(ServiceKey(namespace, name), instances)
    state = ClusterSetState()
    dirty = state.apply(Listed(SourceName("cloudmap"), records))
    ZoneBuilder(SETTINGS).build({key: state.service(key) for key in dirty}, serial=1)

    model = import_.import_model((namespace, name), instances)
    if model is not None:
        import_.desired_import(model, service={"spec": {"clusterIPs": ["10.96.0.10", "fd00::a"]}})
        import_.import_ready(model, {"spec": {"clusterIP": "10.96.0.10"}})
        import_.desired_service(model)
        import_.desired_slices(model)


def _read(attributes: dict[str, str]) -> None:
    attrs.needs_register(attributes, attributes)
    attrs.merged_attributes(attributes, TEMPLATES[0])
    try:
        endpoint = attrs.from_attributes(attributes)
    except attrs.InvalidInstance:
        return
    written = endpoint.attributes()
    assert attrs.from_attributes(written) == endpoint, (written, endpoint)
    assert not attrs.needs_register(written, endpoint.attributes())
    instance_id = endpoint.instance_id()
    assert len(instance_id) <= attrs.MAX_INSTANCE_ID, instance_id


def _name(fdp: atheris.FuzzedDataProvider, default: str) -> str:
    pick = fdp.ConsumeIntInRange(0, 7)
    if pick == 6:
        return NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
    if pick == 7:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 70))
    return default


def _mutate(attributes: dict[str, str], fdp: atheris.FuzzedDataProvider) -> None:
    op = fdp.ConsumeIntInRange(0, 5)
    keys = list(attributes)
    if op == 0 and keys:
        del attributes[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]]
        return
    if op == 1:
        key = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20))
    else:
        key = KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]
    if fdp.ConsumeIntInRange(0, 3) == 0:
        attributes[key] = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 100))
    else:
        attributes[key] = VALUES[fdp.ConsumeIntInRange(0, len(VALUES) - 1)]


def seeds() -> dict[str, bytes]:
    """The seed corpus (fuzz/corpus/cloudmap/seed-*): empty input is one unchanged IPv4 instance in
    demo/web; the fuzzer finds the rest from there."""
    return {"one-instance": b"", "two-instances": b"\x02\x02\x01\x00\x02\x01\x00"}


def main() -> None:
    logging.disable(logging.CRITICAL)  # every skipped instance is logged: not thousands a second
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Every crash the fuzzers in fuzz/ found, as a plain test with the input that crashed (fuzz/README.md).

The fuzzers' own inputs are kept too (``fuzz/corpus/<target>/crash-*``, replayed by tests/unit/test_fuzz.py),
but those bytes are read through a target's FuzzedDataProvider choices; these are the inputs themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mcsdns.clients.cloudmap import Instance
from mcsdns.errors import ManifestError
from mcsdns.mcs import instances as attrs
from mcsdns.settings import ZoneSettings
from mcsdns.sources.cloudmap import service_records
from mcsdns.sources.events import Listed, SourceName
from mcsdns.sources.manifests import ManifestSource, parse_file
from mcsdns.sources.state import ClusterSetState
from mcsdns.wire import Malformed, scan_reply
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.model import ServiceKey
from tests.support import aws_controller_attributes

# --- fuzz/manifests.py: PyYAML's constructors raise more than YAMLError ------------------------------------

SERVICE_IMPORT = (
    b"apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n"
    b"metadata: {name: web, namespace: prod}\nspec: {type: Headless}\n"
)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"2001-13-01", "ValueError: month must be in 1..12"),  # the first crash found, as found
        (b"!!bool \t", "KeyError: ''"),  # the second, as found
        (b"annotations: {built: 2024-02-30}", "ValueError: day is out of range for month"),
        (b"at: 2001-01-01 25:00:00", "ValueError: hour must be in 0..23"),
        (b"at: 2001-01-01t00:00:00+99:00", "ValueError: offset must be a timedelta"),
        (b"at: !!timestamp yesterday", "AttributeError: "),
        (b"port: !!int 0b2", "ValueError: invalid literal for int() with base 2"),
        (b"weight: !!float heavy", "ValueError: could not convert string to float"),
    ],
)
def test_a_value_pyyaml_cannot_construct_makes_the_file_not_yaml(
    tmp_path: Path, text: bytes, error: str
) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(SERVICE_IMPORT + b"---\n" + text + b"\n")
    with pytest.raises(ManifestError) as raised:
        parse_file(str(path))
    assert str(raised.value).startswith(f"{path}: a value cannot be read: {error}"), raised.value


def test_such_a_file_keeps_its_last_good_content(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_bytes(SERVICE_IMPORT)
    source = ManifestSource(str(tmp_path))
    assert source._refresh()
    path.write_bytes(SERVICE_IMPORT + b"---\nannotations: {built: 2024-02-30}\n")
    assert not source._refresh(), "the served records did not change"
    assert list(source._merged()) == [("ServiceImport", "prod", "web")]
    [line] = source.rejected
    assert line.startswith(f"{path}: a value cannot be read: ValueError: day is out of range for month")


# --- fuzz/cloudmap.py: Cloud Map names and addresses that are no DNS names ---------------------------------


def instance(**changes: str) -> Instance:
    """A headless endpoint as the AWS controller registers it, with ``changes``."""
    attributes = {
        attrs.IPV4: "10.1.0.10",
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
        attrs.READY: "true",
        **changes,
    }
    return Instance("i-1", attributes)


def zone_from(key: ServiceKey, instances: list[Instance]) -> int:
    """The standalone Cloud Map source's records of one service, built into a zone as the engine does: the
    number of services the zone serves."""
    state = ClusterSetState()
    dirty = state.apply(Listed(SourceName("cloudmap"), service_records(key, instances)))
    return ZoneBuilder(ZoneSettings()).build({k: state.service(k) for k in dirty}, serial=1).services


def test_a_cloud_map_name_longer_than_a_dns_label_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    # Found as a service named "a" * 300 (ValueError: bytes must be in range(0, 256) in name_to_wire, which
    # stops the engine); an HTTP namespace's name may be 1024 characters.
    with caplog.at_level(logging.WARNING):
        assert zone_from(ServiceKey("demo", "a" * 300), [instance()]) == 0
        assert zone_from(ServiceKey("n" * 64, "web"), [instance()]) == 0
    assert "cloudmap demo/aaa" in caplog.text and "must be DNS labels" in caplog.text
    # What a DNS label is stays as before: any case, 63 characters.
    assert zone_from(ServiceKey("Demo", "w" * 63), [instance()]) == 1


def test_an_ipv6_address_with_a_zone_index_is_no_endpoint() -> None:
    # Found as AWS_INSTANCE_IPV6 "fe80::1%" + 72 x: read as an endpoint, its instance id grew past Cloud
    # Map's 64 characters, and (with no HOSTNAME) its dashed address became a label of 81 octets, or of
    # more than 255 (ValueError in name_to_wire) with a longer index.
    for address in ("fe80::1%eth0", "fe80::1%" + "x" * 72, "fe80::1%" + "x" * 300):
        with pytest.raises(attrs.InvalidInstance, match="zone index"):
            attrs.from_attributes(instance(**{attrs.IPV4: "", attrs.IPV6: address}).attributes)
        assert zone_from(ServiceKey("demo", "db"), [instance(**{attrs.IPV4: "", attrs.IPV6: address})]) == 0
    endpoint = attrs.from_attributes(instance(**{attrs.IPV4: "", attrs.IPV6: "FE80::1"}).attributes)
    assert endpoint.address == "fe80::1" and len(endpoint.instance_id()) <= attrs.MAX_INSTANCE_ID


# --- fuzz/packet.py: compression pointers into bytes the forwarding cache rewrites -----------------------

# The reply fuzz/packet.py found (crash-529807cd...: its first byte, the target's control byte, left out): the
# A record's owner is a pointer to offset 45, inside the question's long label, and reading on from there runs
# into the CNAME's TTL field, so lowering that TTL on a cache hit changed the A record's owner for the client.
FOUND = bytes.fromhex(
    "5151810000010002000000010377777707657830303030303030303030303030303030303030303030303030303030303030"
    "3030303030303030303030303030616d706c6503636f6d0000010001c00c000500010000003c00110363646e076578616d70"
    "6c6c036e657400c02d00010001000000140004c63364070000292000000000000000"
)
QUESTION = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"  # offsets 12-32; the first record starts at 33
A_RECORD = b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"  # type, class, TTL 60, 192.0.2.1


def _reply(*records: bytes) -> bytes:
    """A reply to www.example.com A with ``records`` in its answer section."""
    counts = b"\x00\x01" + len(records).to_bytes(2, "big") + b"\x00\x00\x00\x00"
    return b"\x12\x34\x81\x80" + counts + QUESTION + b"".join(records)


@pytest.mark.parametrize(
    "reply",
    [
        FOUND,
        _reply(b"\xc0\x02" + A_RECORD),  # into the header
        _reply(b"\xc0\x0c" + A_RECORD, b"\xc0\x27" + A_RECORD),  # into the first record's TTL (offset 39)
        _reply(b"\xc0\x30" + A_RECORD),  # forward, past itself
        _reply(b"\x01a\xc0\x21" + A_RECORD[:2] + b"\xc0\x22" + A_RECORD[4:]),  # a loop between two pointers
        _reply(
            b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02\xc0\x27"
        ),  # a CNAME target into its own TTL
    ],
    ids=["found", "header", "ttl", "forward", "loop", "rdata-name"],
)
def test_a_reply_whose_names_point_into_rewritten_bytes_is_malformed(reply: bytes) -> None:
    with pytest.raises(Malformed, match="compression pointer"):
        scan_reply(reply)


def test_a_pointer_into_the_middle_of_a_question_label_is_malformed() -> None:
    # Offset 13 is the "w" of www: not where a label starts, so not a name already read.
    with pytest.raises(Malformed):
        scan_reply(_reply(b"\xc0\x0c" + A_RECORD, b"\xc0\x0d" + A_RECORD))


def test_names_that_point_back_into_names_are_read() -> None:
    cname = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x06\x03cdn\xc0\x10"  # cdn.example.com, at 45
    scan = scan_reply(_reply(cname, b"\xc0\x2d" + A_RECORD))  # the A record's owner: the CNAME's target
    assert scan.counts == (2, 0, 0) and [ttl for _, ttl in scan.ttls] == [60, 60]


# --- fuzz/cloudmap.py: service properties in instance attributes ------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (attrs.SESSION_AFFINITY_TIMEOUT, "1" * 5000),  # as found: int() refuses more than 4,300 digits
        (attrs.SESSION_AFFINITY_TIMEOUT, "²"),  # str.isdigit() says yes, int() says no
        (attrs.EXPORTED_LABELS, "[" * 512 + "]" * 512),  # JSON, but nested lists, not an object
        (attrs.EXPORTED_LABELS, '{"a":"' + "x" * 2000 + '"}'),  # longer than Cloud Map holds
    ],
)
def test_an_unreadable_property_reads_as_its_default_and_keeps_the_endpoint(key: str, value: str) -> None:
    attributes = {
        **aws_controller_attributes(address="10.1.0.10", cluster="cls1", clusterset="clusterset1"),
        attrs.SESSION_AFFINITY: "ClientIP",
        key: value,
    }
    endpoint = attrs.from_attributes(attributes)
    assert endpoint.properties.session_affinity_timeout is None or key != attrs.SESSION_AFFINITY_TIMEOUT
    assert endpoint.properties.labels == ()
    assert attrs.from_attributes(endpoint.attributes()) == endpoint, "read back as written"

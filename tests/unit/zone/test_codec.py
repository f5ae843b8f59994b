"""The zone as bytes (zone/codec.py) and the state file around it (statefile.py): a round trip gives the
same answers, a delta applies only to its base, and every kind of bad file is refused with a reason."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dns.message
import pytest

from mcsdns.settings import ZoneSettings
from mcsdns.statefile import FILE_NAME, STALE_TTL, StateFile
from mcsdns.wire import QType, name_to_wire, text_to_name
from mcsdns.zone import codec
from mcsdns.zone.build import ZoneBuilder
from mcsdns.zone.model import ServiceKey
from mcsdns.zone.snapshot import ZoneSnapshot
from tests.unit.zone.test_build import clusterset_ip, headless, key, reply

ZONE = ZoneSettings()


def zone(builder: ZoneBuilder | None = None, count: int = 50, serial: int = 1) -> ZoneSnapshot:
    builder = builder or ZoneBuilder(ZONE)
    services = {
        ServiceKey("ns", f"s{i}"): clusterset_ip("ns", f"s{i}", f"10.0.0.{i + 1}") for i in range(count)
    }
    services[ServiceKey("other", "db")] = headless("other", "db", "10.1.0.1", "10.1.0.2")
    return builder.build(services, serial=serial)


def same(a: ZoneSnapshot, b: ZoneSnapshot) -> None:
    assert dict(a.answers) == dict(b.answers)
    assert set(a.names) == set(b.names)
    assert (a.serial, a.services, a.zone_wire) == (b.serial, b.services, b.zone_wire)
    for length in (20, 31, 40):  # negative answers are rebuilt from the SOA: the same bytes
        assert a.nxdomain[length] == b.nxdomain[length] and a.nodata[length] == b.nodata[length]


def test_a_full_zone_round_trips() -> None:
    original = zone()
    same(codec.snapshot_from(codec.decode(codec.encode_full(original))), original)


def test_a_delta_carries_exactly_one_publish() -> None:
    builder = ZoneBuilder(ZONE)
    first = zone(builder)
    second = builder.build(
        {
            ServiceKey("ns", "s1"): None,  # gone: its names and answers go
            ServiceKey("ns", "s2"): clusterset_ip("ns", "s2", "10.9.9.9"),  # changed
            ServiceKey("new", "x"): clusterset_ip("new", "x", "10.8.8.8"),  # a new namespace's name too
        },
        serial=2,
    )
    delta = codec.encode_delta(second)
    assert delta is not None and len(delta) < len(codec.encode_full(second)) / 5
    worker = codec.snapshot_from(codec.decode(codec.encode_full(first)))
    worker = codec.snapshot_from(codec.decode(delta), worker)
    same(worker, second)
    assert key("s1.ns.svc.clusterset.local", QType.A) not in worker.answers
    with pytest.raises(codec.ZoneDataError, match="change from serial 1, but this worker has serial 2"):
        codec.snapshot_from(codec.decode(delta), worker)  # applied twice: refused, not merged


def test_a_first_snapshot_has_no_delta() -> None:
    assert codec.encode_delta(zone()) is None


def saved(tmp_path: Path, snapshot: ZoneSnapshot, saved_at: float | None = None) -> Path:
    path = tmp_path / FILE_NAME
    path.write_bytes(codec.encode_full(snapshot, saved_at=time.time() if saved_at is None else saved_at))
    return path


def test_the_saved_zone_serves_stale_with_short_ttls(tmp_path: Path) -> None:
    original = zone()
    state = StateFile(str(tmp_path), ZONE.wire, 3600)
    state.write(original)
    loaded = state.load()
    assert loaded is not None and loaded.saved_at > 0
    a = key("s3.ns.svc.clusterset.local", QType.A)
    assert loaded.answers[a] == original.answers[a], "TTL 5 is short already: the same bytes"
    txt = key("dns-version.clusterset.local", QType.TXT)
    message = dns.message.from_wire(reply("dns-version.clusterset.local", QType.TXT, loaded.answers[txt]))
    assert message.answer[0].ttl == STALE_TTL, "RFC 8767 §4: 28800 s becomes 30 s while stale"
    assert message.answer[0][0].strings == (b"1.0.0",)


def test_a_long_zone_ttl_is_capped_everywhere(tmp_path: Path) -> None:
    original = zone(ZoneBuilder(ZoneSettings(ttl=300)))
    loaded = StateFile(str(saved(tmp_path, original).parent), ZONE.wire, 3600).load()
    assert loaded is not None
    a = key("s3.ns.svc.clusterset.local", QType.A)
    message = dns.message.from_wire(reply("s3.ns.svc.clusterset.local", QType.A, loaded.answers[a]))
    assert message.answer[0].ttl == STALE_TTL and message.answer[0][0].address == "10.0.0.4"
    nope = "nope.ns.svc.clusterset.local"
    negative = dns.message.from_wire(
        reply(nope, QType.A, loaded.nxdomain[len(name_to_wire(text_to_name(nope)))])
    )
    assert negative.authority[0].ttl == STALE_TTL and negative.authority[0][0].minimum == STALE_TTL


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes((data[at] ^ 0xFF,)) + data[at + 1 :]


@pytest.mark.parametrize(
    ("case", "make", "reason"),
    [
        ("empty", lambda full: b"", "no header"),
        ("garbage", lambda full: b"\x00" * 4096, "no header"),
        ("truncated", lambda full: full[: len(full) // 2], "truncated"),
        ("corrupt", lambda full: flip(full, len(full) - 100), "checksum mismatch"),
        ("future version", lambda full: flip(full, len(codec.MAGIC)), "written in format"),
        (
            "another zone",
            lambda full: codec.encode_full(zone(ZoneBuilder(ZoneSettings(zone="example.org")))),
            "another zone",
        ),
        (
            "too old",
            lambda full: codec.encode_full(zone(), saved_at=time.time() - 7200),
            "longer than --max-stale",
        ),
        (
            "from the future",
            lambda full: codec.encode_full(zone(), saved_at=time.time() + 7200),
            "in the future",
        ),
    ],
)
def test_a_bad_state_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, make: object, reason: str
) -> None:
    full = codec.encode_full(zone(), saved_at=time.time())
    (tmp_path / FILE_NAME).write_bytes(make(full))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="mcsdns.statefile"):
        assert StateFile(str(tmp_path), ZONE.wire, 3600).load() is None, case
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()], caplog.text


def test_a_state_file_that_is_a_directory_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).mkdir()
    with caplog.at_level(logging.WARNING, logger="mcsdns.statefile"):
        assert StateFile(str(tmp_path), ZONE.wire, 3600).load() is None
    assert "cannot read it" in caplog.text


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    state = StateFile(str(tmp_path), ZONE.wire, 3600)
    state.write(zone(serial=1))
    state.write(zone(serial=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME], "no temporary file left behind"
    loaded = state.load()
    assert loaded is not None and loaded.serial == 2

"""Flags, environment and config file merge into one frozen Settings, with one precedence."""

from __future__ import annotations

import re

import pytest

from mcsdns.errors import ConfigError
from mcsdns.settings import ListenAddress, parse_listen, parse_seconds, resolve


def test_defaults() -> None:
    settings = resolve({}, environ={}, config={})
    assert settings.server.listen == (ListenAddress("127.0.0.1", 5353),)
    assert (settings.zone.zone, settings.zone.ttl, settings.zone.dns_version) == (
        "clusterset.local",
        5,
        "1.0.0",
    )


def test_flag_beats_environment_beats_config() -> None:
    config = {"ttl": 60, "zone": "example.internal", "listen": ["127.0.0.2:53"]}
    environ = {"MCSDNS_TTL": "30", "MCSDNS_LISTEN": "127.0.0.3:53, [::1]:53"}
    settings = resolve({"ttl": "10"}, environ=environ, config=config)
    assert settings.zone.ttl == 10
    assert settings.zone.zone == "example.internal"
    assert settings.server.listen == (ListenAddress("127.0.0.3", 53), ListenAddress("::1", 53))
    assert resolve({}, environ={}, config=config).server.listen == (ListenAddress("127.0.0.2", 53),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ListenAddress("127.0.0.1", 5353)),
        ("[::1]:53", ListenAddress("::1", 53)),
        (":53", ListenAddress("0.0.0.0", 53)),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
    ],
)
def test_listen_forms(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:99999", "dns.local:53", "[::1]53"])
def test_bad_listen(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


@pytest.mark.parametrize(("text", "seconds"), [("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("1.5", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"zone": "a..b"}, "--zone: 'a..b' is not a valid DNS name"),
        ({"dns_version": "2.0.0"}, "--dns-version: '2.0.0' is not one of 1.0.0, 1.1.0"),
        ({"log_level": "loud"}, "--log-level: 'loud' is not one of"),
        ({"tcp_idle_timeout": "-1s"}, "--tcp-idle-timeout: '-1s' must be positive"),
    ],
)
def test_errors_name_the_setting(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(flags, environ={}, config={})


def test_config_origin_is_named() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("--config /etc/mcsdns.yaml key ttl: 5000 is outside 0..3600")
    ):
        resolve({}, environ={}, config={"ttl": 5000}, config_path="/etc/mcsdns.yaml")


SAMPLES = {
    "listen": "127.0.0.2:53",
    "zone": "mesh.example",
    "ttl": "30",
    "dns_version": "1.1.0",
    "tcp_idle_timeout": "3s",
    "tcp_max_connections": "7",
    "manifests": ".",
    "manifests_poll": "1s",
    "kubeconfig": "in-cluster",
    "cloudmap": "true",
    "cloudmap_poll": "5s",
    "aws_region": "eu-west-1",
    "cluster_id": "east",
    "clusterset_id": "set1",
    "leader_elect": "false",
    "lease_name": "lead",
    "lease_namespace": "ops",
    "lease_duration": "20s",
    "renew_deadline": "12s",
    "leader_id": "pod-a",
    "forward": "127.0.0.53:53",
    "forward_allow": "10.0.0.0/8",
    "forward_cache_size": "5",
    "http": "127.0.0.1:9153",
    "log_format": "json",
    "log_level": "debug",
}


def test_every_flag_reaches_a_setting() -> None:
    from mcsdns.settings import SERVE_OPTIONS

    assert {option.key for option in SERVE_OPTIONS} == SAMPLES.keys(), "a sample for every flag"
    default = resolve({}, environ={}, config={})
    for option in SERVE_OPTIONS:
        changed = resolve(
            {option.key: [SAMPLES[option.key]] if option.repeat else SAMPLES[option.key]},
            environ={},
            config={},
        )
        assert changed != default, f"{option.flag} changes nothing"


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    from pathlib import Path

    from mcsdns.settings import markdown_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme, (
        "regenerate with: python -c 'import mcsdns.settings as s; print(s.markdown_table())'"
    )

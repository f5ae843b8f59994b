"""Flags, environment and config file merge into one frozen Settings, with one precedence."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from ipaddress import ip_network
from pathlib import Path

import pytest
import yaml

from mcsdns.errors import ConfigError
from mcsdns.settings import (
    SETTINGS,
    ListenAddress,
    Setting,
    Settings,
    ZoneSettings,
    load_config_file,
    markdown_table,
    parse_listen,
    parse_seconds,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("1h", 3600.0), ("1.5", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"zone": "a..b"}, "--zone: 'a..b' is not a valid DNS name"),
        ({"dns_version": "2.0.0"}, "--dns-version: '2.0.0' is not one of 1.0.0, 1.1.0"),
        ({"log_level": "loud"}, "--log-level: 'loud' is not one of"),
        ({"tcp_idle_timeout": "-1s"}, "--tcp-idle-timeout: '-1s' must be positive"),
        ({"forward_cache_bytes": "64MB"}, "--forward-cache-bytes: '64MB' is not a whole number"),
        ({"forward_serve_stale": "1d"}, "--forward-serve-stale: '1d' is not a duration like 2s or 500ms"),
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
    "prefer_local_cluster": "true",
    "ptr": "true",
    "dns": "false",
    "workers": "3",
    "lameduck": "10s",
    "tcp_idle_timeout": "3s",
    "tcp_max_connections": "7",
    "tcp_max_lifetime": "30s",
    "manifests": ".",
    "manifests_poll": "1s",
    "state_dir": "/var/lib/mcsdns",
    "max_stale": "30m",
    "kubeconfig": "in-cluster",
    "cloudmap": "true",
    "cloudmap_poll": "5s",
    "cloudmap_rate": "200",
    "cloudmap_max_staleness": "10m",
    "cloudmap_owner_account": "111122223333",
    "cluster_stale_after": "2m",
    "evict_stale_clusters": "true",
    "stale_cluster_grace": "30m",
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
    "forward_cache_bytes": "1Mi",
    "forward_serve_stale": "off",
    "http": "127.0.0.1:9153",
    "metrics_names": "coredns",
    "log_format": "json",
    "log_level": "debug",
}


def test_every_flag_reaches_a_setting() -> None:
    assert {declared.key for declared in SETTINGS} == SAMPLES.keys(), "a sample for every flag"
    default = resolve({}, environ={}, config={})
    for declared in SETTINGS:
        changed = resolve(
            {declared.key: [SAMPLES[declared.key]] if declared.repeat else SAMPLES[declared.key]},
            environ={},
            config={},
        )
        assert changed != default, f"{declared.flag} changes nothing"


@pytest.mark.parametrize("declared", SETTINGS, ids=lambda declared: declared.key)
def test_flag_environment_and_config_key_mean_the_same(declared: Setting, tmp_path: Path) -> None:
    sample = SAMPLES[declared.key]
    by_flag = resolve({declared.key: [sample] if declared.repeat else sample}, environ={}, config={})
    assert resolve({}, environ={declared.env: sample}, config={}) == by_flag
    for key in (declared.key, declared.key.replace("_", "-")):
        (tmp_path / "mcsdns.yaml").write_text(yaml.safe_dump({key: sample}))
        assert resolve({}, environ={}, config=load_config_file(str(tmp_path / "mcsdns.yaml"))) == by_flag


def test_every_field_of_a_group_is_a_declared_setting() -> None:
    """No group field carries a default of its own: each is a declaration, or derived from one."""
    declared = {(d.group, d.attr) for d in SETTINGS}
    derived = {("zone", "name"), ("zone", "wire")}
    for group in fields(Settings):
        if (None, group.name) in declared:
            continue
        for inner in fields(getattr(Settings(), group.name)):
            assert (group.name, inner.name) in declared | derived, (
                f"{group.name}.{inner.name} is not declared"
            )
    assert Settings() == resolve({}, environ={}, config={}), "the groups' defaults are the declared ones"


def test_values_are_final_types_at_load() -> None:
    settings = resolve(
        {"zone": "Mesh.Example.", "tcp_idle_timeout": "500ms"},
        environ={"MCSDNS_FORWARD_ALLOW": "10.0.0.0/8, fd00::/8", "MCSDNS_LEASE_DURATION": "1m"},
        config={},
    )
    assert settings.forward.allow == (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
    assert (settings.server.tcp_idle_timeout, settings.lease.duration) == (0.5, 60.0)
    assert settings.zone.zone == "mesh.example"
    assert settings.zone.name == (b"mesh", b"example")
    assert settings.zone.wire == b"\x04mesh\x07example\x00"
    assert ZoneSettings().wire == b"\x0aclusterset\x05local\x00"
    assert replace(ZoneSettings(), zone="a.b").wire == b"\x01a\x01b\x00", "derived again on replace"


def test_other_programs_variables_fill_in_last() -> None:
    environ = {"AWS_DEFAULT_REGION": "eu-west-1", "POD_NAMESPACE": "ops"}
    settings = resolve({}, environ=environ, config={})
    assert (settings.cloudmap.region, settings.lease.namespace) == ("eu-west-1", "ops")
    settings = resolve({}, environ={**environ, "AWS_REGION": "us-west-2"}, config={"lease_namespace": "mine"})
    assert (settings.cloudmap.region, settings.lease.namespace) == ("us-west-2", "mine")


def test_reloadable_settings() -> None:
    reloadable = {declared.key for declared in SETTINGS if declared.reloadable}
    # Exactly what app.Reloader applies live (tests/integration/test_reload.py); the rest needs a restart.
    assert reloadable == {"forward", "forward_allow", "log_level", "ttl"}


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    begin = readme.index("<!-- settings table:")
    begin = readme.index("\n", begin) + 1
    end = readme.index("<!-- end of settings table -->", begin)
    assert readme[begin:end].strip() == markdown_table().strip(), (
        "README.md's settings table differs from the declarations in mcsdns/settings.py: replace what is "
        "between its markers with the output of "
        "python -c 'import mcsdns.settings as s; print(s.markdown_table())'"
    )


CHART = ROOT / "charts" / "mcsdns"


def test_every_variable_the_chart_sets_or_documents_is_a_declared_setting() -> None:
    declared = {d.env for d in SETTINGS}
    # NOTES.txt's MCSDNS_IP is a shell variable of the printed instructions, not a setting.
    files = [CHART / "values.yaml", *(p for p in (CHART / "templates").rglob("*") if p.name != "NOTES.txt")]
    named = {
        name for path in files if path.is_file() for name in re.findall(r"\bMCSDNS_[A-Z_]+", path.read_text())
    }
    assert named, "the chart names its variables"
    assert named - declared == set(), "the chart sets variables mcsdns does not read"


def test_the_defaults_values_yaml_documents_are_the_declared_ones() -> None:
    """values.yaml says "Empty: <default>" for keys whose empty value leaves mcsdns's own default."""
    by_env = {d.env: d for d in SETTINGS}
    checked = 0
    for block in re.split(r"\n(?=\s*# --)", (CHART / "values.yaml").read_text()):
        comment = " ".join(line.strip().lstrip("#").strip() for line in block.splitlines() if "#" in line)
        names = set(re.findall(r"\bMCSDNS_[A-Z_]+", comment))
        documented = re.search(r"Empty: ([^\s<]+)\.(?:\s|$)", comment)
        if len(names) == 1 and documented:
            assert documented.group(1) == by_env[names.pop()].shown, comment
            checked += 1
    assert checked >= 5, "values.yaml documents mcsdns's defaults"


@pytest.mark.parametrize(
    ("argv", "cloudmap", "elect"),
    [
        (["--cloudmap"], True, True),  # a bare switch, as pflag reads one
        (["--cloudmap=false"], False, True),
        (["--cloudmap", "true"], True, True),  # the spelling of earlier releases still reads
        (["--cloudmap", "--leader-elect=false"], True, False),
        (["--leader-elect", "off", "--cloudmap"], True, False),
    ],
)
def test_a_boolean_flag_is_a_switch(argv: list[str], cloudmap: bool, elect: bool) -> None:
    from mcsdns.cli import build_parser, settings_from

    settings = settings_from(build_parser().parse_args(["serve", *argv]), {})
    assert (settings.cloudmap.enabled, settings.lease.elect) == (cloudmap, elect)


def test_a_boolean_flag_with_another_word_says_how_to_spell_it() -> None:
    from mcsdns.cli import build_parser, settings_from

    with pytest.raises(ConfigError, match="--cloudmap: 'maybe' is not true or false"):
        settings_from(build_parser().parse_args(["serve", "--cloudmap", "maybe"]), {})


def test_help_groups_the_flags_by_concern() -> None:
    from mcsdns.cli import build_parser

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    sections = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections[:3] == ["options", "DNS server", "the zone"]
    assert text.index("  --forward-cache-size") > text.index("forwarding (sidecar resolver):")

"""Frozen, grouped settings and the one place that reads flags, ``MCSDNS_*`` and ``--config`` files.

Precedence, highest first: command-line flag, environment variable ``MCSDNS_<FLAG>``, key in the
``--config`` YAML file, default. Every invalid value raises ``ConfigError`` with one line naming the
setting and where it came from; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mcsdns.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:5353"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 5353),)
    """UDP and TCP sockets, one pair per address."""
    tcp_idle_timeout: float = 10.0
    """Seconds a TCP connection may stay silent before it is closed (RFC 7766 §6.2.3)."""
    tcp_max_connections: int = 1000
    """Open TCP connections at most; a new one past the cap is closed at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSettings:
    zone: str = "clusterset.local"
    """The clusterset zone (MCS DNS spec: ``clusterset.local``; configurable as CoreDNS allows)."""
    ttl: int = 5
    """TTL of every record but ``dns-version``, seconds, 0-3600 (CoreDNS's default and range)."""
    dns_version: str = "1.0.0"
    """The TXT answer of ``dns-version.<zone>``: the spec's schema version; CoreDNS answers 1.1.0."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    manifests: str | None = None
    """Directory of ServiceImport/EndpointSlice YAML manifests, reloaded on change."""
    manifests_poll: float = 0.25
    """Seconds between scans of the manifests directory."""


IN_CLUSTER = "in-cluster"


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    kubeconfig: str | None = None
    """A kubeconfig path, ``in-cluster`` for the pod's service account, or None: no Kubernetes."""
    cluster_id: str | None = None
    """This cluster's id; else the ClusterProperty ``cluster.clusterset.k8s.io`` (KEP-2149)."""
    clusterset_id: str | None = None
    """The clusterset's id; else the ClusterProperty ``clusterset.k8s.io``."""
    leader_elect: bool = True
    """Elect one writer among replicas on a Lease (every replica serves DNS either way)."""
    lease_name: str = "mcsdns-leader"
    lease_namespace: str = "default"
    lease_duration: float = 15.0
    """Seconds a lease is valid after its last renewal."""
    renew_deadline: float = 10.0
    """Seconds a leader keeps writing without a successful renewal; below ``lease_duration``."""
    leader_id: str | None = None
    """This replica's name in the lease; default: host name and a random suffix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudMapSettings:
    enabled: bool = False
    """Read AWS Cloud Map (region and endpoint from AWS_REGION / AWS_ENDPOINT_URL_SERVICEDISCOVERY)."""
    poll: float = 2.0
    """Seconds between Cloud Map polls (the AWS controller's fixed period)."""
    region: str | None = None
    """``--aws-region``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (EKS with IRSA sets both)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardSettings:
    upstreams: tuple[ListenAddress, ...] = ()
    """Resolvers for names outside the zone (sidecar mode); none: such names are REFUSED."""
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client networks that may use forwarding; anyone else gets REFUSED (never an open resolver)."""
    cache_size: int = 10_000
    """Answers kept at most in the forwarding cache."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    format: str = "text"
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    zone: ZoneSettings = field(default_factory=ZoneSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    cloudmap: CloudMapSettings = field(default_factory=CloudMapSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    http: ListenAddress | None = None
    """Where /healthz, /readyz and /metrics are served; None: nowhere."""
    log: LogSettings = field(default_factory=LogSettings)


# --- parsing of raw values ----------------------------------------------------------------------------------


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT``, ``[V6]:PORT``, or ``:PORT`` (all IPv4 addresses)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    number = parse_int(port, low=0, high=65535)
    return ListenAddress(host, number)


def parse_int(text: str, *, low: int, high: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}..{high}")
    return value


def parse_seconds(text: str) -> float:
    """``10``, ``2.5``, ``500ms``, ``2s`` or ``1m``: a positive duration in seconds."""
    raw = str(text).strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], factor
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 2s or 500ms") from None
    if not value > 0:
        raise ValueError(f"{text!r} must be positive")
    return value


def parse_zone(text: str) -> str:
    """A zone name: labels of 1-63 characters, at most 253 in all (RFC 1035 §2.3.4)."""
    name = str(text).strip().rstrip(".").lower()
    if not name:
        raise ValueError("the zone cannot be the root")
    if len(name) > 253 or any(not 0 < len(label) <= 63 for label in name.split(".")):
        raise ValueError(f"{text!r} is not a valid DNS name")
    if not name.isascii():
        raise ValueError(f"{text!r} is not ASCII (use the IDNA form)")
    return name


def parse_choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = str(text).strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def parse_kubeconfig(text: str) -> str:
    if str(text).strip() == IN_CLUSTER:
        return IN_CLUSTER
    path = os.path.expanduser(str(text))
    if not os.path.isfile(path):
        raise ValueError(f"{text!r} is not a file (or say {IN_CLUSTER})")
    return path


def parse_cluster_id(text: str) -> str:
    """KEP-2149: a cluster id is an RFC 1123 subdomain of at most 128 characters."""
    value = str(text).strip().lower()
    labels = value.split(".")
    if (
        not value
        or len(value) > 128
        or not all(
            label
            and len(label) <= 63
            and label.replace("-", "").isalnum()
            and label.isascii()
            and label[0] != "-"
            and label[-1] != "-"
            for label in labels
        )
    ):
        raise ValueError(f"{text!r} is not an RFC 1123 subdomain of at most 128 characters")
    return value


def parse_name(text: str) -> str:
    value = str(text).strip()
    if (
        not value
        or len(value) > 253
        or value != value.lower()
        or not value.replace("-", "").replace(".", "").isalnum()
    ):
        raise ValueError(f"{text!r} is not a Kubernetes object name")
    return value


def parse_network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(str(text).strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR like 10.0.0.0/8") from None


def parse_directory(text: str) -> str:
    path = os.path.expanduser(str(text))
    if not os.path.isdir(path):
        raise ValueError(f"{text!r} is not a directory")
    return path


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, how to parse one value, and whether it repeats."""

    flag: str
    parse: Callable[[str], Any]
    help: str
    repeat: bool = False
    metavar: str = "VALUE"
    default: str = ""  # as documented; the values themselves live in the settings dataclasses

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "MCSDNS_" + self.key.upper()


SERVE_OPTIONS: tuple[Option, ...] = (
    # DNS server
    Option(
        "--listen",
        parse_listen,
        "UDP and TCP address; repeatable; port 0 picks one",
        True,
        "HOST:PORT",
        DEFAULT_LISTEN,
    ),
    Option("--zone", parse_zone, "the clusterset zone", metavar="ZONE", default="clusterset.local"),
    Option(
        "--ttl",
        lambda v: parse_int(v, low=0, high=3600),
        "TTL of every record but dns-version, 0-3600",
        metavar="SECONDS",
        default="5",
    ),
    Option(
        "--dns-version",
        parse_choice(("1.0.0", "1.1.0")),
        "dns-version TXT: 1.0.0 (spec) or 1.1.0 (CoreDNS)",
        metavar="VERSION",
        default="1.0.0",
    ),
    Option(
        "--tcp-idle-timeout",
        parse_seconds,
        "close TCP connections silent this long",
        metavar="DURATION",
        default="10s",
    ),
    Option(
        "--tcp-max-connections",
        lambda v: parse_int(v, low=1, high=1_000_000),
        "open TCP connections at most",
        metavar="N",
        default="1000",
    ),
    # Zone sources
    Option(
        "--manifests", parse_directory, "serve the ServiceImport/EndpointSlice YAML in DIR", metavar="DIR"
    ),
    Option(
        "--manifests-poll", parse_seconds, "how often DIR is scanned", metavar="DURATION", default="250ms"
    ),
    Option(
        "--kubeconfig",
        parse_kubeconfig,
        f"watch this cluster's ServiceImports/EndpointSlices ({IN_CLUSTER}: the pod's service account)",
        metavar="PATH",
        default="in-cluster in a pod",
    ),
    Option(
        "--cloudmap",
        parse_bool,
        "use AWS Cloud Map: with --kubeconfig the export/import controller, without it the zone itself",
        metavar="BOOL",
        default="false",
    ),
    Option("--cloudmap-poll", parse_seconds, "Cloud Map import period", metavar="DURATION", default="2s"),
    Option("--aws-region", parse_name, "AWS region of Cloud Map", metavar="REGION", default="$AWS_REGION"),
    # Identity and leadership
    Option(
        "--cluster-id",
        parse_cluster_id,
        "this cluster's id",
        metavar="ID",
        default="ClusterProperty cluster.clusterset.k8s.io",
    ),
    Option(
        "--clusterset-id",
        parse_cluster_id,
        "the clusterset's id",
        metavar="ID",
        default="ClusterProperty clusterset.k8s.io",
    ),
    Option(
        "--leader-elect",
        parse_bool,
        "elect one writer among replicas on a Lease",
        metavar="BOOL",
        default="true",
    ),
    Option("--lease-name", parse_name, "the Lease's name", metavar="NAME", default="mcsdns-leader"),
    Option(
        "--lease-namespace",
        parse_name,
        "the Lease's namespace",
        metavar="NAMESPACE",
        default="$POD_NAMESPACE, else default",
    ),
    Option(
        "--lease-duration",
        parse_seconds,
        "how long a lease holds after its last renewal",
        metavar="DURATION",
        default="15s",
    ),
    Option(
        "--renew-deadline",
        parse_seconds,
        "a leader stops writing this long after its last renewal",
        metavar="DURATION",
        default="10s",
    ),
    Option(
        "--leader-id",
        parse_name,
        "this replica's name in the Lease",
        metavar="NAME",
        default="host name + random suffix",
    ),
    # Sidecar forwarding
    Option(
        "--forward",
        parse_listen,
        "resolver for names outside the zone; repeatable, tried in order",
        True,
        "HOST:PORT",
        "none: REFUSED",
    ),
    Option(
        "--forward-allow",
        parse_network,
        "clients that may use forwarding; repeatable",
        True,
        "CIDR",
        "127.0.0.0/8, ::1/128",
    ),
    Option(
        "--forward-cache-size",
        lambda v: parse_int(v, low=0, high=10_000_000),
        "answers kept in the forwarding cache",
        metavar="N",
        default="10000",
    ),
    # Operations
    Option(
        "--http",
        parse_listen,
        "serve /healthz, /readyz and /metrics here",
        metavar="HOST:PORT",
        default="off",
    ),
    Option("--log-format", parse_choice(("text", "json")), "text or json", metavar="FORMAT", default="text"),
    Option(
        "--log-level",
        parse_choice(("debug", "info", "warning", "error")),
        "debug, info, warning or error",
        metavar="LEVEL",
        default="info",
    ),
)


def markdown_table() -> str:
    """The configuration table of the README: one row per setting, generated so it never drifts."""
    rows = ["| flag | environment | config key | default | meaning |", "|---|---|---|---|---|"]
    for option in SERVE_OPTIONS:
        flag = f"`{option.flag} {option.metavar}`" + (" …" if option.repeat else "")
        default = f"`{option.default}`" if option.default else ""
        rows.append(f"| {flag} | `{option.env}` | `{option.key}` | {default} | {option.help} |")
    return "\n".join(rows) + "\n"


def load_config_file(path: str) -> dict[str, Any]:
    """Read a ``--config`` YAML mapping whose keys are flag names with ``_`` or ``-``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}:{where} not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    known = {option.key for option in SERVE_OPTIONS}
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise ConfigError(f"--config {path}: unknown setting {raw_key!r}")
        out[key] = value
    return out


def resolve(
    flags: Mapping[str, Any], *, environ: Mapping[str, str], config: Mapping[str, Any], config_path: str = ""
) -> Settings:
    """Merge flags (already split into strings), environment and config file into ``Settings``."""
    values: dict[str, Any] = {}
    for option in SERVE_OPTIONS:
        raw: Any = None
        origin = ""
        if flags.get(option.key) not in (None, []):
            raw, origin = flags[option.key], option.flag
        elif option.env in environ:
            raw, origin = environ[option.env], option.env
            if option.repeat:
                raw = [part for part in raw.replace(",", " ").split() if part]
        elif option.key in config:
            raw, origin = config[option.key], f"--config {config_path} key {option.key}"
        if raw is None:
            continue
        try:
            if option.repeat:
                items = raw if isinstance(raw, list) else [raw]
                values[option.key] = tuple(option.parse(str(item)) for item in items)
                if not values[option.key]:
                    raise ValueError("needs at least one value")
            else:
                if isinstance(raw, list | dict):
                    raise ValueError("expects a single value")
                values[option.key] = option.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    # In a pod with no source named, the cluster is the source (the Helm chart also says so explicitly).
    if not ({"manifests", "kubeconfig", "cloudmap"} & values.keys()) and "KUBERNETES_SERVICE_HOST" in environ:
        values["kubeconfig"] = IN_CLUSTER
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if "aws_region" not in values and region:
        values["aws_region"] = region
    if "lease_namespace" not in values and environ.get("POD_NAMESPACE"):
        values["lease_namespace"] = environ["POD_NAMESPACE"]
    settings = _build(values)
    if not settings.kubernetes.renew_deadline < settings.kubernetes.lease_duration:
        raise ConfigError("--renew-deadline must be shorter than --lease-duration")
    return settings


def _build(values: Mapping[str, Any]) -> Settings:
    def pick(group: type[Any], **names: str) -> Any:
        return group(**{attr: values[key] for attr, key in names.items() if key in values})

    return Settings(
        server=pick(
            ServerSettings,
            listen="listen",
            tcp_idle_timeout="tcp_idle_timeout",
            tcp_max_connections="tcp_max_connections",
        ),
        zone=pick(ZoneSettings, zone="zone", ttl="ttl", dns_version="dns_version"),
        sources=pick(SourceSettings, manifests="manifests", manifests_poll="manifests_poll"),
        kubernetes=pick(
            KubernetesSettings,
            kubeconfig="kubeconfig",
            cluster_id="cluster_id",
            clusterset_id="clusterset_id",
            leader_elect="leader_elect",
            lease_name="lease_name",
            lease_namespace="lease_namespace",
            lease_duration="lease_duration",
            renew_deadline="renew_deadline",
            leader_id="leader_id",
        ),
        cloudmap=pick(CloudMapSettings, enabled="cloudmap", poll="cloudmap_poll", region="aws_region"),
        forward=pick(
            ForwardSettings, upstreams="forward", allow="forward_allow", cache_size="forward_cache_size"
        ),
        http=values.get("http"),
        log=pick(LogSettings, format="log_format", level="log_level"),
    )

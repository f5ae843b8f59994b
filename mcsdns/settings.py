"""Every setting, declared once, and the one place that reads flags, ``MCSDNS_*`` and ``--config`` files.

Each setting is one ``setting(...)`` call on a field of a frozen settings group (``ServerSettings``,
``ZoneSettings``, ...): its flag, parser, default (written as a user would write it, and parsed here),
help, and whether it may one day be reloaded live. Its environment variable is ``MCSDNS_<FLAG>`` and its
config-file key the flag with ``_``. ``SETTINGS`` collects the declarations from the groups; the CLI's
flags, the loading below, README's table (``markdown_table``) and the chart test all read them.

Precedence, highest first: command-line flag, environment variable ``MCSDNS_<FLAG>``, key in the
``--config`` YAML file, default. Values are parsed into their final types here (addresses, networks,
seconds, the zone's wire form), so nothing downstream parses again. Every invalid value raises
``ConfigError`` with one line naming the setting and where it came from; the CLI exits 2 on it.
"""

from __future__ import annotations

import ipaddress
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar, get_type_hints, overload

import yaml

from mcsdns.errors import ConfigError
from mcsdns.wire import Name, name_to_wire, text_to_name

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IN_CLUSTER = "in-cluster"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    """``10``, ``2.5``, ``500ms``, ``2s``, ``1m`` or ``1h``: a positive duration in seconds."""
    raw = str(text).strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
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


def parse_seconds_or_off(text: str) -> float:
    """A duration as ``parse_seconds``, or ``0``/``off`` for none."""
    return 0.0 if str(text).strip().lower() in ("0", "off") else parse_seconds(text)


def parse_bytes(text: str) -> int:
    """``1048576``, ``512Ki``, ``64Mi`` or ``1Gi`` (Kubernetes quantity suffixes): a size in bytes."""
    raw = str(text).strip()
    scale = 1
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], factor
            break
    return parse_int(raw, low=0, high=(1 << 40) // scale) * scale


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


def parse_region(text: str) -> str:
    """An AWS region's name, checked only for its form (lower case letters, digits and dashes)."""
    try:
        return parse_name(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an AWS region name like us-west-2") from None


def parse_rate(text: str) -> float:
    """Calls per second: a positive number, at most 10,000 (Cloud Map's largest quota is 3,000/s)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of calls per second") from None
    if not 0 < value <= 10_000:
        raise ValueError(f"{text!r} must be more than 0 and at most 10000 calls per second")
    return value


def parse_account(text: str) -> str:
    """An AWS account id: twelve digits."""
    raw = str(text).strip()
    if len(raw) != 12 or not raw.isdigit():
        raise ValueError(f"{text!r} is not an AWS account id (12 digits)")
    return raw


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR like 10.0.0.0/8") from None


def parse_directory(text: str) -> str:
    path = os.path.expanduser(str(text))
    if not os.path.isdir(path):
        raise ValueError(f"{text!r} is not a directory")
    return path


def parse_workers(text: str) -> int:
    """``auto`` (0: one per usable CPU, worked out at start) or a count of serving processes, 1-64."""
    if str(text).strip().lower() == "auto":
        return 0
    return parse_int(text, low=1, high=64)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    ``resources.limits.cpu``), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def parse_state_dir(text: str) -> str:
    """A directory that may not exist yet: mcsdns creates it at start (a chart's fresh volume is empty)."""
    path = os.path.expanduser(str(text).strip())
    if not path:
        raise ValueError("an empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{text!r} is not a directory")
    return path


def split_list(text: str) -> list[str]:
    """A repeatable setting's values from one string: comma or space separated (environment, defaults)."""
    return [part for part in text.replace(",", " ").split() if part]


# --- the declaration ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as declared: everything the CLI, the loaders and the documentation need to know.

    Its value lands in ``Settings.<group>.<attr>`` (``group`` None: ``Settings.<attr>``); ``SETTINGS``
    fills those two in from the field the declaration sits on, so they are never spelled twice.
    """

    flag: str
    parse: Callable[[str], Any]
    metavar: str
    help: str
    default: Any
    """The parsed default: the field's value when nothing sets it."""
    shown: str
    """The default as documented: the text it was parsed from, or words when it is computed at start."""
    repeat: bool = False
    reloadable: bool = False
    """Whether a running process could take a new value without restarting (documentation only for now)."""
    fallback: tuple[str, ...] = ()
    """Other programs' environment variables read, in order, when nothing of ours sets it."""
    group: str | None = None
    attr: str = ""

    @property
    def key(self) -> str:
        """The config-file key (``-`` is accepted for ``_`` too)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "MCSDNS_" + self.key.upper()

    def load(self, raw: Any) -> Any:
        """A raw value (a string, or from a config file any YAML scalar or list) in its final type."""
        if self.repeat:
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise ValueError("needs at least one value")
            return tuple(self.parse(str(item)) for item in items)
        if isinstance(raw, list | dict):
            raise ValueError("expects a single value")
        return self.parse(str(raw))


_DECLARED = "mcsdns.settings"  # the dataclass field metadata key holding a field's ``Setting``


def _declare(declared: Setting) -> Any:
    return field(default=declared.default, metadata={_DECLARED: declared})


@overload
def setting(
    flag: str,
    parse: Callable[[str], T],
    metavar: str,
    help: str,
    *,
    default: str,
    shown: str | None = None,
    reloadable: bool = False,
    fallback: tuple[str, ...] = (),
) -> T: ...
@overload
def setting(
    flag: str,
    parse: Callable[[str], T],
    metavar: str,
    help: str,
    *,
    default: None = None,
    shown: str = "",
    reloadable: bool = False,
    fallback: tuple[str, ...] = (),
) -> T | None: ...
def setting(
    flag: str,
    parse: Callable[[str], Any],
    metavar: str,
    help: str,
    *,
    default: str | None = None,
    shown: str | None = None,
    reloadable: bool = False,
    fallback: tuple[str, ...] = (),
) -> Any:
    """Declare a single-valued setting on a group's field; ``default`` is parsed like any other value.

    Typed through ``parse``, so mypy checks that the field's annotation is what the parser returns.
    """
    value = None if default is None else parse(default)
    shown = default if shown is None else shown
    return _declare(Setting(flag, parse, metavar, help, value, shown or "", False, reloadable, fallback))


def repeated(
    flag: str,
    parse: Callable[[str], T],
    metavar: str,
    help: str,
    *,
    default: str = "",
    shown: str | None = None,
    reloadable: bool = False,
) -> tuple[T, ...]:
    """Declare a repeatable setting: a tuple, its default comma separated as in the environment."""
    value = tuple(parse(part) for part in split_list(default))
    shown = ", ".join(split_list(default)) if shown is None else shown
    result: tuple[T, ...] = _declare(Setting(flag, parse, metavar, help, value, shown, True, reloadable))
    return result


# --- the settings, by group ---------------------------------------------------------------------------------
# A group is what one part of the program is handed. The order of the fields is the order of the flags in
# --help and of README's table.


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    dns: bool = setting(
        "--dns",
        parse_bool,
        "BOOL",
        "serve DNS; --dns=false runs only the controller, for CoreDNS's multicluster plugin to answer",
        default="true",
    )
    """Whether this process answers DNS at all. Off, it is the MCS controller alone (export and import),
    and CoreDNS >= 1.12.2 with ``kubernetes ... { multicluster clusterset.local }`` answers from the
    ServiceImports and EndpointSlices it writes."""
    listen: tuple[ListenAddress, ...] = repeated(
        "--listen",
        parse_listen,
        "HOST:PORT",
        "UDP and TCP address; repeatable; port 0 picks one",
        default="127.0.0.1:5353",
    )
    """UDP and TCP sockets, one pair per address."""
    workers: int = setting(
        "--workers",
        parse_workers,
        "N",
        "serving processes sharing each address (SO_REUSEPORT); auto: one per CPU this process may use",
        default="auto",
    )
    """Processes answering DNS: this one (which also runs the sync engine and the controller) and N-1
    workers that follow its zone (workers.py). 0 stands for auto, resolved by ``mcsdns serve`` from the CPU
    affinity and the cgroup's CPU quota; a process embedding ``app.running`` serves alone."""
    tcp_idle_timeout: float = setting(
        "--tcp-idle-timeout",
        parse_seconds,
        "DURATION",
        "close TCP connections silent, or slow on one message, this long",
        default="10s",
    )
    """Seconds a TCP connection may stay silent, or spend sending one message, before it is closed (RFC 7766
    §6.2.3); a deadline per whole message, so a byte now and then does not hold the connection."""
    tcp_max_lifetime: float = setting(
        "--tcp-max-lifetime",
        parse_seconds,
        "DURATION",
        "close TCP connections this long after they opened",
        default="2m",
    )
    """Seconds a TCP connection may stay open in all; then it is closed once its replies are written, and
    the client reconnects (RFC 7766 §6.2.3 lets servers close connections whenever they need)."""
    tcp_max_connections: int = setting(
        "--tcp-max-connections",
        lambda v: parse_int(v, low=1, high=1_000_000),
        "N",
        "open TCP connections at most",
        default="1000",
    )
    """Open TCP connections at most; at the cap the connection idle longest is closed to admit a new one
    (as NSD and Knot do), and a new one is turned away only when every open one is mid-message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSettings:
    zone: str = setting("--zone", parse_zone, "ZONE", "the clusterset zone", default="clusterset.local")
    """The clusterset zone (MCS DNS spec: ``clusterset.local``; configurable as CoreDNS allows)."""
    ttl: int = setting(
        "--ttl",
        lambda v: parse_int(v, low=0, high=3600),
        "SECONDS",
        "TTL of every record but dns-version, 0-3600",
        default="5",
        reloadable=True,
    )
    """TTL of every record but ``dns-version``, seconds, 0-3600 (CoreDNS's default and range)."""
    dns_version: str = setting(
        "--dns-version",
        parse_choice(("1.0.0", "1.1.0")),
        "VERSION",
        "dns-version TXT: 1.0.0 (spec) or 1.1.0 (CoreDNS)",
        default="1.0.0",
    )
    """The TXT answer of ``dns-version.<zone>``: the spec's schema version; CoreDNS answers 1.1.0."""
    prefer_local_cluster: bool = setting(
        "--prefer-local-cluster",
        parse_bool,
        "BOOL",
        "headless names answer this cluster's ready endpoints while it has any (--cluster-id)",
        default="false",
    )
    """Lighthouse's local-first: a headless service's name and SRV answer only the endpoints of this
    cluster (``--cluster-id``, or its ClusterProperty) while it has ready ones, else every cluster's.
    ClusterSetIP answers and the per-cluster names are unchanged."""
    ptr: bool = setting(
        "--ptr",
        parse_bool,
        "BOOL",
        "answer PTR for the ClusterSetIPs and headless endpoint addresses of the zone's services",
        default="false",
    )
    """Reverse names (``in-addr.arpa``/``ip6.arpa``) of the zone's own addresses answer PTR with their
    names; any other reverse name falls through (forwarded, or REFUSED), as CoreDNS's ``fallthrough``."""
    name: Name = field(init=False, repr=False, compare=False)
    """The zone as labels, computed once from ``zone`` (not a setting of its own)."""
    wire: bytes = field(init=False, repr=False, compare=False)
    """The zone in lower-cased wire form: what the builder and the responder compare question names to."""

    def __post_init__(self) -> None:
        # Derived here, not at each use: one conversion for every part that needs the zone as bytes.
        object.__setattr__(self, "name", text_to_name(self.zone))
        object.__setattr__(self, "wire", name_to_wire(self.name))


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    manifests: str | None = setting(
        "--manifests", parse_directory, "DIR", "serve the ServiceImport/EndpointSlice YAML in DIR"
    )
    """Directory of ServiceImport/EndpointSlice YAML manifests, reloaded on change."""
    manifests_poll: float = setting(
        "--manifests-poll", parse_seconds, "DURATION", "how often DIR is scanned", default="250ms"
    )
    """Seconds between scans of the manifests directory."""
    state_dir: str | None = setting(
        "--state-dir",
        parse_state_dir,
        "DIR",
        "save the served zone in DIR; at start, serve it stale until every source has listed",
    )
    """Where the last published zone is saved (atomically, at most once a second); at start it is served,
    with TTLs of at most 30 s (RFC 8767), while the sources have not listed yet (statefile.py)."""
    max_stale: float = setting(
        "--max-stale",
        parse_seconds,
        "DURATION",
        "the oldest saved zone that is served at start",
        default="1h",
    )
    """A saved zone older than this is not served at start: a clusterset changes, and NXDOMAIN for a new
    service is better than an address of one long gone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    kubeconfig: str | None = setting(
        "--kubeconfig",
        parse_kubeconfig,
        "PATH",
        f"watch this cluster's ServiceImports/EndpointSlices ({IN_CLUSTER}: the pod's service account)",
        shown="in-cluster in a pod",
    )
    """A kubeconfig path, ``in-cluster`` for the pod's service account, or None: no Kubernetes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudMapSettings:
    enabled: bool = setting(
        "--cloudmap",
        parse_bool,
        "BOOL",
        "use AWS Cloud Map: with --kubeconfig the export/import controller, without it the zone itself",
        default="false",
    )
    """Read AWS Cloud Map (region and endpoint from AWS_REGION / AWS_ENDPOINT_URL_SERVICEDISCOVERY)."""
    poll: float = setting(
        "--cloudmap-poll", parse_seconds, "DURATION", "Cloud Map import period", default="1s"
    )
    """Seconds between Cloud Map polls. The AWS controller polls every 2 s and asks every service; an idle
    mcsdns poll is one call (the change beacons, mcs/changes.py), so polling every second costs one call a
    second and takes a second off every export's way to the other clusters."""
    stale_after: float = setting(
        "--cluster-stale-after",
        parse_seconds_or_off,
        "DURATION",
        "report a cluster stale when its Cloud Map heartbeat has not moved this long (0: never)",
        default="5m",
    )
    """Each exporting leader refreshes a heartbeat in Cloud Map (``mcs.heartbeat``); an importer that saw a
    cluster's heartbeat stand still this long, across its own successful reads, reports the cluster stale."""
    evict_stale: bool = setting(
        "--evict-stale-clusters",
        parse_bool,
        "BOOL",
        "stop importing a stale cluster's endpoints after --stale-cluster-grace",
        default="false",
    )
    """Opt-in: a cluster stale for the grace period more stops counting for imports (its Cloud Map
    instances stay; they are not mcsdns's to delete)."""
    stale_grace: float = setting(
        "--stale-cluster-grace",
        parse_seconds,
        "DURATION",
        "how long a cluster stays stale before --evict-stale-clusters drops it",
        default="10m",
    )
    rate: float = setting(
        "--cloudmap-rate",
        parse_rate,
        "N",
        "Cloud Map calls per second this process may make, all operations together"
        " (docs/cloudmap-scale.md sizes it)",
        default="50",
    )
    """One budget for export, import and the Cloud Map zone source (``clients/budget.py``); halved while
    Cloud Map throttles, and back within about 20 s."""
    max_staleness: float = setting(
        "--cloudmap-max-staleness",
        parse_seconds,
        "DURATION",
        "every import's Cloud Map revision is checked at least this often, and every export reconciled",
        default="5m",
    )
    """The slow sweep's bound (``mcs/changes.py``): changes announced by mcsdns clusters' beacons arrive
    within a poll; others (the AWS controller's clusters) within this."""
    owner_account: str | None = setting(
        "--cloudmap-owner-account",
        parse_account,
        "ACCOUNT",
        "use the Cloud Map namespaces this AWS account owns and shares with this one (AWS RAM)",
        shown="this account's own",
    )
    """Clustersets across accounts: namespaces shared through AWS RAM are used with their ARNs and
    ``OwnerAccount``; with this set, only that account's namespaces are the clusterset's."""
    region: str | None = setting(
        "--aws-region",
        parse_region,
        "REGION",
        "AWS region of Cloud Map",
        shown="$AWS_REGION",
        fallback=("AWS_REGION", "AWS_DEFAULT_REGION"),  # EKS with IRSA sets both
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitySettings:
    """Who this cluster is (KEP-2149). A group of its own because both modes that talk to Cloud Map read it:
    the controller (both ids) and the standalone Cloud Map zone (the clusterset id filters discovery)."""

    cluster_id: str | None = setting(
        "--cluster-id",
        parse_cluster_id,
        "ID",
        "this cluster's id",
        shown="ClusterProperty cluster.clusterset.k8s.io",
    )
    """This cluster's id; else the ClusterProperty ``cluster.clusterset.k8s.io`` (KEP-2149)."""
    clusterset_id: str | None = setting(
        "--clusterset-id",
        parse_cluster_id,
        "ID",
        "the clusterset's id",
        shown="ClusterProperty clusterset.k8s.io",
    )
    """The clusterset's id; else the ClusterProperty ``clusterset.k8s.io``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    """Leader election on a Lease: ``mcs.leader.LeaderElector`` takes this group as it is."""

    elect: bool = setting(
        "--leader-elect", parse_bool, "BOOL", "elect one writer among replicas on a Lease", default="true"
    )
    """Elect one writer among replicas on a Lease (every replica serves DNS either way)."""
    name: str = setting("--lease-name", parse_name, "NAME", "the Lease's name", default="mcsdns-leader")
    namespace: str = setting(
        "--lease-namespace",
        parse_name,
        "NAMESPACE",
        "the Lease's namespace",
        default="default",
        shown="$POD_NAMESPACE, else default",
        fallback=("POD_NAMESPACE",),  # the chart sets it from the downward API
    )
    duration: float = setting(
        "--lease-duration",
        parse_seconds,
        "DURATION",
        "how long a lease holds after its last renewal",
        default="15s",
    )
    """Seconds a lease is valid after its last renewal."""
    renew_deadline: float = setting(
        "--renew-deadline",
        parse_seconds,
        "DURATION",
        "a leader stops writing this long after its last renewal",
        default="10s",
    )
    """Seconds a leader keeps writing without a successful renewal; below ``duration``."""
    leader_id: str | None = setting(
        "--leader-id",
        parse_name,
        "NAME",
        "this replica's name in the Lease",
        shown="host name + random suffix",
    )
    """This replica's name in the lease; default: host name and a random suffix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardSettings:
    upstreams: tuple[ListenAddress, ...] = repeated(
        "--forward",
        parse_listen,
        "HOST:PORT",
        "resolver for names outside the zone; repeatable, tried in order",
        shown="none: REFUSED",
        reloadable=True,
    )
    """Resolvers for names outside the zone (sidecar mode); none: such names are REFUSED."""
    allow: tuple[Network, ...] = repeated(
        "--forward-allow",
        parse_network,
        "CIDR",
        "clients that may use forwarding; repeatable",
        default="127.0.0.0/8, ::1/128",
        reloadable=True,
    )
    """Client networks that may use forwarding; anyone else gets REFUSED (never an open resolver)."""
    cache_size: int = setting(
        "--forward-cache-size",
        lambda v: parse_int(v, low=0, high=10_000_000),
        "N",
        "answers kept in the forwarding cache; 0: no cache",
        default="10000",
    )
    """Answers kept at most in the forwarding cache (positive and negative ones together)."""
    cache_bytes: int = setting(
        "--forward-cache-bytes",
        parse_bytes,
        "SIZE",
        "memory the forwarding cache may use (e.g. 64Mi)",
        default="32Mi",
    )
    """Bytes the cached answers may take, counting each entry's records and about 200 bytes of overhead;
    whichever of this and ``--forward-cache-size`` is reached first evicts."""
    serve_stale: float = setting(
        "--forward-serve-stale",
        parse_seconds_or_off,
        "DURATION",
        "how long past expiry an answer may be served while every upstream fails (RFC 8767); 0: never",
        default="1h",
    )
    """How long past its TTL a forwarded answer is kept to be served, with TTL 30 s, while every upstream
    fails (RFC 8767 serve-stale); 0 turns it off."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    format: str = setting(
        "--log-format", parse_choice(("text", "json")), "FORMAT", "text or json", default="text"
    )
    level: str = setting(
        "--log-level",
        parse_choice(("debug", "info", "warning", "error")),
        "LEVEL",
        "debug, info, warning or error",
        default="info",
        reloadable=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    zone: ZoneSettings = field(default_factory=ZoneSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    cloudmap: CloudMapSettings = field(default_factory=CloudMapSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    # setting() returns a dataclasses.field holding an immutable default, which RUF009 cannot see.
    http: ListenAddress | None = setting(  # noqa: RUF009
        "--http", parse_listen, "HOST:PORT", "serve /healthz, /readyz and /metrics here", shown="off"
    )
    """Where /healthz, /readyz and /metrics are served; None: nowhere."""
    metrics_names: str = setting(
        "--metrics-names",
        parse_choice(("mcsdns", "coredns")),
        "NAMES",
        "mcsdns, or coredns: also CoreDNS's names for requests, responses, cache and forwarders",
        default="mcsdns",
    )
    """``coredns``: /metrics also serves requests, responses, the forwarding cache and forwarders under the
    names and labels of CoreDNS's ``metrics``, ``cache`` and ``forward`` plugins, so their dashboards and
    the kube-prometheus CoreDNS alerts read mcsdns unchanged."""
    lameduck: float = setting(
        "--lameduck",
        parse_seconds_or_off,
        "DURATION",
        "after SIGTERM, answer this long with /readyz failing and the Lease released; 0: exit at once",
        default="5s",
    )
    """CoreDNS's ``health { lameduck }``: time for endpoints controllers and kube-proxy to stop sending this
    replica queries before it stops answering them."""
    log: LogSettings = field(default_factory=LogSettings)


def _groups() -> dict[str, type[Any]]:
    """The group classes by their attribute in ``Settings``."""
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings) if _DECLARED not in f.metadata}


def _collect() -> tuple[Setting, ...]:
    found: list[Setting] = []
    groups = _groups()
    for top in fields(Settings):
        if _DECLARED in top.metadata:
            found.append(replace(top.metadata[_DECLARED], group=None, attr=top.name))
            continue
        for inner in fields(groups[top.name]):
            if _DECLARED in inner.metadata:
                found.append(replace(inner.metadata[_DECLARED], group=top.name, attr=inner.name))
    return tuple(found)


SETTINGS: tuple[Setting, ...] = _collect()
"""Every setting of ``mcsdns serve``, in the order of --help and README's table."""
_GROUPS = _groups()


def markdown_table() -> str:
    """The configuration table of the README: one row per setting, generated so it never drifts."""
    rows = ["| flag | environment | config key | default | meaning |", "|---|---|---|---|---|"]
    for declared in SETTINGS:
        flag = f"`{declared.flag} {declared.metavar}`" + (" …" if declared.repeat else "")
        default = f"`{declared.shown}`" if declared.shown else ""
        rows.append(f"| {flag} | `{declared.env}` | `{declared.key}` | {default} | {declared.help} |")
    return "\n".join(rows) + "\n"


def read_yaml(path: str) -> Any:
    """The one YAML document in ``path``; ``ValueError`` with one line saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a text file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise ValueError(f"not valid YAML: {problem}{where}") from None
    except Exception as exc:
        # PyYAML's constructors raise more than YAMLError for a value in a type's form that is no such value
        # (the date 2001-13-01, `!!bool ""`, `!!timestamp x`; fuzz/manifests.py found them).
        raise ValueError(f"a value cannot be read: {type(exc).__name__}: {exc}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """Read a ``--config`` YAML mapping whose keys are flag names with ``_`` or ``-``."""
    try:
        data = read_yaml(path)
    except ValueError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    known = {declared.key for declared in SETTINGS}
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
    for declared in SETTINGS:
        raw: Any = None
        origin = ""
        if flags.get(declared.key) not in (None, []):
            raw, origin = flags[declared.key], declared.flag
        elif declared.env in environ:
            raw, origin = environ[declared.env], declared.env
            if declared.repeat:
                raw = split_list(raw)
        elif declared.key in config:
            raw, origin = config[declared.key], f"--config {config_path} key {declared.key}"
        if raw is not None:
            try:
                values[declared.key] = declared.load(raw)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
            continue
        # Variables of other programs (AWS_REGION, ...) are taken as they are: their owners define them.
        fallback = next((environ[name] for name in declared.fallback if environ.get(name)), None)
        if fallback is not None:
            values[declared.key] = fallback
    # In a pod with no source named, the cluster is the source (the Helm chart also says so explicitly).
    if not ({"manifests", "kubeconfig", "cloudmap"} & values.keys()) and "KUBERNETES_SERVICE_HOST" in environ:
        values["kubeconfig"] = IN_CLUSTER
    settings = _build(values)
    if not settings.lease.renew_deadline < settings.lease.duration:
        raise ConfigError("--renew-deadline must be shorter than --lease-duration")
    return settings


def replaced(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """``settings`` with the settings named by key in ``values`` changed (a reload takes what it can)."""
    top: dict[str, Any] = {}
    grouped: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for declared in SETTINGS:
        if declared.key in values:
            target = top if declared.group is None else grouped[declared.group]
            target[declared.attr] = values[declared.key]
    return replace(
        settings,
        **top,
        **{name: replace(getattr(settings, name), **given) for name, given in grouped.items()},
    )


def _build(values: Mapping[str, Any]) -> Settings:
    """``Settings`` from parsed values by key; what is not in ``values`` keeps its declared default."""
    top: dict[str, Any] = {}
    grouped: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for declared in SETTINGS:
        if declared.key in values:
            target = top if declared.group is None else grouped[declared.group]
            target[declared.attr] = values[declared.key]
    return Settings(**top, **{name: _GROUPS[name](**given) for name, given in grouped.items()})

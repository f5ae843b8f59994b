"""Generate a deterministic multi-cluster service set for the DNS benchmark.

One seeded generator feeds three outputs so every server answers from the same data:

* ``manifests/``: ServiceImport + EndpointSlice YAML, what ``mcsdns serve --manifests`` reads;
* ``<zone>.zone``: an RFC 1035 zone file with the records DESIGN.md §3 says mcsdns serves, for NSD and
  for the dnslib baseline;
* ``queries.txt``: a dnsperf query file mixing positive, NODATA and NXDOMAIN lookups.

All addresses are fake records; nothing here listens anywhere.

    .venv/bin/python bench/gen.py --services 1000 --out bench/out/data
"""

from __future__ import annotations

import argparse
import random
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ZONE = "clusterset.local"
DEFAULT_TTL = 5
DNS_VERSION_TTL = 28800  # DESIGN.md §3: dns-version TXT has its own TTL
SOA_SERIAL = 1  # servers may differ here; the benchmark never compares serials
CLUSTERS = ("cls1", "cls2")
HEADLESS_SHARE = 0.2
NAMESPACES = (
    "demo", "payments", "checkout", "catalog", "search", "identity", "billing", "orders", "shipping",
    "inventory", "analytics", "messaging", "media", "ads", "ml", "platform", "observability", "gateway",
    "storage", "auth",
)
SERVICE_WORDS = (
    "api", "web", "cart", "db", "cache", "queue", "worker", "frontend", "backend", "grpc", "users",
    "session", "events", "ledger", "pricing", "recommend", "notify", "report", "index", "upload",
)
# (name, port, protocol); only named ports exist here because unnamed ports never get SRV records.
PORT_CHOICES = (
    ("http", 80, "TCP"), ("https", 443, "TCP"), ("grpc", 9090, "TCP"), ("metrics", 9100, "TCP"),
    ("admin", 8081, "TCP"), ("dns", 53, "UDP"), ("syslog", 514, "UDP"), ("redis", 6379, "TCP"),
)


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Endpoint:
    cluster: str
    ip: str
    hostname: str | None
    ready: bool

    @property
    def label(self) -> str:
        """The DNS label of the endpoint: its hostname, else the IP with '.' -> '-' (DESIGN.md §3)."""
        return self.hostname or self.ip.replace(".", "-")


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    headless: bool
    vip: str | None
    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]

    def fqdn(self, zone: str) -> str:
        return f"{self.name}.{self.namespace}.svc.{zone}."

    @property
    def ready(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)


@dataclass(frozen=True)
class Record:
    owner: str  # absolute, lower-case, trailing dot
    ttl: int
    rtype: str
    rdata: str

    def line(self) -> str:
        return f"{self.owner} {self.ttl} IN {self.rtype} {self.rdata}"


@dataclass
class _Addresses:
    """Hands out unique fake addresses: VIPs from 172.20/16, endpoint IPs from 10.<cluster>/16."""

    vips: int = 0
    per_cluster: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def vip(self) -> str:
        self.vips += 1
        return _ip(172, 20, self.vips)

    def endpoint(self, cluster: str) -> str:
        self.per_cluster[cluster] += 1
        return _ip(10, 10 * (CLUSTERS.index(cluster) + 1), self.per_cluster[cluster])


def _ip(a: int, b: int, n: int) -> str:
    # Skip .0 and .255 so no generated address looks like a network or broadcast address.
    return f"{a}.{b}.{n // 254}.{n % 254 + 1}"


# ---------------------------------------------------------------- generation


def generate(count: int, seed: int = 1) -> list[Service]:
    """Return ``count`` services: ~80 % ClusterSetIP with 1-2 ports, ~20 % headless with 3-6 endpoints."""
    rng = random.Random(seed)
    addrs = _Addresses()
    services = []
    for i in range(count):
        namespace = NAMESPACES[i % len(NAMESPACES)]
        name = f"{rng.choice(SERVICE_WORDS)}-{i:05d}"
        if rng.random() < HEADLESS_SHARE:
            services.append(_headless(rng, addrs, namespace, name))
        else:
            services.append(_clusterset_ip(rng, addrs, namespace, name))
    return services


def _ports(rng: random.Random, count: int) -> tuple[Port, ...]:
    return tuple(Port(*p) for p in rng.sample(PORT_CHOICES, count))


def _clusterset_ip(rng: random.Random, addrs: _Addresses, namespace: str, name: str) -> Service:
    # ClusterSetIP imports still carry EndpointSlices (the backends behind the VIP); DNS must not publish
    # per-endpoint names for them, so they also feed the NXDOMAIN queries.
    endpoints = tuple(
        Endpoint(cluster, addrs.endpoint(cluster), None, True)
        for cluster in CLUSTERS
        for _ in range(rng.randint(1, 2))
    )
    ports = _ports(rng, rng.randint(1, 2))
    return Service(namespace, name, False, addrs.vip(), ports, endpoints)


def _headless(rng: random.Random, addrs: _Addresses, namespace: str, name: str) -> Service:
    stateful = rng.random() < 0.5  # StatefulSet pods have hostnames, Deployment pods fall back to the IP
    endpoints: list[Endpoint] = []
    for k in range(rng.randint(3, 6)):
        cluster = CLUSTERS[k % len(CLUSTERS)]
        hostname = f"{name.split('-')[0]}-{k // len(CLUSTERS)}" if stateful else None
        endpoints.append(Endpoint(cluster, addrs.endpoint(cluster), hostname, True))
    if rng.random() < 0.15:
        # A not-ready pod: present in the manifests, absent from DNS.
        endpoints.append(Endpoint(CLUSTERS[0], addrs.endpoint(CLUSTERS[0]), None, False))
    return Service(namespace, name, True, None, _ports(rng, 1), tuple(endpoints))


# ---------------------------------------------------------------- records (DESIGN.md §3)


def records(services: Sequence[Service], zone: str = DEFAULT_ZONE, ttl: int = DEFAULT_TTL) -> list[Record]:
    """The zone's records, apex first, in the form DESIGN.md §3 specifies."""
    out = [
        Record(f"{zone}.", ttl, "SOA",
               f"ns.dns.{zone}. hostmaster.{zone}. {SOA_SERIAL} 7200 1800 86400 {ttl}"),
        Record(f"{zone}.", ttl, "NS", f"ns.dns.{zone}."),
        Record(f"dns-version.{zone}.", DNS_VERSION_TTL, "TXT", '"1.0.0"'),
    ]
    for svc in services:
        out.extend(_headless_records(svc, zone, ttl) if svc.headless else _vip_records(svc, zone, ttl))
    return out


def _srv(owner: str, ttl: int, targets: Sequence[tuple[int, str]]) -> Iterator[Record]:
    # Weight ⌊100/N⌋ over the N records of the RRset (DESIGN.md §3, CoreDNS's rule); identical RDATA once.
    unique = list(dict.fromkeys(targets))
    for port, target in unique:
        yield Record(owner, ttl, "SRV", f"0 {100 // len(unique)} {port} {target}")


def _vip_records(svc: Service, zone: str, ttl: int) -> Iterator[Record]:
    fqdn = svc.fqdn(zone)
    assert svc.vip is not None
    yield Record(fqdn, ttl, "A", svc.vip)
    for p in svc.ports:
        yield from _srv(f"_{p.name}._{p.protocol.lower()}.{fqdn}", ttl, [(p.port, fqdn)])
    yield from _srv(fqdn, ttl, [(p.port, fqdn) for p in svc.ports])


def _headless_records(svc: Service, zone: str, ttl: int) -> Iterator[Record]:
    fqdn = svc.fqdn(zone)
    ready = svc.ready
    for e in ready:
        yield Record(fqdn, ttl, "A", e.ip)
    for e in ready:
        yield Record(f"{e.label}.{e.cluster}.{fqdn}", ttl, "A", e.ip)
    for p in svc.ports:
        yield from _srv(f"_{p.name}._{p.protocol.lower()}.{fqdn}", ttl,
                        [(p.port, f"{e.label}.{e.cluster}.{fqdn}") for e in ready])
    yield from _srv(fqdn, ttl, [(p.port, f"{e.label}.{e.cluster}.{fqdn}") for p in svc.ports for e in ready])


# ---------------------------------------------------------------- manifests


def _service_import(svc: Service) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "Headless" if svc.headless else "ClusterSetIP",
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in svc.ports],
    }
    if svc.vip:
        spec["ips"] = [svc.vip]
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": spec,
    }


def _endpoint_slice(svc: Service, cluster: str, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    eps: list[dict[str, Any]] = []
    for e in endpoints:
        item: dict[str, Any] = {"addresses": [e.ip], "conditions": {"ready": e.ready}}
        if e.hostname:
            item["hostname"] = e.hostname
        eps.append(item)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{svc.name}-{cluster}",
            "namespace": svc.namespace,
            "labels": {
                "multicluster.kubernetes.io/service-name": svc.name,
                "multicluster.kubernetes.io/source-cluster": cluster,
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in svc.ports],
        "endpoints": eps,
    }


def manifest_objects(svc: Service) -> Iterator[dict[str, Any]]:
    yield _service_import(svc)
    for cluster in CLUSTERS:
        mine = [e for e in svc.endpoints if e.cluster == cluster]
        if mine:
            yield _endpoint_slice(svc, cluster, mine)


def write_manifests(services: Iterable[Service], directory: Path) -> None:
    """One multi-document file per namespace, the way a GitOps repository would hold them."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    by_ns: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for svc in services:
        by_ns[svc.namespace].extend(manifest_objects(svc))
    for ns, docs in sorted(by_ns.items()):
        with (directory / f"{ns}.yaml").open("w") as fh:
            yaml.safe_dump_all(docs, fh, sort_keys=False, width=200)


def write_zone(recs: Iterable[Record], path: Path, zone: str = DEFAULT_ZONE, ttl: int = DEFAULT_TTL) -> None:
    lines = [f"$ORIGIN {zone}.", f"$TTL {ttl}", *(r.line() for r in recs)]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- queries

# Share of each query kind in the dnsperf file: mostly what clients really ask (service A records), then
# SRV and per-pod names, plus the negative answers that typos and search-path expansion produce.
QUERY_MIX: dict[str, float] = {
    "vip_a": 0.35,
    "headless_a": 0.12,
    "srv_port": 0.13,
    "srv_bare": 0.04,
    "endpoint_a": 0.10,
    "aaaa_nodata": 0.12,
    "nxdomain": 0.13,
    "apex": 0.01,
}


def _query(rng: random.Random, kind: str, vip: Sequence[Service], hl: Sequence[Service], zone: str) -> str:
    svc = rng.choice(vip if kind == "vip_a" else hl if kind in ("headless_a", "endpoint_a") else [*vip, *hl])
    fqdn = svc.fqdn(zone)
    if kind in ("vip_a", "headless_a"):
        return f"{fqdn} A"
    if kind == "srv_port":
        p = rng.choice(svc.ports)
        return f"_{p.name}._{p.protocol.lower()}.{fqdn} SRV"
    if kind == "srv_bare":
        return f"{fqdn} SRV"
    if kind == "endpoint_a":
        e = rng.choice(svc.ready)
        return f"{e.label}.{e.cluster}.{fqdn} A"
    if kind == "aaaa_nodata":
        return f"{fqdn} AAAA"
    if kind == "apex":
        return rng.choice([f"{zone}. SOA", f"{zone}. NS", f"dns-version.{zone}. TXT"])
    return _nxdomain(rng, rng.choice(vip), zone)


def _nxdomain(rng: random.Random, svc: Service, zone: str) -> str:
    e = svc.endpoints[0]
    return rng.choice([
        f"missing-{rng.randint(0, 99999):05d}.{svc.namespace}.svc.{zone}. A",  # unknown service
        f"{svc.name}.no-such-ns.svc.{zone}. A",  # unknown namespace
        f"{e.label}.{e.cluster}.{svc.fqdn(zone)} A",  # per-endpoint name of a ClusterSetIP service
        f"{svc.name}.{svc.namespace}.pod.{zone}. A",  # pod.Z is not served
    ])


def queries(services: Sequence[Service], count: int, seed: int = 1, zone: str = DEFAULT_ZONE) -> list[str]:
    rng = random.Random(seed + 1)  # independent of the service stream so --queries never changes data
    vip = [s for s in services if not s.headless]
    hl = [s for s in services if s.headless and s.ready]
    kinds = rng.choices(list(QUERY_MIX), weights=list(QUERY_MIX.values()), k=count)
    return [_query(rng, kind, vip, hl, zone) for kind in kinds]


# ---------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Dataset:
    root: Path
    zone: str
    services: list[Service]

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def zone_file(self) -> Path:
        return self.root / f"{self.zone}.zone"

    @property
    def query_file(self) -> Path:
        return self.root / "queries.txt"


def build(root: Path, count: int, seed: int = 1, n_queries: int = 100_000,
          zone: str = DEFAULT_ZONE, ttl: int = DEFAULT_TTL) -> Dataset:
    """Write all three outputs under ``root`` and return where they are."""
    services = generate(count, seed)
    data = Dataset(root, zone, services)
    root.mkdir(parents=True, exist_ok=True)
    write_manifests(services, data.manifests)
    write_zone(records(services, zone, ttl), data.zone_file, zone, ttl)
    data.query_file.write_text("\n".join(queries(services, n_queries, seed, zone)) + "\n")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queries", type=int, default=100_000, help="lines in the dnsperf query file")
    ap.add_argument("--zone", default=DEFAULT_ZONE)
    ap.add_argument("--ttl", type=int, default=DEFAULT_TTL)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "data")
    args = ap.parse_args(argv)
    data = build(args.out, args.services, args.seed, args.queries, args.zone, args.ttl)
    n_headless = sum(s.headless for s in data.services)
    print(f"{len(data.services)} services ({n_headless} headless) -> {data.manifests}, {data.zone_file}, "
          f"{data.query_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

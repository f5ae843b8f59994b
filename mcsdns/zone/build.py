"""Imported services → zone snapshot, incrementally: only changed services are rendered again.

``render_service`` turns one service into its records (KEP-1645 specification.md §2.3-§2.4) and renders
every (name, type) answer of it as bytes; ``ZoneBuilder`` keeps those fragments and produces a new
``ZoneSnapshot`` per batch of changes by swapping the changed fragments in persistent maps (hash array
mapped tries, ``immutables.Map``): the next snapshot shares every untouched part of the previous one, so a
publish costs what changed, not what the zone holds. Copying a plain dict of 120,000 answers and a set of
70,000 names took ~12 ms per publish at 10,000 services, holding the GIL the packet loop needs; a trie
lookup costs ~0.1 µs more than a dict's, about 1 % of a query's CPU. Pure: no I/O, no clock (the caller
passes the SOA serial).
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from immutables import Map, MapMutation

from mcsdns.settings import ZoneSettings
from mcsdns.wire import (
    U16,
    Name,
    QType,
    Rcode,
    address_rdata,
    name_to_wire,
    txt_rdata,
)
from mcsdns.zone.model import ClusterId, ImportedService, ServiceImport, ServiceKey, ServiceType
from mcsdns.zone.names import cluster_labels, endpoint_hostname, namespace_name, service_name, srv_name
from mcsdns.zone.render import Negatives, Ns, RRset, Soa, Srv, render_answer
from mcsdns.zone.snapshot import Answer, ZoneSnapshot

DNS_VERSION_TTL = 28800  # spec §2.2 example: dns-version.clusterset.local. 28800 IN TXT "1.0.0"
SOA_TIMERS = (7200, 1800, 86400)  # refresh, retry, expire: CoreDNS's values, unused without transfers
# RFC 8482 §4.1: one RRset for ANY, the first of these a name has (PTR: reverse names, ``--ptr``).
ANY_PREFERENCE = (QType.A, QType.AAAA, QType.SRV, QType.TXT, QType.SOA, QType.NS, QType.PTR)
CLASS_IN = U16.pack(1)

Node = dict[int, RRset]


def question_key(name: Name, qtype: int) -> bytes:
    """The lookup key of a question: lower-cased qname wire, QTYPE, QCLASS IN."""
    return name_to_wire(name) + U16.pack(qtype) + CLASS_IN


@dataclass(frozen=True, slots=True)
class Fragment:
    """The rendered answers and existing names of one service, and what they were rendered from."""

    source: ImportedService | ServiceImport
    namespace: str
    answers: Mapping[bytes, Answer]
    names: frozenset[bytes]
    ptr: Mapping[str, frozenset[Name]] = field(default_factory=dict)  # address → its names (``--ptr``)


def rendered_from(service: ImportedService) -> ImportedService | ServiceImport:
    """What a service's records depend on: a ClusterSetIP service's come from its import alone (spec §2.3),
    so an endpoint change there renders nothing."""
    return service.spec if service.spec.type is ServiceType.CLUSTERSET_IP else service


def _weight(count: int) -> int:
    # CoreDNS gives every SRV record the weight ⌊100/N⌋, N the records in the set; we count distinct
    # records, so an RRset (a set, RFC 2181 §5) of N records always adds up to about 100.
    return 100 // count if count else 0


def _srv_rrset(name: Name, ttl: int, targets: Iterable[tuple[int, Name]]) -> RRset:
    distinct = list(dict.fromkeys(targets))
    weight = _weight(len(distinct))
    return RRset(name, QType.SRV, ttl, tuple(Srv(0, weight, port, target) for port, target in distinct))


def _address_node(name: Name, ttl: int, addresses: Iterable[str]) -> Node:
    by_type: dict[int, list[bytes]] = {QType.A: [], QType.AAAA: []}
    for address in dict.fromkeys(addresses):
        rtype, rdata = address_rdata(address)
        by_type[rtype].append(rdata)
    return {rtype: RRset(name, rtype, ttl, tuple(rdatas)) for rtype, rdatas in by_type.items() if rdatas}


def service_nodes(
    apex: Name, service: ImportedService, ttl: int, local: ClusterId | None = None
) -> dict[Name, Node]:
    """Every name of one service and its RRsets; empty when the service has no records at all.

    ``local`` (``--prefer-local-cluster``): a headless service's own name and SRV answer only that
    cluster's ready endpoints while it has any, else every cluster's (Lighthouse's local-first); the
    per-cluster names are unchanged, and so are ClusterSetIP answers."""
    spec = service.spec
    base = service_name(apex, spec.key)
    nodes: dict[Name, Node] = {}
    srv_targets: dict[Name, list[tuple[int, Name]]] = collections.defaultdict(list)

    if spec.type is ServiceType.CLUSTERSET_IP:
        # §2.3.1: the clusterset IPs, whether or not any endpoint is ready; §2.3.2: SRV per named port.
        nodes[base] = _address_node(base, ttl, spec.ips)
        for port in spec.ports:
            name = srv_name(base, port)
            if name is not None:
                srv_targets[name].append((port.port, base))
    else:
        # §2.4.1: every ready endpoint of every cluster, and <hostname>.<clusterid>.<svc> per endpoint.
        addresses: list[str] = []
        by_host: dict[Name, list[str]] = collections.defaultdict(list)
        local_ready = local is not None and any(
            endpoint.ready and endpoint.addresses
            for group in service.groups
            if group.cluster == local
            for endpoint in group.endpoints
        )
        for group in service.groups:
            cluster = cluster_labels(group.cluster)
            ports = group.ports or spec.ports
            # Whether this cluster's endpoints are in the service-wide answers (its own names always are).
            shared = not local_ready or group.cluster == local
            for endpoint in group.endpoints:
                if not endpoint.ready or not endpoint.addresses:
                    continue
                if shared:
                    addresses.extend(endpoint.addresses)
                if cluster is None:
                    continue  # no valid <clusterid> label: the address still counts at the service name
                host = (endpoint_hostname(endpoint), *cluster, *base)
                by_host[host].extend(endpoint.addresses)
                for port in ports if shared else ():  # §2.4.2: one SRV per ready endpoint and named port
                    name = srv_name(base, port)
                    if name is not None:
                        srv_targets[name].append((port.port, host))
        if not addresses:
            return {}  # spec §2.4.1: no ready endpoints "should be NXDOMAIN": the service has no names
        nodes[base] = _address_node(base, ttl, addresses)
        for host, host_addresses in by_host.items():
            nodes[host] = _address_node(host, ttl, host_addresses)

    everything: list[tuple[int, Name]] = []
    for name, targets in srv_targets.items():
        nodes.setdefault(name, {})[QType.SRV] = _srv_rrset(name, ttl, targets)
        everything.extend(targets)
    if everything:  # SRV at the bare service name: the union (what the conformance suite queries)
        nodes[base][QType.SRV] = _srv_rrset(base, ttl, everything)
    return nodes


def _empty_non_terminals(names: Iterable[Name], stop: Name) -> set[Name]:
    """The ancestors of ``names`` below ``stop``: they exist without records (RFC 8020)."""
    out: set[Name] = set()
    depth = len(stop)
    for name in names:
        for cut in range(1, len(name) - depth):
            out.add(name[cut:])
    return out


def render_nodes(nodes: Mapping[Name, Node]) -> dict[bytes, Answer]:
    """One answer per (name, type), SRV answers with their targets' addresses in Additional (§2.3.2)."""
    answers: dict[bytes, Answer] = {}
    for name, node in nodes.items():
        for rtype, rrset in node.items():
            additional: list[RRset] = []
            if rtype == QType.SRV:
                for target in dict.fromkeys(rdata.target for rdata in rrset.rdatas if isinstance(rdata, Srv)):
                    target_node = nodes.get(target, {})
                    additional.extend(target_node[t] for t in (QType.A, QType.AAAA) if t in target_node)
            answers[question_key(name, rtype)] = render_answer(
                name, qtype=rtype, answer=(rrset,), additional=additional
            )
        preferred = next((rtype for rtype in ANY_PREFERENCE if rtype in node), None)
        if preferred is not None:
            answers[question_key(name, QType.ANY)] = _any_answer(answers[question_key(name, preferred)])
    return answers


def _any_answer(preferred: Answer) -> Answer:
    """RFC 8482 §4.1: ANY gets one RRset; its answer section is the preferred type's, without Additional
    (compression pointers only point backwards, so cutting the message after a section keeps it valid)."""
    body = preferred.body[: preferred.additional_at]
    rcode = preferred.flags & 0xF
    return Answer(
        preferred.flags, preferred.ancount, preferred.nscount, 0, body, len(body), QType.ANY << 8 | rcode
    )


def reverse_name(address: str) -> Name:
    """RFC 1035 §3.5 / RFC 3596 §2.5: ``10.0.0.1`` → ``1.0.0.10.in-addr.arpa.``, nibbles for IPv6."""
    return tuple(label.encode() for label in ipaddress.ip_address(address).reverse_pointer.split("."))


def ptr_targets(nodes: Mapping[Name, Node], base: Name) -> dict[str, frozenset[Name]]:
    """``--ptr``: each address of the service's names → the names that hold it. An endpoint with a name of
    its own (``<host>.<cluster>.<svc>``, spec §2.4.1) is named by that; any other address (a ClusterSetIP,
    an endpoint without a cluster label) by the service."""

    def addresses(node: Node) -> Iterable[str]:
        for rtype in (QType.A, QType.AAAA):
            for rdata in node[rtype].rdatas if rtype in node else ():
                assert isinstance(rdata, bytes)
                yield str(ipaddress.ip_address(rdata))

    out: dict[str, set[Name]] = collections.defaultdict(set)
    for name, node in nodes.items():
        if name != base:
            for address in addresses(node):
                out[address].add(name)
    for address in addresses(nodes.get(base, {})):
        if address not in out:
            out[address].add(base)
    return {address: frozenset(names) for address, names in out.items()}


def render_service(
    apex: Name, service: ImportedService, ttl: int, local: ClusterId | None = None, *, ptr: bool = False
) -> Fragment | None:
    nodes = service_nodes(apex, service, ttl, local)
    if not nodes:
        return None
    base = service_name(apex, service.key)
    names = set(nodes) | _empty_non_terminals(nodes, base)
    return Fragment(
        source=rendered_from(service),
        namespace=service.key.namespace.lower(),
        answers=render_nodes(nodes),
        names=frozenset(name_to_wire(name) for name in names),
        ptr=ptr_targets(nodes, base) if ptr else {},
    )


class ZoneBuilder:
    """Keeps the rendered fragment of every service and makes snapshots from batches of changes."""

    def __init__(self, settings: ZoneSettings, *, local_cluster: str | None = None) -> None:
        self._apex = settings.name
        self._apex_wire = settings.wire
        self._ttl = settings.ttl
        self._local = ClusterId(local_cluster) if local_cluster else None
        self._ptr = settings.ptr
        # ``--ptr``: who names each address; an address two services share answers both names.
        self._ptr_owners: dict[str, dict[ServiceKey, frozenset[Name]]] = collections.defaultdict(dict)
        self._stale: set[ServiceKey] = set()  # rendered with settings since changed: render again
        self._dns_version = settings.dns_version
        self._fragments: dict[ServiceKey, Fragment] = {}
        self._namespaces: collections.Counter[str] = collections.Counter()
        self._answers: Map[bytes, Answer] = Map()
        self._names: Map[bytes, None] = Map()  # a persistent set: the keys
        self._serial: int | None = None  # of the last snapshot built
        svc = (b"svc", *self._apex)
        ns_host = (b"ns", b"dns", *self._apex)
        self._version_name = (b"dns-version", *self._apex)
        # The apex, svc.Z, dns-version.Z and the NS target (with its parent) exist even with no services.
        self._static_names = frozenset(
            (self._apex_wire, *(name_to_wire(n) for n in (svc, ns_host, ns_host[1:], self._version_name)))
        )

    @property
    def apex(self) -> Name:
        return self._apex

    def retune(self, *, ttl: int | None = None, local_cluster: str | None = None) -> set[ServiceKey]:
        """Change the TTL or the cluster preferred (``--prefer-local-cluster``) of what is rendered next;
        returns the services to hand to ``build`` again, each of which it then renders anew."""
        if ttl is not None:
            self._ttl = ttl
        if local_cluster is not None:
            self._local = ClusterId(local_cluster)
        self._stale = set(self._fragments)
        return set(self._stale)

    def build(self, changes: Mapping[ServiceKey, ImportedService | None], *, serial: int) -> ZoneSnapshot:
        """Apply ``changes`` (None = the service is gone) and return the next snapshot."""
        # Mutations of a persistent map copy the trie nodes they touch: published snapshots never change.
        answers, names = self._answers.mutate(), self._names.mutate()
        touched_answers: set[bytes] = set()
        touched_names: set[bytes] = set()
        touched_addresses: set[str] = set()
        for key, service in changes.items():
            old = self._fragments.get(key)
            stale = key in self._stale
            self._stale.discard(key)
            if old is not None and service is not None and old.source == rendered_from(service) and not stale:
                continue  # e.g. an EndpointSlice of a ClusterSetIP service: the same records
            if old is not None:
                del self._fragments[key]
                touched_answers.update(old.answers)
                touched_names.update(old.names)
                for question in old.answers:
                    answers.pop(question, None)
                for name in old.names:
                    names.pop(name, None)
                touched_names.add(self._count_namespace(old.namespace, -1, names))
                for address in old.ptr:
                    self._ptr_owners[address].pop(key, None)
                touched_addresses.update(old.ptr)
            fragment = (
                render_service(self._apex, service, self._ttl, self._local, ptr=self._ptr)
                if service is not None
                else None
            )
            if fragment is not None:
                touched_answers.update(fragment.answers)
                touched_names.update(fragment.names)
                answers.update(fragment.answers)
                names.update(dict.fromkeys(fragment.names))
                touched_names.add(self._count_namespace(fragment.namespace, +1, names))
                self._fragments[key] = fragment
                for address, owners in fragment.ptr.items():
                    self._ptr_owners[address][key] = owners
                touched_addresses.update(fragment.ptr)
        for address in touched_addresses:
            touched_answers.update(self._render_ptr(address, answers))
        apex = self._apex
        soa = Soa((b"ns", b"dns", *apex), (b"hostmaster", *apex), serial, *SOA_TIMERS, self._ttl)
        static = self._static_answers(RRset(apex, QType.SOA, self._ttl, (soa,)))
        touched_answers.update(static)
        touched_names.update(self._static_names)
        answers.update(static)
        names.update(dict.fromkeys(self._static_names))
        self._answers, self._names = answers.finish(), names.finish()
        base, self._serial = self._serial, serial
        return ZoneSnapshot(
            serial=serial,
            zone_wire=self._apex_wire,
            answers=self._answers,
            names=self._names,
            nodata=Negatives(rcode=Rcode.NOERROR, apex=apex, soa=soa, ttl=self._ttl),
            nxdomain=Negatives(rcode=Rcode.NXDOMAIN, apex=apex, soa=soa, ttl=self._ttl),
            services=len(self._fragments),
            ttl=self._ttl,
            soa=(soa.mname, soa.rname, soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
            touched=None if base is None else (base, frozenset(touched_answers), frozenset(touched_names)),
        )

    @property
    def ptr_addresses(self) -> int:
        """How many addresses answer PTR (``--ptr``)."""
        return len(self._ptr_owners)

    def _render_ptr(self, address: str, answers: MapMutation[bytes, Answer]) -> tuple[bytes, ...]:
        """The PTR answer of one address from every service that names it now (RFC 2181 §10.2 allows
        several); gone when none does. Returns the answer keys written or removed."""
        reverse = reverse_name(address)
        keys = (question_key(reverse, QType.PTR), question_key(reverse, QType.ANY))
        targets = sorted({t for names in self._ptr_owners.get(address, {}).values() for t in names})
        if not targets:
            self._ptr_owners.pop(address, None)
            for key in keys:
                answers.pop(key, None)
            return keys
        rrset = RRset(reverse, QType.PTR, self._ttl, tuple(name_to_wire(t) for t in targets))
        answers.update(render_nodes({reverse: {QType.PTR: rrset}}))  # the PTR answer and ANY's
        return keys

    def _count_namespace(self, namespace: str, delta: int, names: MapMutation[bytes, None]) -> bytes:
        """<ns>.svc.Z is an empty non-terminal while the namespace has a service with records; returns it."""
        self._namespaces[namespace] += delta
        wire = name_to_wire(namespace_name(self._apex, namespace))
        if self._namespaces[namespace] > 0:
            names[wire] = None
        else:
            del self._namespaces[namespace]
            names.pop(wire, None)
        return wire

    def _static_answers(self, soa: RRset) -> dict[bytes, Answer]:
        apex = self._apex
        ns = RRset(apex, QType.NS, self._ttl, (Ns((b"ns", b"dns", *apex)),))
        version = RRset(self._version_name, QType.TXT, DNS_VERSION_TTL, (txt_rdata(self._dns_version),))
        return {
            question_key(apex, QType.SOA): render_answer(apex, qtype=QType.SOA, answer=(soa,)),
            question_key(apex, QType.NS): render_answer(apex, qtype=QType.NS, answer=(ns,)),
            question_key(apex, QType.ANY): render_answer(apex, qtype=QType.ANY, answer=(soa,)),
            question_key(self._version_name, QType.TXT): render_answer(
                self._version_name, qtype=QType.TXT, answer=(version,)
            ),
            question_key(self._version_name, QType.ANY): render_answer(
                self._version_name, qtype=QType.ANY, answer=(version,)
            ),
        }

"""``mcsdns check``: every prerequisite of running mcsdns, one line each, with the fix when it fails.

The judgements (``judge_*``) are pure functions of what was read, returning ``Result`` data; ``gather``
does the reading (``ops.reader``) and calls them in a fixed order, and ``render`` prints them. A check that
cannot run says why (``skip``); only ``fail`` makes the exit status non-zero.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcsdns.errors import McsDnsError, SourceError, StartupError
from mcsdns.mcs import instances as attrs
from mcsdns.mcs.identity import CLUSTER_ID_PROPERTY, CLUSTERSET_ID_PROPERTY, cluster_properties
from mcsdns.ops import corefile, permissions
from mcsdns.ops.reader import CloudMapView
from mcsdns.settings import ListenAddress, Settings

if TYPE_CHECKING:
    from mcsdns.ops.reader import KubeReader

OK, FAIL, SKIP = "ok", "fail", "skip"
MARKS = {OK: "✔", FAIL: "✘", SKIP: "-"}
CHART = "charts/mcsdns"  # the chart in a checkout of mcsdns, for the helm commands of the fixes
EXPECTED_VERSION = "v1beta1"  # the MCS and About API version mcsdns prefers, the chart's CRDs' stored one
CRDS = (
    ("serviceimports.multicluster.x-k8s.io", "serviceimports.yaml"),
    ("serviceexports.multicluster.x-k8s.io", "serviceexports.yaml"),
    ("clusterproperties.about.k8s.io", "clusterproperties.yaml"),
)
# AWS Cloud Map's default quotas (Service Quotas, "AWS Cloud Map"): adjustable, but these are what an
# account starts with. A check fails at 90 % so there is room to ask for more before a create fails.
NAMESPACES_PER_REGION = 50
INSTANCES_PER_SERVICE = 1000
HEADROOM = 0.9
SHOWN = 5  # commands listed in one fix at most


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: str
    summary: str
    fix: str = ""


def render(results: Iterable[Result]) -> str:
    """One line per check: mark, name, what was found, and for a failure the fix."""
    lines = []
    for r in results:
        text = f"{MARKS[r.status]} {r.name}: " + ("skipped: " if r.status == SKIP else "") + r.summary
        if r.status != OK and r.fix:
            text += f" — fix: {r.fix}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def exit_status(results: Iterable[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


@dataclass(frozen=True, slots=True)
class Options:
    settings: Settings
    service_account: tuple[str, str] = ("mcsdns-system", "mcsdns")
    mcsdns_service: tuple[str, str] = ("mcsdns-system", "mcsdns")
    lease_namespace: str = ""  # "" : the ServiceAccount's namespace (where the chart puts the Lease)
    http: ListenAddress | None = None
    server: ListenAddress | None = None
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def reads_properties(self) -> bool:
        return not (self.settings.identity.cluster_id and self.settings.identity.clusterset_id)


def _q(text: str) -> str:
    return shlex.quote(text)


# --- judgements (pure) -------------------------------------------------------------------------------------


def judge_crd(
    name: str,
    template: str,
    crd: Mapping[str, Any] | None,
    served: Sequence[str] | None,
    *,
    needed: str,
    namespace: str,
    release: str,
    unread: str = "this user may not read CRDs",
) -> Result:
    """One CRD: installed, the versions it serves (and stores, when the CRD itself could be read), and
    not older than mcsdns expects. ``crd`` None and ``served`` given: only discovery could be read
    (``unread`` says why the CRD itself was not)."""
    title = f"CRD {name}"
    fix = (
        f"helm template {release} {CHART} --namespace {namespace} --show-only templates/crds/{template}"
        " | kubectl apply -f -"
    )
    versions: list[str]
    if crd is not None:
        declared = crd.get("spec", {}).get("versions") or []
        versions = [str(v.get("name")) for v in declared if v.get("served")]
        stored = [str(v.get("name")) for v in declared if v.get("storage")]
        found = f"served {','.join(versions) or 'none'}, stored {','.join(stored) or 'none'}"
    else:
        versions = list(served or [])
        found = f"served {','.join(versions) or 'none'} (stored version unknown: {unread})"
    if not versions:
        if not needed:
            return Result(title, SKIP, "not installed, and not needed with these flags")
        return Result(title, FAIL, f"not installed ({needed} needs it)", fix)
    if EXPECTED_VERSION not in versions:
        return Result(title, FAIL, f"{found}: older than mcsdns expects ({EXPECTED_VERSION} not served)", fix)
    return Result(title, OK, found)


def identity_fix(property_name: str, flag: str, api_version: str) -> str:
    document = {
        "apiVersion": api_version,
        "kind": "ClusterProperty",
        "metadata": {"name": property_name},
        "spec": {"value": f"<{flag.removeprefix('--')}>"},
    }
    return f"kubectl apply -f - <<< {_q(json.dumps(document, separators=(',', ':')))} (or give {flag} ID)"


def judge_identity(
    settings: Settings,
    properties: Mapping[str, str] | None,
    *,
    unreadable: str = "",
    api_version: str = "about.k8s.io/v1beta1",
) -> Result:
    """Both ids known, from flags or the ClusterProperties (``properties`` None: they could not be read)."""
    ids = settings.identity
    parts, fixes = [], []
    for what, flag_value, prop, flag in (
        ("cluster", ids.cluster_id, CLUSTER_ID_PROPERTY, "--cluster-id"),
        ("clusterset", ids.clusterset_id, CLUSTERSET_ID_PROPERTY, "--clusterset-id"),
    ):
        value = (properties or {}).get(prop)
        if flag_value:
            parts.append(f"{what} {flag_value} ({flag})")
        elif value:
            parts.append(f"{what} {value} (ClusterProperty {prop})")
        else:
            why = f"no ClusterProperty {prop}" if properties is not None else unreadable
            parts.append(f"{what} id unknown: {why}")
            fixes.append(identity_fix(prop, flag, api_version))
    return Result("cluster identity", FAIL if fixes else OK, "; ".join(parts), "; ".join(fixes))


def ids_of(settings: Settings, properties: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    props = properties or {}
    return (
        settings.identity.cluster_id or props.get(CLUSTER_ID_PROPERTY),
        settings.identity.clusterset_id or props.get(CLUSTERSET_ID_PROPERTY),
    )


def rbac_fix(
    missing: Sequence[permissions.Permission], *, namespace: str, release: str, lease_name: str
) -> str:
    """kubectl commands adding exactly the missing rules to the chart's ClusterRole and leader-election Role,
    or the chart's own RBAC back."""
    commands = []
    cluster_rules = [p for p in missing if p.when not in (permissions.LEASE, permissions.LEASE_NAMED)]
    lease_rules = [p for p in missing if p.when in (permissions.LEASE, permissions.LEASE_NAMED)]

    def patch(rules: Sequence[permissions.Permission]) -> str:
        ops = []
        for p in rules:
            rule: dict[str, Any] = {"apiGroups": [p.group], "resources": [p.resource], "verbs": [p.verb]}
            if p.when == permissions.LEASE_NAMED:
                rule["resourceNames"] = [lease_name]
            ops.append({"op": "add", "path": "/rules/-", "value": rule})
        return _q(json.dumps(ops, separators=(",", ":")))

    if cluster_rules:
        commands.append(f"kubectl patch clusterrole {release} --type=json -p {patch(cluster_rules)}")
    if lease_rules:
        commands.append(
            f"kubectl -n {namespace} patch role {release}-leader-election --type=json -p {patch(lease_rules)}"
        )
    restore = f"helm upgrade {release} {CHART} -n {namespace} --reuse-values (the chart's RBAC back)"
    return " && ".join(commands) + f"; or {restore}"


def judge_rbac(
    who: str,
    missing: Sequence[permissions.Permission],
    checked: int,
    *,
    namespace: str,
    release: str,
    lease_name: str,
    note: str = "",
) -> Result:
    if not missing:
        return Result("RBAC", OK, f"{who} may do all {checked} things mcsdns needs{note}")
    listed = ", ".join(str(p) for p in missing)
    return Result(
        "RBAC",
        FAIL,
        f"{who} may not: {listed}{note}",
        rbac_fix(missing, namespace=namespace, release=release, lease_name=lease_name),
    )


def rbac_unchecked(why: str, account: str) -> Result:
    """The API server cannot answer access reviews (authorization.k8s.io not served, or refused): RBAC is
    unknown, not wrong, so the line is skipped, with how to look by hand."""
    return Result(
        "RBAC",
        SKIP,
        f"cannot be checked: the API server does not answer access reviews ({why})",
        f"compare `kubectl auth can-i --list --as={account}` with the chart's ClusterRole and Role"
        " (kubectl get clusterrole,role -A -l app.kubernetes.io/name=mcsdns -o yaml)",
    )


def append_stanza_fix(zone: str, address: str) -> str:
    """One command that adds the forwarding server block to the Corefile (the chart's NOTES print it)."""
    stanza = f"\\n{zone}:53 {{\\n    errors\\n    forward . {address}\\n}}\\n"
    return (
        "kubectl -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' > Corefile"
        f" && printf '{stanza}' >> Corefile"
        " && kubectl -n kube-system create configmap coredns --from-file=Corefile --dry-run=client -o yaml"
        " | kubectl -n kube-system apply -f -"
    )


EDIT = "kubectl -n kube-system edit configmap coredns"


def judge_coredns(
    text: str | None,
    zone: str,
    *,
    controller_only: bool,
    service_ips: Sequence[str] = (),
    service_port: int = 53,
    service_name: str = "",
) -> Result:
    """Whether CoreDNS sends ``zone`` to mcsdns (or, controller only, answers it with ``multicluster``)."""
    name = "CoreDNS"
    if text is None:
        return Result(
            name,
            FAIL,
            "no ConfigMap kube-system/coredns (is CoreDNS this cluster's DNS?)",
            f"in the cluster DNS's configuration, forward {zone} to "
            + (service_ips[0] if service_ips else "the mcsdns Service IP"),
        )
    try:
        blocks = corefile.parse(text)
    except corefile.Unsupported as exc:
        return Result(name, SKIP, f"the Corefile cannot be judged here ({exc}): check it by hand")
    except corefile.CorefileError as exc:
        return Result(name, FAIL, f"the Corefile does not parse: {exc}", f"{EDIT} (fix that line)")
    found = corefile.route(blocks, zone)

    def lines(b: corefile.ServerBlock) -> str:
        return f"lines {b.first_line}-{b.last_line}"

    if found.duplicates:
        first = found.serving
        assert first is not None
        others = ", ".join(lines(b) for b in found.duplicates)
        return Result(
            name,
            FAIL,
            f"two server blocks for {found.serving_zone}:53 ({lines(first)}, {others}):"
            " CoreDNS refuses to start",
            f"{EDIT} (delete one of them, {others})",
        )
    if found.below:
        shadows = "; ".join(f"`{b.title}` ({lines(b)}) takes the names under {z}" for b, z in found.below)
        spans = ", ".join(lines(b) for b, _ in found.below)
        return Result(name, FAIL, f"{zone} is shadowed: {shadows}", f"{EDIT} (delete {spans})")
    block = found.serving
    if controller_only:
        if (
            block is not None
            and zone in corefile.kubernetes_zones(block)
            and zone in corefile.multicluster_zones(block)
        ):
            return Result(
                name, OK, f"`{block.title}` ({lines(block)}) answers {zone} with kubernetes' multicluster"
            )
        where = f"`{block.title}` ({lines(block)})" if block is not None else "no server block"
        return Result(
            name,
            FAIL,
            f"{where} answers {zone}, without `kubernetes ... {zone} {{ multicluster {zone} }}`",
            f"{EDIT} (in the `.:53` block: `kubernetes cluster.local {zone} ... {{ multicluster {zone} }}`)",
        )
    if not service_ips:
        return Result(
            name,
            FAIL,
            f"no Service {service_name} to forward to",
            "--mcsdns-service NAMESPACE/NAME (the Service in front of mcsdns)",
        )
    address = service_ips[0] if service_port == 53 else f"{service_ips[0]}:{service_port}"
    if block is None or found.serving_zone != zone:
        claim = ""
        if block is not None:
            claim = f": `{block.title}` ({lines(block)}) answers it"
            if zone in corefile.kubernetes_zones(block):
                claim += f", its kubernetes plugin claiming {zone}"
        return Result(
            name, FAIL, f"no server block forwards {zone} to mcsdns{claim}", append_stanza_fix(zone, address)
        )
    upstreams = corefile.forwards(block, zone)
    if not upstreams:
        return Result(
            name,
            FAIL,
            f"`{block.title}` ({lines(block)}) has no `forward . {address}`",
            f"{EDIT} (in {lines(block)}: `forward . {address}`)",
        )
    ours = [u for u in upstreams if u.host in service_ips and u.port == service_port]
    strangers = [u for u in upstreams if u not in ours]
    if not ours or strangers:
        told = ", ".join(str(u) for u in upstreams)
        return Result(
            name,
            FAIL,
            f"`{block.title}` ({lines(block)}) forwards to {told},"
            f" not only to mcsdns's {service_name} at {address}",
            f"{EDIT} (in {lines(block)}: `forward . {address}`)",
        )
    return Result(
        name, OK, f"`{block.title}` ({lines(block)}) forwards {zone} to {service_name} at {address}"
    )


def cloudmap_failure(exc: McsDnsError, environ: Mapping[str, str], region: str | None) -> Result:
    """Why Cloud Map cannot be used from here, and what to change."""
    text = " ".join(str(exc).split())
    code = getattr(exc, "code", "")
    endpoint = environ.get("AWS_ENDPOINT_URL_SERVICEDISCOVERY") or environ.get("AWS_ENDPOINT_URL")
    if isinstance(exc, StartupError):
        if "credentials" in text:
            fix = (
                "export AWS_PROFILE=NAME, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                " (in the chart: --set aws.roleArn=ARN, IRSA)"
            )
        elif "region" in text:
            fix = "--aws-region REGION (or export AWS_REGION=REGION)"
        else:
            fix = "fix the AWS configuration named above (AWS_PROFILE, ~/.aws/config)"
        # No AWS settings at all is most often a new shell: `mcsdns demo` prints the line that sets them.
        fix += "; for mcsdns demo's Cloud Map, run the `export AWS_...` line the demo prints"
    elif "AccessDenied" in code or "AccessDenied" in text or "UnrecognizedClient" in text:
        fix = (
            "give these credentials Cloud Map access: aws iam attach-role-policy --role-name ROLE"
            " --policy-arn arn:aws:iam::aws:policy/AWSCloudMapFullAccess"
        )
    elif code:
        fix = "see the AWS error above"
    elif endpoint:
        fix = (
            f"unset AWS_ENDPOINT_URL_SERVICEDISCOVERY, or set it to an endpoint that answers (now {endpoint})"
        )
    else:
        fix = (
            f"let this host reach servicediscovery.{region or 'REGION'}.amazonaws.com over HTTPS"
            " (a NAT gateway, or a VPC endpoint com.amazonaws.REGION.servicediscovery)"
        )
    return Result("Cloud Map", FAIL, text, fix)


def judge_quota(view: CloudMapView) -> Result:
    namespaces = len(view.namespaces)
    counts = {key: len(found) for key, found in view.instances.items()}
    busiest = max(counts.items(), key=lambda kv: kv[1], default=(("", ""), 0))
    summary = (
        f"{namespaces}/{NAMESPACES_PER_REGION} HTTP and private DNS namespaces in the region;"
        f" most instances in one service: {busiest[1]}/{INSTANCES_PER_SERVICE}"
        + (f" ({busiest[0][0]}/{busiest[0][1]})" if busiest[1] else "")
    )
    full = (
        [f"namespaces {namespaces}/{NAMESPACES_PER_REGION}"]
        if namespaces >= HEADROOM * NAMESPACES_PER_REGION
        else []
    )
    full += [
        f"{k[0]}/{k[1]} {n}/{INSTANCES_PER_SERVICE} instances"
        for k, n in sorted(counts.items())
        if n >= HEADROOM * INSTANCES_PER_SERVICE
    ]
    if full:
        return Result(
            "Cloud Map quotas",
            FAIL,
            f"near the default quota: {', '.join(full)}",
            "aws service-quotas list-service-quotas --service-code servicediscovery (then"
            " request-service-quota-increase for that quota code), or delete unused namespaces:"
            " aws servicediscovery delete-namespace --id ID",
        )
    return Result("Cloud Map quotas", OK, summary)


def judge_unique_id(
    cluster_id: str, clusterset_id: str, exported_here: set[tuple[str, str]], view: CloudMapView
) -> Result:
    """Another cluster writing as ``cluster_id``: Cloud Map holds instances with this cluster's id for
    services this cluster does not export (a ServiceExport, even one being deleted, keeps its instances
    until mcsdns or the AWS controller deregistered them, so there is no innocent gap)."""
    name = "cluster id unique"
    foreign: list[tuple[str, str, str, str]] = []  # namespace, service, service id, instance id
    for key, found in sorted(view.instances.items()):
        if key in exported_here:
            continue
        for instance in found:
            a = instance.attributes
            if a.get(attrs.CLUSTER_ID) == cluster_id and a.get(attrs.CLUSTERSET_ID) == clusterset_id:
                foreign.append((key[0], key[1], view.services.get(key, "?"), instance.id))
    if not foreign:
        return Result(name, OK, f"no other cluster writes as {cluster_id} in clusterset {clusterset_id}")
    services = sorted({f"{ns}/{svc}" for ns, svc, _, _ in foreign})
    commands = [
        f"aws servicediscovery deregister-instance --service-id {sid} --instance-id {_q(iid)}"
        for _, _, sid, iid in foreign[:SHOWN]
    ]
    more = f" (and {len(foreign) - SHOWN} more instances)" if len(foreign) > SHOWN else ""
    return Result(
        name,
        FAIL,
        f"Cloud Map holds {len(foreign)} instances of {', '.join(services)} as cluster {cluster_id},"
        " which this cluster does not export: another cluster uses the same id",
        "on that cluster set its own id (kubectl patch clusterproperty cluster.clusterset.k8s.io --type=merge"
        ' -p \'{"spec":{"value":"<its id>"}}\', or its --cluster-id), then remove what it wrote as'
        f" {cluster_id}: " + " && ".join(commands) + more,
    )


def throttle_count(metrics_text: str) -> float:
    """The sum of ``mcsdns_cloudmap_throttles_total`` in a /metrics page (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "mcsdns_cloudmap_throttles":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def judge_throttles(
    own_calls: int, own: int, server: tuple[float, float, float] | None, server_problem: str = ""
) -> Result:
    """``server``: (before, after, seconds between) of the running server's throttle counter."""
    name = "Cloud Map throttling"
    parts = []
    if own_calls:
        parts.append(f"{own} of this check's {own_calls} calls throttled")
    if server is not None:
        before, after, seconds = server
        parts.append(
            f"server: {after - before:.0f} throttled calls in {seconds:.0f}s ({after:.0f} since it started)"
        )
    elif server_problem:
        parts.append(server_problem)
    if not parts:
        return Result(name, SKIP, "no Cloud Map calls made here and no --http of a running mcsdns to read")
    throttled = own > 0 or (server is not None and server[1] > server[0])
    if throttled:
        return Result(
            name,
            FAIL,
            "; ".join(parts),
            "poll Cloud Map less often: --cloudmap-poll 5s (chart: --set cloudmap.poll=5s), or ask AWS for"
            " higher Cloud Map API rate limits",
        )
    return Result(name, OK, "; ".join(parts) or "none seen")


def judge_dns_version(
    server: ListenAddress,
    zone: str,
    expected: str,
    answer: Any,
    problem: str = "",
    namespace: str = "mcsdns-system",
    release: str = "mcsdns",
) -> Result:
    """``answer``: the dnspython reply to ``dns-version.<zone>`` TXT, or None with ``problem``."""
    name = "dns-version"
    if answer is None:
        return Result(
            name,
            FAIL,
            f"{server} does not answer ({problem})",
            f"start mcsdns, or give --server the address it serves (its --listen; in a cluster the Service:"
            f" kubectl -n {namespace} get svc {release})",
        )
    import dns.rcode

    rcode = dns.rcode.to_text(answer.rcode())
    texts = [b"".join(r.strings).decode("ascii", "replace") for rrset in answer.answer for r in rrset]
    if rcode == "REFUSED":
        return Result(
            name,
            FAIL,
            f"{server} refuses dns-version.{zone}: it serves another zone",
            "--zone ZONE (the zone serve was given)",
        )
    if rcode == "SERVFAIL":
        return Result(
            name,
            FAIL,
            f"{server} answers SERVFAIL: its zone has not loaded yet",
            "see why in its /readyz (mcsdns check --http HOST:PORT)",
        )
    if texts != [expected]:
        return Result(
            name,
            FAIL,
            f"{server} answers {', '.join(texts) or rcode}, expected {expected}",
            f"run serve with --dns-version {expected} (chart: --set dnsVersion={expected}),"
            f" or check with --dns-version {texts[0] if texts else expected}",
        )
    return Result(name, OK, f"{server} answers {expected}")


def judge_freshness(
    readyz: tuple[int, str] | None, problem: str, soa_serial: int | None, now: float
) -> Result:
    """From /readyz when the server's --http was given (it names stale sources); the SOA serial (the time of
    the zone's last change) alone cannot tell a stale zone from a quiet clusterset."""
    name = "zone freshness"
    if readyz is None:
        if problem:
            return Result(
                name,
                FAIL,
                f"/readyz does not answer ({problem})",
                "give --http the address of the server's --http (chart: port 9153)",
            )
        if soa_serial is not None:
            return Result(
                name,
                SKIP,
                f"the SOA says the zone last changed {max(0, now - soa_serial):.0f}s ago;"
                " only /readyz (--http HOST:PORT) tells a stale zone from a quiet one",
            )
        return Result(name, SKIP, "no --http of a running mcsdns")
    status, body = readyz
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    stale = [line for line in lines if line.startswith("stale:")]
    if status != 200:
        return Result(name, FAIL, f"/readyz {status}: {'; '.join(lines)}", _readyz_fix(lines))
    if stale:
        return Result(name, FAIL, f"/readyz: {'; '.join(stale)}", _readyz_fix(stale))
    return Result(name, OK, "/readyz 200, no source stale")


def _readyz_fix(lines: Sequence[str]) -> str:
    text = " ".join(lines)
    if "id unknown" in text:
        return "--cluster-id/--clusterset-id, or the ClusterProperties (see `cluster identity` above)"
    if "cloudmap" in text:
        return "restore Cloud Map access from the server (see the `Cloud Map` line, run where mcsdns runs)"
    if "kubernetes" in text:
        return "restore the server's access to the Kubernetes API (its network, its ServiceAccount's token)"
    return "the reasons above; the server's log says more (kubectl -n NAMESPACE logs deploy/mcsdns)"


# --- gathering (I/O) ---------------------------------------------------------------------------------------


async def gather(options: Options) -> list[Result]:
    from mcsdns.ops import reader

    settings = options.settings
    results: list[Result] = []
    namespace, release = options.service_account
    started = time.time()
    metrics_before: float | None = None
    metrics_problem = ""
    if options.http is not None:
        try:
            status, body = await reader.http_get(options.http, "/metrics")
            metrics_before = throttle_count(body) if status == 200 else None
        except (OSError, TimeoutError) as exc:
            metrics_problem = f"--http {options.http}: {exc or type(exc).__name__}"

    # The cluster.
    properties: dict[str, str] | None = None
    exported_here: set[tuple[str, str]] | None = None
    exports_why = "no --kubeconfig"
    if not settings.kubernetes.kubeconfig:
        why = "no --kubeconfig"
        results.append(Result("kubernetes API", SKIP, why))
        results += [Result(f"CRD {crd}", SKIP, why) for crd, _ in CRDS]
        results.append(
            judge_identity(settings, None, unreadable="no --kubeconfig to read the ClusterProperties")
        )
        results += [Result("RBAC", SKIP, why), Result("CoreDNS", SKIP, why)]
    else:
        kube_results, properties, exported_here, exports_why = await _cluster(options)
        results += kube_results

    # Cloud Map.
    cluster_id, clusterset_id = ids_of(settings, properties)
    own_calls = own_throttles = 0
    if not settings.cloudmap.enabled:
        why = "no --cloudmap"
        results += [Result(n, SKIP, why) for n in ("Cloud Map", "Cloud Map quotas", "cluster id unique")]
    else:
        client = None
        try:
            client = reader.cloudmap_client(settings.cloudmap.region)
            view = await reader.read_cloudmap(client, clusterset_id)
        except (StartupError, SourceError) as exc:
            results.append(cloudmap_failure(exc, options.environ, settings.cloudmap.region))
            results += [
                Result(n, SKIP, "Cloud Map did not answer") for n in ("Cloud Map quotas", "cluster id unique")
            ]
        else:
            services = sum(1 for key in view.instances if view.instances[key])
            partial = f"; could not read {len(view.failures)}: {view.failures[0]}" if view.failures else ""
            results.append(
                Result(
                    "Cloud Map",
                    FAIL if view.failures else OK,
                    f"{client.endpoint} answers: {len(view.namespaces)} namespaces, {services} services with"
                    f" instances of clusterset {clusterset_id or '(any)'}{partial}",
                    "see the AWS error above" if view.failures else "",
                )
            )
            results.append(judge_quota(view))
            if not (cluster_id and clusterset_id):
                results.append(
                    Result("cluster id unique", SKIP, "the cluster and clusterset ids are not known")
                )
            elif exported_here is None:
                results.append(
                    Result(
                        "cluster id unique",
                        SKIP,
                        f"this cluster's ServiceExports cannot be read ({exports_why})",
                    )
                )
            else:
                results.append(judge_unique_id(cluster_id, clusterset_id, exported_here, view))
        if client is not None:
            # Every call's time is observed, answered or not: their count is the calls made.
            own_calls = int(sum(sum(h.counts) for h in client.durations.values()))
            own_throttles = sum(client.throttles.values())
    server_counts = None
    if options.http is not None and metrics_before is not None:
        try:
            status, body = await reader.http_get(options.http, "/metrics")
            if status == 200:
                server_counts = (metrics_before, throttle_count(body), time.time() - started)
        except (OSError, TimeoutError) as exc:
            metrics_problem = f"--http {options.http}: {exc}"
    results.append(judge_throttles(own_calls, own_throttles, server_counts, metrics_problem))

    # A running server.
    zone = settings.zone.zone
    soa_serial: int | None = None
    if options.server is None:
        results.append(Result("dns-version", SKIP, "no --server HOST:PORT of a running mcsdns"))
    else:
        answer, problem = None, ""
        try:
            answer = await reader.dns_query(options.server, f"dns-version.{zone}.", "TXT")
            with contextlib.suppress(OSError, TimeoutError):
                soa = await reader.dns_query(options.server, f"{zone}.", "SOA")
                soa_serial = next((int(r.serial) for rrset in soa.answer for r in rrset), None)
        except (OSError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
        results.append(
            judge_dns_version(
                options.server, zone, settings.zone.dns_version, answer, problem, namespace, release
            )
        )
    readyz, readyz_problem = None, ""
    if options.http is not None:
        try:
            readyz = await reader.http_get(options.http, "/readyz")
        except (OSError, TimeoutError) as exc:
            readyz_problem = f"{options.http}: {exc or type(exc).__name__}"
    results.append(judge_freshness(readyz, readyz_problem, soa_serial, time.time()))
    return results


async def _cluster(
    options: Options,
) -> tuple[list[Result], dict[str, str] | None, set[tuple[str, str]] | None, str]:
    """The cluster's lines, its ClusterProperties and what it exports (each None: unreadable)."""
    from mcsdns.ops import reader

    settings = options.settings
    kubeconfig = settings.kubernetes.kubeconfig
    assert kubeconfig is not None
    results: list[Result] = []

    def down(why: str) -> list[Result]:
        ids = options.reads_properties
        return [
            *(Result(f"CRD {crd}", SKIP, why) for crd, _ in CRDS),
            Result(
                "cluster identity",
                FAIL if ids else OK,
                "the ClusterProperties cannot be read" if ids else "both ids given as flags",
                "--cluster-id ID --clusterset-id ID, or a kubeconfig that reaches the API" if ids else "",
            ),
            Result("RBAC", SKIP, why),
            Result("CoreDNS", SKIP, why),
        ]

    try:
        async with reader.kube_api(kubeconfig) as api:
            kube = reader.KubeReader(api)
            try:
                user = await kube.whoami()
                await kube.served_versions("multicluster.x-k8s.io")  # the API answers at all
            except SourceError as exc:
                results.append(
                    Result(
                        "kubernetes API",
                        FAIL,
                        " ".join(str(exc).split()),
                        f"check --kubeconfig: kubectl --kubeconfig {_q(kubeconfig)} cluster-info",
                    )
                )
                return results + down("the API did not answer"), None, None, "the API did not answer"
            results.append(
                Result("kubernetes API", OK, f"{api.host} answers, as {user or 'an unknown user'}")
            )
            return await _cluster_checks(options, kube, user, results)
    except StartupError as exc:
        results.append(
            Result(
                "kubernetes API",
                FAIL,
                str(exc),
                "--kubeconfig PATH of a kubeconfig that works (kubectl --kubeconfig PATH cluster-info)",
            )
        )
        return results + down("no connection"), None, None, "no connection"
    except SourceError as exc:
        # The API stopped answering part-way, or refused something this check could not ask about first.
        results.append(
            Result("kubernetes API", FAIL, " ".join(str(exc).split()), "see the API server's answer above")
        )
        return results, None, None, str(exc)


async def _cluster_checks(
    options: Options, kube: KubeReader, user: str | None, results: list[Result]
) -> tuple[list[Result], dict[str, str] | None, set[tuple[str, str]] | None, str]:
    from mcsdns.clients.kube import CLUSTER_PROPERTIES, SERVICE_EXPORTS, ApiStatusError
    from mcsdns.ops import reader

    settings = options.settings
    namespace, release = options.service_account
    cloudmap = settings.cloudmap.enabled

    # CRDs: read the objects when this user may (served and stored versions), else discovery (served only).
    # ``may`` is None when the authorization API cannot say: then the read itself tells.
    may_read_crds = await kube.may("get", "apiextensions.k8s.io", "customresourcedefinitions")
    crd_resource = reader.resource(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False
    )
    needs = {
        "serviceimports.multicluster.x-k8s.io": "the zone",
        "serviceexports.multicluster.x-k8s.io": "--cloudmap" if cloudmap else "",
        "clusterproperties.about.k8s.io": "reading the ids" if options.reads_properties else "",
    }
    served_by_crd: dict[str, list[str]] = {}
    for crd_name, template in CRDS:
        plural, _, group = crd_name.partition(".")
        crd, unread = None, "this user may not read CRDs"
        if may_read_crds is not False:
            try:
                crd = await kube.get(crd_resource, None, crd_name)
            except ApiStatusError as exc:
                unread = " ".join(str(exc).split())
            else:
                unread = "no CustomResourceDefinition object, yet the API serves it"
        served: list[str] = []
        if crd is not None:
            served = [str(v.get("name")) for v in crd["spec"].get("versions") or [] if v.get("served")]
        else:
            # Discovery lists a group's versions, not which of them serve this one resource: ask each.
            for version in await kube.served_versions(group):
                if any(r.get("name") == plural for r in await _resources(kube, group, version)):
                    served.append(version)
        result = judge_crd(
            crd_name,
            template,
            crd,
            served,
            needed=needs[crd_name],
            namespace=namespace,
            release=release,
            unread=unread,
        )
        served_by_crd[crd_name] = served
        results.append(result)

    # The ids.
    properties: dict[str, str] | None = None
    unreadable = ""
    if not served_by_crd["clusterproperties.about.k8s.io"]:
        properties, unreadable = {}, "the ClusterProperty CRD is not installed"
    elif await kube.may("list", "about.k8s.io", "clusterproperties") is not False:
        try:
            items = await kube.list_all(CLUSTER_PROPERTIES)
            properties = cluster_properties({i: obj for i, obj in enumerate(items)})
        except ApiStatusError as exc:
            unreadable = str(exc)
    else:
        unreadable = f"{user or 'this user'} may not list ClusterProperties"
    version = "v1beta1" if "v1beta1" in served_by_crd["clusterproperties.about.k8s.io"] else "v1alpha1"
    results.append(
        judge_identity(settings, properties, unreadable=unreadable, api_version=f"about.k8s.io/{version}")
    )

    # RBAC of the ServiceAccount mcsdns runs as.
    results.append(await _rbac(options, kube, user))

    # CoreDNS.
    results.append(await _coredns(options, kube, user))

    # What this cluster exports, for the unique-id check.
    exported: set[tuple[str, str]] | None = None
    why = ""
    if not served_by_crd["serviceexports.multicluster.x-k8s.io"]:
        why = "the ServiceExport CRD is not installed"
    elif await kube.may("list", "multicluster.x-k8s.io", "serviceexports") is not False:
        try:
            items = await kube.list_all(SERVICE_EXPORTS)
            exported = {(str(o["metadata"].get("namespace")), str(o["metadata"].get("name"))) for o in items}
        except ApiStatusError as exc:
            why = " ".join(str(exc).split())
    else:
        why = f"{user or 'this user'} may not list ServiceExports"
    return results, properties, exported, why


async def _resources(kube: KubeReader, group: str, version: str) -> list[dict[str, Any]]:
    try:
        found = await kube.call("GET", f"/apis/{group}/{version}")
    except SourceError:
        return []
    return [r for r in found.get("resources") or [] if isinstance(r, dict)]


async def _rbac(options: Options, kube: KubeReader, user: str | None) -> Result:
    import asyncio

    settings = options.settings
    namespace, release = options.service_account
    account = f"system:serviceaccount:{namespace}:{release}"
    subject: tuple[str, list[str]] | None = None
    note = ""
    if user and user.startswith("system:serviceaccount:"):
        who = user  # running as a ServiceAccount (in the pod, or its token): it checks itself
        namespace = user.split(":")[2]
    elif (may_ask := await kube.may("create", "authorization.k8s.io", "subjectaccessreviews")) is None:
        return rbac_unchecked(kube.unanswered or "", account)
    elif may_ask:
        who = account
        subject = (
            account,
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        )
    else:
        who = user or "this user"
        note = f" (checked as {who}: it may not ask about {account}; run check as that ServiceAccount)"
    lease_namespace = options.lease_namespace or namespace
    needed = permissions.required(
        cloudmap=settings.cloudmap.enabled,
        reads_properties=options.reads_properties,
        leader_elect=settings.lease.elect,
    )

    async def ask(p: permissions.Permission) -> bool:
        lease = p.when in (permissions.LEASE, permissions.LEASE_NAMED)
        return await kube.allowed(
            p.verb,
            p.group,
            p.resource,
            namespace=lease_namespace if lease else None,
            name=settings.lease.name if p.when == permissions.LEASE_NAMED else None,
            subject=subject,
        )

    try:
        answers = await asyncio.gather(*(ask(p) for p in needed))
    except SourceError as exc:
        return rbac_unchecked(" ".join(str(exc).split()), who if subject is None else account)
    missing = [p for p, ok in zip(needed, answers, strict=True) if not ok]
    return judge_rbac(
        who,
        missing,
        len(needed),
        namespace=namespace,
        release=release,
        lease_name=settings.lease.name,
        note=note,
    )


async def _coredns(options: Options, kube: KubeReader, user: str | None) -> Result:
    from mcsdns.ops import reader

    settings = options.settings
    controller_only = not settings.server.dns
    from mcsdns.clients.kube import ApiStatusError

    refused = Result(
        "CoreDNS",
        SKIP,
        f"{user or 'this user'} may not read ConfigMap kube-system/coredns;"
        " run check with a kubeconfig that may",
    )
    if await kube.may("get", "", "configmaps", namespace="kube-system", name="coredns") is False:
        return refused
    try:
        configmap = await kube.get(reader.resource("", "v1", "configmaps"), "kube-system", "coredns")
    except ApiStatusError as exc:
        if exc.code == 403:  # asked first when the authorization API answers; here it could not
            return refused
        raise
    text = None if configmap is None else str((configmap.get("data") or {}).get("Corefile") or "")
    ips: list[str] = []
    port = 53
    service_ns, service_name = options.mcsdns_service
    if not controller_only and text is not None:
        service_refused = Result(
            "CoreDNS", SKIP, f"{user or 'this user'} may not read Service {service_ns}/{service_name}"
        )
        if await kube.may("get", "", "services", namespace=service_ns, name=service_name) is False:
            return service_refused
        try:
            service = await kube.get(reader.resource("", "v1", "services"), service_ns, service_name)
        except ApiStatusError as exc:
            if exc.code == 403:
                return service_refused
            raise
        if service is not None:
            spec = service.get("spec") or {}
            ips = [str(ip) for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
            ports = [
                p
                for p in spec.get("ports") or []
                if p.get("name") in ("dns", "dns-tcp") or p.get("port") == 53
            ]
            port = int(ports[0]["port"]) if ports else 53
    return judge_coredns(
        text,
        settings.zone.zone,
        controller_only=controller_only,
        service_ips=ips,
        service_port=port,
        service_name=f"{service_ns}/{service_name}",
    )

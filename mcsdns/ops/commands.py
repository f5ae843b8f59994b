"""The ``check`` and ``status`` subcommands: their flags (the connection flags are ``serve``'s own setting
declarations, so they parse, default and read ``MCSDNS_*`` exactly as ``serve`` does) and their runs.

Light to import: ``mcsdns version`` and ``--help`` load nothing of the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping, Sequence

from mcsdns.errors import ConfigError
from mcsdns.settings import SETTINGS, ListenAddress, Settings, parse_bool, parse_listen, resolve

COMMANDS = ("check", "status")
CHECK_SETTINGS = (
    "kubeconfig",
    "cloudmap",
    "aws_region",
    "cluster_id",
    "clusterset_id",
    "zone",
    "dns",
    "dns_version",
    "leader_elect",
    "lease_name",
    "lease_namespace",
)
STATUS_SETTINGS = ("kubeconfig", "aws_region", "cluster_id", "clusterset_id")


def _add_settings(parser: argparse.ArgumentParser, keys: Sequence[str]) -> None:
    declared = {s.key: s for s in SETTINGS}
    for key in keys:
        s = declared[key]
        switch = s.parse is parse_bool
        parser.add_argument(
            s.flag,
            dest=key,
            metavar=s.metavar,
            nargs="?" if switch else None,
            const="true" if switch else None,
            help=f"as for serve: {s.help}" + (f" (default {s.shown})" if s.shown else "") + f" [{s.env}]",
        )


def _object(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def _address(text: str) -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = commands.add_parser(
        "check",
        help="preflight: is every prerequisite of mcsdns in place? one line each, with the fix",
        description="Check the CRDs, the cluster's identity, RBAC, CoreDNS, Cloud Map and a running server. "
        "Give the flags you give serve. Exit status 1 when a check fails.",
    )
    _add_settings(check, CHECK_SETTINGS)
    check.add_argument(
        "--service-account",
        type=_object,
        default=("mcsdns-system", "mcsdns"),
        metavar="NAMESPACE/NAME",
        help="the ServiceAccount mcsdns runs as, whose RBAC is checked (default the chart's, "
        "mcsdns-system/mcsdns; running as a ServiceAccount checks that one); its name is the Helm release's",
    )
    check.add_argument(
        "--mcsdns-service",
        type=_object,
        default=("mcsdns-system", "mcsdns"),
        metavar="NAMESPACE/NAME",
        help="the Service CoreDNS must forward the zone to (default the chart's, mcsdns-system/mcsdns)",
    )
    check.add_argument("--http", type=_address, metavar="HOST:PORT", help="--http of a running mcsdns")
    check.add_argument("--server", type=_address, metavar="HOST:PORT", help="DNS address of a running mcsdns")
    status = commands.add_parser(
        "status",
        help="the clusterset at a glance: clusters, services, VIPs, endpoints, conflicts",
        description="Read the cluster (--kubeconfig) and Cloud Map directly: it works while mcsdns is down.",
    )
    _add_settings(status, STATUS_SETTINGS)
    status.add_argument("-o", "--output", choices=("table", "json"), default="table", help="default table")
    status.add_argument("--namespace", metavar="NAMESPACE", help="only the services of this namespace")
    status.add_argument("--service", metavar="NAME", help="only the services of this name")


def _settings(args: argparse.Namespace, keys: Sequence[str], environ: Mapping[str, str]) -> Settings:
    return resolve({key: getattr(args, key) for key in keys}, environ=environ, config={})


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``check`` or ``status``; ``ConfigError``/``McsDnsError`` reach the CLI's one-line reporting."""
    if args.command == "check":
        return _check(args, environ)
    return _status(args, environ)


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from mcsdns.ops import check

    settings = _settings(args, CHECK_SETTINGS, environ)
    explicit_lease = (
        args.lease_namespace or environ.get("MCSDNS_LEASE_NAMESPACE") or environ.get("POD_NAMESPACE")
    )
    options = check.Options(
        settings=settings,
        service_account=args.service_account,
        mcsdns_service=args.mcsdns_service,
        lease_namespace=settings.lease.namespace if explicit_lease else "",
        http=args.http,
        server=args.server,
        environ=dict(environ),
    )
    results = asyncio.run(check.gather(options))
    print(check.render(results), end="", flush=True)
    return check.exit_status(results)


def _status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from mcsdns.ops import status

    settings = _settings(args, STATUS_SETTINGS, environ)
    if args.service and "/" in args.service:
        raise ConfigError("--service: give the name; --namespace NAMESPACE picks the namespace")
    found = asyncio.run(
        status.gather(
            kubeconfig=settings.kubernetes.kubeconfig,
            region=settings.cloudmap.region,
            cluster_id=settings.identity.cluster_id,
            clusterset_id=settings.identity.clusterset_id,
            namespace=args.namespace,
            service=args.service,
            now=time.time(),
        )
    )
    print(status.as_json(found) if args.output == "json" else status.table(found), end="", flush=True)
    return 0
